"""The timeline picture of a described song: its waveform, the beats, the section and frame boundaries, and a short
label per frame, drawn with matplotlib (the ``app`` extra) on its headless Agg canvas."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

LABEL_WORDS = 3  # words of a frame's text shown on the timeline
ENVELOPE_POINTS = 2000  # the waveform is drawn as a min/max envelope of this many columns


def frame_label(text: str, words: int = LABEL_WORDS) -> str:
    """The first ``words`` words of a frame's text (``…`` when cut)."""
    parts = str(text).split()
    return " ".join(parts[:words]) + (" …" if len(parts) > words else "")


def envelope(array: np.ndarray, points: int = ENVELOPE_POINTS) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(column index, low, high)``: the min/max of the mono waveform in ``points`` equal columns (a picture of
    a 3-min song needs 2000 columns, not 3 million samples)."""
    mono = np.asarray(array, dtype=np.float32)
    mono = mono.mean(axis=0) if mono.ndim == 2 else mono
    points = max(1, min(points, mono.size))
    columns = np.array_split(mono, points)
    low = np.array([c.min() if c.size else 0.0 for c in columns])
    high = np.array([c.max() if c.size else 0.0 for c in columns])
    starts = np.cumsum([0] + [c.size for c in columns[:-1]])
    return starts, low, high


def timeline_marks(parsed: dict) -> dict:
    """What the picture marks, from a parsed description (a clip's, or a whole song's with ``sections``):
    ``frames`` as ``(start, end, label)``, the ``frame_edges`` and the ``section_edges`` (seconds)."""
    frames = [(float(f["start"]), float(f["end"]), frame_label(f["text"])) for f in parsed.get("frames") or []]
    sections = parsed.get("sections") or []
    section_edges = sorted({float(s["start"]) for s in sections} | {float(s["end"]) for s in sections})
    frame_edges = sorted({edge for start, end, _ in frames for edge in (start, end)} - set(section_edges))
    return {"frames": frames, "frame_edges": frame_edges, "section_edges": section_edges}


def timeline_figure(array: np.ndarray, sampling_rate: int, parsed: dict, beat_times: Sequence[float] = (),
                    offset: float = 0.0, title: str | None = None):
    """A matplotlib Figure of the waveform (``array`` starting at ``offset`` seconds of the song) with the beats
    (thin grey), frame boundaries (dashed), section boundaries (thick) and each frame's label."""
    from matplotlib.figure import Figure  # the object API: no pyplot state, safe in a server's worker threads

    marks = timeline_marks(parsed)
    figure = Figure(figsize=(12, 3.2), dpi=100, layout="constrained")
    axes = figure.add_subplot()
    starts, low, high = envelope(array)
    length = np.asarray(array).shape[-1]  # the last column runs to the audio's end
    seconds = offset + np.append(starts, length) / float(sampling_rate)
    axes.fill_between(seconds, np.append(low, low[-1:]), np.append(high, high[-1:]), color="#4a7ab7", linewidth=0,
                      step="post")
    for beat in beat_times:
        axes.axvline(offset + float(beat), color="#999999", linewidth=0.5, alpha=0.6)
    for edge in marks["frame_edges"]:
        axes.axvline(edge, color="#d1495b", linewidth=1.0, linestyle="--")
    for edge in marks["section_edges"]:
        axes.axvline(edge, color="#222222", linewidth=2.0)
    peak = float(max(np.abs(low).max(initial=0.0), np.abs(high).max(initial=0.0))) or 1.0
    for index, (start, end, label) in enumerate(marks["frames"]):
        height = peak * (1.15 if index % 2 == 0 else 1.45)  # alternate rows so that neighbours do not overlap
        axes.text((start + end) / 2, height, label, ha="center", va="bottom", fontsize=7, clip_on=True)
    end = max([seconds[-1]] + [e for _, e, _ in marks["frames"]])
    axes.set_xlim(offset, max(end, offset + 1e-3))
    axes.set_ylim(-peak * 1.1, peak * 1.9)
    axes.set_yticks([])
    axes.set_xlabel("seconds")
    axes.set_title(title or f"{len(marks['frames'])} frames, {len(beat_times)} beats", fontsize=9, loc="right")
    return figure
