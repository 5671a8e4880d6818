"""Beat-aligned frame boundaries for ``m2mv describe --align beats`` (librosa's beat tracker, imported lazily)."""

from __future__ import annotations

import numpy as np


def beat_frame_boundaries(
    waveform: np.ndarray,
    sampling_rate: int,
    duration: float | None = None,
    target: float = 2.0,
    name: str = "audio",
) -> tuple[list[tuple[float, float]], list[float]]:
    """Frames of whole beats, each about ``target`` seconds, covering ``[0, duration]``.

    Beats come from ``librosa.beat.beat_track`` on the channel mean of a (samples,) or (channels, samples)
    ``waveform``. Each frame holds the whole number of beats whose length is closest to ``target`` (4 at 120 bpm,
    3 at 90 bpm, from the median beat interval); the first cut is the beat closest to ``target`` s, the first frame
    starts at 0.0 (absorbing any lead-in) and the last ends at ``duration`` (default: the waveform's length),
    absorbing a tail shorter than half a frame. Boundaries are rounded to 10 ms, the MV timestamp precision.

    Returns ``(boundaries, beat_times)``. Raises ValueError naming ``name`` when fewer than 2 beats are found.
    """
    import librosa

    mono = np.asarray(waveform, dtype=np.float32)
    mono = mono.mean(axis=0) if mono.ndim == 2 else mono
    duration = float(mono.shape[-1] / sampling_rate if duration is None else duration)
    try:
        _, beats = librosa.beat.beat_track(y=np.ascontiguousarray(mono), sr=sampling_rate, units="time")
    except librosa.ParameterError as err:
        raise ValueError(f"beat tracking failed on {name}: {err}") from err
    beats = beats[(beats > 0) & (beats < duration)]
    if len(beats) < 2:
        raise ValueError(f"no beats detected in {name}; use --align fixed")
    interval = float(np.median(np.diff(beats)))
    beats_per_frame = max(1, round(target / interval))
    first = int(np.argmin(np.abs(beats - target)))
    cuts = [float(t) for t in beats[first::beats_per_frame]]
    if cuts and duration - cuts[-1] < beats_per_frame * interval / 2:
        cuts.pop()  # a short tail joins the last frame
    edges = [0.0, *(round(t, 2) for t in cuts), round(duration, 2)]
    boundaries = [(start, end) for start, end in zip(edges, edges[1:]) if end > start]
    return boundaries, [round(float(t), 3) for t in beats]
