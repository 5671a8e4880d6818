"""Locating a music clip inside a video's soundtrack (a Music4All 30-s excerpt in the official video).

Two passes: a coarse one on (log-compressed) onset-strength envelopes (librosa, about 23 ms a step) over the
whole soundtrack, scored by normalised cross-correlation; then a fine one on the waveforms (8 kHz) within one
envelope step of each of the best coarse candidates, since regular music repeats its envelope every beat. The
confidence is the waveform correlation at the chosen offset (near 1 for the same recording, near 0 for unrelated
audio): below a threshold the clip is "not found" and the song is skipped with that reason.
"""

from __future__ import annotations

from dataclasses import dataclass

import librosa
import numpy as np

ENVELOPE_RATE = 22050
HOP = 512
FINE_RATE = 8000
CANDIDATES = 5  # coarse peaks refined on the waveform
DEFAULT_MIN_CONFIDENCE = 0.5


@dataclass(frozen=True)
class Alignment:
    """Where the clip starts in the soundtrack (``offset`` seconds) and how sure that is (``confidence``, 0-1)."""

    offset: float
    confidence: float


def _mono(waveform: np.ndarray, rate: int, target: int) -> np.ndarray:
    mono = np.asarray(waveform, dtype=np.float32)
    mono = mono.mean(axis=0) if mono.ndim == 2 else mono
    return librosa.resample(mono, orig_sr=rate, target_sr=target) if rate != target else mono


def _envelope(mono: np.ndarray) -> np.ndarray:
    return np.log1p(librosa.onset.onset_strength(y=mono, sr=ENVELOPE_RATE, hop_length=HOP).astype(np.float64))


def normalised_xcorr(signal: np.ndarray, template: np.ndarray) -> np.ndarray:
    """Pearson correlation of ``template`` with every window of ``signal`` of its length (FFT, one pass)."""
    n, m = len(signal), len(template)
    template = (template - template.mean()) / (template.std() * m + 1e-12)
    size = 1 << (n + m - 1).bit_length()
    dots = np.fft.irfft(np.fft.rfft(signal, size) * np.conj(np.fft.rfft(template, size)), size)[: n - m + 1]
    csum, csum2 = np.concatenate([[0.0], np.cumsum(signal)]), np.concatenate([[0.0], np.cumsum(signal ** 2)])
    means = (csum[m:] - csum[:-m]) / m
    stds = np.sqrt(np.maximum((csum2[m:] - csum2[:-m]) / m - means ** 2, 0.0))
    return dots / (stds + 1e-12)


def _peaks(scores: np.ndarray, count: int, spacing: int = 2) -> list[int]:
    """The ``count`` highest local maxima of ``scores``, at least ``spacing`` apart."""
    chosen: list[int] = []
    for index in np.argsort(scores)[::-1]:
        if all(abs(int(index) - c) > spacing for c in chosen):
            chosen.append(int(index))
        if len(chosen) == count:
            break
    return chosen


def locate_clip(soundtrack: np.ndarray, soundtrack_rate: int, clip: np.ndarray, clip_rate: int) -> Alignment:
    """The offset of ``clip`` in ``soundtrack`` (both float waveforms, (samples,) or (channels, samples))."""
    track, excerpt = _mono(soundtrack, soundtrack_rate, ENVELOPE_RATE), _mono(clip, clip_rate, ENVELOPE_RATE)
    if len(track) < len(excerpt):
        raise ValueError(f"the soundtrack ({len(track) / ENVELOPE_RATE:.1f} s) is shorter than the clip "
                         f"({len(excerpt) / ENVELOPE_RATE:.1f} s)")
    coarse = _peaks(normalised_xcorr(_envelope(track), _envelope(excerpt)), CANDIDATES)
    fine_track, fine_clip = _mono(track, ENVELOPE_RATE, FINE_RATE), _mono(excerpt, ENVELOPE_RATE, FINE_RATE)
    step = int(np.ceil(HOP / ENVELOPE_RATE * FINE_RATE))
    best = (-np.inf, 0)
    for lag in coarse:
        centre = int(lag * HOP / ENVELOPE_RATE * FINE_RATE)
        lo, hi = max(0, centre - step), min(len(fine_track) - len(fine_clip), centre + step)
        if hi < lo:
            continue
        scores = normalised_xcorr(fine_track[lo: hi + len(fine_clip)], fine_clip)
        index = int(np.argmax(scores))
        best = max(best, (float(scores[index]), lo + index))
    return Alignment(round(best[1] / FINE_RATE, 3), round(float(np.clip(best[0], 0.0, 1.0)), 4))
