"""The words the demo dataset's synthetic descriptions use for measured facts of the audio.

One source of truth for two readers: ``dataset_scripts/demo_dataset.py`` writes captions and descriptions with
them, and the benchmark's music-facts metric (:mod:`m2mv.evaluation.music_facts`) reads them back out of a
prediction and its reference. Each fact has a fixed vocabulary, so "does the prediction state the reference's
tempo / key / light / dynamics / per-frame shot" is a string match, not a judgement.
"""

from __future__ import annotations

import numpy as np

# tempo: upper BPM bound (exclusive) -> word; no tempo measured -> FREE_TEMPO
TEMPO_BANDS: tuple[tuple[float, str], ...] = ((85.0, "slow"), (115.0, "mid-tempo"), (145.0, "fast"),
                                              (float("inf"), "very fast"))
FREE_TEMPO = "free-flowing"
# brightness = mean spectral centroid: upper bound in Hz (exclusive) -> word
BRIGHTNESS_BANDS: tuple[tuple[float, str], ...] = ((1200.0, "dark"), (2200.0, "warm"), (3500.0, "bright"),
                                                   (float("inf"), "glassy"))
DYNAMICS_WORDS = ("building up", "fading down", "steady", "restless")
LIGHT_BY_BRIGHTNESS = {"dark": "deep shadows", "warm": "warm amber light", "bright": "bright daylight colours",
                       "glassy": "sharp white highlights"}
# a frame's loudness level (its window against the clip's 33rd/67th percentiles) -> its shot
SHOT_BY_LEVEL = {
    "quiet": "a still, wide shot in soft light",
    "medium": "the camera glides slowly",
    "loud": "quick cuts and a moving camera",
}
MODES = ("major", "minor")


def tempo_word(bpm: float | None) -> str:
    if not bpm:
        return FREE_TEMPO
    return next(word for bound, word in TEMPO_BANDS if bpm < bound)


def brightness_word(centroid_hz: float) -> str:
    return next(word for bound, word in BRIGHTNESS_BANDS if centroid_hz < bound)


def dynamics_word(loudness: list[float]) -> str:
    """Louder by 3 dB in the second half: building up; quieter: fading down; else steady (range under 6 dB) or
    restless."""
    first, last = np.mean(loudness[: len(loudness) // 2]), np.mean(loudness[len(loudness) // 2:])
    if last - first > 3:
        return "building up"
    if first - last > 3:
        return "fading down"
    return "steady" if np.ptp(loudness) < 6 else "restless"


def tempo_words() -> tuple[str, ...]:
    return (FREE_TEMPO,) + tuple(word for _, word in TEMPO_BANDS)
