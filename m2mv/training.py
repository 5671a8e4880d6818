"""Two-stage training of m2mv with TRL's ``SFTTrainer`` (the pieces that ``train_sft.py`` puts together).

- :class:`M2MVScriptArguments`: the m2mv-specific options of a stage (the rest is TRL's ``SFTConfig`` and
  ``ModelConfig``); :func:`parse_args` reads one YAML per stage plus command-line overrides, unknown keys refused.
- :func:`check_args`: every check that can fail before anything heavy loads (paths, stage 2's stage-1 input, the
  output folder); :func:`load_datasets` checks the columns, :func:`make_collator` the precomputed embeddings, so that
  every bad input is an error before the first step.
- :func:`set_trainable`: stage 1 trains only the adaptor; stage 2 wraps the model with a PEFT LoRA (r=32, alpha=32
  on the language model's q/k/v/o projections only -- the audio encoder has q/k/v projections too) and keeps the
  adaptor trainable through ``modules_to_save``. The audio encoder and the base LM stay frozen, bit for bit.
- :class:`M2MVDataCollator`: rows of the dataset contract (``m2mv/schema.py``) -> the processor's prompt (with the
  conditioning switches), answer-only labels, and either the audio's features or precomputed encoder embeddings.
- :class:`M2MVSFTTrainer`: ``SFTTrainer`` that writes checkpoints atomically (staging folder + rename) and whose
  ``save_model()`` writes a Hub-ready folder: LoRA merged into the weights, the adapter beside it, the remote code,
  the processor, a model card with the training config and the final losses, and ``m2mv_training.json``.
- Precomputed embeddings: the dataset builder's format (``dataset_scripts/embeddings.py``), used when their encoder
  hash matches the model's; stale ones (another encoder, missing songs) are an error.
- :func:`write_toy_dataset`: a small synthetic dataset in the contract's layout whose targets depend on the audio
  (for tests, the benchmark and a first run before the demo corpus is built).

Command line (``python -m m2mv.training ...``): ``embed`` (precompute embeddings), ``lengths`` (measure token
lengths to choose ``max_length``), ``toy-dataset``, ``tiny-checkpoint`` (a tiny checkpoint whose LM is first
trained on a dataset's texts: the tiny stand-in for a pretrained LM). See docs/training.md.
"""

from __future__ import annotations

import argparse
import copy
import io
import json
import logging
import os
import re
import shutil
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dataset_scripts import embeddings
from m2mv import schema

logger = logging.getLogger("m2mv.training")

STAGE_RECORD = "m2mv_training.json"  # written into every training output; stage 2 requires stage 1's
REMOTE_CODE_FILES = ("configuration_m2mv.py", "modeling_m2mv.py", "processing_m2mv.py")
STAGING_FOLDER = ".m2mv-staging"  # checkpoints and the final model are written here, then renamed into place
ADAPTER_FOLDER = "adapter"  # stage 2: the PEFT adapter (LoRA + adaptor) beside the merged weights
STAGE_DATASET_CONFIG = {1: schema.CAPTIONING, 2: schema.MV_DESCRIPTION}


class M2MVTrainingError(ValueError):
    """Bad training input (config, paths, dataset, embeddings): raised before any training step runs."""


class StaleEmbeddingsError(M2MVTrainingError, embeddings.StaleEmbeddingsError):
    """Precomputed audio embeddings that do not belong to the model's audio encoder (or do not cover the data)."""


# ----------------------------------------------------------------------------------------------------------------
# Arguments
# ----------------------------------------------------------------------------------------------------------------


@dataclass
class M2MVScriptArguments:
    """m2mv options of a training stage. Model and LoRA options are TRL's ``ModelConfig``; the optimiser, schedule,
    batch, precision, checkpointing and Hub options are TRL's ``SFTConfig`` (``max_length`` included)."""

    stage: int = field(default=1, metadata={"help": "1: adaptor only, on `captioning`; 2: adaptor + LoRA, on "
                                            "`mv_description`, starting from stage 1's output."})
    dataset_path: str | None = field(default=None, metadata={
        "help": "Dataset root (holding <config>/<split>-*.parquet, as dataset_scripts writes it) or one config's "
                "folder."})
    dataset_config: str | None = field(default=None, metadata={
        "help": "`captioning` or `mv_description`; default: captioning for stage 1, mv_description for stage 2."})
    train_split: str = field(default="train", metadata={"help": "Split to train on."})
    eval_split: str | None = field(default="validation", metadata={
        "help": "Held-out split for the eval loss (empty or null: no evaluation)."})
    audio_embeds: str = field(default="auto", metadata={
        "help": "Precomputed encoder embeddings: `auto` (<dataset root>/embeddings/<encoder hash>.parquet, as "
                "dataset_scripts.embeddings writes them, when any exist), `off` (always encode the audio), or an "
                "embeddings file. Stale ones are an error."})
    use_genre_tags: bool = field(default=True, metadata={"help": "Put the genre tags into the prompt (stage 2)."})
    use_mv_type: bool = field(default=True, metadata={"help": "Put the MV type into the prompt (stage 2)."})
    use_lyrics_understanding: bool = field(default=True, metadata={
        "help": "Put the lyrics understanding into the prompt (stage 2)."})
    prompt_frames: bool = field(default=True, metadata={
        "help": "Stage 2: when a target description's frames are not the fixed 2-s grid (e.g. beat-aligned), list "
                "them in the prompt (`Frames: [00:00-00:01.87], ...` with the given-frames instruction), as "
                "`m2mv describe --align beats` prompts; fixed-grid targets keep the plain prompt. The frames come "
                "from the target text itself (no extra column)."})
    zero_audio: bool = field(default=False, metadata={
        "help": "Ablation: replace every input's audio features by zeros (the audio then carries no information)."})
    max_train_samples: int | None = field(default=None, metadata={"help": "Use only the first N training rows."})
    max_eval_samples: int | None = field(default=None, metadata={"help": "Use only the first N held-out rows."})
    card_base_model: str | None = field(default=None, metadata={
        "help": "Hub id of the base model for the model card (default: the input folder's recorded base model)."})
    card_dataset: str | None = field(default=None, metadata={
        "help": "Hub id or name of the dataset for the model card (default: the dataset folder's name)."})
    card_license: str | None = field(default=None, metadata={
        "help": "License for the model card (default: the input checkpoint card's license)."})
    save_adapter: bool = field(default=True, metadata={
        "help": "Stage 2: also save the PEFT adapter (LoRA + adaptor) in <output_dir>/adapter."})


def parse_args(argv: Sequence[str] | None = None):
    """``(script_args, training_args, model_args)`` from ``--config stage.yaml`` plus command-line overrides.

    A key the YAML or the command line names that no dataclass has is an error naming it.
    """
    from trl import ModelConfig, SFTConfig, TrlParser

    parser = TrlParser((M2MVScriptArguments, SFTConfig, ModelConfig))
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--config" in argv:
        path = Path(argv[argv.index("--config") + 1])
        if not path.is_file():
            raise M2MVTrainingError(f"--config {path}: no such file")
        import yaml

        config = yaml.safe_load(path.read_text()) or {}
        if not isinstance(config, dict):
            raise M2MVTrainingError(f"{path}: a training config must be a YAML mapping of option: value")
        known = {action.dest for action in parser._actions} | {"env"}
        unknown = sorted(set(config) - known)
        if unknown:
            raise M2MVTrainingError(
                f"{path}: unknown config key(s) {', '.join(map(repr, unknown))}; a key must be an option of "
                "M2MVScriptArguments (m2mv/training.py), trl.SFTConfig or trl.ModelConfig "
                "(python train_sft.py --help lists them)")
    try:
        return parser.parse_args_and_config(argv)
    except ValueError as err:  # HfArgumentParser: "Some specified arguments are not used ..."
        raise M2MVTrainingError(f"unknown or malformed option: {err}") from err


def _read_record(folder: Path) -> dict | None:
    path = folder / STAGE_RECORD
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise M2MVTrainingError(f"{path}: unreadable training record ({err})") from err


def resolve_model_path(model_name_or_path: str | None) -> Path:
    """The checkpoint folder: a path, or ``demo`` for the cached SmolLM2 demo checkpoint (built once)."""
    if not model_name_or_path:
        raise M2MVTrainingError("model_name_or_path is required: an m2mv checkpoint folder (m2mv-convert's output) "
                                "for stage 1, stage 1's output folder for stage 2, or `demo`")
    if model_name_or_path == "demo":
        from m2mv.cli import demo_checkpoint

        return demo_checkpoint()
    path = Path(model_name_or_path).expanduser()
    if not (path / "config.json").is_file():
        raise M2MVTrainingError(f"model_name_or_path {path}: not an m2mv checkpoint folder (no config.json)"
                                + ("" if path.exists() else "; the path does not exist"))
    return path


def checkpoints_in(folder: Path) -> list[Path]:
    """``checkpoint-N`` folders of ``folder``, oldest first."""
    if not folder.is_dir():
        return []
    found = [p for p in folder.iterdir() if p.is_dir() and re.fullmatch(r"checkpoint-\d+", p.name)]
    return sorted(found, key=lambda p: int(p.name.split("-")[1]))


def resolve_resume(training_args) -> str | None:
    """``--resume_from_checkpoint``: ``last``/``true`` -> the newest complete checkpoint of ``output_dir``; or a
    checkpoint path."""
    value = training_args.resume_from_checkpoint
    if value in (None, "", False) or str(value).lower() in ("false", "no", "none"):
        return None
    if str(value).lower() in ("true", "last", "latest", "yes"):
        found = checkpoints_in(Path(training_args.output_dir))
        if not found:
            raise M2MVTrainingError(f"--resume_from_checkpoint {value}: {training_args.output_dir} holds no checkpoint")
        return str(found[-1])
    path = Path(value)
    if not (path / "trainer_state.json").is_file():
        raise M2MVTrainingError(f"--resume_from_checkpoint {path}: not a complete checkpoint (no trainer_state.json)")
    return str(path)


def check_args(script_args: M2MVScriptArguments, training_args, model_args) -> None:
    """Every check that needs no model or data loaded; raises :class:`M2MVTrainingError`."""
    if script_args.stage not in (1, 2):
        raise M2MVTrainingError(f"stage must be 1 or 2, got {script_args.stage}")
    model_path = resolve_model_path(model_args.model_name_or_path)
    record = _read_record(model_path)
    if script_args.stage == 1 and model_args.use_peft:
        raise M2MVTrainingError("stage 1 trains only the adaptor: set use_peft: false (LoRA is stage 2)")
    if script_args.stage == 2 and (record is None or record.get("stage") != 1):
        found = "no m2mv_training.json" if record is None else f"a stage-{record.get('stage')} output"
        raise M2MVTrainingError(
            f"stage 2 starts from stage 1's output folder, and {model_path} is not one ({found}): run stage 1 first "
            f"(python train_sft.py --config configs/stage1.yaml ...) and pass its output_dir as model_name_or_path")
    if model_args.use_peft and (model_args.use_dora or model_args.lora_target_parameters):
        raise M2MVTrainingError("only plain LoRA on modules is supported (use_dora / lora_target_parameters are not)")
    config_name = script_args.dataset_config or STAGE_DATASET_CONFIG[script_args.stage]
    if config_name not in schema.COLUMNS:
        raise M2MVTrainingError(f"dataset_config {config_name!r} is unknown; known: {', '.join(schema.COLUMNS)}")
    if not script_args.dataset_path:
        raise M2MVTrainingError("dataset_path is required (the dataset folder that dataset_scripts writes)")
    if not Path(script_args.dataset_path).is_dir():
        raise M2MVTrainingError(f"dataset_path {script_args.dataset_path}: no such folder")
    if script_args.audio_embeds not in ("auto", "off") and not Path(script_args.audio_embeds).exists():
        raise M2MVTrainingError(f"audio_embeds {script_args.audio_embeds}: no such file or folder "
                                "(use `auto`, `off` or the path of precomputed embeddings)")
    out = Path(training_args.output_dir)
    resume = resolve_resume(training_args)
    if (out / "config.json").is_file():
        raise M2MVTrainingError(f"output_dir {out} already holds a trained model; choose a new output_dir")
    if resume is None and checkpoints_in(out):
        names = ", ".join(p.name for p in checkpoints_in(out))
        raise M2MVTrainingError(f"output_dir {out} already holds checkpoints ({names}): resume with "
                                "--resume_from_checkpoint last, or choose an empty output_dir")
    if (script_args.max_train_samples or 1) < 1 or (script_args.max_eval_samples or 1) < 1:
        raise M2MVTrainingError("max_train_samples / max_eval_samples must be >= 1")
    if training_args.max_length is not None and training_args.max_length < 8:
        raise M2MVTrainingError(f"max_length {training_args.max_length} is too small for a prompt")


# ----------------------------------------------------------------------------------------------------------------
# Model, processor, freezing, LoRA
# ----------------------------------------------------------------------------------------------------------------


def load_model_and_processor(model_args):
    """The checkpoint through the Auto classes (its own remote code), and its processor."""
    from transformers import AutoModel, AutoProcessor

    path = resolve_model_path(model_args.model_name_or_path)
    dtype = getattr(torch, model_args.dtype) if model_args.dtype not in (None, "auto") else "auto"
    kwargs = {"attn_implementation": model_args.attn_implementation} if model_args.attn_implementation else {}
    model = AutoModel.from_pretrained(path, trust_remote_code=True, dtype=dtype, **kwargs)
    processor = AutoProcessor.from_pretrained(path, trust_remote_code=True)
    if processor.num_audio_tokens != model.config.num_audio_tokens:
        raise M2MVTrainingError(f"{path}: processor num_audio_tokens ({processor.num_audio_tokens}) differs from the "
                                f"model's ({model.config.num_audio_tokens})")
    model.config.use_cache = False
    return model, processor


def lora_target_regex(names: Sequence[str] | str | None) -> str:
    """A PEFT ``target_modules`` regex that matches the named projections of the LANGUAGE MODEL only (the audio
    encoder's attention has ``q_proj``/``k_proj``/``v_proj`` too, and must stay frozen)."""
    if names is None:
        names = ["q_proj", "k_proj", "v_proj", "o_proj"]
    if isinstance(names, str):
        names = [n.strip() for n in names.split(",") if n.strip()]
    bad = [n for n in names if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", n)]
    if bad:
        raise M2MVTrainingError(f"lora_target_modules must be module names such as q_proj, got {bad}")
    return r"model\.language_model\.layers\.\d+\.(?:self_attn|mlp)\.(?:" + "|".join(map(re.escape, names)) + ")"


def set_trainable(model, script_args: M2MVScriptArguments, model_args):
    """Stage 1: only the adaptor trains. Stage 2 (``use_peft``): a PEFT LoRA on the LM's projections plus the adaptor
    through ``modules_to_save``. Trainable parameters are kept in float32 (master weights) whatever the model dtype.
    """
    model.requires_grad_(False)
    model.multi_modal_projector.requires_grad_(True)
    if script_args.stage == 2 and model_args.use_peft:
        from peft import LoraConfig, get_peft_model

        lora = LoraConfig(
            r=model_args.lora_r,
            lora_alpha=model_args.lora_alpha,
            lora_dropout=model_args.lora_dropout,
            target_modules=lora_target_regex(model_args.lora_target_modules),
            modules_to_save=["multi_modal_projector", *(model_args.lora_modules_to_save or [])],
            use_rslora=model_args.use_rslora,
            bias="none",
            task_type="CAUSAL_LM",
        )
        model = get_peft_model(model, lora)
        targeted = [n for n, _ in model.named_modules() if n.endswith(".lora_A")]
        if not targeted:
            raise M2MVTrainingError(f"lora_target_modules {model_args.lora_target_modules} match no module of the "
                                    "language model")
    for param in model.parameters():
        if param.requires_grad and param.dtype != torch.float32:
            param.data = param.data.float()
    return model


def trainable_summary(model) -> str:
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    return f"trainable parameters: {trainable:,} of {total:,} ({100 * trainable / max(total, 1):.3f}%)"


# ----------------------------------------------------------------------------------------------------------------
# Data
# ----------------------------------------------------------------------------------------------------------------


def dataset_root(dataset_path: str | Path, config_name: str) -> tuple[Path, Path]:
    """``(root, config folder)`` for a dataset root or a config folder."""
    path = Path(dataset_path)
    if (path / config_name).is_dir():
        return path, path / config_name
    return path.parent if path.name in schema.COLUMNS else path, path


def load_split(dataset_path: str | Path, config_name: str, split: str):
    """One split of one config, from ``<root>/<config>/<split>-*.parquet`` (the dataset builder's layout)."""
    from datasets import Audio, load_dataset

    root, folder = dataset_root(dataset_path, config_name)
    files = sorted(folder.glob(f"{split}-*.parquet")) or sorted(folder.glob(f"{split}.parquet"))
    if not files:
        raise M2MVTrainingError(
            f"{folder}: no Parquet files for split {split!r} of config {config_name!r} (expected "
            f"{config_name}/{split}-*.parquet under the dataset root {root})")
    ds = load_dataset("parquet", data_files={split: [str(f) for f in files]}, split=split)
    if "audio" in ds.column_names and isinstance(ds.features["audio"], Audio) and ds.features["audio"].decode:
        ds = ds.cast_column("audio", Audio(decode=False))  # the processor decodes with soundfile
    return ds


def needed_columns(script_args: M2MVScriptArguments, config_name: str, with_audio: bool) -> dict[str, str]:
    """Column -> why a stage needs it."""
    need = {"song_id": "identifies the song (precomputed embeddings, errors)",
            schema.TARGET_COLUMN[config_name]: "the training target"}
    if with_audio:
        need["audio"] = "the audio (no valid precomputed embeddings)"
    if config_name == schema.MV_DESCRIPTION:
        for column, flag in (("genre_tags", "use_genre_tags"), ("mv_type", "use_mv_type"),
                             ("lyrics_understanding", "use_lyrics_understanding")):
            if getattr(script_args, flag):
                need[column] = f"conditioning ({flag}: true)"
    return need


def load_datasets(script_args: M2MVScriptArguments):
    """``(train, eval or None, config_name)``; checks that the columns the stage needs are there."""
    config_name = script_args.dataset_config or STAGE_DATASET_CONFIG[script_args.stage]
    splits = [script_args.train_split] + ([script_args.eval_split] if script_args.eval_split else [])
    loaded = []
    for split, limit in zip(splits, (script_args.max_train_samples, script_args.max_eval_samples)):
        ds = load_split(script_args.dataset_path, config_name, split)
        need = needed_columns(script_args, config_name, with_audio=False)
        missing = [c for c in need if c not in ds.column_names]
        if missing:
            raise M2MVTrainingError(
                f"{script_args.dataset_path} ({config_name}/{split}): missing column(s) "
                + "; ".join(f"{c!r}: {need[c]}" for c in missing)
                + f". Stage {script_args.stage} needs the {config_name!r} config of m2mv/schema.py"
                + (" (or switch the conditioning off)" if config_name == schema.MV_DESCRIPTION else ""))
        if len(ds) == 0:
            raise M2MVTrainingError(f"{script_args.dataset_path} ({config_name}/{split}): the split is empty")
        if limit:
            ds = ds.select(range(min(limit, len(ds))))
        loaded.append(ds)
    return loaded[0], (loaded[1] if len(loaded) > 1 else None), config_name


# ----------------------------------------------------------------------------------------------------------------
# Precomputed encoder embeddings
# ----------------------------------------------------------------------------------------------------------------


def audio_encoder_hash(model) -> str:
    """The dataset builder's ``encoder_hash`` (``dataset_scripts/embeddings.py``): sha256 over the audio encoder's
    parameter names, shapes and float32 values, so independent of the dtype the model was loaded in."""
    return embeddings.encoder_hash(model)


def locate_audio_embeds(script_args: M2MVScriptArguments, config_name: str, model) -> Path | None:
    """The embeddings file to use for ``model``, or None (``off``, or ``auto`` and none were computed).

    ``auto`` looks where the dataset builder writes them: ``<dataset root>/embeddings/<encoder hash[:16]>.parquet``.
    Embeddings that exist there but not for this model's encoder are stale: an error, not a silent fallback.
    """
    if script_args.audio_embeds == "off":
        return None
    expected = audio_encoder_hash(model)
    if script_args.audio_embeds == "auto":
        root, _ = dataset_root(script_args.dataset_path, config_name)
        folder = root / embeddings.EMBEDDINGS_DIR
        found = sorted(folder.glob("*.parquet")) if folder.is_dir() else []
        if not found:
            return None
        path = embeddings.embeddings_path(root, expected)
        if not path.is_file():
            raise StaleEmbeddingsError(
                f"precomputed audio embeddings in {folder} are stale: they were made by other audio encoder(s) "
                f"({', '.join(f.stem for f in found)}), the model's encoder is {expected[:16]}. Recompute them "
                f"(python -m m2mv.training embed --model MODEL --dataset {root}) or set audio_embeds: off")
        return path
    path = Path(script_args.audio_embeds)
    if path.is_dir():  # an embeddings folder: this encoder's file in it
        path = path / f"{expected[:16]}.parquet"
        if not path.is_file():
            found = sorted(p.name for p in path.parent.glob("*.parquet"))
            raise StaleEmbeddingsError(f"audio_embeds {path.parent}: no embeddings for the model's audio encoder "
                                       f"{expected[:16]} (found {found})")
    return path


class AudioEmbedsTable:
    """Precomputed per-clip embeddings (song_id -> (clips, dim) float32), memory-mapped through ``datasets``
    (the whole table is not loaded into every training process)."""

    def __init__(self, path: Path):
        from datasets import load_dataset

        ds = load_dataset("parquet", data_files={"embeds": [str(path)]}, split="embeds")
        missing = [c for c in schema.EMBEDDINGS_COLUMNS if c not in ds.column_names]
        if missing:
            raise StaleEmbeddingsError(f"{path}: embedding rows lack column(s) {missing} "
                                       f"(expected {list(schema.EMBEDDINGS_COLUMNS)})")
        self.path = path
        self.hashes = set(ds.unique("encoder_hash"))
        ids = ds["song_id"]
        self.index = {song_id: i for i, song_id in enumerate(ids)}
        if len(self.index) != len(ids):
            raise StaleEmbeddingsError(f"{path}: duplicate song_id rows")
        self.table = ds.select_columns(["audio_embeds"]).with_format("numpy")

    def validate(self, model, song_ids: Sequence[str]) -> None:
        """Refuse embeddings of another encoder, of another shape, or that miss songs of the data."""
        expected = audio_encoder_hash(model)
        if self.hashes != {expected}:
            found = ", ".join(sorted(h[:16] for h in self.hashes))
            raise StaleEmbeddingsError(
                f"precomputed audio embeddings in {self.path} are stale: they were made by audio encoder {found}, "
                f"the model's encoder is {expected[:16]}. Recompute them (python -m m2mv.training embed --model "
                "MODEL --dataset DATASET) or set audio_embeds: off to encode the audio")
        config = model.config.audio_config
        shape = tuple(np.asarray(self.table[0]["audio_embeds"]).shape)
        if shape != (config.clips_per_audio, config.output_dim):
            raise StaleEmbeddingsError(f"{self.path}: embeddings have shape {shape}, the model expects "
                                       f"{(config.clips_per_audio, config.output_dim)}")
        missing = sorted({s for s in song_ids if s not in self.index})
        if missing:
            raise StaleEmbeddingsError(
                f"{self.path}: {len(missing)} song(s) of the dataset have no precomputed embedding (e.g. "
                f"{missing[:3]}); recompute them or set audio_embeds: off")

    def get(self, song_ids: Sequence[str]) -> np.ndarray:
        rows = self.table[[self.index[s] for s in song_ids]]["audio_embeds"]
        return np.asarray(rows, dtype=np.float32)


def precompute_audio_embeds(model_path: str | Path, dataset_path: str | Path) -> Path:
    """Encode every song of a dataset once with a checkpoint's audio encoder, beside the dataset
    (``dataset_scripts.embeddings.compute_embeddings``: ``<dataset>/embeddings/<encoder hash[:16]>.parquet``)."""
    return embeddings.compute_embeddings(resolve_model_path(str(model_path)), dataset_path, progress=False)


# ----------------------------------------------------------------------------------------------------------------
# The collator
# ----------------------------------------------------------------------------------------------------------------


def target_frame_boundaries(description: str | None) -> list[tuple[float, float]] | None:
    """The frame spans of a target MV description when they are NOT the fixed 2-s grid over its length (the last
    frame's end), compared to the timestamps' 10-ms precision; None for fixed-grid or frameless targets."""
    from m2mv.beats import BOUNDARY_TOLERANCE_S
    from processing_m2mv import frame_boundaries, parse_mv_description

    frames = parse_mv_description(description).frames if isinstance(description, str) else []
    if not frames:
        return None
    spans = [(frame.start, frame.end) for frame in frames]
    grid = frame_boundaries(spans[-1][1])
    if len(grid) == len(spans) and all(abs(a - b) <= BOUNDARY_TOLERANCE_S + 1e-9
                                       for span, fixed in zip(spans, grid) for a, b in zip(span, fixed)):
        return None
    return spans


@dataclass
class M2MVDataCollator:
    """Dataset rows -> model inputs, through the checkpoint's processor.

    Prompt: the processor's template with the task's instruction and the conditioning the switches allow (fields
    missing or empty in a row are left out); with ``prompt_frames``, a target whose frames are not the fixed 2-s
    grid (:func:`target_frame_boundaries`) also gets them listed in the prompt; labels: -100 everywhere but the
    answer (and its ``\\n###`` stop).
    Audio: precomputed embeddings from ``audio_embeds`` when given, else the row's encoded audio. ``zero_audio``
    replaces every input's features by zeros: the model then sees ``zero_audio_embeds``, its own encoder's output
    for all-zero features (computed once), which is exactly what zeroed features give.
    """

    processor: Any
    config_name: str
    max_length: int | None = None
    use_genre_tags: bool = True
    use_mv_type: bool = True
    use_lyrics_understanding: bool = True
    prompt_frames: bool = True
    audio_embeds: AudioEmbedsTable | None = None
    zero_audio_embeds: np.ndarray | None = None

    def conditioning(self, row: dict) -> dict:
        if self.config_name != schema.MV_DESCRIPTION:
            return {}
        out = {}
        tags = row.get("genre_tags")
        if self.use_genre_tags and tags:
            out["genre_tags"] = [t for t in tags if t and t.strip()] or None
        if self.use_mv_type and row.get("mv_type"):
            out["mv_type"] = row["mv_type"]
        lyrics = row.get("lyrics_understanding")
        if self.use_lyrics_understanding and lyrics and lyrics.strip():
            out["lyrics_understanding"] = lyrics
        return out

    def prompt(self, row: dict) -> str:
        conditioning = self.conditioning(row)
        if self.prompt_frames and self.config_name == schema.MV_DESCRIPTION:
            boundaries = target_frame_boundaries(row.get(schema.TARGET_COLUMN[self.config_name]))
            if boundaries is not None:
                conditioning["frame_boundaries"] = boundaries
        return self.processor.build_prompt(schema.TASK[self.config_name], **conditioning)

    def __call__(self, rows: list[dict]) -> dict:
        prompts = [self.prompt(row) for row in rows]
        answers = [row[schema.TARGET_COLUMN[self.config_name]] for row in rows]
        common = dict(text=prompts, answers=answers, max_length=self.max_length, padding_side="right")
        if self.zero_audio_embeds is not None:
            embeds = np.repeat(self.zero_audio_embeds[None], len(rows), axis=0)
            return dict(self.processor(audio_embeds=embeds, **common))
        if self.audio_embeds is not None:
            embeds = self.audio_embeds.get([row["song_id"] for row in rows])
            if not np.isfinite(embeds).all():
                songs = [row["song_id"] for row in rows]
                raise StaleEmbeddingsError(f"non-finite precomputed embeddings for songs {songs}")
            return dict(self.processor(audio_embeds=embeds, **common))
        return dict(self.processor(audio=[row["audio"] for row in rows], **common))


def make_collator(model, processor, script_args: M2MVScriptArguments, training_args, config_name: str,
                  datasets: Sequence[Any]) -> M2MVDataCollator:
    """The collator, after checking every row's prompt and (if used) the precomputed embeddings against the model.

    Building all prompts up front turns a bad conditioning value (an unknown MV type...) or a prompt longer than
    ``max_length`` into an error before the first step, and counts the answers ``max_length`` will truncate.
    """
    embeds_path = None if script_args.zero_audio else locate_audio_embeds(script_args, config_name, model)
    collator = M2MVDataCollator(processor, config_name, training_args.max_length, script_args.use_genre_tags,
                                script_args.use_mv_type, script_args.use_lyrics_understanding,
                                script_args.prompt_frames)
    song_ids: list[str] = []
    truncated = total = 0
    for ds in datasets:
        if ds is None:
            continue
        if embeds_path is None and not script_args.zero_audio and "audio" not in ds.column_names:
            raise M2MVTrainingError(
                f"{script_args.dataset_path}: no 'audio' column and no precomputed embeddings "
                f"({'audio_embeds: off' if script_args.audio_embeds == 'off' else 'none found'}): nothing to train on")
        columns = [c for c in ds.column_names if c != "audio"]
        stats = measure_lengths(processor, ds.select_columns(columns), collator)
        truncated += stats["truncated"]
        total += stats["rows"]
        song_ids.extend(ds["song_id"])
    if truncated:
        logger.warning("max_length %s truncates %d of %d answers; measure with `python -m m2mv.training lengths`",
                       training_args.max_length, truncated, total)
    if script_args.zero_audio:
        features = torch.zeros(1, model.config.audio_config.clips_per_audio, model.config.audio_config.num_mel_bins,
                               model.config.audio_config.target_length)
        param = next(model.audio_tower.parameters())
        with torch.no_grad():
            was_training = model.audio_tower.training
            model.audio_tower.eval()
            zero = model.audio_tower(features.to(param.device, param.dtype)).pooler_output[0]
            model.audio_tower.train(was_training)
        collator.zero_audio_embeds = zero.float().cpu().numpy()
    elif embeds_path is not None:
        table = AudioEmbedsTable(embeds_path)
        table.validate(model, song_ids)
        collator.audio_embeds = table
        logger.info("using precomputed audio embeddings from %s", embeds_path)
    else:
        logger.info("no precomputed audio embeddings: encoding the audio at every step")
    return collator


def measure_lengths(processor, ds, collator: M2MVDataCollator) -> dict:
    """Token lengths of prompt, answer and both (with the audio placeholders expanded), and how many answers
    ``collator.max_length`` truncates; raises naming the row when a prompt cannot be built or is too long."""
    tokenizer = processor.tokenizer
    target = schema.TARGET_COLUMN[collator.config_name]
    prompts, answers = [], []
    for index, row in enumerate(ds):
        try:
            prompt = collator.prompt(row)
        except ValueError as err:
            raise M2MVTrainingError(f"row {index} (song {row.get('song_id')!r}): {err}") from err
        answer = row[target]
        if not isinstance(answer, str) or not answer.strip():
            raise M2MVTrainingError(f"row {index} (song {row.get('song_id')!r}): empty {target!r}")
        prompts.append(prompt.replace(processor.audio_token, processor.audio_token * processor.num_audio_tokens))
        answers.append(processor.build_answer(answer))
    prompt_len = np.array([len(ids) for ids in tokenizer(prompts, add_special_tokens=True)["input_ids"]])
    answer_len = np.array([len(ids) for ids in tokenizer(answers, add_special_tokens=False)["input_ids"]])
    total = prompt_len + answer_len
    limit = collator.max_length
    if limit is not None and (prompt_len >= limit).any():
        index = int(np.argmax(prompt_len >= limit))
        raise M2MVTrainingError(f"row {index}: the prompt alone has {prompt_len[index]} tokens, max_length is {limit}")

    def pct(values, q):
        return int(np.percentile(values, q)) if len(values) else 0

    return {"rows": len(total), "truncated": int((total > limit).sum()) if limit else 0,
            "prompt": {"max": int(prompt_len.max(initial=0)), "p50": pct(prompt_len, 50)},
            "answer": {"max": int(answer_len.max(initial=0)), "p50": pct(answer_len, 50), "p99": pct(answer_len, 99)},
            "total": {"max": int(total.max(initial=0)), "p50": pct(total, 50), "p99": pct(total, 99)}}


# ----------------------------------------------------------------------------------------------------------------
# Saving: LoRA merged into a plain m2mv checkpoint
# ----------------------------------------------------------------------------------------------------------------


def merge_peft_state_dict(state: dict[str, torch.Tensor], peft_config, adapter: str = "default") -> dict:
    """A PEFT model's full state dict -> the plain model's, with each LoRA merged (W + scaling * B @ A) and each
    ``modules_to_save`` copy in place of its original. Works on any state dict (DDP, FSDP full state, ZeRO-2)."""
    if getattr(peft_config, "rank_pattern", None) or getattr(peft_config, "alpha_pattern", None):
        raise M2MVTrainingError("merging LoRA with rank_pattern/alpha_pattern is not supported")
    r, alpha = peft_config.r, peft_config.lora_alpha
    scaling = alpha / (r ** 0.5 if peft_config.use_rslora else r)
    plain: dict[str, torch.Tensor] = {}
    lora: dict[str, dict[str, torch.Tensor]] = {}
    for key, value in state.items():
        key = key.removeprefix("base_model.model.")
        match = re.fullmatch(rf"(.+)\.lora_([AB])\.{re.escape(adapter)}\.weight", key)
        if match:
            lora.setdefault(match.group(1), {})[match.group(2)] = value
            continue
        if ".lora_" in key:
            raise M2MVTrainingError(f"cannot merge adapter weight {key}")
        if ".original_module." in key:
            continue
        key = key.replace(f".modules_to_save.{adapter}.", ".").replace(".base_layer.", ".")
        plain[key] = value
    for module, pair in lora.items():
        weight = plain[f"{module}.weight"]
        delta = (pair["B"].float() @ pair["A"].float()) * scaling
        plain[f"{module}.weight"] = (weight.float() + delta.to(weight.device)).to(weight.dtype)
    return plain


def _card_yaml_value(text: str, key: str) -> str | None:
    match = re.search(rf"^{key}:\s*(\S.*)$", text.split("\n---", 1)[0], flags=re.M)
    return match.group(1).strip() if match else None


def _random_parts(card: str) -> list[str]:
    match = re.search(r"\*\*Random weights:\*\*\s*([^.]+)\.", card)
    return [p.strip() for p in match.group(1).split(",")] if match else []


def _fmt_loss(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"


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
    keys = ("learning_rate", "lr_scheduler_type", "warmup_steps", "optim", "weight_decay",
            "adam_beta1", "adam_beta2", "max_grad_norm", "per_device_train_batch_size",
            "gradient_accumulation_steps", "num_train_epochs", "max_steps", "max_length", "seed", "bf16", "fp16",
            "activation_checkpointing")
    config = {"stage": script_args.stage, **{k: getattr(training_args, k) for k in keys}}
    config["dataset_config"] = script_args.dataset_config or STAGE_DATASET_CONFIG[script_args.stage]
    config["global_batch_size"] = (training_args.per_device_train_batch_size
                                   * training_args.gradient_accumulation_steps * world_size)
    config["processes"] = world_size
    for name in ("train_split", "eval_split", "use_genre_tags", "use_mv_type",
                 "use_lyrics_understanding", "prompt_frames", "zero_audio", "max_train_samples", "audio_embeds"):
        config[name] = getattr(script_args, name)
    if model_args.use_peft:
        config["lora"] = {"r": model_args.lora_r, "alpha": model_args.lora_alpha, "dropout": model_args.lora_dropout,
                          "target_modules": list(model_args.lora_target_modules or
                                                 ["q_proj", "k_proj", "v_proj", "o_proj"]),
                          "modules_to_save": ["multi_modal_projector"], "merged": True}
    config["model_dtype"] = model_args.dtype
    return {k: (v.value if hasattr(v, "value") else v) for k, v in config.items()}


def model_card(record: dict) -> str:
    """The output's README.md: YAML metadata (base model, datasets, tags, library, license, the training config and
    results as numbers) and a short text that says what was trained and which weights are random."""
    import yaml

    stage, config, results = record["stage"], record["config"], record["results"]
    lora = config.get("lora")
    tags = ["m2mv", "music", "music-video", "audio-text-to-text", "trl", "sft", f"m2mv-stage{stage}"]
    tags += ["lora"] if lora else []
    tags += ["tiny-random"] if record["tiny"] else []
    tags += ["random-weights"] if record["random_parts"] else []
    meta = {
        "base_model": record["base_model"],
        "datasets": [record["dataset"]],
        "library_name": "transformers",
        "license": record["license"],
        "pipeline_tag": "audio-text-to-text",
        "tags": tags,
        "m2mv_training": {"stage": stage, "config": config, "lineage": record["lineage"],
                          "results": {k: v for k, v in results.items() if not k.endswith("_curve")}},
    }
    header = yaml.safe_dump(meta, sort_keys=False, allow_unicode=True, width=100)
    warning = ""
    if record["tiny"] or record["random_parts"]:
        warning = "\n> **Random weights:** " + (", ".join(record["random_parts"]) or "none") + "."
        if record["tiny"]:
            warning += " Trained from a **tiny random** checkpoint (toy sizes):"
        warning += " for tests and demos only; it does not describe music meaningfully.\n"
    if lora:
        trained = (f"the adaptor and a LoRA (r={lora['r']}, alpha={lora['alpha']}) on the language model's "
                   f"{'/'.join(lora['target_modules'])}, merged into the weights (the adapter alone is in "
                   f"`{ADAPTER_FOLDER}/`)")
    else:
        trained = "the adaptor only (audio encoder and language model frozen)"
    return f"""---
{header}---
# {record["name"]}
{warning}
m2mv stage {stage} ({"music captioning" if stage == 1 else "music-video description"}), trained with TRL's
`SFTTrainer` from `{record["base_model"]}` on `{record["dataset"]}` (config `{config["dataset_config"]}`, split
`{config["train_split"]}`). Trained: {trained}.

| | loss |
|---|---|
| final training loss (last logged step) | {_fmt_loss(results["final_train_loss"])} |
| mean training loss | {_fmt_loss(results["mean_train_loss"])} |
| held-out loss before training | {_fmt_loss(results["initial_eval_loss"])} |
| held-out loss after training (split `{config["eval_split"]}`) | {_fmt_loss(results["final_eval_loss"])} |

Losses are token-mean cross-entropy over the answer tokens; "n/a" where the run did not measure it. The full
training configuration is in this card's metadata (`m2mv_training`) and in `{STAGE_RECORD}`.

```python
from transformers import AutoModel, AutoProcessor
model = AutoModel.from_pretrained("<this folder or repo>", trust_remote_code=True)
processor = AutoProcessor.from_pretrained("<this folder or repo>", trust_remote_code=True)
```
"""


def _copy_remote_code(source: Path, staging: Path, model) -> None:
    """The three remote-code files, from the input checkpoint (else from the loaded classes' module folder)."""
    import inspect

    module_dir = Path(inspect.getfile(type(model))).parent
    for name in REMOTE_CODE_FILES:
        for folder in (source, module_dir):
            if (folder / name).is_file():
                shutil.copyfile(folder / name, staging / name)
                break
        else:
            raise M2MVTrainingError(f"remote code file {name} not found in {source} or {module_dir}")


def _move_into(staging: Path, out: Path) -> None:
    """Move the staged files into ``out``; ``config.json`` last, so a folder that loads is a complete one."""
    entries = sorted(staging.iterdir(), key=lambda p: (p.name == "config.json", p.name == STAGE_RECORD, p.name))
    for entry in entries:
        target = out / entry.name
        if target.is_dir() and not target.is_symlink():
            shutil.rmtree(target)
        os.replace(entry, target)
    staging.rmdir()


# ----------------------------------------------------------------------------------------------------------------
# The trainer
# ----------------------------------------------------------------------------------------------------------------


def _trainer_class():
    from trl import SFTTrainer

    class M2MVSFTTrainer(SFTTrainer):
        """``SFTTrainer`` + atomic checkpoints + a Hub-ready final ``save_model()`` (LoRA merged) + m2mv's card."""

        def __init__(self, *args, m2mv_args: M2MVScriptArguments, model_args, source_dir: Path, **kwargs):
            self.m2mv_args, self.m2mv_model_args, self.m2mv_source = m2mv_args, model_args, Path(source_dir)
            self._final_saved_step = None
            super().__init__(*args, **kwargs)
            if self.is_world_process_zero():
                shutil.rmtree(Path(self.args.output_dir) / STAGING_FOLDER, ignore_errors=True)

        # -- checkpoints: written into a staging folder, renamed into place when complete --------------------
        def _save_checkpoint(self, model, trial):
            from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR, rotate_checkpoints

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

        # -- the final model -----------------------------------------------------------------------------------
        def save_model(self, output_dir: str | None = None, _internal_call: bool = False):
            if output_dir is not None and Path(output_dir).resolve() != Path(self.args.output_dir).resolve():
                return super().save_model(output_dir, _internal_call)  # a checkpoint: the trainer's own format
            if self._final_saved_step == self.state.global_step:
                return None
            self.save_hub_ready(Path(self.args.output_dir))
            self._final_saved_step = self.state.global_step
            return None

        def _source_card(self) -> str:
            card = self.m2mv_source / "README.md"
            return card.read_text(encoding="utf-8") if card.is_file() else ""

        def m2mv_record(self) -> dict:
            """What the card and ``m2mv_training.json`` say: stage, base model, dataset, config, losses, lineage."""
            source_record = _read_record(self.m2mv_source) or {}
            source_card = self._source_card()
            args = self.m2mv_args
            base = (args.card_base_model or source_record.get("base_model")
                    or getattr(self.model.config, "_name_or_path", None) or self.m2mv_source.name)
            base = Path(base).name if os.path.isabs(str(base)) or os.path.isdir(str(base)) else base
            if "random_parts" in source_record:
                random_parts = list(source_record["random_parts"])
            else:
                random_parts = [p for p in _random_parts(source_card) if p != "adaptor"]  # the adaptor trains now
            lineage = list(source_record.get("lineage", [])) + ([{
                "stage": source_record["stage"], "dataset": source_record.get("dataset"),
                "results": {k: v for k, v in source_record.get("results", {}).items() if not k.endswith("_curve")}}]
                if source_record else [])
            return {
                "name": Path(self.args.hub_model_id or self.args.output_dir).name,
                "stage": args.stage,
                "base_model": str(base),
                "dataset": args.card_dataset or Path(args.dataset_path).resolve().name,
                "source": str(self.m2mv_source),
                "license": (args.card_license or source_record.get("license")
                            or _card_yaml_value(source_card, "license") or "other"),
                "tiny": bool(source_record.get("tiny", False) or re.search(r"tiny", source_card.split("\n---", 2)[-1]
                                                                           if source_card else "")),
                "random_parts": random_parts,
                "config": training_config_summary(args, self.args, self.m2mv_model_args,
                                                  self.accelerator.num_processes),
                "results": training_results(self.state.log_history),
                "lineage": lineage,
            }

        def create_model_card(self, model_name: str | None = None, dataset_name: str | None = None,
                              tags: str | list[str] | None = None):
            if not self.is_world_process_zero():
                return
            out = Path(self.args.output_dir)
            out.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=".README.", dir=out)
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                handle.write(model_card(self.m2mv_record()))
            os.replace(tmp, out / "README.md")

        def save_hub_ready(self, out: Path) -> None:
            """LoRA merged into a plain m2mv checkpoint + processor + remote code + card + record (+ adapter/)."""
            from peft import PeftModel

            state = self.accelerator.get_state_dict(self.model)  # full state; collective under FSDP/ZeRO-3
            if self.is_world_process_zero():
                unwrapped = self.accelerator.unwrap_model(self.model)
                is_peft = isinstance(unwrapped, PeftModel)
                base = unwrapped.get_base_model() if is_peft else unwrapped
                state = {k: v.detach().cpu() for k, v in state.items()}
                plain = merge_peft_state_dict(state, unwrapped.peft_config["default"]) if is_peft else dict(state)
                config = copy.deepcopy(base.config)
                from m2mv.convert import AUTO_MAP

                config.auto_map = dict(AUTO_MAP)
                config.use_cache = True
                with torch.device("meta"):
                    fresh = type(base)(config)
                result = fresh.load_state_dict(plain, strict=False, assign=True)
                tied = {"lm_head.weight"} if config.tie_word_embeddings else set()
                if set(result.missing_keys) - tied or result.unexpected_keys:
                    raise M2MVTrainingError(f"saving failed: missing {result.missing_keys}, "
                                            f"unexpected {result.unexpected_keys}")
                fresh.tie_weights()
                fresh.generation_config = copy.deepcopy(base.generation_config)
                fresh.config.name_or_path = Path(out).name
                out.mkdir(parents=True, exist_ok=True)
                staging = Path(tempfile.mkdtemp(prefix=".final.", dir=out))
                try:
                    fresh.save_pretrained(staging)
                    self.processing_class.save_pretrained(staging)
                    _copy_remote_code(self.m2mv_source, staging, base)
                    if is_peft and self.m2mv_args.save_adapter:
                        unwrapped.peft_config["default"].base_model_name_or_path = str(self.m2mv_source)
                        unwrapped.save_pretrained(staging / ADAPTER_FOLDER, state_dict=state)
                    record = self.m2mv_record()
                    (staging / "README.md").write_text(model_card(record), encoding="utf-8")
                    (staging / STAGE_RECORD).write_text(json.dumps(record, indent=2, default=str) + "\n",
                                                        encoding="utf-8")
                    _move_into(staging, out)
                except BaseException:
                    shutil.rmtree(staging, ignore_errors=True)
                    raise
                logger.info("saved the Hub-ready model to %s", out)
            self.accelerator.wait_for_everyone()

    return M2MVSFTTrainer


def __getattr__(name: str):  # M2MVSFTTrainer imports trl lazily
    if name == "M2MVSFTTrainer":
        cls = _trainer_class()
        globals()[name] = cls
        return cls
    raise AttributeError(name)


def prepare_training_args(training_args) -> None:
    """What the collator needs from ``SFTConfig`` (keep the raw columns, skip TRL's own tokenisation), and
    ``--push_to_hub`` pushing only the finished, merged model (``hub_strategy: end``): the trainer's other
    strategies copy checkpoint files (a bare adapter in stage 2) over the output folder while training."""
    training_args.remove_unused_columns = False
    training_args.dataset_kwargs = {**(training_args.dataset_kwargs or {}), "skip_prepare_dataset": True}
    if training_args.push_to_hub and str(getattr(training_args.hub_strategy, "value", training_args.hub_strategy)) \
            != "end":
        logger.warning("push_to_hub: pushing the Hub-ready model at the end of training only (hub_strategy: end)")
        from transformers.trainer_utils import HubStrategy

        training_args.hub_strategy = HubStrategy.END


# ----------------------------------------------------------------------------------------------------------------
# A toy dataset whose targets depend on the audio
# ----------------------------------------------------------------------------------------------------------------

TOY_TEXTURE = ("tonal", "noisy")  # a plucked harmonic tone / bursts of noise: what the captions name
TOY_TEMPO = {"slow": (1.0, 1.6), "fast": (4.0, 6.0)}  # note onsets per second
TOY_GENRES = ["rock", "pop", "jazz", "ambient", "folk"]
TOY_LYRICS = ["A song about a long night drive.", "The singer remembers a summer by the sea."]


def toy_song(rng: np.random.Generator, texture: str, tempo: str, seconds: float = 6.0,
             rate: int = 16000) -> np.ndarray:
    """Notes at a slow or fast rate, each a plucked harmonic tone or a burst of noise."""
    t = np.arange(int(seconds * rate)) / rate
    if texture == "tonal":
        f0 = rng.uniform(180.0, 1000.0)
        source = sum(np.sin(2 * np.pi * f0 * h * t + rng.uniform(0, 2 * np.pi)) / h for h in (1, 2, 3))
    else:
        source = rng.normal(size=t.size)
    onsets = rng.uniform(*TOY_TEMPO[tempo])
    envelope = np.exp(-((t * onsets + rng.uniform()) % 1.0) * 6.0)
    y = 0.3 * source * envelope + 0.003 * rng.normal(size=t.size)
    return (y / max(1.0, np.abs(y).max())).astype(np.float32)


def toy_rows(count: int, seed: int, seconds: float = 6.0) -> list[dict]:
    """Song records: id, artist, FLAC bytes, texture, tempo, conditioning; balanced over texture x tempo."""
    import soundfile as sf

    from m2mv.taxonomy import load_mv_types

    rng = np.random.default_rng(seed)
    mv_types = load_mv_types()
    rows = []
    for i in range(count):
        texture = TOY_TEXTURE[i % 2]
        tempo = ("slow", "fast")[(i // 2) % 2]
        y = toy_song(rng, texture, tempo, seconds)
        buffer = io.BytesIO()
        sf.write(buffer, y, 16000, format="FLAC", subtype="PCM_16")
        song_id = f"toy-{seed}-{i:04d}"
        rows.append({"song_id": song_id, "artist": f"toy-artist-{i % 5}",
                     "audio": {"bytes": buffer.getvalue(), "path": f"{song_id}.flac"},
                     "texture": texture, "tempo": tempo,
                     "genre_tags": [str(g) for g in rng.choice(TOY_GENRES, size=2, replace=False)],
                     "mv_type": str(rng.choice(mv_types[:4])),
                     "lyrics_understanding": TOY_LYRICS[i % 3] if i % 3 < 2 else None})
    return rows


def toy_caption(row: dict) -> str:
    return f"A {row['tempo']} tune of {row['texture']} sounds."


def toy_description(row: dict, seconds: float = 6.0) -> str:
    from processing_m2mv import format_mv_description, frame_boundaries

    light = {"tonal": "soft blue", "noisy": "flickering strobe"}[row["texture"]]
    motion = {"slow": "A slow pan across the stage", "fast": "Quick cuts between the dancers"}[row["tempo"]]
    overview = f"A {row['mv_type'].lower()} video in {light} light, cut to a {row['tempo']} beat."
    frames = [(start, end, f"{motion} in {light} light.") for start, end in frame_boundaries(seconds)]
    return format_mv_description(overview, frames)


def write_toy_dataset(out_dir: str | Path, n_train: int = 32, n_eval: int = 16, seconds: float = 6.0,
                      seed: int = 0) -> Path:
    """Both configs, splits ``train``/``validation``, in the dataset builder's layout (``<config>/<split>-*.parquet``).

    NOT music: synthetic notes whose texture (tonal/noisy) and rate (slow/fast) decide the caption and parts of
    the MV description, so a model that uses the audio reaches a lower held-out loss than one that cannot.
    """
    from dataset_scripts.hf_dataset import write_parquet_shard

    out = Path(out_dir)
    for split, count, split_seed in (("train", n_train, seed), ("validation", n_eval, seed + 1000)):
        rows = toy_rows(count, split_seed, seconds)
        for config in schema.COLUMNS:
            records = []
            for row in rows:
                record = {"song_id": row["song_id"], "artist": row["artist"], "audio": row["audio"]}
                if config == schema.CAPTIONING:
                    record.update(caption=toy_caption(row), caption_source="rendered_from_tags")
                else:
                    record.update(genre_tags=row["genre_tags"], mv_type=row["mv_type"],
                                  lyrics_understanding=row["lyrics_understanding"],
                                  description=toy_description(row, seconds))
                records.append(record)
            folder = out / config
            folder.mkdir(parents=True, exist_ok=True)
            write_parquet_shard(records, config, folder / f"{split}-00000-of-00001.parquet")
    (out / "README.md").write_text(
        "# m2mv toy dataset\n\nSynthetic tones (NOT music, NOT Music4All) written by `m2mv.training.write_toy_dataset`"
        " for tests and smoke runs: the texture and note rate of each clip decide its caption and parts of its MV "
        "description.\n", encoding="utf-8")
    return out


def dataset_texts(dataset_path: str | Path, split: str = "train") -> list[tuple[str, str]]:
    """``(prompt with all conditioning, answer)`` pairs of every config present in a dataset."""
    from m2mv.convert import build_processor, make_tiny_tokenizer

    processor = build_processor(make_tiny_tokenizer(), 1)
    texts = []
    for config in schema.COLUMNS:
        _, folder = dataset_root(dataset_path, config)
        if not list(folder.glob(f"{split}-*.parquet")):
            continue
        ds = load_split(dataset_path, config, split)
        collator = M2MVDataCollator(processor, config)
        for row in ds.select_columns([c for c in ds.column_names if c != "audio"]):
            texts.append((collator.prompt(row), processor.build_answer(row[schema.TARGET_COLUMN[config]])))
    if not texts:
        raise M2MVTrainingError(f"{dataset_path}: no {split!r} rows in any config")
    return texts


def build_text_pretrained_tiny_checkpoint(out_dir: str | Path, dataset_path: str | Path, steps: int = 120,
                                          seed: int = 0, batch_size: int = 8, lr: float = 3e-3,
                                          encoder_init_std: float = 0.1) -> Path:
    """A tiny m2mv checkpoint whose toy Llama was first trained (text only, ``steps`` AdamW steps) on the target
    texts of a dataset's train split; random tiny audio encoder; zero adaptor.
    ``encoder_init_std`` (default 0.1) is the std of the tiny encoder's random weights: at ImageBind's 0.02 a tiny
    random encoder maps all inputs to nearly one embedding (a tone and a noise burst at cosine 0.9, and every input
    shares one dominant direction), which a linear adaptor needs thousands of steps to see past; at 0.1 different
    sounds get clearly different embeddings (tone vs noise at cosine ~0.1), as a trained encoder gives them.

    The tiny analogue of the real setup, where a pretrained LM (Vicuna) meets a fresh adaptor: the LM knows the
    answers' language but not which answer fits which audio, so what stage 1 and stage 2 learn from the audio shows
    in the held-out loss. (A tiny LM with random weights barely reacts to its input: the adaptor alone cannot move
    its loss.)
    """
    from transformers import LlamaForCausalLM

    from m2mv.convert import (AUDIO_TOKEN, assemble_model, build_processor, make_tiny_tokenizer, save_checkpoint,
                              tiny_audio_config, tiny_text_config)

    texts = dataset_texts(dataset_path)
    tokenizer = make_tiny_tokenizer()
    torch.manual_seed(seed)
    lm = LlamaForCausalLM(tiny_text_config(len(tokenizer)))
    optimizer = torch.optim.AdamW(lm.parameters(), lr=lr, weight_decay=0.0)
    generator = np.random.default_rng(seed)
    lm.train()
    audio_id = tokenizer.convert_tokens_to_ids(AUDIO_TOKEN)
    for _ in range(steps):
        batch = [texts[i] for i in generator.choice(len(texts), size=min(batch_size, len(texts)), replace=False)]
        enc = tokenizer([p + a for p, a in batch], return_tensors="pt", padding=True)
        answers = tokenizer([a for _, a in batch], return_tensors="pt", padding=True, add_special_tokens=False)
        embed = lm.get_input_embeddings()
        mask = answers["attention_mask"].unsqueeze(-1).float()
        summary = (embed(answers["input_ids"]) * mask).sum(1) / mask.sum(1)
        inputs = embed(enc["input_ids"])
        slot = (enc["input_ids"] == audio_id).unsqueeze(-1)
        inputs = torch.where(slot, summary[:, None, :].expand_as(inputs), inputs)
        labels = enc["input_ids"].masked_fill(enc["attention_mask"] == 0, -100).masked_fill(slot[..., 0], -100)
        loss = lm(inputs_embeds=inputs, attention_mask=enc["attention_mask"], labels=labels).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    loss = float(loss.detach())
    lm.eval()
    audio_config = tiny_audio_config(initializer_range=encoder_init_std)
    model = assemble_model(lm, tokenizer, audio_config, None, 1, seed, zero_adaptor=True)
    name = Path(out_dir).name
    model.config.name_or_path = name
    card = f"""---
library_name: transformers
license: other
pipeline_tag: audio-text-to-text
tags:
- m2mv
- tiny-random
---
# {name}

> **Random weights:** audio encoder, adaptor. This checkpoint is for tests and demos; it does not describe music
> meaningfully until trained.

A tiny m2mv checkpoint: toy Llama (2 layers, width 64) trained here for {steps} steps (final loss {loss:.3f})
on the prompts and answers of `{Path(dataset_path).name}` (the audio slot holding the mean embedding of the answer's
tokens, so that the LM learns to read it); tiny random ImageBind audio architecture
(2 layers, width 32, weights drawn with std {encoder_init_std}); adaptor at zero. Tiny and not pretrained on real
data: tests and demos only.
"""
    return save_checkpoint(model, build_processor(tokenizer, 1), out_dir, card)


# ----------------------------------------------------------------------------------------------------------------
# Command line: embed, lengths, toy-dataset
# ----------------------------------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m m2mv.training", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    embed = commands.add_parser("embed", help="precompute audio embeddings beside a dataset")
    embed.add_argument("--model", required=True, help="checkpoint folder (or `demo`)")
    embed.add_argument("--dataset", required=True, help="dataset root")
    lengths = commands.add_parser("lengths", help="token lengths of prompts and answers (to choose max_length)")
    lengths.add_argument("--model", required=True)
    lengths.add_argument("--dataset", required=True)
    lengths.add_argument("--config", default=schema.MV_DESCRIPTION, choices=list(schema.COLUMNS))
    lengths.add_argument("--split", default="train")
    lengths.add_argument("--max-length", type=int)
    tiny = commands.add_parser("tiny-checkpoint", help="tiny checkpoint whose LM is pre-trained on a dataset's texts")
    tiny.add_argument("--dataset", required=True)
    tiny.add_argument("--out", required=True)
    tiny.add_argument("--steps", type=int, default=300)
    toy = commands.add_parser("toy-dataset", help="write the synthetic toy dataset")
    toy.add_argument("--out", required=True)
    toy.add_argument("--train", type=int, default=32)
    toy.add_argument("--eval", type=int, default=16)
    toy.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        if args.command == "embed":
            print(precompute_audio_embeds(args.model, args.dataset))
        elif args.command == "lengths":
            from transformers import AutoProcessor

            processor = AutoProcessor.from_pretrained(resolve_model_path(args.model), trust_remote_code=True)
            ds = load_split(args.dataset, args.config, args.split)
            collator = M2MVDataCollator(processor, args.config, args.max_length)
            stats = measure_lengths(processor, ds.select_columns([c for c in ds.column_names if c != "audio"]),
                                    collator)
            stats["suggested_max_length"] = int(-(-stats["total"]["max"] // 64) * 64)
            print(json.dumps(stats, indent=2))
        elif args.command == "tiny-checkpoint":
            print(build_text_pretrained_tiny_checkpoint(args.out, args.dataset, args.steps))
        else:
            print(write_toy_dataset(args.out, args.train, args.eval, seed=args.seed))
    except (M2MVTrainingError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())


__all__ = [
    "AudioEmbedsTable",
    "M2MVDataCollator",
    "M2MVScriptArguments",
    "M2MVTrainingError",
    "StaleEmbeddingsError",
    "audio_encoder_hash",
    "check_args",
    "load_datasets",
    "load_model_and_processor",
    "make_collator",
    "merge_peft_state_dict",
    "parse_args",
    "precompute_audio_embeds",
    "set_trainable",
    "target_frame_boundaries",
    "write_toy_dataset",
]
