"""Exports of a described song that a video maker opens: SubRip and WebVTT cues, and a shot list.

The cues are written with the field's libraries (``srt``, ``webvtt-py``: the ``export`` extra), one per frame of
the parsed description; the shot list (``shots.json``) holds one shot per frame (start, end, the prompt text for a
text-to-video tool, and the overview it belongs to). A frame that cannot be a cue (its end not after its start, as
an untrained model may write) is left out and counted. Files are written atomically.
"""

from __future__ import annotations

import datetime
import json
from collections.abc import Sequence
from pathlib import Path

from m2mv.data.fileio import atomic_write_text
from m2mv.errors import UsageError

EXPORT_FORMATS = ("srt", "vtt", "shots.json")


def parse_export_formats(value: str | None) -> list[str]:
    """``"srt,vtt"`` -> ``["srt", "vtt"]``; an unknown format is an error listing the known ones."""
    formats = [f.strip() for f in (value or "").split(",") if f.strip()]
    unknown = [f for f in formats if f not in EXPORT_FORMATS]
    if unknown:
        raise UsageError(f"unknown export format(s) {', '.join(unknown)}; known: {', '.join(EXPORT_FORMATS)}")
    return list(dict.fromkeys(formats))


def cue_frames(frames: Sequence[dict]) -> tuple[list[dict], int]:
    """The frames that can be cues (``end > start >= 0``, text not empty), and how many were left out."""
    kept = [f for f in frames if 0 <= float(f["start"]) < float(f["end"]) and str(f["text"]).strip()]
    return kept, len(frames) - len(kept)


def _seconds(value: float) -> datetime.timedelta:
    return datetime.timedelta(seconds=round(float(value), 3))


def _vtt_time(value: float) -> str:
    milliseconds = round(float(value) * 1000)
    hours, rest = divmod(milliseconds, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    return f"{hours:02d}:{minutes:02d}:{rest // 1000:02d}.{rest % 1000:03d}"


def _shot(number: int, frame: dict, overview: str, sections: Sequence[dict]) -> dict:
    """One shot: its times and prompt, and the overview it belongs to (its section's, for a whole song)."""
    shot = {"shot": number, "start": float(frame["start"]), "end": float(frame["end"]), "prompt": frame["text"]}
    if frame.get("section") is not None and sections:
        section = sections[frame["section"]]
        return {**shot, "section": frame["section"] + 1, "overview": section.get("overview") or ""}
    return {**shot, "overview": overview}


def render_export(fmt: str, overview: str, frames: Sequence[dict], source: str,
                  sections: Sequence[dict] = ()) -> str:
    """The text of one export of a parsed description (``frames``: dicts with ``start``, ``end``, ``text``, and
    for a whole song the ``section`` each belongs to, one of ``sections``)."""
    if fmt == "shots.json":
        shots = [_shot(i, f, overview, sections) for i, f in enumerate(frames, start=1)]
        return json.dumps({"source": source, "overview": overview, "shots": shots}, ensure_ascii=False, indent=1) + "\n"
    try:
        if fmt == "srt":
            import srt

            return srt.compose([srt.Subtitle(i, _seconds(f["start"]), _seconds(f["end"]), f["text"])
                                for i, f in enumerate(frames, start=1)])
        import webvtt

        captions = [webvtt.Caption(start=_vtt_time(f["start"]), end=_vtt_time(f["end"]), text=f["text"])
                    for f in frames]
        return webvtt.WebVTT(captions=captions).content
    except ImportError as err:
        raise UsageError(f"--export {fmt} needs the export extra: pip install 'm2mv[export]' ({err})") from err


def write_exports(parsed: dict, stem_path: Path, formats: Sequence[str], source: str) -> tuple[list[Path], int]:
    """Write ``<stem_path>.<format>`` for each format from a parsed description (``overview``, ``frames``);
    returns the paths and the number of frames left out."""
    frames, dropped = cue_frames(parsed.get("frames") or [])
    paths = []
    for fmt in formats:
        path = stem_path.with_name(f"{stem_path.name}.{fmt}")
        atomic_write_text(path, render_export(fmt, parsed.get("overview") or "", frames, source,
                                              parsed.get("sections") or ()))
        paths.append(path)
    return paths, dropped
