"""m2mv's data layer: what every other part reads and writes, importing nothing above it.

- :mod:`~m2mv.data.taxonomy`: the MV-type taxonomy (``mv_types.json``, its one data file);
- :mod:`~m2mv.data.schema`: the dataset contract (configs, columns, features, the conditioning of a row);
- :mod:`~m2mv.data.loading`: :func:`~m2mv.data.loading.load_split`, the one reader of a built dataset;
- :mod:`~m2mv.data.writing`: deterministic splits, Parquet shards, the dataset card, ``push_to_hub``;
- :mod:`~m2mv.data.embeddings`: precomputed audio-encoder embeddings (compute, locate, validate);
- :mod:`~m2mv.data.fileio`: atomic file, folder and JSONL writers;
- :mod:`~m2mv.data.cache`: the cache root outside the repository;
- :mod:`~m2mv.data.offline_models`: the real small models that install from PyPI (SmolLM2, MiniLM), cached.

It may import the remote-code files (the MV format) and :mod:`m2mv.errors`, nothing else of m2mv.
"""
