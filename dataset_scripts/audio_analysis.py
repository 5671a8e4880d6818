"""Rule-based audio analysis of a music clip: tempo and beats, loudness and brightness curves, key and mode, energy.

Everything here is derived from the audio alone, so that tags and descriptions built from it carry information a model
can learn from the audio. The functions take a waveform as a numpy array, shape ``(samples,)`` or
``(samples, channels)``, float in [-1, 1], and its sample rate.

Conventions:
- levels are dBFS of the plain RMS (a full-scale sine reads -3.01 dBFS), floored at ``-120``;
- curves use non-overlapping windows of ``window_s`` seconds (2 s: 15 windows for a 30-s clip), matching the 2-s
  frame steps of an MV description;
- tempo, beats, onsets and key use a mono down-mix resampled to ``ANALYSIS_RATE`` (22,050 Hz); loudness and the
  spectral centroid use the clip at its own rate.

librosa supplies the onset envelope, the beat tracker and the constant-Q chroma; the rest is numpy.

librosa compiles numba functions (some when it is imported) and caches them on disk. Processes that compile into one
cache at the same time have left it corrupt here (every later call segfaulted), so `librosa_module()` points numba's
cache at ``$XDG_CACHE_HOME/m2mv/numba`` (unless NUMBA_CACHE_DIR is set, or numba was imported already) and imports and
warms librosa up while holding a file lock there: compiling happens in one process at a time, and processes forked
afterwards inherit the compiled functions.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np

from m2mv.data.cache import cache_root

ANALYSIS_VERSION = 1
ANALYSIS_RATE = 22050
HOP = 512
WINDOW_S = 2.0
FLOOR_DB = -120.0

PITCH_CLASSES = ("C", "C#", "D", "Eb", "E", "F", "F#", "G", "Ab", "A", "Bb", "B")
# Krumhansl & Kessler (1982) probe-tone profiles, index 0 = tonic.
KK_MAJOR = np.array([6.35, 2.23, 3.48, 2.33, 4.38, 4.09, 2.52, 5.19, 2.39, 3.66, 2.29, 2.88])
KK_MINOR = np.array([6.33, 2.68, 3.52, 5.38, 2.60, 3.53, 2.54, 4.75, 3.98, 2.69, 3.34, 3.17])


_librosa = None


def numba_cache_dir() -> Path:
    return cache_root("numba")


def librosa_module():
    """librosa, imported and its numba functions compiled (or loaded from the cache) under a file lock."""
    global _librosa
    if _librosa is not None:
        return _librosa
    if "numba" not in sys.modules:
        os.environ.setdefault("NUMBA_CACHE_DIR", str(numba_cache_dir()))
    lock_dir = Path(os.environ.get("NUMBA_CACHE_DIR") or numba_cache_dir())
    lock_dir.mkdir(parents=True, exist_ok=True)
    try:
        import fcntl
    except ImportError:  # not POSIX: no lock
        fcntl = None
    with open(lock_dir / ".m2mv-compile.lock", "w") as lock:
        if fcntl:
            fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            import librosa

            _librosa = librosa
            rng = np.random.default_rng(0)
            _analyse(librosa, (0.1 * rng.standard_normal((3 * 44100, 2))).astype(np.float32), 44100, WINDOW_S)
        except BaseException:
            _librosa = None
            raise
        finally:
            if fcntl:
                fcntl.flock(lock, fcntl.LOCK_UN)
    return _librosa


def _as_2d(y: np.ndarray) -> np.ndarray:
    y = np.asarray(y, dtype=np.float32)
    if y.ndim == 1:
        return y[:, None]
    if y.ndim != 2:
        raise ValueError(f"expected audio of shape (samples,) or (samples, channels), got {y.shape}")
    return y


def to_mono(y: np.ndarray) -> np.ndarray:
    """Mean of the channels, float32, shape (samples,)."""
    return _as_2d(y).mean(axis=1)


def db(x: float | np.ndarray) -> float | np.ndarray:
    """20 log10(x), floored at FLOOR_DB."""
    out = 20.0 * np.log10(np.maximum(np.asarray(x, dtype=np.float64), 10 ** (FLOOR_DB / 20)))
    return float(out) if np.ndim(out) == 0 else out


def rms_dbfs(y: np.ndarray) -> float:
    """RMS level over all samples of all channels, in dBFS."""
    y = _as_2d(y).astype(np.float64)
    if y.size == 0:
        return FLOOR_DB
    return db(np.sqrt(np.mean(y**2)))


def peak_dbfs(y: np.ndarray) -> float:
    y = _as_2d(y)
    return db(float(np.max(np.abs(y)))) if y.size else FLOOR_DB


def _windows(n_samples: int, sr: int, window_s: float) -> list[tuple[int, int]]:
    """Non-overlapping windows of window_s seconds; a last partial window is kept when it is at least half long."""
    w = int(round(window_s * sr))
    bounds = []
    for start in range(0, n_samples, w):
        end = min(start + w, n_samples)
        if end - start >= w / 2 or not bounds:
            bounds.append((start, end))
    return bounds


def loudness_curve(y: np.ndarray, sr: int, window_s: float = WINDOW_S) -> np.ndarray:
    """RMS level in dBFS of each window_s window (all channels together)."""
    y = _as_2d(y).astype(np.float64)
    return np.array([db(np.sqrt(np.mean(y[a:b] ** 2))) for a, b in _windows(len(y), sr, window_s)])


def spectral_centroid_curve(y: np.ndarray, sr: int, window_s: float = WINDOW_S, n_fft: int = 2048) -> np.ndarray:
    """Spectral centroid in Hz of each window (of the mean magnitude spectrum of its Hann-windowed frames).

    A silent window reads 0 Hz.
    """
    mono = to_mono(y).astype(np.float64)
    hop = n_fft // 2
    win = np.hanning(n_fft)
    freqs = np.fft.rfftfreq(n_fft, 1.0 / sr)
    out = []
    for a, b in _windows(len(mono), sr, window_s):
        seg = mono[a:b]
        if len(seg) < n_fft:
            seg = np.pad(seg, (0, n_fft - len(seg)))
        n_frames = 1 + (len(seg) - n_fft) // hop
        idx = np.arange(n_fft)[None, :] + hop * np.arange(n_frames)[:, None]
        mag = np.abs(np.fft.rfft(seg[idx] * win, axis=1)).mean(axis=0)
        total = mag.sum()
        out.append(float((freqs * mag).sum() / total) if total > 1e-9 else 0.0)
    return np.array(out)


def _analysis_signal(y: np.ndarray, sr: int, librosa=None) -> np.ndarray:
    librosa = librosa or librosa_module()
    mono = to_mono(y)
    if sr != ANALYSIS_RATE:
        mono = librosa.resample(mono, orig_sr=sr, target_sr=ANALYSIS_RATE, res_type="soxr_hq")
    return np.ascontiguousarray(mono, dtype=np.float32)


def _refine_tempo(beat_times: np.ndarray) -> float | None:
    """Tempo from a least-squares line through the beat times (beats numbered through skipped beats).

    The beat tracker's own tempo is quantised to whole hops of the onset envelope (at 22,050 Hz / 512: 117.5 or 123.0
    BPM for a true 120); the beat times average that out.
    """
    if len(beat_times) < 6:
        return None
    ibi = np.diff(beat_times)
    med = float(np.median(ibi))
    if med <= 0:
        return None
    steps = np.maximum(1, np.round(ibi / med)).astype(int)
    index = np.concatenate([[0], np.cumsum(steps)])
    slope = np.polyfit(index, beat_times, 1)[0]
    return 60.0 / slope if slope > 0 else None


def estimate_tempo(y: np.ndarray, sr: int, onset_env: np.ndarray | None = None, librosa=None
                   ) -> tuple[float, np.ndarray]:
    """(tempo in BPM, beat times in seconds) from librosa's dynamic-programming beat tracker.

    0 BPM and no beats for a signal without onsets.
    """
    librosa = librosa or librosa_module()
    if onset_env is None:
        sig = _analysis_signal(y, sr, librosa)
        onset_env = librosa.onset.onset_strength(y=sig, sr=ANALYSIS_RATE, hop_length=HOP)
    if not np.any(onset_env > 0):
        return 0.0, np.zeros(0)
    tempo, beats = librosa.beat.beat_track(onset_envelope=onset_env, sr=ANALYSIS_RATE, hop_length=HOP, units="time")
    tempo = float(np.atleast_1d(tempo)[0])
    refined = _refine_tempo(np.asarray(beats))
    # keep the tracker's tempo octave: the refinement only removes quantisation (and must stay within 8 %)
    if refined is not None and tempo > 0 and abs(refined / tempo - 1) < 0.08:
        tempo = refined
    return tempo, np.asarray(beats, dtype=np.float64)


def key_from_chroma(chroma: np.ndarray) -> dict:
    """Krumhansl-Schmuckler key finding on a 12-bin chroma (C first), or a (12, frames) chromagram.

    Returns tonic, mode ("major"/"minor"), key ("C major"), confidence (the Pearson correlation of the best key
    profile) and margin (best minus second-best correlation).
    """
    chroma = np.asarray(chroma, dtype=np.float64)
    if chroma.ndim == 2:
        chroma = chroma.sum(axis=1)
    if chroma.shape != (12,):
        raise ValueError(f"chroma must have 12 bins, got {chroma.shape}")
    if np.allclose(chroma, chroma[0]):
        return {"tonic": None, "mode": None, "key": None, "confidence": 0.0, "margin": 0.0}
    scores = []
    for mode, profile in (("major", KK_MAJOR), ("minor", KK_MINOR)):
        for tonic in range(12):
            r = np.corrcoef(chroma, np.roll(profile, tonic))[0, 1]
            scores.append((r, tonic, mode))
    scores.sort(key=lambda s: s[0], reverse=True)
    (r, tonic, mode), second = scores[0], scores[1]
    return {
        "tonic": PITCH_CLASSES[tonic],
        "mode": mode,
        "key": f"{PITCH_CLASSES[tonic]} {mode}",
        "confidence": round(float(r), 4),
        "margin": round(float(r - second[0]), 4),
    }


def chroma_profile(y: np.ndarray, sr: int) -> np.ndarray:
    """Constant-Q chroma of the clip summed over time (12 bins, C first), normalised to sum 1."""
    librosa = librosa_module()
    sig = _analysis_signal(y, sr)
    chroma = librosa.feature.chroma_cqt(y=sig, sr=ANALYSIS_RATE, hop_length=HOP)
    total = chroma.sum(axis=1)
    return total / total.sum() if total.sum() > 0 else total


def estimate_key(y: np.ndarray, sr: int) -> dict:
    return key_from_chroma(chroma_profile(y, sr))


def analyse_clip(y: np.ndarray, sr: int, window_s: float = WINDOW_S) -> dict:
    """All the analysis of one clip, as a JSON-ready dict (the manifest's `analysis` field)."""
    return _analyse(librosa_module(), y, sr, window_s)


def _analyse(librosa, y: np.ndarray, sr: int, window_s: float) -> dict:
    y2 = _as_2d(y)
    sig = _analysis_signal(y2, sr, librosa)
    onset_env = librosa.onset.onset_strength(y=sig, sr=ANALYSIS_RATE, hop_length=HOP)
    tempo, beats = estimate_tempo(sig, ANALYSIS_RATE, onset_env=onset_env, librosa=librosa)
    onsets = librosa.onset.onset_detect(onset_envelope=onset_env, sr=ANALYSIS_RATE, hop_length=HOP, units="time")
    chroma = librosa.feature.chroma_cqt(y=sig, sr=ANALYSIS_RATE, hop_length=HOP).sum(axis=1)
    key = key_from_chroma(chroma) if chroma.sum() > 0 else key_from_chroma(np.zeros(12))
    loud = loudness_curve(y2, sr, window_s)
    centroid = spectral_centroid_curve(y2, sr, window_s)
    duration = len(y2) / sr
    audible = loud[loud > -60.0]
    return {
        "version": ANALYSIS_VERSION,
        "window_s": window_s,
        "tempo_bpm": round(float(tempo), 2),
        "beat_times_s": [round(float(t), 3) for t in beats],
        "onset_rate_per_s": round(len(onsets) / duration, 3) if duration > 0 else 0.0,
        "loudness_dbfs": [round(float(v), 2) for v in loud],
        "centroid_hz": [round(float(v), 1) for v in centroid],
        "key": key["key"],
        "tonic": key["tonic"],
        "mode": key["mode"],
        "key_confidence": key["confidence"],
        "key_margin": key["margin"],
        "chroma": [round(float(v), 4) for v in (chroma / chroma.sum() if chroma.sum() > 0 else chroma)],
        "rms_dbfs": round(rms_dbfs(y2), 2),
        "peak_dbfs": round(peak_dbfs(y2), 2),
        "loudness_range_db": round(float(audible.max() - audible.min()), 2) if len(audible) else 0.0,
        "centroid_mean_hz": round(float(np.mean(centroid)), 1) if len(centroid) else 0.0,
    }
