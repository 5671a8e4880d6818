"""Build the m2mv demo corpus: 30-s clips of REAL music from Debian game/music packages, with licences and analysis.

    python -m dataset_scripts.demo_corpus --out DIR [--subset small|full] [--jobs N] [--cache-dir DIR]

or ``build_demo_corpus(out_dir, subset="small", cache_dir=None)``. This is NOT Music4All: it is a stand-in for tests
and demos, from the packages listed in ``/work/shared/demo-corpus.md`` (GPL and Creative Commons music).

Steps, per source package:
1. ``apt-get download`` the .deb into the cache (skipped when that version is cached) and ``dpkg-deb -x`` it (no
   system install); zip archives inside (``.pk3``) are extracted;
2. MIDI files are rendered with fluidsynth and the TimGM6mb General MIDI soundfont, tracker modules with openmpt123,
   both as float WAV at 44.1 kHz (peak-normalised to -1 dBFS per track); OGG files are read at their own rate;
3. from every track of at least 30 s, one 30-s clip from its middle (``full``: two non-overlapping clips, centred at
   1/3 and 2/3, from tracks of 90 s or more); clips quieter than -50 dBFS RMS are rejected (and logged);
4. each clip is written as 16-bit FLAC (source rate and channels) and analysed (`audio_analysis.analyse_clip`).

Subsets: ``small`` = openttd-openmsx (jazz/blues MIDI), pingus-data (tracker modules), nexuiz-music (techno), a
fixed pseudo-random choice of tracks (about 30 clips; minutes on 2 cores); ``full`` = every track of those and of
wesnoth-1.16-music, supertux-data and ufoai-music (about 400 clips, 3+ hours).

Output folder::

    manifest.jsonl     one JSON record per clip (see `README.md` written beside it for the fields)
    clips/<clip_id>.flac
    rejects.jsonl      clips and tracks left out, with the reason
    licenses/<package>.copyright   the Debian copyright file of every package used (and of the soundfont)
    summary.json, README.md

Cache (outside the repo): ``$XDG_CACHE_HOME/m2mv/demo-corpus`` (default ``~/.cache/m2mv/demo-corpus``)::

    debs/<package>_<version>_<arch>.deb
    unpacked/<package>_<version>/           dpkg-deb -x of the .deb
    extracted/<package>_<version>/          members of the zip archives inside it
    tools/<packages>-<hash>/                fluidsynth, openmpt123 and the libraries this system lacks, unpacked
    renders/<package>_<version>/<renderer>/<track>.wav (+ .json: peak, title)
    clips/p<PIPELINE_VERSION>/<package>_<version>/<renderer|source>/<clip_id>.flac (+ .json record, or .reject.json)

Everything is keyed by package version (and renderer version), written under temporary names and renamed, so a rerun
skips finished work and an interrupted build resumes. Output clips are hard links to the (read-only) cached clips
where the file system allows, else copies.
"""

from __future__ import annotations

from m2mv.fileio import atomic_directory, atomic_write_text
import argparse
import difflib
import fnmatch
import hashlib
import json
import logging
import multiprocessing
import os
import re
import shutil
import sys
import tempfile
import time
import zipfile
from collections import Counter, defaultdict
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import soundfile as sf

from . import audio_analysis
from .debian import DebianError, Tool, ensure_tools, fetch_deb, unpack_deb, version_key

log = logging.getLogger("m2mv.demo_corpus")

PIPELINE_VERSION = 1  # bump when clip cutting or the record format changes: cached clips are then rebuilt
CORPUS_NAME = "m2mv-demo-corpus"
CLIP_S = 30.0
SILENCE_DBFS = -50.0  # clips with a lower RMS level are rejected
RENDER_RATE = 44100
RENDER_PEAK_DBFS = -1.0  # renders are scaled so that the whole track peaks here
TWO_CLIPS_MIN_S = 3 * CLIP_S  # two clips (centred at 1/3 and 2/3) need 90 s to stay apart
SOUNDFONT_PACKAGE = "timgm6mb-soundfont"
SOUNDFONT_PATH = "usr/share/sounds/sf2/TimGM6mb.sf2"


class CorpusError(RuntimeError):
    """A build step failed; the message names the package and file."""


@dataclass(frozen=True)
class SourceSpec:
    package: str
    kind: str  # "ogg" (read as is), "midi" (fluidsynth), "module" (openmpt123)
    patterns: tuple[str, ...]  # globs relative to the package root, or to the archive root when `archive` is set
    genre: str  # from the genre / mood column of demo-corpus.md
    licence: str  # used when the copyright file is not machine-readable (DEP-5)
    archive: str | None = None  # a zip (.pk3) inside the package holding the files
    small_tracks: int = 10  # tracks taken when the subset is limited ("small")
    attribution: str | None = None  # package-level credit, for files that name no author


SOURCES: dict[str, SourceSpec] = {
    s.package: s
    for s in (
        SourceSpec("openttd-openmsx", "midi", ("usr/share/games/openttd/baseset/openmsx/*.mid",),
                   "jazz, blues, ragtime", "GPL-2", small_tracks=12),
        SourceSpec("pingus-data", "module", ("usr/share/games/pingus/data/music/*.it",
                                             "usr/share/games/pingus/data/music/*.s3m"),
                   "tracker / chiptune", "GPL-2+", small_tracks=8),
        SourceSpec("nexuiz-music", "ogg", ("sound/cdtracks/*.ogg",), "techno, industrial, drum'n'bass", "GPL-2+",
                   archive="usr/share/games/nexuiz/data/music.pk3", small_tracks=10,
                   attribution="Nexuiz, (c) 2002-2009 Alientrap, Lee Vermeulen"),
        SourceSpec("wesnoth-1.16-music", "ogg", ("usr/share/games/wesnoth/*/data/core/music/*.ogg",),
                   "orchestral fantasy, Celtic/folk", "GPL-2+", small_tracks=10),
        SourceSpec("supertux-data", "ogg", ("usr/share/games/supertux2/music/*/*.ogg",),
                   "cheerful platformer, retro/chip-style", "GPL-2+", small_tracks=10),
        SourceSpec("ufoai-music", "ogg", ("music/*.ogg",), "sci-fi orchestral, ambient, electronic",
                   "GPL-2+ (per file: see the copyright file)", archive="usr/share/games/ufoai/base/0music.pk3",
                   small_tracks=10),
    )
}

SUBSETS = {
    "small": {"sources": ["openttd-openmsx", "pingus-data", "nexuiz-music"], "clips_per_track": 1, "limited": True},
    "full": {"sources": list(SOURCES), "clips_per_track": 2, "limited": False},
}


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "m2mv" / "demo-corpus"


def genre_tags(genre: str) -> list[str]:
    """"orchestral fantasy, Celtic/folk" -> ["orchestral fantasy", "Celtic", "folk"]."""
    return [t.strip() for t in re.split(r"[,/]", genre) if t.strip()]


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "track"


# ---------------------------------------------------------------------------------------------------------------------
# Clip cutting


def clip_offsets(duration_s: float, clip_s: float = CLIP_S, clips_per_track: int = 1) -> list[float]:
    """Start times of the clips of a track: [] when shorter than clip_s; the middle clip; or, with
    clips_per_track >= 2 and a track of at least 3 * clip_s, two clips centred at 1/3 and 2/3 (apart by >= clip_s/2)."""
    if duration_s < clip_s:
        return []
    if clips_per_track >= 2 and duration_s >= 3 * clip_s:
        return [duration_s / 3 - clip_s / 2, 2 * duration_s / 3 - clip_s / 2]
    return [(duration_s - clip_s) / 2]


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


# ---------------------------------------------------------------------------------------------------------------------
# Small file helpers


def _atomic_write_json(path: Path, obj) -> None:
    atomic_write_text(path, json.dumps(obj, indent=1, ensure_ascii=False) + "\n")


def _atomic_write_audio(path: Path, y: np.ndarray, sr: int, fmt: str = "FLAC", subtype: str = "PCM_16") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.tmp-")
    os.close(fd)
    try:
        sf.write(tmp, y, sr, format=fmt, subtype=subtype)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _read_json(path: Path):
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


# ---------------------------------------------------------------------------------------------------------------------
# Licences: Debian copyright files


@dataclass
class CopyrightInfo:
    """A package's copyright file; `lookup` gives (licence, copyright holders) of one file when it is DEP-5."""

    text: str
    default_licence: str
    paragraphs: list[dict] = field(default_factory=list)  # DEP-5 "Files" paragraphs, in file order

    @classmethod
    def parse(cls, text: str, default_licence: str) -> "CopyrightInfo":
        info = cls(text, default_licence)
        if not text.startswith("Format:") or "copyright-format" not in text.split("\n", 1)[0]:
            return info
        for block in re.split(r"\n\s*\n", text):
            fields, key = {}, None
            for line in block.splitlines():
                if line and not line[0].isspace() and ":" in line:
                    key, _, value = line.partition(":")
                    key = key.strip()
                    fields[key] = [value.strip()] if value.strip() else []
                elif key and line.strip() and line.strip() != ".":
                    fields[key].append(line.strip())
            if "Files" in fields and "License" in fields:
                patterns = " ".join(fields["Files"]).split()
                info.paragraphs.append(
                    {"files": patterns, "licence": fields["License"][0] if fields["License"] else "",
                     "copyright": "; ".join(fields.get("Copyright", []))}
                )
        return info

    @staticmethod
    def _match_score(pattern: str, path: str) -> int:
        """-1 when the DEP-5 glob (where * crosses /) does not match path, else how specific the match is (its literal
        characters). The path's leading folders may differ from the source tree's (installed under usr/share/...,
        or a member of a .pk3): a pattern's trailing folders may match the end of the path, keeping at least one
        folder (so "data/music/*" matches ".../supertux2/music/x.ogg", and "debian/*" matches nothing here)."""
        if pattern == "*":
            return 0
        parts = path.split("/")
        pp = pattern.split("/")
        for cand in [pattern] + ["/".join(pp[i:]) for i in range(1, len(pp) - 1)]:
            if any(fnmatch.fnmatchcase("/".join(parts[i:]), cand) for i in range(len(parts))):
                return len(re.sub(r"[*?]|\[[^]]*\]", "", cand))
        return -1

    def lookup(self, path: str) -> tuple[str, str | None]:
        """(licence, copyright holders) of path: the most specific matching Files paragraph, the last one among
        equally specific ones (DEP-5's "last match wins" for the usual general-to-specific order)."""
        best, licence, holders = -1, self.default_licence, None
        for para in self.paragraphs:
            score = max(self._match_score(p, path) for p in para["files"])
            if score >= 0 and score >= best:
                best, licence, holders = score, para["licence"], para["copyright"] or None
        return licence, holders


# ---------------------------------------------------------------------------------------------------------------------
# Tracks


@dataclass
class Track:
    package: str
    version: str
    kind: str
    source_file: str  # path in the package (archive members: "<archive>!<member>")
    track_key: str  # unique within the package, used in the clip id
    path: str  # absolute path of the file to read or render
    genre: str
    licence: str
    copyright_holders: str | None = None
    title: str | None = None
    artist: str | None = None
    attribution: str | None = None
    attribution_source: str | None = None
    render: dict | None = None  # renderer settings (MIDI, modules)


def _glob_files(root: Path, patterns: tuple[str, ...]) -> list[Path]:
    found = set()
    for pat in patterns:
        found.update(p for p in root.glob(pat) if p.is_file())
    return sorted(found)


def _extract_archive(archive: Path, patterns: tuple[str, ...], dest: Path, what: str) -> Path:
    """Extract the members matching patterns (atomically, once)."""
    if (dest / ".extracted").exists():
        return dest
    with atomic_directory(dest) as tmp:
        try:
            with zipfile.ZipFile(archive) as z:
                for name in z.namelist():
                    if any(fnmatch.fnmatchcase(name, p) for p in patterns):
                        z.extract(name, tmp)
        except (zipfile.BadZipFile, OSError) as e:
            raise CorpusError(f"{what}: cannot extract {archive.name}: {e}") from e
        (tmp / ".extracted").write_text(archive.name + "\n")
    return dest


def _ogg_tags(path: Path) -> dict:
    try:
        with sf.SoundFile(str(path)) as f:
            return {k: v.strip() for k, v in f.copy_metadata().items() if isinstance(v, str) and v.strip()}
    except (sf.LibsndfileError, RuntimeError, OSError):
        return {}


def _title_from_name(stem: str) -> str:
    return re.sub(r"[_-]+", " ", stem).strip().title()


def _ini_section(text: str, section: str) -> dict[str, str]:
    m = re.search(rf"^\[{re.escape(section)}\]\s*$(.*?)(?=^\[|\Z)", text, flags=re.M | re.S)
    out = {}
    for line in (m.group(1) if m else "").splitlines():
        if "=" in line and not line.lstrip().startswith(("#", ";")):
            k, _, v = line.partition("=")
            out[k.strip()] = v.strip()
    return out


def _openmsx_metadata(root: Path) -> tuple[dict[str, str], dict[str, str]]:
    """(file -> title, file -> composer) from OpenMSX's openmsx.obm and the credits of its readme.txt."""
    import gzip

    obm_files = list(root.glob("usr/share/games/openttd/baseset/openmsx/*.obm"))
    obm = obm_files[0].read_text(encoding="utf-8", errors="replace") if obm_files else ""
    names = _ini_section(obm, "names")
    slots = {v: k for k, v in _ini_section(obm, "files").items()}  # file -> slot (theme, old_0, new_3, ezy_5, ...)
    readme = ""
    for p in root.glob("usr/share/doc/openttd-openmsx/readme.txt*"):
        readme = (gzip.open(p, "rt", errors="replace") if p.suffix == ".gz" else p.open(errors="replace")).read()
    by_title, set_author = {}, {}
    m = re.search(r"Musicians:\n(.*?)(?:\n\s*\n\s*\n|Song notes:)", readme, flags=re.S)
    pending: list[str] = []
    for line in (m.group(1) if m else "").splitlines():
        indent, text = len(line) - len(line.lstrip()), line.strip()
        if not text:
            continue
        if indent <= 2:
            pending.append(text)
        else:
            for t in pending:
                sm = re.match(r"All '(.+)' tracks", t)
                if sm:
                    set_author[sm.group(1).lower()] = text
                else:
                    by_title[t.lower()] = text
            pending = []
    set_prefix = {"ezy street": "ezy_", "modern": "new_"}  # OpenMSX's sets and their slot names in openmsx.obm
    composers = {}
    for file, title in names.items():
        hit = difflib.get_close_matches(title.lower(), list(by_title), n=1, cutoff=0.85)
        if hit:
            composers[file] = by_title[hit[0]]
            continue
        for set_name, author in set_author.items():
            prefix = set_prefix.get(set_name)
            if prefix and slots.get(file, "").startswith(prefix):
                composers[file] = author
    return names, composers


def _pingus_musicians(root: Path) -> list[str]:
    credits = next(iter(root.glob("usr/share/games/pingus/data/credits/*.credits")), None)
    if credits is None:
        return []
    out, inside = [], False
    for line in credits.read_text(errors="replace").splitlines():
        if line.strip().lower() == "-music":
            inside = True
        elif inside and line.startswith("_"):
            out.append(line[1:].strip())
        elif inside:
            break
    return out


def _unique_keys(paths: list[str]) -> dict[str, str]:
    """Track keys: the file stem, prefixed by its folder where stems repeat within the package."""
    stems = Counter(Path(p).stem for p in paths)
    return {p: (f"{Path(p).parent.name}-{Path(p).stem}" if stems[Path(p).stem] > 1 else Path(p).stem) for p in paths}


def enumerate_tracks(spec: SourceSpec, version: str, root: Path, cache_dir: Path) -> tuple[list[Track], CopyrightInfo]:
    """All candidate tracks of an unpacked package, with title, licence and attribution."""
    what = f"{spec.package} {version}"
    copyright_path = root / "usr" / "share" / "doc" / spec.package / "copyright"
    text = copyright_path.read_text(encoding="utf-8", errors="replace") if copyright_path.exists() else ""
    if not text:
        log.warning("%s: no copyright file; recording the licence %r", what, spec.licence)
    cinfo = CopyrightInfo.parse(text, spec.licence)

    if spec.archive:
        archive = root / spec.archive
        if not archive.exists():
            raise CorpusError(f"{what}: archive {spec.archive} not found in the package")
        base = _extract_archive(archive, spec.patterns, cache_dir / "extracted" / version_key(spec.package, version),
                                what)
        files = _glob_files(base, spec.patterns)
        rel = {str(f): f"{spec.archive}!{f.relative_to(base).as_posix()}" for f in files}
        lookup_path = {str(f): f.relative_to(base).as_posix() for f in files}
    else:
        files = _glob_files(root, spec.patterns)
        rel = {str(f): f.relative_to(root).as_posix() for f in files}
        lookup_path = rel
    if not files:
        raise CorpusError(f"{what}: no files match {list(spec.patterns)} (package layout changed?)")
    keys = _unique_keys([rel[str(f)] for f in files])

    extra_titles, composers, musicians = {}, {}, []
    if spec.package == "openttd-openmsx":
        extra_titles, composers = _openmsx_metadata(root)
    if spec.package == "pingus-data":
        musicians = _pingus_musicians(root)

    tracks = []
    for f in files:
        licence, holders = cinfo.lookup(lookup_path[str(f)])
        t = Track(spec.package, version, spec.kind, rel[str(f)], keys[rel[str(f)]], str(f), spec.genre, licence,
                  copyright_holders=holders)
        if spec.kind == "ogg":
            tags = _ogg_tags(f)
            t.title = tags.get("title")
            t.artist = tags.get("artist")
            if tags.get("copyright") or tags.get("artist"):
                t.attribution = tags.get("copyright") or tags["artist"]
                t.attribution_source = "file tags"
        elif spec.kind == "midi":
            t.title = extra_titles.get(f.name)
            if f.name in composers:
                t.artist = t.attribution = composers[f.name]
                t.attribution_source = "readme.txt credits"
        elif spec.kind == "module" and musicians:
            t.attribution = "Pingus musicians: " + ", ".join(musicians)
            t.attribution_source = "package credits (not per file)"
        if not t.attribution and holders:
            t.attribution, t.attribution_source = holders, "copyright file"
        if not t.attribution and spec.attribution:
            t.attribution, t.attribution_source = spec.attribution, "copyright file (package, not per file)"
        t.title = t.title or _title_from_name(f.stem)
        tracks.append(t)
    return tracks, cinfo


def candidate_order(tracks: list[Track]) -> list[Track]:
    """A fixed pseudo-random order (by hash of package and track key): the small subset takes tracks from its head."""
    return sorted(tracks, key=lambda t: hashlib.sha1(f"{t.package}/{t.track_key}".encode()).hexdigest())


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
        _atomic_write_json(meta_path, meta)
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
            _atomic_write_json(rej_path, rej)
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
            _atomic_write_json(rej_path, rej)
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
        _atomic_write_json(rec_path, rec)
        res.records.append(rec)
    res.seconds = time.time() - t0
    return res


# ---------------------------------------------------------------------------------------------------------------------
# The build


def _progress(iterable=None, **kw):
    try:
        from tqdm.auto import tqdm
    except ImportError:  # tqdm is optional: plain iteration
        return iterable if iterable is not None else _NoBar()
    return tqdm(iterable, **kw)


class _NoBar:
    total = 0

    def update(self, n=1):
        pass

    def refresh(self):
        pass

    def close(self):
        pass

    def set_postfix_str(self, s):
        pass


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


def _run_tasks(tasks: list[TrackTask], executor, bar) -> list[TrackResult]:
    results: list[TrackResult | None] = [None] * len(tasks)
    if executor is None:
        for i, task in enumerate(tasks):
            results[i] = process_track_safely(task)
            bar.update(1)
    else:
        futures = {executor.submit(process_track_safely, task): i for i, task in enumerate(tasks)}
        for fut in as_completed(futures):
            results[futures[fut]] = fut.result()
            bar.update(1)
    return results  # type: ignore[return-value]


def _warm_up_analysis() -> None:
    audio_analysis.librosa_module()  # imports librosa and compiles its numba functions (under a lock)


def _place(src: Path, dst: Path) -> None:
    """dst = src's content: a hard link where possible, else a copy (atomic either way)."""
    if dst.exists():
        try:
            if os.path.samefile(src, dst) or dst.stat().st_size == src.stat().st_size:
                return
        except OSError:
            pass
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(f".{dst.name}.tmp-{os.getpid()}")
    if tmp.exists():
        tmp.unlink()
    try:
        os.link(src, tmp)
    except OSError:
        shutil.copyfile(src, tmp)
    os.replace(tmp, dst)


def build_demo_corpus(
    out_dir: str | os.PathLike,
    subset: str = "small",
    cache_dir: str | os.PathLike | None = None,
    *,
    sources: list[str] | None = None,
    max_tracks_per_source: int | None = None,
    jobs: int | None = None,
    progress: bool = True,
) -> Path:
    """Build (or finish, or refresh) the demo corpus in out_dir; returns the path of its manifest.jsonl.

    subset: "small" (about 30 clips from 3 small packages) or "full" (all tracks of all packages).
    sources: restrict to these packages (names from SOURCES); max_tracks_per_source: cap the tracks taken from each
    (for tests); jobs: worker processes (default: CPU count, at most 4).
    """
    t_start = time.time()
    if subset not in SUBSETS:
        raise ValueError(f"subset must be one of {sorted(SUBSETS)}, got {subset!r}")
    cfg = SUBSETS[subset]
    names = list(sources) if sources else list(cfg["sources"])
    unknown = [n for n in names if n not in SOURCES]
    if unknown:
        raise ValueError(f"unknown sources {unknown}; known: {sorted(SOURCES)}")
    cache = Path(cache_dir) if cache_dir else default_cache_dir()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    cache.mkdir(parents=True, exist_ok=True)
    jobs = jobs or min(4, os.cpu_count() or 1)
    log.info("building the %s demo corpus (%s) in %s; cache %s; %d job(s)", subset, ", ".join(names), out, cache, jobs)

    # 1. packages
    roots: dict[str, tuple[str, Path]] = {}
    for name in names:
        try:
            deb, version = fetch_deb(name, cache / "debs")
            roots[name] = (version, unpack_deb(deb, cache / "unpacked" / version_key(name, version)))
        except DebianError as e:
            raise CorpusError(f"package {name}: {e}") from e

    # 2. tools and soundfont, when something must be rendered
    kinds = {SOURCES[n].kind for n in names}
    need = [tool for kind, tool in (("midi", "fluidsynth"), ("module", "openmpt123")) if kind in kinds]
    tools: dict[str, Tool] = {}
    soundfont, soundfont_version = None, None
    if need:
        try:
            tools = ensure_tools(need, cache)
        except DebianError as e:
            raise CorpusError(f"renderers {need}: {e}") from e
    if "midi" in kinds:
        try:
            deb, soundfont_version = fetch_deb(SOUNDFONT_PACKAGE, cache / "debs")
            sf_root = unpack_deb(deb, cache / "unpacked" / version_key(SOUNDFONT_PACKAGE, soundfont_version))
        except DebianError as e:
            raise CorpusError(f"soundfont {SOUNDFONT_PACKAGE}: {e}") from e
        soundfont = str(sf_root / SOUNDFONT_PATH)
        if not Path(soundfont).exists():
            raise CorpusError(f"{SOUNDFONT_PACKAGE} {soundfont_version}: {SOUNDFONT_PATH} not found in the package")
        roots[SOUNDFONT_PACKAGE] = (soundfont_version, sf_root)

    # 3. tracks
    tasks_by_source: dict[str, list[TrackTask]] = {}
    copyrights: dict[str, Path] = {}
    for name in names:
        spec = SOURCES[name]
        version, root = roots[name]
        tracks, _ = enumerate_tracks(spec, version, root, cache)
        copyrights[name] = root / "usr" / "share" / "doc" / name / "copyright"
        render_dir, renderer = None, "source"
        if spec.kind == "midi":
            fs = tools["fluidsynth"]
            renderer = f"fluidsynth-{fs.version}+{version_key(SOUNDFONT_PACKAGE, soundfont_version)}"
            render = {"tool": f"fluidsynth {fs.version}", "soundfont": f"TimGM6mb.sf2 ({SOUNDFONT_PACKAGE} "
                      f"{soundfont_version}, GPL-2)", "gain_option": 0.4, "sample_rate": RENDER_RATE}
        elif spec.kind == "module":
            om = tools["openmpt123"]
            renderer = f"openmpt123-{om.version}"
            render = {"tool": f"openmpt123 {om.version}", "sample_rate": RENDER_RATE}
        if spec.kind in ("midi", "module"):
            render_dir = str(cache / "renders" / version_key(name, version) / slug(renderer))
            for t in tracks:
                t.render = render
        clip_dir = cache / "clips" / f"p{PIPELINE_VERSION}" / version_key(name, version) / slug(renderer)
        tasks_by_source[name] = [
            TrackTask(t, str(clip_dir), render_dir, tools, soundfont, cfg["clips_per_track"])
            for t in candidate_order(tracks)
        ]

    # 4. clips
    results: list[TrackResult] = []
    executor = None
    if jobs > 1 and any(tasks_by_source.values()):
        # Compile librosa's numba functions here, once: forked workers inherit them (processes compiling at the same
        # time have corrupted numba's on-disk cache, which then segfaults: see audio_analysis).
        _warm_up_analysis()
        ctx = multiprocessing.get_context("fork") if sys.platform.startswith("linux") else None
        executor = ProcessPoolExecutor(max_workers=jobs, mp_context=ctx)
    try:
        for name, tasks in tasks_by_source.items():
            limit = SOURCES[name].small_tracks if cfg["limited"] else None
            if max_tracks_per_source is not None:
                limit = max_tracks_per_source if limit is None else min(limit, max_tracks_per_source)
            bar = _progress(total=limit or len(tasks), desc=name, unit="track", disable=not progress,
                            file=sys.stderr) if progress else _NoBar()
            taken, i = 0, 0
            while i < len(tasks) and (limit is None or taken < limit):
                n = len(tasks) - i if limit is None else limit - taken
                batch = tasks[i : i + n]
                if i:  # replacing tracks that gave no clip
                    bar.total += len(batch)
                    bar.refresh()
                i += len(batch)
                for r in _run_tasks(batch, executor, bar):
                    results.append(r)
                    taken += bool(r.records)
                    for rej in r.rejects:
                        if rej["kind"] == "error":
                            log.error("%s", rej["reason"])
                        else:
                            log.info("left out %s %s: %s", rej["source_package"],
                                     rej["clip_id"] or rej["source_file"], rej["reason"])
            bar.close()
            src_results = [r for r in results if r.track.package == name]
            if src_results and all(any(x["kind"] == "error" for x in r.rejects) for r in src_results):
                raise CorpusError(f"{name}: every track failed; the first error: {src_results[0].rejects[0]['reason']}")
            if limit is not None and taken < limit:
                log.warning("%s: only %d usable tracks (wanted %d)", name, taken, limit)
    finally:
        if executor is not None:
            executor.shutdown()

    # 5. output folder
    records = sorted((rec for r in results for rec in r.records), key=lambda r: r["clip_id"])
    rejects = [rej for r in results for rej in r.rejects]
    clip_src = {rec["clip_id"]: Path(r.clip_dir) / f"{rec['clip_id']}.flac" for r in results for rec in r.records}
    for rec in _progress(records, desc="output", unit="clip", disable=not progress, file=sys.stderr):
        _place(clip_src[rec["clip_id"]], out / rec["audio"])
    keep = {f"{rec['clip_id']}.flac" for rec in records}
    stale = [p for p in (out / "clips").glob("*.flac") if p.name not in keep]
    for p in stale:
        p.unlink()
    if stale:
        log.info("removed %d clips of an earlier build that this build does not hold", len(stale))
    lic_dir = out / "licenses"
    lic_dir.mkdir(exist_ok=True)
    used = {rec["source_package"] for rec in records}
    if any(rec["render"] and "soundfont" in rec["render"] for rec in records):
        used.add(SOUNDFONT_PACKAGE)
        copyrights[SOUNDFONT_PACKAGE] = roots[SOUNDFONT_PACKAGE][1] / "usr/share/doc" / SOUNDFONT_PACKAGE / "copyright"
    for name in sorted(used):
        if copyrights[name].exists():
            atomic_write_text(lic_dir / f"{name}.copyright", copyrights[name].read_text(errors="replace"))
    atomic_write_text(out / "manifest.jsonl", "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))
    atomic_write_text(out / "rejects.jsonl", "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rejects))
    summary = summarise(records, rejects)
    summary.update(
        subset=subset,
        sources={n: roots[n][0] for n in names},
        build_seconds=round(time.time() - t_start, 1),
        work_seconds=round(sum(r.seconds for r in results), 1),
        pipeline_version=PIPELINE_VERSION,
        analysis_version=audio_analysis.ANALYSIS_VERSION,
    )
    _atomic_write_json(out / "summary.json", summary)
    atomic_write_text(out / "README.md", _card(summary))
    log.info("\n%s", format_summary(summary))
    return out / "manifest.jsonl"


def summarise(records: list[dict], rejects: list[dict]) -> dict:
    per_source: dict[str, dict] = defaultdict(lambda: {"clips": 0, "tracks": set(), "seconds": 0.0, "genre": ""})
    per_genre: dict[str, dict] = defaultdict(lambda: {"clips": 0, "seconds": 0.0})
    for r in records:
        s = per_source[r["source_package"]]
        s["clips"] += 1
        s["tracks"].add(r["source_file"])
        s["seconds"] += r["duration_s"]
        s["genre"] = r["genre"]
        g = per_genre[r["genre"]]
        g["clips"] += 1
        g["seconds"] += r["duration_s"]
    total = sum(r["duration_s"] for r in records)
    return {
        "clips": len(records),
        "tracks": sum(len(s["tracks"]) for s in per_source.values()),
        "hours": round(total / 3600, 3),
        "per_source": {k: {"clips": v["clips"], "tracks": len(v["tracks"]), "minutes": round(v["seconds"] / 60, 1),
                           "genre": v["genre"]} for k, v in sorted(per_source.items())},
        "per_genre": {k: {"clips": v["clips"], "minutes": round(v["seconds"] / 60, 1)}
                      for k, v in sorted(per_genre.items())},
        "rejected": dict(Counter(r["kind"] for r in rejects)),
    }


def format_summary(s: dict) -> str:
    lines = [f"{'source':24} {'clips':>5} {'tracks':>6} {'min':>6}  genre"]
    for name, v in s["per_source"].items():
        lines.append(f"{name:24} {v['clips']:5d} {v['tracks']:6d} {v['minutes']:6.1f}  {v['genre']}")
    lines.append(f"{'total':24} {s['clips']:5d} {s['tracks']:6d} {s['hours'] * 60:6.1f}  ({s['hours']:.2f} h)")
    if s.get("rejected"):
        lines.append("left out: " + ", ".join(f"{k}: {v}" for k, v in s["rejected"].items()))
    if "build_seconds" in s:
        lines.append(f"build time {s['build_seconds']:.1f} s (track work {s['work_seconds']:.1f} s)")
    return "\n".join(lines)


def _card(s: dict) -> str:
    rows = "\n".join(f"| {n} | {s['sources'].get(n, '')} | {v['clips']} | {v['minutes']} | {v['genre']} |"
                     for n, v in s["per_source"].items())
    return f"""# m2mv demo corpus ({s['subset']} subset)

Real music from Debian game/music packages, cut into 30-s clips, for m2mv's tests and demos. It is NOT Music4All
and has no MV descriptions of its own. Built by `python -m dataset_scripts.demo_corpus`.

| package | version | clips | minutes | genre (per package, from titles and credits) |
|---|---|---|---|---|
{rows}

{s['clips']} clips, {s['hours']:.2f} hours. MIDI files were rendered with fluidsynth and the TimGM6mb soundfont,
tracker modules with openmpt123 (both peak-normalised to {RENDER_PEAK_DBFS:.0f} dBFS per track); OGG tracks keep
their level. Clips are 16-bit FLAC at the source rate (44.1 kHz for renders).

## Licences
Each record holds `licence` (from the package's copyright file; per file where that file is machine-readable and
says so), `attribution` (file tags, credits or copyright file, named in `attribution_source`) and `licence_file`;
the copyright files are in `licenses/`. Most of the music is GPL-2(+); ufoai-music has CC-BY-3.0, CC-BY-SA-3.0,
GPL and public-domain files. Respect each licence when redistributing clips.

## manifest.jsonl
One record per clip: `clip_id` (package--track--offset in ms), `audio` (relative path), `source_package`,
`source_version`, `source_file`, `track_title`, `artist`, `attribution`, `copyright_holders`, `licence`, `genre`,
`genre_tags`, `track_duration_s`, `audible_span_s` (renders: the part between silent intro and tail), `offset_s`,
`duration_s`, `sample_rate`, `channels`, `gain_db` (applied to the source), `render` (renderer and soundfont, or
null), and `analysis`, derived by rules from the clip's audio:
`tempo_bpm` and `beat_times_s` (librosa's beat tracker), `onset_rate_per_s`, `loudness_dbfs` and `centroid_hz`
(per {audio_analysis.WINDOW_S:.0f}-s window), `key`/`tonic`/`mode` with `key_confidence` and `key_margin`
(Krumhansl-Schmuckler on a constant-Q chroma, `chroma`), `rms_dbfs`, `peak_dbfs`, `loudness_range_db`,
`centroid_mean_hz`. Levels are dBFS of the plain RMS.
"""


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m dataset_scripts.demo_corpus", description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, help="output folder (created; rerunning into it resumes / refreshes)")
    ap.add_argument("--subset", choices=sorted(SUBSETS), default="small")
    ap.add_argument("--cache-dir", default=None, help=f"download/render cache (default {default_cache_dir()})")
    ap.add_argument("--sources", default=None, help=f"comma-separated packages to use instead of the subset's "
                    f"({', '.join(SOURCES)})")
    ap.add_argument("--max-tracks", type=int, default=None, help="at most this many tracks per source")
    ap.add_argument("--jobs", type=int, default=None, help="worker processes (default: CPUs, at most 4)")
    ap.add_argument("--no-progress", action="store_true")
    ap.add_argument("-v", "--verbose", action="store_true")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(message)s")
    try:
        manifest = build_demo_corpus(
            args.out, args.subset, args.cache_dir,
            sources=[s.strip() for s in args.sources.split(",") if s.strip()] if args.sources else None,
            max_tracks_per_source=args.max_tracks, jobs=args.jobs, progress=not args.no_progress,
        )
    except (CorpusError, ValueError) as e:
        log.error("%s", e)
        return 1
    print(manifest)
    return 0


if __name__ == "__main__":
    sys.exit(main())
