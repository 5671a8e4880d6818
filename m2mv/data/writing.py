"""Write m2mv datasets as Parquet shards + a dataset card, the way ``datasets`` 4+ reads them (no loading scripts).

Used by every dataset builder (``dataset_scripts/``) and by the toy dataset of the tests.

Layout of an output folder (``load_dataset(folder, "mv_description")`` or
``load_dataset("parquet", data_dir=folder / "mv_description")`` read it)::

    README.md                                   dataset card (YAML: configs, features, splits, license, ...)
    captioning/{train,validation,test}-00000-of-0000N.parquet
    mv_description/{train,validation,test}-00000-of-0000N.parquet

Every file is written under a temporary name and renamed, shard by shard, so a reader never sees half a file and
an interrupted build resumes where it stopped (finished shards are kept when their content hash matches).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import yaml
from huggingface_hub import HfApi
from tqdm.auto import tqdm

from m2mv.data.fileio import atomic_file, atomic_write_text
from m2mv.data.schema import COLUMNS, features
from m2mv.errors import DatasetError

SPLITS = ("train", "validation", "test")
DEFAULT_RATIOS = (0.8, 0.1, 0.1)
DEFAULT_SEED = 12
STATE_FILE = ".build_state.json"


# ----------------------------------------------------------------------------------------------------------------
# splits
# ----------------------------------------------------------------------------------------------------------------


def assign_split(key: str, ratios: Sequence[float] = DEFAULT_RATIOS, seed: int = DEFAULT_SEED) -> str:
    """Deterministic split of one song (or artist): a seeded hash of ``key`` placed on the cumulative ratios.

    Stable: adding songs never moves the others; the same key always lands in the same split.
    """
    if len(ratios) != len(SPLITS) or any(r < 0 for r in ratios) or abs(sum(ratios) - 1.0) > 1e-9:
        raise ValueError(f"split ratios must be 3 non-negative numbers summing to 1, got {tuple(ratios)}")
    digest = hashlib.sha256(f"{seed}\x00{key}".encode()).digest()
    position = int.from_bytes(digest[:8], "big") / 2**64
    cumulative = 0.0
    for name, ratio in zip(SPLITS, ratios):
        cumulative += ratio
        if position < cumulative:
            return name
    return SPLITS[-1]


def split_rows(rows: Iterable[dict], by: str = "song", ratios: Sequence[float] = DEFAULT_RATIOS,
               seed: int = DEFAULT_SEED, song_of: Callable[[str], str] | None = None) -> dict[str, list[dict]]:
    """Group rows into song-disjoint (``by="song"``) or artist-disjoint (``by="artist"``) splits. ``song_of``: the
    song a ``song_id`` belongs to, where several rows are clips of one song (the demo corpus cuts up to 4 clips
    from a track): they then share a split."""
    if by not in ("song", "artist"):
        raise ValueError(f"split by 'song' or 'artist', got {by!r}")
    out: dict[str, list[dict]] = {name: [] for name in SPLITS}
    for row in rows:
        key = (song_of or str)(row["song_id"]) if by == "song" else row["artist"].strip().casefold()
        out[assign_split(key, ratios, seed)].append(row)
    return out


# ----------------------------------------------------------------------------------------------------------------
# writing
# ----------------------------------------------------------------------------------------------------------------


def _rows_hash(rows: list[dict]) -> str:
    digest = hashlib.sha256()
    for row in rows:
        for key in sorted(row):
            value = row[key]
            if isinstance(value, dict) and "bytes" in value:  # encoded audio
                value = hashlib.sha256(value["bytes"] or b"").hexdigest() + str(value.get("path"))
            digest.update(f"{key}={value!r};".encode())
    return digest.hexdigest()


def write_parquet_shard(rows: list[dict], config_name: str, path: Path) -> None:
    """One Parquet shard with the config's features (in the schema metadata ``datasets`` reads); temp + rename.

    Written with pyarrow directly: ``datasets`` 5.2 insists on torchcodec (FFmpeg) to *encode* an ``Audio``
    column even when the value is already ``{"bytes", "path"}``; the Arrow layout is the same.
    """
    table = pa.Table.from_pylist(rows, schema=features(config_name).arrow_schema)
    with atomic_file(path) as tmp:
        pq.write_table(table, tmp)


@dataclass
class BuildReport:
    """Counts per config and split, skipped rows, hours of audio."""

    counts: dict[str, dict[str, int]] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)
    audio_seconds: dict[str, float] = field(default_factory=dict)

    def summary(self) -> str:
        lines = []
        for config, splits in self.counts.items():
            parts = ", ".join(f"{split} {count}" for split, count in splits.items())
            hours = self.audio_seconds.get(config, 0.0) / 3600
            lines.append(f"{config}: {parts} ({hours:.2f} h of audio)")
        lines.append(f"skipped rows: {len(self.skipped)}")
        lines.extend(f"  - {reason}" for reason in self.skipped[:50])
        return "\n".join(lines)


def write_config(out_dir: Path, config_name: str, splits: dict[str, list[dict]], shard_rows: int = 500,
                 progress: bool = True) -> dict[str, int]:
    """Write one config's splits as shards; resumes: shards whose recorded content hash matches are kept."""
    folder = out_dir / config_name
    folder.mkdir(parents=True, exist_ok=True)
    state_path = out_dir / STATE_FILE
    state = json.loads(state_path.read_text()) if state_path.is_file() else {}
    counts = {}
    wanted = set()
    for split in SPLITS:
        rows = splits.get(split, [])
        counts[split] = len(rows)
        chunks = [rows[i: i + shard_rows] for i in range(0, len(rows), shard_rows)]
        for index, chunk in enumerate(tqdm(chunks, desc=f"{config_name}/{split}", disable=not progress or not chunks,
                                           unit="shard")):
            name = f"{split}-{index:05d}-of-{len(chunks):05d}.parquet"
            wanted.add(name)
            path, digest = folder / name, _rows_hash(chunk)
            key = f"{config_name}/{name}"
            if path.is_file() and state.get(key) == digest:
                continue  # finished in an earlier (interrupted) run
            write_parquet_shard(chunk, config_name, path)
            state[key] = digest
            atomic_write_text(state_path, json.dumps(state, indent=1, sort_keys=True))
    for stale in folder.glob("*.parquet"):  # shards of an earlier build with other counts
        if stale.name not in wanted:
            stale.unlink()
    return counts


def write_configs(out_dir: Path, rows_by_config: dict[str, Sequence[dict]], split_by: str, ratios: Sequence[float],
                  seed: int, audio_seconds: float, skipped: Sequence[str] = (), progress: bool = True,
                  song_of: Callable[[str], str] | None = None) -> BuildReport:
    """Split (:func:`split_rows`) and write every config; the report holds the counts for the card and the
    summary."""
    report = BuildReport(skipped=list(skipped))
    for config, rows in rows_by_config.items():
        report.counts[config] = write_config(out_dir, config, split_rows(rows, split_by, ratios, seed, song_of),
                                             progress=progress)
        report.audio_seconds[config] = audio_seconds
    return report


def describe_splits(split_by: str, seed: int, ratios: Sequence[float], song_key: str = "song id") -> str:
    """The card's sentence on how the splits were made."""
    return (f"Deterministic and {split_by}-disjoint: seeded hash (seed {seed}) of the "
            f"{song_key if split_by == 'song' else 'artist'}, ratios train/validation/test = "
            f"{'/'.join(str(r) for r in ratios)}.")


# ----------------------------------------------------------------------------------------------------------------
# the dataset card
# ----------------------------------------------------------------------------------------------------------------


def dataset_card(
    pretty_name: str,
    counts: dict[str, dict[str, int]],
    license_id: str,
    source: str,
    how_built: str,
    column_status: dict[str, str],
    split_info: str,
    extra: str = "",
    out_dir: Path | None = None,
) -> str:
    """The dataset card: YAML (configs, features, splits with real counts and sizes, license) + prose."""
    configs = []
    infos = []
    for config, splits in counts.items():
        configs.append({"config_name": config, "data_files": [
            {"split": split, "path": f"{config}/{split}-*.parquet"} for split, n in splits.items() if n]})
        def num_bytes(split: str) -> int:
            folder = (out_dir or Path(".")) / config
            return sum(p.stat().st_size for p in folder.glob(f"{split}-*.parquet")) if out_dir else 0

        infos.append({"config_name": config, "features": features(config)._to_yaml_list(),
                      "splits": [{"name": split, "num_bytes": num_bytes(split), "num_examples": n}
                                 for split, n in splits.items() if n]})
    meta = {"pretty_name": pretty_name, "license": license_id, "task_categories": ["text-generation"],
            "tags": ["music", "music-video", "m2mv", "audio"], "configs": configs, "dataset_info": infos}
    header = yaml.safe_dump(meta, sort_keys=False, allow_unicode=True)
    table = "\n".join(f"| {config} | {split} | {n} |" for config, splits in counts.items()
                      for split, n in splits.items())
    columns = "\n".join(
        f"| {config} | {column} | {COLUMNS[config][column]} | {column_status.get(column, 'real')} |"
        for config in counts for column in COLUMNS[config])
    return f"""---
{header}---
# {pretty_name}

{source}

## How it was built
{how_built}

## Splits
{split_info}

| config | split | rows |
|---|---|---|
{table}

## Columns and what is synthetic

| config | column | meaning | status |
|---|---|---|---|
{columns}

## Loading

```python
from datasets import load_dataset
ds = load_dataset("<this folder or repo>", "mv_description")   # or "captioning"
```

Audio is stored encoded (`Audio(decode=False)`: bytes + original file name), so no FFmpeg/torchcodec is needed;
m2mv's processor decodes it with soundfile. `datasets` 4+ has no loading scripts: this card's `configs` YAML
tells `load_dataset` which Parquet files make each config and split.
{extra}
"""


def write_card(out_dir: Path, card: str) -> None:
    atomic_write_text(out_dir / "README.md", card)


def push_to_hub(folder: str | Path, repo_id: str, private: bool = True, token: str | None = None) -> str:
    """Upload a built dataset folder (Parquet + card) to the Hub; token from ``HF_TOKEN`` unless given.

    Uses ``huggingface_hub.HfApi``: ``create_repo(repo_type="dataset", private=...)`` then ``upload_folder``.
    ``HF_ENDPOINT`` selects the server (the tests point it at a local recorder).
    """
    token = token or os.environ.get("HF_TOKEN")
    if not token:
        raise DatasetError("push_to_hub needs a token: set HF_TOKEN (or pass token=)")
    folder = Path(folder)
    if not (folder / "README.md").is_file():
        raise DatasetError(f"{folder}: not a built dataset (no README.md card)")
    api = HfApi(token=token)
    api.create_repo(repo_id, repo_type="dataset", private=private, exist_ok=True)
    commit = api.upload_folder(repo_id=repo_id, repo_type="dataset", folder_path=str(folder),
                               ignore_patterns=[STATE_FILE, ".*"], commit_message="Upload m2mv dataset")
    return str(commit)
