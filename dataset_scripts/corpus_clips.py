"""Cutting the demo corpus's clips: rendering MIDI and tracker modules, 30-s clips, silence checks, analysis.

:func:`process_track` is the per-track work (run in worker processes): render if needed, cut the clips, reject
silent ones, write each clip as 16-bit FLAC with its analysis. Everything is cached per clip, so a rerun skips it.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import soundfile as sf

from dataset_scripts import audio_analysis
from dataset_scripts.corpus_sources import Track, genre_tags, slug
from dataset_scripts.debian import DebianError, Tool
from m2mv.data.fileio import atomic_file, atomic_write_json
from m2mv.errors import CorpusError

PIPELINE_VERSION = 1  # bump when clip cutting or the record format changes: cached clips are then rebuilt
CORPUS_NAME = "m2mv-demo-corpus"
CLIP_S = 30.0
SILENCE_DBFS = -50.0  # clips with a lower RMS level are rejected
RENDER_RATE = 44100
RENDER_PEAK_DBFS = -1.0  # renders are scaled so that the whole track peaks here


# ---------------------------------------------------------------------------------------------------------------------
# Clip cutting


def clip_offsets(duration_s: float, clip_s: float = CLIP_S, clips_per_track: int = 1) -> list[float]:
    """Start times of the clips of a track: [] when shorter than clip_s; else k = min(clips_per_track,
    duration // clip_s - 1) clips centred at 1/(k+1) .. k/(k+1) of the track (no two overlap), or the middle clip
    when k < 2 (two clips centred at 1/3 and 2/3 need a track of 3 * clip_s)."""
    if duration_s < clip_s:
        return []
    count = min(clips_per_track, int(duration_s // clip_s) - 1)
    if count < 2:
        return [(duration_s - clip_s) / 2]
    return [duration_s * i / (count + 1) - clip_s / 2 for i in range(1, count + 1)]


def cut_clip(y: np.ndarray, sr: int, offset_s: float, clip_s: float = CLIP_S) -> np.ndarray:
    """Samples [round(offset*sr), + round(clip_s*sr)) of y (samples first); raises if y is too short."""
    start, n = int(round(offset_s * sr)), int(round(clip_s * sr))
    if start < 0 or start + n > len(y):
        raise ValueError(f"clip [{offset_s:.3f}, +{clip_s}] s lies outside the {len(y) / sr:.3f}-s signal")
    return y[start : start + n]


def silence_reason(y: np.ndarray, threshold_dbfs: float = SILENCE_DBFS) -> str | None:
    """None when the clip is audible, else why it is rejected."""
    level = audio_analysis.rms_dbfs(y)
    if level < threshold_dbfs:
        return f"silent: RMS {level:.1f} dBFS < {threshold_dbfs:.0f} dBFS"
    return None


def audible_span(y: np.ndarray, sr: int, threshold_dbfs: float = -60.0, frame_s: float = 0.05) -> tuple[float, float]:
    """(start, end) in seconds of the part of y between its first and last frame_s frame above threshold_dbfs RMS
    (renders have silent tails: reverb, a song that stops before its last pattern). (0, 0) when all is silent."""
    y = np.asarray(y, dtype=np.float32)
    y = y[:, None] if y.ndim == 1 else y
    hop = max(1, int(round(frame_s * sr)))
    n = len(y) // hop + (len(y) % hop > 0)
    if n == 0:
        return 0.0, 0.0
    padded = np.zeros((n * hop, y.shape[1]), np.float32)
    padded[: len(y)] = y
    level = audio_analysis.db(np.sqrt(np.mean(padded.reshape(n, hop * y.shape[1]).astype(np.float64) ** 2, axis=1)))
    loud = np.flatnonzero(level > threshold_dbfs)
    if not len(loud):
        return 0.0, 0.0
    return round(loud[0] * hop / sr, 3), round(min(len(y), (loud[-1] + 1) * hop) / sr, 3)


def make_clip_id(package: str, track_key: str, offset_s: float) -> str:
    """Stable id from package, track and offset: ``<package>--<track slug>--<offset in ms, 7 digits>``."""
    return f"{package}--{slug(track_key)}--{int(round(offset_s * 1000)):07d}"


def track_of(clip_id: str) -> str:
    """The track part of a :func:`make_clip_id` id (``<package>--<track slug>``): what the clips of one track share."""
    return clip_id.rsplit("--", 1)[0]


# ---------------------------------------------------------------------------------------------------------------------
# Small file helpers


def _atomic_write_audio(path: Path, y: np.ndarray, sr: int, fmt: str = "FLAC", subtype: str = "PCM_16") -> None:
    with atomic_file(path) as tmp:
        sf.write(str(tmp), y, sr, format=fmt, subtype=subtype)


def _read_json(path: Path):
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None



# ---------------------------------------------------------------------------------------------------------------------
# Rendering and per-track work (runs in worker processes)


@dataclass
class TrackTask:
    track: Track
    clip_dir: str  # cache folder of this package version's clips
    render_dir: str | None
    tools: dict[str, Tool]
    soundfont: str | None
    clips_per_track: int


@dataclass
class TrackResult:
    track: Track
    clip_dir: str
    records: list[dict] = field(default_factory=list)
    rejects: list[dict] = field(default_factory=list)
    seconds: float = 0.0


def _render(task: TrackTask) -> tuple[Path, dict]:
    """Render a MIDI file or module (float WAV), scale its peak to RENDER_PEAK_DBFS and keep it in the render cache
    as 16-bit FLAC; returns (flac, sidecar info: gain_db, audible span, title / artist of modules)."""
    t = task.track
    out = Path(task.render_dir) / f"{t.track_key}.flac"
    meta_path = out.with_suffix(".json")
    meta = _read_json(meta_path)
    if out.exists() and meta and "audible_end_s" in meta:
        return out, meta
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=out.parent, prefix=f".{out.stem}.tmp-", suffix=".wav")
    os.close(fd)
    what = f"{t.package} {t.version}: rendering {t.source_file}"
    meta = {}
    try:
        if t.kind == "midi":
            task.tools["fluidsynth"].run(
                ["-ni", "-q", "-g", "0.4", "-r", str(RENDER_RATE), "-O", "float", "-T", "wav", "-F", tmp,
                 task.soundfont, t.path], what, timeout=900)
        else:
            tool = task.tools["openmpt123"]
            info = tool.run(["--info", t.path], what + " (--info)", timeout=120).stdout
            for key, name in (("Title", "title"), ("Artist", "artist")):
                m = re.search(rf"^{key}\.*:\s*(.+?)\s*$", info, flags=re.M)
                if m:
                    meta[name] = m.group(1)
            tool.run(["--batch", "--quiet", "--samplerate", str(RENDER_RATE), "--channels", "2", "--float",
                      "--force", "-o", tmp, t.path], what, timeout=900)
        try:
            y, sr = sf.read(tmp, dtype="float32", always_2d=True)
        except (sf.LibsndfileError, RuntimeError) as e:
            raise CorpusError(f"{what}: the render is not readable: {e}") from e
        start, end = audible_span(y, sr)
        peak = float(np.max(np.abs(y))) if y.size else 0.0
        gain_db = RENDER_PEAK_DBFS - audio_analysis.db(peak) if peak > 0 else 0.0
        _atomic_write_audio(out, np.clip(y * np.float32(10 ** (gain_db / 20)), -1, 1), sr)  # 16 bits, as the clips
        meta.update(peak=peak, gain_db=round(gain_db, 3), duration_s=len(y) / sr, sample_rate=sr,
                    audible_start_s=start, audible_end_s=end)
        atomic_write_json(meta_path, meta)
    except DebianError as e:
        raise CorpusError(str(e)) from e
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return out, meta


def _track_fields(t: Track) -> dict:
    """The record fields that come from the package's metadata (not from the audio)."""
    return {
        "corpus": CORPUS_NAME,
        "source_package": t.package,
        "source_version": t.version,
        "source_file": t.source_file,
        "track_title": t.title,
        "artist": t.artist,
        "attribution": t.attribution,
        "attribution_source": t.attribution_source,
        "copyright_holders": t.copyright_holders,
        "licence": t.licence,
        "licence_file": f"licenses/{t.package}.copyright",
        "genre": t.genre,
        "genre_tags": genre_tags(t.genre),
    }


def _reject(t: Track, clip_id: str | None, kind: str, reason: str) -> dict:
    return {"source_package": t.package, "source_version": t.version, "source_file": t.source_file,
            "clip_id": clip_id, "kind": kind, "reason": reason}


def process_track(task: TrackTask) -> TrackResult:
    """Render if needed, cut the clips, reject silent ones, write FLAC and analysis (cached per clip)."""
    t0 = time.time()
    t = task.track
    res = TrackResult(t, task.clip_dir)
    what = f"{t.package} {t.version}: {t.source_file}"
    gain_db, render_info, span = 0.0, None, None
    if t.kind in ("midi", "module"):
        audio_path, meta = _render(task)
        if meta.get("title") and t.kind == "module":
            t.title = meta["title"]
        if meta.get("artist"):
            t.artist = t.attribution = meta["artist"]
            t.attribution_source = "module metadata"
        gain_db = meta["gain_db"]  # already applied to the cached render
        render_info = dict(t.render or {}, normalised_peak_dbfs=RENDER_PEAK_DBFS)
        span = (meta["audible_start_s"], meta["audible_end_s"])
    else:
        audio_path = Path(t.path)
    try:
        info = sf.info(str(audio_path))
    except (sf.LibsndfileError, RuntimeError) as e:
        raise CorpusError(f"{what}: unreadable audio: {e}") from e
    duration = info.frames / info.samplerate
    lead = 0.0
    if span is not None:  # renders: clips come from the audible part (no silent intro or tail)
        lead = span[0]
        offsets = [lead + o for o in clip_offsets(span[1] - span[0], CLIP_S, task.clips_per_track)]
    else:
        offsets = clip_offsets(duration, CLIP_S, task.clips_per_track)
    if not offsets:
        audible = f", {span[1] - span[0]:.1f} s audible" if span is not None else ""
        res.rejects.append(_reject(t, None, "short",
                                   f"track shorter than {CLIP_S:.0f} s ({duration:.1f} s{audible})"))
        res.seconds = time.time() - t0
        return res
    for offset in offsets:
        start = int(round(offset * info.samplerate))
        offset_s = start / info.samplerate
        clip_id = make_clip_id(t.package, t.track_key, offset_s)
        flac = Path(task.clip_dir) / f"{clip_id}.flac"
        rec_path, rej_path = flac.with_suffix(".json"), flac.with_suffix(".reject.json")
        rec = _read_json(rec_path)
        if rec and flac.exists():
            res.records.append({**rec, **_track_fields(t)})  # metadata as this run reads it; audio work cached
            continue
        rej = _read_json(rej_path)
        if rej:
            res.rejects.append(rej)
            continue
        n = int(round(CLIP_S * info.samplerate))
        try:
            y, sr = sf.read(str(audio_path), start=start, frames=n, dtype="float32", always_2d=True)
        except (sf.LibsndfileError, RuntimeError) as e:
            raise CorpusError(f"{what}: decoding [{offset_s:.2f} s, +{CLIP_S:.0f} s] failed: {e}") from e
        if len(y) < n * 0.99:
            rej = _reject(t, clip_id, "truncated",
                          f"decoded only {len(y) / sr:.2f} s of {CLIP_S:.0f} s at {offset_s:.2f} s (truncated file?)")
            atomic_write_json(rej_path, rej)
            res.rejects.append(rej)
            continue
        y = y[:n]
        clip_gain = gain_db  # renders: applied when rendered
        peak = float(np.max(np.abs(y))) if y.size else 0.0
        if peak > 0.999:  # a source that overshoots full scale: scale the clip rather than clip it at 16 bits
            extra = audio_analysis.db(0.999 / peak)
            y = y * np.float32(10 ** (extra / 20))
            clip_gain += extra
        reason = silence_reason(y)
        if reason:
            rej = _reject(t, clip_id, "silent", reason)
            atomic_write_json(rej_path, rej)
            res.rejects.append(rej)
            continue
        y = np.clip(y, -1.0, 1.0)
        analysis = audio_analysis.analyse_clip(y, sr)
        rec = {
            "clip_id": clip_id,
            "audio": f"clips/{clip_id}.flac",
            **_track_fields(t),
            "track_duration_s": round(duration, 3),
            "audible_span_s": list(span) if span is not None else None,
            "offset_s": round(offset_s, 4),
            "duration_s": round(len(y) / sr, 4),
            "sample_rate": int(sr),
            "channels": int(y.shape[1]),
            "gain_db": round(float(clip_gain), 2),
            "render": render_info,
            "pipeline_version": PIPELINE_VERSION,
            "analysis": analysis,
        }
        _atomic_write_audio(flac, y, sr)
        os.chmod(flac, 0o444)  # output folders hard-link these: keep them from being edited in place
        atomic_write_json(rec_path, rec)
        res.records.append(rec)
    res.seconds = time.time() - t0
    return res



def process_track_safely(task: TrackTask) -> TrackResult:
    """process_track, with a failure of this one track turned into a reject of kind "error"."""
    try:
        return process_track(task)
    except (CorpusError, sf.LibsndfileError, OSError, ValueError) as e:
        t = task.track
        msg = str(e) if isinstance(e, CorpusError) else f"{t.package} {t.version}: {t.source_file}: {e!r}"
        res = TrackResult(t, task.clip_dir)
        res.rejects.append(_reject(t, None, "error", msg))
        return res
