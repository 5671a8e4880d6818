"""Evaluation of m2mv checkpoints: the benchmark runner (:mod:`~m2mv.evaluation.benchmark`) and the ``evaluate``
metric module it loads from its local folder (``metrics/m2mv_mv_description``, shipped in the package)."""
