"""Atomic file writes and resumable JSON Lines.

Atomic: a temporary file (or folder) beside the target, renamed over it, so a reader never sees half a file and an
interrupted writer leaves the old file (or none). JSON Lines: one record per line, appended with one ``write`` and
an ``fsync``, so a killed run leaves at most a half-written last line, which the next read cuts off.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

from m2mv.errors import DatasetError


@contextmanager
def atomic_file(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path`` to write to; when the block succeeds it is renamed over ``path``,
    when it fails it is removed. The parent folder is created."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    os.chmod(tmp, 0o644)  # mkstemp makes it private; these files are meant to be shared like any other
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically, creating the parent folder."""
    with atomic_file(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def atomic_write_json(path: str | Path, obj, indent: int | None = 1) -> None:
    """Write ``obj`` as JSON (UTF-8, non-ASCII kept) to ``path`` atomically."""
    atomic_write_text(path, json.dumps(obj, indent=indent, ensure_ascii=False, default=str) + "\n")


@contextmanager
def atomic_directory(dest: str | Path) -> Iterator[Path]:
    """Yield a temporary folder beside ``dest``; when the block succeeds it replaces ``dest`` (rename), when it
    fails it is removed, so ``dest`` is only ever absent, old or complete."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=dest.parent, prefix=f".{dest.name}.tmp-"))
    tmp.chmod(0o755)  # mkdtemp makes it private; a cache or checkpoint folder is meant to be shared
    try:
        yield tmp
        if dest.exists():
            shutil.rmtree(dest)
        os.replace(tmp, dest)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def append_jsonl(path: str | Path, records: Iterable[dict]) -> None:
    """Append records as JSON lines with one ``write`` on an ``O_APPEND`` descriptor, then fsync."""
    payload = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records).encode("utf-8")
    if not payload:
        return
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        written = os.write(fd, payload)
        while written < len(payload):  # a short write (rare, huge payloads): finish it
            written += os.write(fd, payload[written:])
        os.fsync(fd)
    finally:
        os.close(fd)


def read_jsonl(path: str | Path, kind: str = "JSON record") -> list[tuple[int, dict]]:
    """``(line number, record)`` of each line of a JSON Lines file written by :func:`append_jsonl` ([] if absent).

    A half-written last line (no newline: a run was killed mid-write) is cut off the file, with a warning, so later
    appends start clean; any other line that is not a JSON object is a :class:`~m2mv.errors.DatasetError` naming
    the file and line (``kind`` says what the line should have been).
    """
    path = Path(path)
    if not path.is_file():
        return []
    data = path.read_bytes()
    complete = data[: data.rfind(b"\n") + 1]
    if len(complete) < len(data):
        print(f"warning: {path}: dropped a half-written last line ({len(data) - len(complete)} bytes) left by an "
              "interrupted run", file=sys.stderr)
        with open(path, "r+b") as handle:
            handle.truncate(len(complete))
    records = []
    for number, line in enumerate(complete.decode("utf-8", errors="replace").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            raise DatasetError(f"{path}:{number}: not a {kind} ({err}); fix or delete the line") from err
        if not isinstance(record, dict):
            raise DatasetError(f"{path}:{number}: not a {kind} (a JSON {type(record).__name__}, not an object)")
        records.append((number, record))
    return records
