"""``SFTTrainer`` for m2mv: atomic checkpoints and a Hub-ready final folder.

Checkpoints are written into a staging folder and renamed into place when complete, so a killed run leaves only
complete ones (``--resume_from_checkpoint last`` resumes from the newest). ``save_model()`` writes the finished
stage as a plain m2mv checkpoint: the LoRA merged into the weights (PEFT's ``merge_and_unload``), the adapter
beside it, the remote code (copied by transformers from the loaded checkpoint's own classes), the processor, the
model card and ``m2mv_training.json``.
"""

from __future__ import annotations

import copy
import json
import logging
import os
import shutil
import tempfile
from pathlib import Path

from peft import PeftModel
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR, rotate_checkpoints
from trl import SFTTrainer

from m2mv.checkpoints.cards import training_card, write_card
from m2mv.training.args import ADAPTER_FOLDER, STAGE_RECORD, STAGING_FOLDER, M2MVScriptArguments
from m2mv.training.lora import merged_model
from m2mv.training.records import training_record

logger = logging.getLogger("m2mv.training")


def move_into(staging: Path, out: Path) -> None:
    """Move the staged files into ``out``; ``config.json`` last, so a folder that loads is a complete one. (Not an
    atomic folder swap: ``out`` also holds the run's checkpoints, which must stay.)"""
    entries = sorted(staging.iterdir(), key=lambda p: (p.name == "config.json", p.name == STAGE_RECORD, p.name))
    for entry in entries:
        target = out / entry.name
        if target.is_dir() and not target.is_symlink():
            shutil.rmtree(target)
        os.replace(entry, target)
    staging.rmdir()


class M2MVSFTTrainer(SFTTrainer):
    """``SFTTrainer`` + atomic checkpoints + a Hub-ready final ``save_model()`` (LoRA merged) + m2mv's card."""

    def __init__(self, *args, m2mv_args: M2MVScriptArguments, model_args, source_dir: Path, **kwargs):
        self.m2mv_args, self.m2mv_model_args, self.m2mv_source = m2mv_args, model_args, Path(source_dir)
        self._final_saved_step = None
        super().__init__(*args, **kwargs)
        if self.is_world_process_zero():
            shutil.rmtree(Path(self.args.output_dir) / STAGING_FOLDER, ignore_errors=True)

    def get_eval_dataloader(self, eval_dataset=None):
        """Held-out batches through the collator without conditioning dropout (every prompt keeps all fields)."""
        train_collator = self.data_collator
        self.data_collator = getattr(train_collator, "for_eval", lambda: train_collator)()
        try:
            return super().get_eval_dataloader(eval_dataset)
        finally:
            self.data_collator = train_collator

    # -- checkpoints: written into a staging folder, renamed into place when complete ----------------------------
    def _save_checkpoint(self, model, trial):
        run_dir = Path(self._get_output_dir(trial=trial))
        staging = run_dir / STAGING_FOLDER
        name = f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}"
        if self.is_world_process_zero():
            shutil.rmtree(staging / name, ignore_errors=True)
        self.accelerator.wait_for_everyone()
        self._get_output_dir = lambda trial=None: str(staging)
        try:
            super()._save_checkpoint(model, trial)
        finally:
            del self._get_output_dir
        self.accelerator.wait_for_everyone()
        if self.is_world_process_zero():
            if (run_dir / name).exists():
                shutil.rmtree(run_dir / name)
            os.replace(staging / name, run_dir / name)
            best = self.state.best_model_checkpoint
            if best and Path(best).parent == staging:
                self.state.best_model_checkpoint = str(run_dir / Path(best).name)
            if self.args.should_save:
                rotate_checkpoints(output_dir=str(run_dir), save_total_limit=self.args.save_total_limit,
                                   best_model_checkpoint=self.state.best_model_checkpoint, use_mtime=False)
        self.accelerator.wait_for_everyone()

    # -- the final model -----------------------------------------------------------------------------------------
    def save_model(self, output_dir: str | None = None, _internal_call: bool = False):
        if output_dir is not None and Path(output_dir).resolve() != Path(self.args.output_dir).resolve():
            return super().save_model(output_dir, _internal_call)  # a checkpoint: the trainer's own format
        if self._final_saved_step == self.state.global_step:
            return None
        self.save_hub_ready(Path(self.args.output_dir))
        self._final_saved_step = self.state.global_step
        return None

    def m2mv_record(self):
        """``(record, facts)``: what ``m2mv_training.json`` and the card say (stage, base model, dataset, config,
        losses, lineage; which weights are random)."""
        record, facts = training_record(self.m2mv_source, Path(self.args.hub_model_id or self.args.output_dir).name,
                                        self.m2mv_args, self.args, self.m2mv_model_args,
                                        self.accelerator.num_processes, self.state.log_history,
                                        getattr(self.model.config, "_name_or_path", None))
        # m2mv's collator packs, not TRL's (whose flag prepare_training_args clears)
        record["config"]["padding_free"] = bool(getattr(self.data_collator, "padding_free", False))
        return record, facts

    def create_model_card(self, model_name: str | None = None, dataset_name: str | None = None,
                          tags: str | list[str] | None = None):
        if self.is_world_process_zero():
            record, facts = self.m2mv_record()
            write_card(training_card(record, facts, STAGE_RECORD, ADAPTER_FOLDER), self.args.output_dir)

    def save_hub_ready(self, out: Path) -> None:
        """LoRA merged into a plain m2mv checkpoint + processor + remote code + card + record (+ adapter/)."""
        state = self.accelerator.get_state_dict(self.model)  # full state; collective under FSDP/ZeRO-3
        if self.is_world_process_zero():
            # copies: the merge writes into the base weights, which must not be the live model's own tensors
            self._write_hub_ready({k: v.detach().to("cpu", copy=True) for k, v in state.items()}, out)
        self.accelerator.wait_for_everyone()

    def _write_hub_ready(self, state: dict, out: Path) -> None:
        unwrapped = self.accelerator.unwrap_model(self.model)
        is_peft = isinstance(unwrapped, PeftModel)
        base = unwrapped.get_base_model() if is_peft else unwrapped
        out.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".final.", dir=out))
        try:
            if is_peft and self.m2mv_args.save_adapter:
                unwrapped.peft_config["default"].base_model_name_or_path = str(self.m2mv_source)
                unwrapped.save_pretrained(staging / ADAPTER_FOLDER, state_dict=state)
            plain = merged_model(base, state, unwrapped.peft_config["default"] if is_peft else None)
            plain.config.use_cache = True
            plain.config.name_or_path = out.name
            plain.generation_config = copy.deepcopy(base.generation_config)
            plain.save_pretrained(staging)  # transformers copies the remote code with it
            self.processing_class.save_pretrained(staging)
            record, facts = self.m2mv_record()
            write_card(training_card(record, facts, STAGE_RECORD, ADAPTER_FOLDER), staging)
            (staging / STAGE_RECORD).write_text(json.dumps(record, indent=2, default=str) + "\n", encoding="utf-8")
            move_into(staging, out)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        logger.info("saved the Hub-ready model to %s", out)
