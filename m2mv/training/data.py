"""The data of a training stage: its splits (with the columns it needs) and the precomputed audio embeddings."""

from __future__ import annotations

from pathlib import Path

from m2mv.checkpoints.loading import load_checkpoint
from m2mv.data.embeddings import compute_embeddings
from m2mv.data.loading import load_split
from m2mv.data.schema import MV_DESCRIPTION, TARGET_COLUMN
from m2mv.errors import DatasetError, TrainingError
from m2mv.training.args import M2MVScriptArguments, dataset_config


def needed_columns(script_args: M2MVScriptArguments, config_name: str, with_audio: bool) -> dict[str, str]:
    """Column -> why a stage needs it."""
    need = {"song_id": "identifies the song (precomputed embeddings, errors)",
            TARGET_COLUMN[config_name]: "the training target"}
    if with_audio:
        need["audio"] = "the audio (no valid precomputed embeddings)"
    if config_name == MV_DESCRIPTION:
        for column, flag in (("genre_tags", "use_genre_tags"), ("mv_type", "use_mv_type"),
                             ("lyrics_understanding", "use_lyrics_understanding")):
            if getattr(script_args, flag):
                need[column] = f"conditioning ({flag}: true)"
    return need


def _load(script_args: M2MVScriptArguments, config_name: str, split: str, limit: int | None):
    try:
        ds = load_split(script_args.dataset_path, config_name, split, required=())
    except DatasetError as err:
        raise TrainingError(str(err)) from err
    need = needed_columns(script_args, config_name, with_audio=False)
    missing = [c for c in need if c not in ds.column_names]
    if missing:
        raise TrainingError(
            f"{script_args.dataset_path} ({config_name}/{split}): missing column(s) "
            + "; ".join(f"{c!r}: {need[c]}" for c in missing)
            + f". Stage {script_args.stage} needs the {config_name!r} config of m2mv/data/schema.py"
            + (" (or switch the conditioning off)" if config_name == MV_DESCRIPTION else ""))
    return ds.select(range(min(limit, len(ds)))) if limit else ds


def load_datasets(script_args: M2MVScriptArguments):
    """``(train, eval or None, config name)``; checks that the columns the stage needs are there."""
    config_name = dataset_config(script_args)
    train = _load(script_args, config_name, script_args.train_split, script_args.max_train_samples)
    held_out = (_load(script_args, config_name, script_args.eval_split, script_args.max_eval_samples)
                if script_args.eval_split else None)
    return train, held_out, config_name


def precompute_audio_embeds(model_path: str | Path, dataset_path: str | Path, batch_size: int = 8) -> Path:
    """Encode every song of a dataset once with a checkpoint's audio encoder, beside the dataset
    (``<dataset>/embeddings/<encoder hash[:16]>.parquet``, :func:`m2mv.data.embeddings.compute_embeddings`)."""
    model, processor = load_checkpoint(model_path)
    return compute_embeddings(model, processor, dataset_path, batch_size=batch_size, progress=False)
