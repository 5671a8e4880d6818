"""Whole songs: a song longer than the model's clip cut into windows, and the windows' frames stitched back.

The model learns from clips of a fixed length (30 s for the paper's data; the checkpoint's processor stores it as
``clip_seconds``). :func:`song_windows` cuts a span of a song into windows of that length (a tail shorter than
half a window joins the last one, so a file a little longer than a clip stays one window); each window is described
from its own audio, and :func:`stitch_sections` puts the windows' frames on the song's clock: one section per
window and one flat list of frames.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from m2mv.errors import UsageError
from mv_format_m2mv import format_frame_span

WHOLE = "whole"


def _seconds(text: str, option: str) -> float:
    """``"75"``, ``"75.5"`` or ``"01:15"`` -> seconds."""
    try:
        if ":" in text:
            minutes, seconds = text.split(":", 1)
            value = int(minutes) * 60 + float(seconds)
        else:
            value = float(text)
    except ValueError:
        raise UsageError(f"{option}: {text!r} is not a time (seconds or mm:ss)") from None
    if not math.isfinite(value) or value < 0:
        raise UsageError(f"{option}: {text!r} is not a time (seconds or mm:ss)")
    return value


def parse_span(value: str | None, option: str = "--span") -> tuple[float, float] | None:
    """``None``/``"whole"`` -> None (the whole song); ``"START-END"`` (seconds or mm:ss) -> ``(start, end)``."""
    if value is None or value.strip() == WHOLE:
        return None
    start, sep, end = value.strip().partition("-")
    if not sep:
        raise UsageError(f"{option} must be 'whole' or START-END (seconds or mm:ss), got {value!r}")
    span = (_seconds(start.strip(), option), _seconds(end.strip(), option))
    if span[1] <= span[0]:
        raise UsageError(f"{option} {value}: the end must be after the start")
    return span


def resolve_span(span: tuple[float, float] | None, duration: float, name: str) -> tuple[float, float]:
    """The span to describe in a file of ``duration`` seconds (the whole file for None); one past its end is an
    error naming the file."""
    if span is None:
        return 0.0, round(float(duration), 3)
    if span[0] >= duration:
        raise UsageError(f"{name}: --span {span[0]:g}-{span[1]:g} starts after the audio ends ({duration:.2f} s)")
    return span[0], min(span[1], round(float(duration), 3))


def song_windows(span: tuple[float, float], window_seconds: float) -> list[tuple[float, float]]:
    """Windows of ``window_seconds`` over ``span`` = ``(start, end)``; a tail shorter than half a window joins the
    last window. A span up to 1.5 windows long is one window."""
    if window_seconds <= 0:
        raise ValueError(f"window_seconds must be positive, got {window_seconds}")
    start, end = span
    count = max(1, int((end - start) // window_seconds))
    if (end - start) - count * window_seconds >= window_seconds / 2:
        count += 1
    edges = [round(start + k * window_seconds, 3) for k in range(count)] + [round(end, 3)]
    return list(zip(edges, edges[1:]))


def stitch_sections(windows: Sequence[tuple[float, float]], parsed: Sequence[dict],
                    extra: Sequence[dict] | None = None) -> dict:
    """One song-level description from the windows' parsed descriptions (frames relative to their window).

    Each window becomes a section ``{start, end, overview, frames, problems, ...extra}`` with its frames moved onto
    the song's clock; a frame that starts past its window's end is dropped (counted in the section's problems) and
    one that runs past it is cut at the end. ``frames`` is the flat list over the song, each frame naming its
    ``section`` (0-based). The song-level ``overview`` is None: it is only written by a model, never made up here.
    """
    sections, frames, problems = [], [], []
    for index, ((start, end), description) in enumerate(zip(windows, parsed)):
        length = end - start
        moved, dropped = [], 0
        for frame in description.get("frames") or []:
            if float(frame["start"]) >= length:
                dropped += 1
                continue
            moved.append({"start": round(start + float(frame["start"]), 3),
                          "end": round(start + min(float(frame["end"]), length), 3), "text": frame["text"]})
        section_problems = list(description.get("problems") or [])
        if dropped:
            section_problems.append(f"{dropped} frame(s) started after the window's end ({length:g} s) and were "
                                    "dropped")
        sections.append({"start": start, "end": end, "overview": description.get("overview"), "frames": moved,
                         "problems": section_problems, **(extra[index] if extra else {})})
        frames += [{**frame, "section": index} for frame in moved]
        problems += [f"section {index + 1} ({start:g}-{end:g} s): {p}" for p in section_problems]
    return {"overview": None, "frames": frames, "sections": sections, "problems": problems}


def section_heading(index: int, section: dict) -> str:
    """``Section 2 [00:30-01:00]``, the text output's heading of a section."""
    return f"Section {index + 1} {format_frame_span(section['start'], section['end'])}"
