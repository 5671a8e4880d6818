"""The one reader of a built dataset: :func:`load_split`, for training, the benchmark and everything else.

Layouts read (``dataset_scripts`` writes the first):

- a dataset root: ``ROOT/<config>/<split>-*.parquet`` (or ``<split>.parquet``, ``<split>/*.parquet``);
- one config's folder: ``DIR/<split>-*.parquet`` (or ``DIR/data/...``);
- one ``.parquet`` file (the split is its only split);
- a ``datasets.save_to_disk`` folder (a ``DatasetDict`` or one ``Dataset``).

Audio stays encoded (``Audio(decode=False)``: the processor decodes it with soundfile, no torchcodec). An
``mv_description`` split written before the ``frames`` column existed gets it derived once, here.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import datasets

from m2mv.data.schema import (
    COLUMNS,
    DERIVED_COLUMNS,
    MV_DESCRIPTION,
    frames_of,
    missing_columns,
)
from m2mv.errors import DatasetError


def dataset_root(dataset: str | Path, config: str) -> Path:
    """The root folder of a dataset given as its root or as one config's folder (embeddings live in the root)."""
    path = Path(dataset)
    if path.is_file():
        path = path.parent
    if (path / config).is_dir() or path.name not in COLUMNS:
        return path
    return path.parent


def _split_of(file: Path) -> str:
    return file.name.split("-")[0].removesuffix(".parquet")


def _split_files(path: Path, config: str, split: str) -> tuple[list[Path], set[str]]:
    """Parquet files of ``split`` in the layouts above, plus the split names seen there."""
    bases = [path / config] if (path / config).is_dir() else [path, path / "data"]
    seen: set[str] = set()
    for base in bases:
        if not base.is_dir():
            continue
        files = sorted(base.glob("*.parquet"))
        seen.update(_split_of(f) for f in files)
        seen.update(d.name for d in base.iterdir() if d.is_dir() and any(d.glob("*.parquet")))
        chosen = [f for f in files if _split_of(f) == split]
        chosen += sorted((base / split).glob("*.parquet")) if (base / split).is_dir() else []
        if chosen:
            return chosen, seen
    return [], seen


def _read(path: Path, config: str, split: str):
    if not path.exists():
        raise DatasetError(f"dataset {path} does not exist")
    if path.is_file():
        if path.suffix != ".parquet":
            raise DatasetError(f"dataset {path} is neither a folder nor a .parquet file")
        files = [path]
    elif (path / "dataset_dict.json").is_file() or (path / "state.json").is_file():
        loaded = datasets.load_from_disk(str(path))
        if isinstance(loaded, datasets.DatasetDict):
            if split not in loaded:
                raise DatasetError(f"dataset {path} has no split {split!r}; it has: {', '.join(loaded)}")
            loaded = loaded[split]
        return loaded
    else:
        files, seen = _split_files(path, config, split)
        if not files and seen:
            raise DatasetError(f"dataset {path} has no Parquet files for split {split!r}; splits found: "
                               f"{', '.join(sorted(seen))}")
        if not files:
            raise DatasetError(f"dataset {path} holds no Parquet files (expected {path}/{config}/{split}-*.parquet "
                               f"or {path}/{split}-*.parquet) and is not a datasets.save_to_disk folder")
    try:
        return datasets.load_dataset("parquet", data_files={split: [str(f) for f in files]}, split=split)
    except Exception as err:  # pyarrow / datasets raise many types for a broken file: name the files
        raise DatasetError(f"dataset {path}: could not read {', '.join(f.name for f in files)} ({err})") from err


def load_split(dataset: str | Path, config: str, split: str, required: Iterable[str] | None = None):
    """One split of one config as a ``datasets.Dataset``, audio kept encoded.

    ``split`` may join splits the way ``datasets`` writes it, ``"validation+test"``: their rows in that order.
    ``required``: the columns the caller needs (default: all of the config's, m2mv/data/schema.py); a missing
    one, an empty split or an unreadable file is a :class:`~m2mv.errors.DatasetError` naming the dataset.
    """
    if config not in COLUMNS:
        raise DatasetError(f"unknown dataset config {config!r}; known: {', '.join(COLUMNS)}")
    if "+" in split:
        parts = [part.strip() for part in split.split("+")]
        if not all(parts) or len(set(parts)) < len(parts):
            raise DatasetError(f"split {split!r}: join distinct split names with '+', e.g. 'validation+test'")
        return datasets.concatenate_datasets([load_split(dataset, config, part, required) for part in parts])
    path = Path(dataset)
    ds = _read(path, config, split)
    missing = (missing_columns(config, ds.column_names) if required is None
               else [c for c in required if c not in ds.column_names])
    if missing:
        other = next((name for name in COLUMNS if name != config and set(COLUMNS[name]) <= set(ds.column_names)),
                     None)
        hint = f" (a {other} dataset? this needs the {config} config)" if other else ""
        article = "an" if config[0] in "aeioum" else "a"
        raise DatasetError(f"dataset {path} split {split!r} is not {article} {config} dataset: missing columns "
                           f"{', '.join(missing)}; it has {', '.join(ds.column_names)}{hint}")
    if len(ds) == 0:
        raise DatasetError(f"dataset {path} split {split!r} has no rows")
    audio = ds.features.get("audio")
    if isinstance(audio, datasets.Audio) and audio.decode:
        ds = ds.cast_column("audio", datasets.Audio(decode=False))
    if config == MV_DESCRIPTION and "frames" in DERIVED_COLUMNS[config] and "frames" not in ds.column_names \
            and "description" in ds.column_names:
        ds = ds.add_column("frames", [frames_of(text or "") for text in ds["description"]])
    return ds
