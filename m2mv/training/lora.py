"""What trains in each stage, and the LoRA merge, with PEFT's own tools.

Stage 1 trains only the adaptor. Stage 2 wraps the model with a PEFT LoRA (r=32, alpha=32 on the language model's
q/k/v/o projections only: the audio encoder has q/k/v projections too) and keeps the adaptor trainable through
``modules_to_save``. The audio encoder and the base LM stay frozen, bit for bit.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Sequence

import torch
from peft import LoraConfig, get_peft_model

from m2mv.errors import TrainingError

DEFAULT_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj"]
ADAPTOR = "multi_modal_projector"


def lora_target_regex(names: Sequence[str] | str | None) -> str:
    """A PEFT ``target_modules`` regex that matches the named projections of the LANGUAGE MODEL only (the audio
    encoder's attention has ``q_proj``/``k_proj``/``v_proj`` too, and must stay frozen)."""
    if names is None:
        names = DEFAULT_TARGETS
    if isinstance(names, str):
        names = [n.strip() for n in names.split(",") if n.strip()]
    bad = [n for n in names if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", n)]
    if bad:
        raise TrainingError(f"lora_target_modules must be module names such as q_proj, got {bad}")
    return r"model\.language_model\.layers\.\d+\.(?:self_attn|mlp)\.(?:" + "|".join(map(re.escape, names)) + ")"


def lora_config(model_args) -> LoraConfig:
    """The stage-2 LoRA of TRL's ``ModelConfig`` options, on the LM's projections, with the adaptor trainable."""
    return LoraConfig(
        r=model_args.lora_r,
        lora_alpha=model_args.lora_alpha,
        lora_dropout=model_args.lora_dropout,
        target_modules=lora_target_regex(model_args.lora_target_modules),
        modules_to_save=[ADAPTOR, *(model_args.lora_modules_to_save or [])],
        use_rslora=model_args.use_rslora,
        bias="none",
        task_type="CAUSAL_LM",
    )


def set_trainable(model, script_args, model_args):
    """Stage 1: only the adaptor trains. Stage 2 (``use_peft``): a PEFT LoRA on the LM's projections plus the adaptor
    through ``modules_to_save``. Trainable parameters are kept in float32 (master weights) whatever the model dtype.
    """
    model.requires_grad_(False)
    model.multi_modal_projector.requires_grad_(True)
    if script_args.stage == 2 and model_args.use_peft:
        model = get_peft_model(model, lora_config(model_args))
        if not any(name.endswith(".lora_A") for name, _ in model.named_modules()):
            raise TrainingError(f"lora_target_modules {model_args.lora_target_modules} match no module of the "
                                "language model")
    for param in model.parameters():
        if param.requires_grad and param.dtype != torch.float32:
            param.data = param.data.float()
    return model


def trainable_summary(model) -> str:
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    return f"trainable parameters: {trainable:,} of {total:,} ({100 * trainable / max(total, 1):.3f}%)"


def merged_model(base, state: dict[str, torch.Tensor], peft_config: LoraConfig | None):
    """A plain model of ``base``'s class and config holding ``state``: a PEFT model's full state dict (DDP, the
    FSDP full state or ZeRO's gathered one) with each LoRA merged into its weight by PEFT's ``merge_and_unload``
    and each ``modules_to_save`` copy in place of its original; or, without ``peft_config``, a plain state dict.

    Built on the meta device and filled with ``state``'s own tensors (``assign=True``): no second copy in memory.
    """
    config = copy.deepcopy(base.config)
    with torch.device("meta"):
        fresh = type(base)(config)
    target = get_peft_model(fresh, copy.deepcopy(peft_config), low_cpu_mem_usage=True) if peft_config else fresh
    result = target.load_state_dict(state, strict=False, assign=True)
    tied = {key for key in result.missing_keys if key.endswith("lm_head.weight")} if config.tie_word_embeddings \
        else set()
    if set(result.missing_keys) - tied or result.unexpected_keys:
        raise TrainingError(f"saving failed: missing {sorted(set(result.missing_keys) - tied)}, "
                            f"unexpected {sorted(result.unexpected_keys)}")
    plain = target.merge_and_unload() if peft_config else target
    plain.tie_weights()
    return plain
