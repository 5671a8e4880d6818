"""Beat-aligned frame boundaries: beat times grouped into frames of whole beats, about 2 s each.

:func:`group_beats` is the one grouping rule, used on detected beats by :func:`beat_frame_boundaries`
(``m2mv describe --align beats``, ``m2mv benchmark --align beats``) and on the demo corpus's stored beats by
``dataset_scripts/demo_dataset.py``. librosa (the beat tracker, an optional extra: ``m2mv[data]``) is imported
where beats are detected, so that fixed frames need no librosa.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

ALIGN_MODES = ("fixed", "beats")  # frame boundaries: fixed 2-s steps, or beat-aligned (listed in the prompt)
MIN_FRAME_SECONDS = 1.0  # every beat-aligned frame is at least this long (but a clip shorter than it is one frame)
MAX_FRAME_SECONDS = 4.0  # ... and at most this long: a longer stretch without beats gets fixed frames


class NoBeatsError(ValueError):
    """Fewer than 2 beats found (or beat tracking failed): no beat-aligned frames. ``reason`` names the audio;
    the message adds the hint to use fixed frames."""

    def __init__(self, reason: str):
        self.reason = reason
        super().__init__(f"{reason}; use --align fixed")


def beats_within(beat_times: Sequence[float], duration: float) -> np.ndarray:
    """The beat times strictly inside ``(0, duration)`` seconds, sorted, as float64."""
    beats = np.sort(np.asarray(beat_times, dtype=np.float64).reshape(-1))
    return beats[(beats > 0) & (beats < duration)]


def group_beats(beat_times: Sequence[float], duration: float, target: float = 2.0) -> list[tuple[float, float]]:
    """Frames of whole beats, each about ``target`` seconds, covering ``[0, duration]``.

    Each frame holds the whole number of beats whose length is closest to ``target`` (4 at 120 bpm, 3 at 90 bpm,
    from the median beat interval); the first cut is the beat closest to ``target`` s, the first frame starts at
    0.0 (absorbing any lead-in) and the last ends at ``duration``, absorbing a tail shorter than half a frame.
    Boundaries are rounded to 10 ms, the MV timestamp precision. Only beats inside ``(0, duration)`` count;
    fewer than 2 of them is a ValueError.

    Every frame then lies within ``[MIN_FRAME_SECONDS, MAX_FRAME_SECONDS]`` (:func:`bound_frames`): a stretch
    without beats longer than the maximum (an ambient intro, a break) gets ``target``-second frames instead of
    one giant frame.
    """
    beats = beats_within(beat_times, duration)
    if len(beats) < 2:
        raise ValueError(f"need at least 2 beats inside (0, {duration:g}) s to group them into frames, "
                         f"got {len(beats)}")
    interval = float(np.median(np.diff(beats)))
    beats_per_frame = max(1, round(target / interval))
    first = int(np.argmin(np.abs(beats - target)))
    cuts = [float(t) for t in beats[first::beats_per_frame]]
    if cuts and duration - cuts[-1] < beats_per_frame * interval / 2:
        cuts.pop()  # a short tail joins the last frame
    edges = [0.0, *(round(t, 2) for t in cuts), round(float(duration), 2)]
    return bound_frames([(start, end) for start, end in zip(edges, edges[1:]) if end > start], target)


def bound_frames(frames: Sequence[tuple[float, float]], target: float = 2.0,
                 shortest: float = MIN_FRAME_SECONDS, longest: float = MAX_FRAME_SECONDS) -> list[tuple[float, float]]:
    """Contiguous frames made to lie within ``[shortest, longest]`` seconds, keeping every boundary that can stay.

    A frame longer than ``longest`` is cut into ``target``-second frames from its start (a remainder shorter than
    ``shortest`` joins the last of them); a frame shorter than ``shortest`` joins its shorter neighbour, and if
    that makes it longer than ``longest`` the two are split in half. Times are rounded to 10 ms.
    """
    out: list[tuple[float, float]] = []
    for start, end in frames:
        if end - start <= longest:
            out.append((start, end))
            continue
        cuts = [round(start + k * target, 2) for k in range(1, int((end - start) // target) + 1)]
        if cuts and end - cuts[-1] < shortest:
            cuts.pop()
        edges = [start, *cuts, end]
        out.extend(zip(edges, edges[1:]))
    index = 0
    while len(out) > 1 and index < len(out):
        start, end = out[index]
        if end - start >= shortest:
            index += 1
            continue
        left = index - 1 if index > 0 else None
        right = index + 1 if index + 1 < len(out) else None
        other = left if right is None or (left is not None and _length(out[left]) <= _length(out[right])) else right
        first, second = sorted((index, other))
        merged = (out[first][0], out[second][1])
        if _length(merged) > longest:
            middle = round((merged[0] + merged[1]) / 2, 2)
            out[first: second + 1] = [(merged[0], middle), (middle, merged[1])]
            index = second + 1
        else:
            out[first: second + 1] = [merged]
            index = first
    return out


def _length(frame: tuple[float, float]) -> float:
    return frame[1] - frame[0]


def beat_frame_boundaries(
    waveform: np.ndarray,
    sampling_rate: int,
    duration: float | None = None,
    target: float = 2.0,
    name: str = "audio",
) -> tuple[list[tuple[float, float]], list[float]]:
    """Detect the beats of a waveform and group them into frames with :func:`group_beats`.

    Beats come from ``librosa.beat.beat_track`` on the channel mean of a (samples,) or (channels, samples)
    ``waveform``; ``duration`` defaults to the waveform's length. Returns ``(boundaries, beat_times)`` (beat
    times inside the clip, rounded to 1 ms). Raises :class:`NoBeatsError` naming ``name`` when fewer than 2 beats
    are found.
    """
    import librosa

    mono = np.asarray(waveform, dtype=np.float32)
    mono = mono.mean(axis=0) if mono.ndim == 2 else mono
    duration = float(mono.shape[-1] / sampling_rate if duration is None else duration)
    try:
        _, beats = librosa.beat.beat_track(y=np.ascontiguousarray(mono), sr=sampling_rate, units="time")
    except librosa.ParameterError as err:
        raise NoBeatsError(f"beat tracking failed on {name}: {err}") from err
    beats = beats_within(beats, duration)
    if len(beats) < 2:
        raise NoBeatsError(f"no beats detected in {name}")
    return group_beats(beats, duration, target), [round(float(t), 3) for t in beats]
