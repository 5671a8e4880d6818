"""One training stage with TRL's ``SFTTrainer``: what ``m2mv train`` and ``train_sft.py`` both run.

    m2mv train --config stage1 --model_name_or_path ./m2mv-vicuna-7b --dataset_path ./m2mv-music4all \\
        --output_dir outputs/stage1
    accelerate launch --config_file ACCELERATE.yaml -m m2mv train --config stage2 ...   (several processes)

Stage 1 trains the adaptor on ``captioning``; stage 2 the adaptor + a LoRA on ``mv_description``, from stage 1's
output. Every bad input is an error before the first step. The output folder loads with
``AutoModel.from_pretrained(output_dir, trust_remote_code=True)`` (LoRA merged). See docs/training.md.
"""

from __future__ import annotations

import torch
from transformers import set_seed

from m2mv.checkpoints.loading import load_checkpoint
from m2mv.training.args import check_args, prepare_training_args, resolve_resume
from m2mv.training.collator import make_collator
from m2mv.training.data import load_datasets
from m2mv.training.lora import set_trainable, trainable_summary
from m2mv.training.trainer import M2MVSFTTrainer


def load_model_and_processor(model_path, model_args):
    """The input checkpoint through the Auto classes (its own remote code), in the stage's dtype, for training."""
    dtype = getattr(torch, model_args.dtype) if model_args.dtype not in (None, "auto") else "auto"
    kwargs = {"attn_implementation": model_args.attn_implementation} if model_args.attn_implementation else {}
    model, processor = load_checkpoint(model_path, dtype=dtype, **kwargs)
    model.config.use_cache = False
    return model, processor


def main(script_args, training_args, model_args) -> M2MVSFTTrainer:
    """Train one stage; returns the trainer (its output folder is written)."""
    # Checks that need nothing loaded: paths, stage 2's stage-1 input, the output folder
    model_path = check_args(script_args, training_args, model_args)
    padding_free = prepare_training_args(training_args)
    set_seed(training_args.seed)  # before the LoRA weights are drawn: every process and every rerun draws the same

    # Model and processor, then what trains: stage 1 the adaptor, stage 2 the adaptor + LoRA
    model, processor = load_model_and_processor(model_path, model_args)
    model = set_trainable(model, script_args, model_args)

    # Data and collator (columns, prompts, max_length and precomputed embeddings are checked here)
    train_dataset, eval_dataset, config_name = load_datasets(script_args)
    collator = make_collator(model, processor, script_args, training_args, config_name, [train_dataset, eval_dataset],
                             padding_free=padding_free)

    trainer = M2MVSFTTrainer(model=model, args=training_args, data_collator=collator, train_dataset=train_dataset,
                             eval_dataset=eval_dataset, processing_class=processor, m2mv_args=script_args,
                             model_args=model_args, source_dir=model_path)
    trainer.accelerator.print(trainable_summary(trainer.model))
    trainer.train(resume_from_checkpoint=resolve_resume(training_args))
    if eval_dataset is not None:
        trainer.evaluate()

    # Hub-ready folder: merged weights, remote code, processor, model card with the losses
    trainer.save_model()
    if training_args.push_to_hub:
        trainer.push_to_hub(dataset_name=script_args.card_dataset)
    trainer.accelerator.print(f"saved {training_args.output_dir}")
    return trainer
