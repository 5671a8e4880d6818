"""Resumable per-song records of each pipeline stage.

Each stage appends one JSON line per song to ``<work>/<stage>.jsonl`` (:func:`m2mv.data.fileio.append_jsonl`: one
write, then fsync), keyed by :func:`input_key`, a hash of everything the stage's result depends on (the input
files, the earlier stages' results, the models, the prompt version, the settings). A rerun reuses a record whose
key matches and redoes the songs whose inputs or settings changed; a record of a failure is retried. A killed run
leaves at most a half-written last line, which the next read cuts off.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from m2mv.data.fileio import append_jsonl, read_jsonl


def input_key(**parts) -> str:
    """A stable hash of a stage's inputs and settings (JSON-serialisable values)."""
    text = json.dumps(parts, sort_keys=True, ensure_ascii=False, default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:20]


def file_identity(path: str | Path) -> dict:
    """What identifies an input file cheaply (name, size, modification time): a changed file gets a new key."""
    stat = Path(path).stat()
    return {"path": str(Path(path).resolve()), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


class StageRecords:
    """The records of one stage: the newest record of each (song, key). ``also``: other work folders whose records
    count as done too (the shards of a split run, read when their results are gathered)."""

    def __init__(self, work_dir: str | Path, stage: str, also: tuple[Path, ...] = ()):
        self.path = Path(work_dir) / f"{stage}.jsonl"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.records: dict[tuple[str, str], dict] = {}
        for source in [Path(folder) / self.path.name for folder in also] + [self.path]:
            for _, record in read_jsonl(source, kind=f"{stage} record"):
                self.records[(record.get("song_id"), record.get("key"))] = record

    def done(self, song_id: str, key: str) -> dict | None:
        """The stage's successful record for these inputs, or None (never done, changed, or failed)."""
        record = self.records.get((song_id, key))
        return record if record is not None and "error" not in record else None

    def put(self, record: dict) -> dict:
        append_jsonl(self.path, [record])
        self.records[(record["song_id"], record["key"])] = record
        return record
