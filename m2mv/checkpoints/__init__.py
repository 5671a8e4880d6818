"""m2mv checkpoints: building them (converter, tiny ones), loading them with clear errors, and their model cards.

- :mod:`~m2mv.checkpoints.convert`: ImageBind ``.pth`` + any Llama folder -> an m2mv checkpoint (``m2mv-convert``);
- :mod:`~m2mv.checkpoints.tiny`: tiny random checkpoints for tests and demos;
- :mod:`~m2mv.checkpoints.loading`: :func:`~m2mv.checkpoints.loading.load_checkpoint` and the cached demo checkpoint;
- :mod:`~m2mv.checkpoints.cards`: model cards through ``huggingface_hub.ModelCard``, their facts kept as YAML.
"""
