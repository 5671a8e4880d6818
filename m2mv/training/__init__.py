"""Two-stage training of m2mv with TRL's ``SFTTrainer`` under Accelerate.

One job per module:

- :mod:`~m2mv.training.args`: the m2mv options of a stage, its YAML config (a path or a packaged name), the checks
  that need nothing loaded;
- :mod:`~m2mv.training.data`: the stage's dataset splits and their columns, precomputed embeddings;
- :mod:`~m2mv.training.collator`: dataset rows -> model inputs through the checkpoint's processor;
- :mod:`~m2mv.training.lora`: what trains (the adaptor; stage 2 a PEFT LoRA) and the merge, with PEFT's own tools;
- :mod:`~m2mv.training.trainer`: ``SFTTrainer`` with atomic checkpoints and a Hub-ready final folder;
- :mod:`~m2mv.training.records`: the training record and the trained model's card;
- :mod:`~m2mv.training.sft`: the stage itself (``m2mv train`` and ``train_sft.py`` both call it);
- :mod:`~m2mv.training.toy`: a synthetic toy dataset and a tiny checkpoint whose LM was trained on its texts.
"""
