"""Time-synced lyrics: the LRC format (``[mm:ss.xx] line``), read into timed lines.

LRC is the common format of synced lyrics: each line starts with one or more ``[mm:ss.xx]`` tags (a repeated
chorus carries several), metadata lines are ``[ar: ...]``, ``[ti: ...]``, ``[offset: +/-ms]``, and enhanced LRC
adds ``<mm:ss.xx>`` word times inside a line (dropped here: a line is the unit). Written here rather than taken
from PyPI: the LRC packages there are unmaintained, and the format is a dozen lines of regular expressions.

A file that is not LRC, a time with seconds past 59, lines out of time order, or a time past the song's end is a
:class:`~m2mv.errors.LyricsError` naming the file and the line.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from m2mv.errors import LyricsError

_TIME_TAG = re.compile(r"\[(\d{1,3}):(\d{1,2}(?:[.:]\d{1,3})?)\]")
_LEADING_TAGS = re.compile(r"^\s*((?:\[\d{1,3}:\d{1,2}(?:[.:]\d{1,3})?\]\s*)+)(.*)$")
_META_TAG = re.compile(r"^\s*\[([a-zA-Z#]+):(.*)\]\s*$")
_WORD_TIME = re.compile(r"<\d{1,3}:\d{1,2}(?:[.:]\d{1,3})?>")


@dataclass(frozen=True)
class LyricLine:
    """One sung line: when it starts (seconds from the song's start), its text, and its file and line."""

    time: float
    text: str
    line_number: int
    source: str = "lyrics.lrc"


def looks_like_lrc(text: str) -> bool:
    """Whether ``text`` is LRC: its first non-blank line that is not metadata starts with a ``[mm:ss]`` tag."""
    for line in text.splitlines():
        if not line.strip() or _META_TAG.match(line) and not _TIME_TAG.match(line.strip()):
            continue
        return bool(_LEADING_TAGS.match(line))
    return False


def _seconds(minutes: str, seconds: str, name: str, number: int) -> float:
    seconds = seconds.replace(":", ".")
    value = float(seconds)
    if value >= 60:
        raise LyricsError(f"{name}:{number}: [{minutes}:{seconds}] has {value:g} seconds (at most 59.99)")
    return int(minutes) * 60 + value


def parse_lrc(text: str, name: str = "lyrics.lrc") -> list[LyricLine]:
    """The timed lines of an LRC text, in time order (a line with several tags appears once per tag; ``[offset]``
    applied; blank lines, which LRC uses to end a line's display, dropped)."""
    offset, lines, previous = 0.0, [], None
    for number, raw in enumerate(text.splitlines(), start=1):
        if not raw.strip():
            continue
        tagged = _LEADING_TAGS.match(raw)
        if tagged is None:
            meta = _META_TAG.match(raw)
            if meta is None:
                raise LyricsError(f"{name}:{number}: not an LRC line (want '[mm:ss.xx] text' or '[tag: value]'): "
                                  f"{raw.strip()[:60]!r}")
            if meta.group(1).lower() == "offset":
                try:
                    offset = int(meta.group(2).strip()) / 1000.0  # LRC: a positive offset shows lines sooner
                except ValueError as err:
                    raise LyricsError(f"{name}:{number}: [offset:] needs whole milliseconds, got "
                                      f"{meta.group(2).strip()!r}") from err
            continue
        times = [_seconds(m, s, name, number) for m, s in _TIME_TAG.findall(tagged.group(1))]
        if previous is not None and times[0] < previous[0]:
            raise LyricsError(f"{name}:{number}: its time {times[0]:.2f} s is before line {previous[1]}'s "
                              f"{previous[0]:.2f} s; LRC lines must be in time order")
        previous = (times[0], number)
        words = " ".join(_WORD_TIME.sub("", tagged.group(2)).split())
        lines += [LyricLine(max(0.0, round(t - offset, 3)), words, number, name) for t in times]
    if not lines:
        raise LyricsError(f"{name}: no timed line ('[mm:ss.xx] text'): not an LRC file")
    return sorted((line for line in lines if line.text), key=lambda line: (line.time, line.line_number))


def plain_or_lrc(text: str, name: str) -> tuple[str | None, list[LyricLine] | None]:
    """``(plain lyrics, None)`` or ``(None, LRC lines)`` of the lyrics a user gave: text named ``*.lrc``, or text that
    reads as LRC, is LRC (``name`` names it in errors); plain lyrics come back stripped."""
    if str(name).lower().endswith(".lrc") or looks_like_lrc(text):
        return None, parse_lrc(text, str(name))
    return text.strip(), None


def read_lrc(path: str | Path) -> list[LyricLine]:
    """:func:`parse_lrc` of a file (UTF-8)."""
    path = Path(path)
    if not path.is_file():
        raise LyricsError(f"{path}: no such lyrics file")
    return parse_lrc(path.read_text(encoding="utf-8-sig"), str(path))


def check_within(lines: Sequence[LyricLine], duration: float, audio: str) -> None:
    """Every line starts before the song (``audio``, named in the error) ends, else an error naming the first line
    past it."""
    for line in lines:
        if line.time >= duration:
            raise LyricsError(f"{line.source}:{line.line_number}: the line at {line.time:.2f} s starts after the "
                              f"audio ends ({duration:.2f} s, {audio}); is this the song's LRC?")


def lines_between(lines: Sequence[LyricLine], start: float, end: float) -> list[LyricLine]:
    """The lines that start inside ``[start, end)`` seconds (the lines sung in a window)."""
    return [line for line in lines if start <= line.time < end]
