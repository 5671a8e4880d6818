"""m2mv: music in, a music-video description out.

The model itself lives in the top-level remote-code files (``configuration_m2mv``, ``modeling_m2mv``,
``feature_extraction_m2mv``, ``mv_format_m2mv``, ``processing_m2mv``) that travel with every checkpoint; this package
holds the tools around it, in layers that import only downwards:

- ``m2mv.data``: the data layer (taxonomy, dataset contract, one reader, writers, embeddings, cache);
- ``m2mv.checkpoints``: building, loading and describing checkpoints (converter, tiny ones, cards);
- ``m2mv.inference``, ``m2mv.training``, ``m2mv.evaluation``: describing music, training, the benchmark;
- ``m2mv.demo``: the one-command demo; ``m2mv.cli``: the ``m2mv`` command, which nothing imports.
"""

__version__ = "0.6.5"
