"""The record of a trained stage (``m2mv_training.json``) and what its model card states.

The facts a stage inherits from its input checkpoint (license, base model, which weights are random, toy sizes)
are read from that checkpoint's card YAML and its record, never from prose.
"""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

from m2mv.checkpoints.cards import CardFacts, read_card
from m2mv.training.args import dataset_config, read_record
from m2mv.training.lora import ADAPTOR, DEFAULT_TARGETS

SUMMARY_KEYS = ("learning_rate", "lr_scheduler_type", "warmup_steps", "optim", "weight_decay", "adam_beta1",
                "adam_beta2", "max_grad_norm", "per_device_train_batch_size", "gradient_accumulation_steps",
                "num_train_epochs", "max_steps", "max_length", "seed", "bf16", "fp16", "activation_checkpointing")
SCRIPT_KEYS = ("train_split", "eval_split", "use_genre_tags", "use_mv_type", "use_lyrics_understanding",
               "prompt_frames", "conditioning_dropout", "zero_audio", "max_train_samples", "audio_embeds")


def training_results(log_history: list[dict]) -> dict:
    """Losses from the trainer's log: the last logged training loss, the run's mean, and the eval losses."""
    train = [e["loss"] for e in log_history if "loss" in e and "eval_loss" not in e]
    evals = [e for e in log_history if "eval_loss" in e]
    summary = next((e for e in reversed(log_history) if "train_loss" in e), {})
    return {
        "final_train_loss": float(train[-1]) if train else None,
        "mean_train_loss": float(summary["train_loss"]) if "train_loss" in summary else None,
        "initial_eval_loss": float(evals[0]["eval_loss"]) if evals and evals[0].get("step") == 0 else None,
        "final_eval_loss": float(evals[-1]["eval_loss"]) if evals else None,
        "steps": int(max((e.get("step", 0) for e in log_history), default=0)),
        "train_curve": [[int(e["step"]), float(e["loss"])] for e in log_history if "loss" in e],
        "eval_curve": [[step, loss] for step, loss in {int(e["step"]): float(e["eval_loss"]) for e in evals}.items()],
    }


def training_config_summary(script_args, training_args, model_args, world_size: int) -> dict:
    """The stage's configuration as recorded: optimisation, batch, data switches, LoRA, dtype."""
    config = {"stage": script_args.stage, **{k: getattr(training_args, k) for k in SUMMARY_KEYS}}
    config["dataset_config"] = dataset_config(script_args)
    config["global_batch_size"] = (training_args.per_device_train_batch_size
                                   * training_args.gradient_accumulation_steps * world_size)
    config["processes"] = world_size
    config.update({name: getattr(script_args, name) for name in SCRIPT_KEYS})
    if model_args.use_peft:
        config["lora"] = {"r": model_args.lora_r, "alpha": model_args.lora_alpha, "dropout": model_args.lora_dropout,
                          "target_modules": list(model_args.lora_target_modules or DEFAULT_TARGETS),
                          "modules_to_save": [ADAPTOR], "merged": True}
    config["model_dtype"] = model_args.dtype
    return {k: (v.value if hasattr(v, "value") else v) for k, v in config.items()}


def inherited_facts(source: Path) -> tuple[dict, CardFacts | None, dict]:
    """``(card metadata, facts, record)`` of the input checkpoint; the adaptor is no longer random once trained."""
    meta, facts = read_card(source)
    if facts is not None:
        facts = replace(facts, random_parts=[p for p in facts.random_parts if p != "adaptor"])
    return meta, facts, read_record(source) or {}


def training_record(source: Path, name: str, script_args, training_args, model_args, world_size: int,
                    log_history: list[dict], model_name_or_path: str | None) -> tuple[dict, CardFacts | None]:
    """``(record, facts)`` of a finished stage: what ``m2mv_training.json`` holds and what the card states."""
    meta, facts, source_record = inherited_facts(source)
    base = script_args.card_base_model or source_record.get("base_model") or meta.get("base_model") \
        or model_name_or_path or source.name
    base = Path(base).name if os.path.isabs(str(base)) or os.path.isdir(str(base)) else base
    lineage = list(source_record.get("lineage", []))
    if source_record:
        lineage.append({"stage": source_record["stage"], "dataset": source_record.get("dataset"),
                        "results": {k: v for k, v in source_record.get("results", {}).items()
                                    if not k.endswith("_curve")}})
    record = {
        "name": name,
        "stage": script_args.stage,
        "base_model": str(base),
        "dataset": script_args.card_dataset or Path(script_args.dataset_path).resolve().name,
        "source": str(source),
        "license": script_args.card_license or source_record.get("license") or meta.get("license") or "other",
        "config": training_config_summary(script_args, training_args, model_args, world_size),
        "results": training_results(log_history),
        "lineage": lineage,
    }
    return record, facts
