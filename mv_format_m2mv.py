"""The music-video (MV) description format of m2mv: the one place it is written and read.

A description is an overview, then one line per frame of the video::

    Overview: A band plays on a dark stage ...
    Frames:
    [00:00-00:02] The camera opens on the drummer.
    [00:02-00:04.50] ...

Frames are 2-s steps by default (the paper's), or any increasing, non-overlapping spans (e.g. beat-aligned ones).
The turn separator of the prompt, ``###`` (NExT-GPT's), is also where generation stops: :data:`STOP_STRING`.

This file travels with every checkpoint as remote code (``trust_remote_code=True``), imported by
``processing_m2mv.py``; it imports only the standard library.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from itertools import zip_longest

STOP_STRING = "###"  # NExT-GPT's turn separator: a generated answer ends where the next turn would start
FRAME_STEP_SECONDS = 2.0  # the paper's frame length
BOUNDARY_TOLERANCE_S = 0.01  # the timestamps' precision: frame boundaries closer than this are the same
OVERVIEW_HEADER = "Overview:"
FRAMES_HEADER = "Frames:"
_TIMESTAMP = r"(\d{1,3}):(\d{2}(?:\.\d{1,3})?)"
_FRAME_LINE = re.compile(rf"^\s*\[{_TIMESTAMP}\s*-\s*{_TIMESTAMP}\]\s*(.*)$")


@dataclass
class MVFrame:
    """One frame of the breakdown: ``start``-``end`` seconds and what the video shows."""

    start: float
    end: float
    text: str


@dataclass
class MVDescription:
    """A parsed MV description. ``problems`` lists what was malformed (empty when the text was well formed)."""

    overview: str
    frames: list[MVFrame] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def is_valid(self) -> bool:
        return not self.problems

    def to_dict(self) -> dict:
        return asdict(self)


def strip_stop(text: str, stop: str = STOP_STRING) -> str:
    """The text before the first ``stop``, stripped: a generated answer without what follows it."""
    return text.split(stop, 1)[0].strip()


def format_timestamp(seconds: float) -> str:
    """``MM:SS`` for whole seconds, ``MM:SS.ss`` otherwise (beat-aligned frames)."""
    minutes, rest = divmod(float(seconds), 60.0)
    if abs(rest - round(rest)) < 1e-6:
        rest = round(rest)
        if rest == 60:
            minutes, rest = minutes + 1, 0
        return f"{int(minutes):02d}:{int(rest):02d}"
    return f"{int(minutes):02d}:{rest:05.2f}"


def parse_timestamp(text: str) -> float:
    """Inverse of :func:`format_timestamp`: ``"01:04.50"`` -> 64.5."""
    match = re.fullmatch(_TIMESTAMP, text.strip())
    if not match:
        raise ValueError(f"malformed timestamp {text!r} (expected MM:SS or MM:SS.ss)")
    return int(match.group(1)) * 60 + float(match.group(2))


def frame_boundaries(duration: float, step: float = FRAME_STEP_SECONDS) -> list[tuple[float, float]]:
    """Fixed-step frame boundaries over ``duration`` seconds (15 frames of 2 s for a 30-s clip)."""
    count = max(1, math.ceil(duration / step - 1e-9))
    return [(i * step, min((i + 1) * step, duration)) for i in range(count)]


def format_frame_span(start: float, end: float) -> str:
    """A frame's time span as written in descriptions and prompts: ``[MM:SS-MM:SS]``."""
    return f"[{format_timestamp(start)}-{format_timestamp(end)}]"


def validate_frame_boundaries(boundaries: Sequence[tuple[float, float]]) -> list[tuple[float, float]]:
    """``boundaries`` as a list of ``(start, end)`` floats; non-empty, each ``0 <= start < end``, increasing and
    non-overlapping, else a ValueError saying which frame is wrong."""
    if isinstance(boundaries, (str, bytes)) or not isinstance(boundaries, Sequence) or not boundaries:
        raise ValueError(f"frame_boundaries must be a non-empty list of (start, end) seconds, got {boundaries!r}")
    checked: list[tuple[float, float]] = []
    for index, pair in enumerate(boundaries):
        try:
            start, end = (float(value) for value in pair)
        except (TypeError, ValueError):
            raise ValueError(f"frame_boundaries[{index}] must be a (start, end) pair of seconds, got {pair!r}"
                             ) from None
        if not (math.isfinite(start) and math.isfinite(end)) or start < 0 or end <= start:
            raise ValueError(f"frame_boundaries[{index}] = ({start:g}, {end:g}) s: need 0 <= start < end")
        if checked and start < checked[-1][1] - 1e-6:
            raise ValueError(f"frame_boundaries[{index}] starts at {start:g} s, before the previous frame ends at "
                             f"{checked[-1][1]:g} s (frames must be increasing and non-overlapping)")
        checked.append((start, end))
    return checked


def same_boundaries(a: Sequence[tuple[float, float]], b: Sequence[tuple[float, float]]) -> bool:
    """Whether two lists of frame spans are the same to the timestamps' precision."""
    return len(a) == len(b) and all(abs(x - y) <= BOUNDARY_TOLERANCE_S + 1e-9
                                    for span, other in zip(a, b) for x, y in zip(span, other))


def is_fixed_grid(boundaries: Sequence[tuple[float, float]], step: float = FRAME_STEP_SECONDS) -> bool:
    """Whether ``boundaries`` are the fixed ``step`` frames over their own length (the plain prompt's frames)."""
    return bool(boundaries) and same_boundaries(boundaries, frame_boundaries(boundaries[-1][1], step))


def frame_boundary_problem(frames: Sequence[tuple[float, float]],
                           boundaries: Sequence[tuple[float, float]]) -> str | None:
    """None when the generated ``frames`` are the requested ``boundaries`` (to the timestamps' precision), else
    what differs (the first frame that does)."""
    for number, (want, got) in enumerate(zip_longest(boundaries, frames), start=1):
        if want is None or got is None or max(abs(want[0] - got[0]), abs(want[1] - got[1])) > BOUNDARY_TOLERANCE_S:
            requested = format_frame_span(*want) if want is not None else "no frame"
            generated = format_frame_span(*got) if got is not None else "nothing"
            return (f"the {len(frames)} generated frames do not match the {len(boundaries)} requested boundaries: "
                    f"frame {number} is {generated}, requested {requested}")
    return None


def format_mv_description(overview: str, frames: Sequence[MVFrame | tuple[float, float, str]]) -> str:
    """Write an MV description: the overview, then one ``[MM:SS-MM:SS] text`` line per frame."""
    overview = " ".join(overview.split())
    if not overview:
        raise ValueError("an MV description needs a non-empty overview")
    lines = [f"{OVERVIEW_HEADER} {overview}", FRAMES_HEADER]
    previous_end = None
    for frame in frames:
        start, end, text = (frame.start, frame.end, frame.text) if isinstance(frame, MVFrame) else frame
        text = " ".join(str(text).split())
        if not text:
            raise ValueError(f"frame {format_timestamp(start)}-{format_timestamp(end)} has no text")
        if end <= start or (previous_end is not None and start < previous_end - 1e-6):
            raise ValueError(f"frame {start}-{end} s is empty or overlaps the previous frame")
        lines.append(f"{format_frame_span(start, end)} {text}")
        previous_end = end
    return "\n".join(lines)


# A constrained text: one line of printable characters, starting visibly, never a "#" (the stop string's).
FRAME_TEXT_PATTERN = r"[^\x00-\x20#\x7f][^\x00-\x1f#\x7f]*"


def description_literals(boundaries: Sequence[tuple[float, float]]) -> list[str]:
    """What :func:`format_mv_description` writes around the texts, in order: ``"Overview: "``, then before each
    frame's text its line break and ``[MM:SS-MM:SS] `` (the first after the ``Frames:`` header)."""
    boundaries = validate_frame_boundaries(boundaries)
    return [f"{OVERVIEW_HEADER} "] + [("\n" + FRAMES_HEADER + "\n" if i == 0 else "\n") +
                                      format_frame_span(start, end) + " " for i, (start, end) in enumerate(boundaries)]


def mv_description_grammar(boundaries: Sequence[tuple[float, float]], max_text_tokens: int) -> str:
    """A Lark grammar (llguidance's dialect) of exactly the description :func:`format_mv_description` writes for
    these frames: the headers and every ``[MM:SS-MM:SS]`` come from here, the model writes only the overview and
    the frame texts, each at most ``max_text_tokens`` tokens, so a constrained answer parses with these frames."""
    parts = [f"{json.dumps(literal)} text" for literal in description_literals(boundaries)]
    return (f"start: {' '.join(parts)}\n"
            f"text[max_tokens={int(max_text_tokens)}]: /{FRAME_TEXT_PATTERN}/\n")


def parse_mv_description(text: str, expected_duration: float | None = None) -> MVDescription:
    """Parse a (possibly generated) MV description back into an :class:`MVDescription`.

    Tolerant: a truncated last frame, stray lines and a missing header are reported in ``problems`` instead of
    raising. Text after a ``\\n###`` stop is ignored. With ``expected_duration`` it also reports frames missing at
    the end.
    """
    text = text.split("\n" + STOP_STRING)[0].strip()
    problems: list[str] = []
    overview_lines: list[str] = []
    frames: list[MVFrame] = []
    lines = [line for line in text.splitlines() if line.strip()]
    for number, line in enumerate(lines, start=1):
        stripped = line.strip()
        if stripped.startswith(FRAMES_HEADER) and stripped != FRAMES_HEADER and not frames:
            stripped = stripped.removeprefix(FRAMES_HEADER).strip()  # "Frames: [00:00-00:02] ..." on one line
            problems.append(f"line {number}: the first frame is on the {FRAMES_HEADER!r} line")
        match = _FRAME_LINE.match(stripped)
        if match:
            start = int(match.group(1)) * 60 + float(match.group(2))
            end = int(match.group(3)) * 60 + float(match.group(4))
            body = match.group(5).strip()
            if end <= start:
                problems.append(f"line {number}: frame end {end:g} s is not after its start {start:g} s")
            if frames and start < frames[-1].end - 1e-6:
                problems.append(f"line {number}: frame starting at {start:g} s overlaps the previous frame")
            if not body:
                problems.append(f"line {number}: frame {start:g}-{end:g} s has no text")
            frames.append(MVFrame(start, end, body))
        elif stripped.startswith("["):
            kind = "truncated" if number == len(lines) else "malformed"
            problems.append(f"line {number}: {kind} frame line {stripped[:40]!r}")
        elif stripped == FRAMES_HEADER:
            continue
        elif frames:
            problems.append(f"line {number}: text after the frames that is not a frame: {stripped[:40]!r}")
        else:
            overview_lines.append(stripped.removeprefix(OVERVIEW_HEADER).strip())
    overview = " ".join(part for part in overview_lines if part)
    if not overview:
        problems.append("no overview")
    elif not text.lstrip().startswith(OVERVIEW_HEADER):
        problems.append(f"the overview does not start with {OVERVIEW_HEADER!r}")
    if not frames:
        problems.append("no frames")
    if expected_duration is not None and frames and frames[-1].end < expected_duration - 1e-6:
        problems.append(f"the frames end at {frames[-1].end:g} s, before the clip's end at {expected_duration:g} s")
    return MVDescription(overview=overview, frames=frames, problems=problems)


__all__ = [
    "BOUNDARY_TOLERANCE_S",
    "FRAME_STEP_SECONDS",
    "STOP_STRING",
    "MVDescription",
    "MVFrame",
    "format_frame_span",
    "format_mv_description",
    "format_timestamp",
    "frame_boundaries",
    "frame_boundary_problem",
    "is_fixed_grid",
    "parse_mv_description",
    "parse_timestamp",
    "same_boundaries",
    "strip_stop",
    "validate_frame_boundaries",
]
