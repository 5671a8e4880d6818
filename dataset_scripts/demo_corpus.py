"""Build the m2mv demo corpus: 30-s clips of REAL music from Debian game/music packages, with licences and analysis.

    python -m dataset_scripts.demo_corpus --out DIR [--subset small|full] [--clips-per-track N] [--jobs N]
                                         [--cache-dir DIR]

or ``build_demo_corpus(out_dir, subset="small", cache_dir=None)``. This is NOT Music4All: it is a stand-in for tests
and demos, from the packages listed in ``/work/shared/demo-corpus.md`` (GPL and Creative Commons music).

Steps, per source package:
1. ``apt-get download`` the .deb into the cache (skipped when that version is cached) and ``dpkg-deb -x`` it (no
   system install); zip archives inside (``.pk3``) are extracted;
2. MIDI files are rendered with fluidsynth and the TimGM6mb General MIDI soundfont, tracker modules with openmpt123,
   both as float WAV at 44.1 kHz (peak-normalised to -1 dBFS per track); OGG files are read at their own rate;
3. from every track of at least 30 s, 30-s clips that do not overlap, evenly spaced (``small``: its middle 30 s,
   ``full``: up to 2, ``--clips-per-track N``: up to N; a track too short for two gives its middle 30 s); clips
   quieter than -50 dBFS RMS are rejected (and logged);
4. each clip is written as 16-bit FLAC (source rate and channels) and analysed (`audio_analysis.analyse_clip`).

Subsets: ``small`` = openttd-openmsx (jazz/blues MIDI), pingus-data (tracker modules), nexuiz-music (techno), a
fixed pseudo-random choice of 30 tracks (30 clips, or about 90 with ``--clips-per-track 4``; minutes on 2 cores);
``full`` = every track of those and of wesnoth-1.16-music, supertux-data and ufoai-music (about 400 clips, 3+ hours).

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

import argparse
import json
import logging
import multiprocessing
import os
import shutil
import sys
import time
from collections import Counter, defaultdict
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path

from tqdm.auto import tqdm

from dataset_scripts import audio_analysis
from dataset_scripts.corpus_clips import (
    PIPELINE_VERSION,
    RENDER_PEAK_DBFS,
    RENDER_RATE,
    TrackResult,
    TrackTask,
    process_track_safely,
)
from dataset_scripts.corpus_sources import SOURCES, SUBSETS, candidate_order, enumerate_tracks, slug
from dataset_scripts.debian import DebianError, Tool, ensure_tools, fetch_deb, unpack_deb, version_key
from m2mv.data.cache import cache_root
from m2mv.data.fileio import atomic_file, atomic_write_json, atomic_write_text
from m2mv.errors import CorpusError

log = logging.getLogger("m2mv.demo_corpus")

SOUNDFONT_PACKAGE = "timgm6mb-soundfont"
SOUNDFONT_PATH = "usr/share/sounds/sf2/TimGM6mb.sf2"


def default_cache_dir() -> Path:
    return cache_root("demo-corpus")


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
    with atomic_file(dst) as tmp:
        tmp.unlink()
        try:
            os.link(src, tmp)
        except OSError:
            shutil.copyfile(src, tmp)


@dataclass
class _Renderers:
    """The tools that render the sources' MIDI files and modules, and the soundfont (with its package version)."""

    tools: dict[str, Tool] = field(default_factory=dict)
    soundfont: str | None = None
    soundfont_version: str | None = None
    soundfont_root: Path | None = None


def _fetch_packages(names: list[str], cache: Path) -> dict[str, tuple[str, Path]]:
    """package -> (version, unpacked folder), downloading and unpacking only what the cache lacks."""
    roots = {}
    for name in names:
        try:
            deb, version = fetch_deb(name, cache / "debs")
            roots[name] = (version, unpack_deb(deb, cache / "unpacked" / version_key(name, version)))
        except DebianError as e:
            raise CorpusError(f"package {name}: {e}") from e
    return roots


def package_tracks(package: str, cache_dir: str | Path | None = None) -> list:
    """Every candidate track of one source package, whole and unrendered (``Track.path``), its package fetched and
    unpacked into the cache once: full-length songs for tests and benchmarks of whole songs."""
    if package not in SOURCES:
        raise CorpusError(f"unknown source package {package!r}; known: {', '.join(SOURCES)}")
    cache = Path(cache_dir) if cache_dir else default_cache_dir()
    ((version, root),) = _fetch_packages([package], cache).values()
    return enumerate_tracks(SOURCES[package], version, root, cache)[0]


def _prepare_renderers(names: list[str], cache: Path) -> _Renderers:
    """fluidsynth and the soundfont for MIDI sources, openmpt123 for modules (nothing for OGG-only subsets)."""
    kinds = {SOURCES[n].kind for n in names}
    need = [tool for kind, tool in (("midi", "fluidsynth"), ("module", "openmpt123")) if kind in kinds]
    renderers = _Renderers()
    if need:
        try:
            renderers.tools = ensure_tools(need, cache)
        except DebianError as e:
            raise CorpusError(f"renderers {need}: {e}") from e
    if "midi" in kinds:
        try:
            deb, version = fetch_deb(SOUNDFONT_PACKAGE, cache / "debs")
            root = unpack_deb(deb, cache / "unpacked" / version_key(SOUNDFONT_PACKAGE, version))
        except DebianError as e:
            raise CorpusError(f"soundfont {SOUNDFONT_PACKAGE}: {e}") from e
        if not (root / SOUNDFONT_PATH).exists():
            raise CorpusError(f"{SOUNDFONT_PACKAGE} {version}: {SOUNDFONT_PATH} not found in the package")
        renderers.soundfont, renderers.soundfont_version, renderers.soundfont_root = str(root / SOUNDFONT_PATH), \
            version, root
    return renderers


def _render_settings(kind: str, version: str, renderers: _Renderers) -> tuple[str, dict | None]:
    """``(renderer key, the settings recorded with each clip)`` of a source kind."""
    if kind == "midi":
        fs = renderers.tools["fluidsynth"]
        return (f"fluidsynth-{fs.version}+{version_key(SOUNDFONT_PACKAGE, renderers.soundfont_version)}",
                {"tool": f"fluidsynth {fs.version}", "soundfont": f"TimGM6mb.sf2 ({SOUNDFONT_PACKAGE} "
                 f"{renderers.soundfont_version}, GPL-2)", "gain_option": 0.4, "sample_rate": RENDER_RATE})
    if kind == "module":
        om = renderers.tools["openmpt123"]
        return f"openmpt123-{om.version}", {"tool": f"openmpt123 {om.version}", "sample_rate": RENDER_RATE}
    return "source", None


def _plan_tracks(names: list[str], roots: dict, renderers: _Renderers, cache: Path,
                 clips_per_track: int) -> dict[str, list[TrackTask]]:
    """package -> the work for each of its candidate tracks, in the fixed pseudo-random order."""
    tasks_by_source: dict[str, list[TrackTask]] = {}
    for name in names:
        spec = SOURCES[name]
        version, root = roots[name]
        tracks, _ = enumerate_tracks(spec, version, root, cache)
        renderer, render = _render_settings(spec.kind, version, renderers)
        render_dir = None
        if render is not None:
            render_dir = str(cache / "renders" / version_key(name, version) / slug(renderer))
            for t in tracks:
                t.render = render
        clip_dir = cache / "clips" / f"p{PIPELINE_VERSION}" / version_key(name, version) / slug(renderer)
        tasks_by_source[name] = [TrackTask(t, str(clip_dir), render_dir, renderers.tools, renderers.soundfont,
                                           clips_per_track) for t in candidate_order(tracks)]
    return tasks_by_source


def _log_rejects(result: TrackResult) -> None:
    for rej in result.rejects:
        if rej["kind"] == "error":
            log.error("%s", rej["reason"])
        else:
            log.info("left out %s %s: %s", rej["source_package"], rej["clip_id"] or rej["source_file"], rej["reason"])


def _cut_source(name: str, tasks: list[TrackTask], limit: int | None, executor, progress: bool) -> list[TrackResult]:
    """Run one source's tracks until ``limit`` of them gave clips (tracks that give none are replaced)."""
    bar = tqdm(total=limit or len(tasks), desc=name, unit="track", disable=not progress, file=sys.stderr)
    results: list[TrackResult] = []
    taken, i = 0, 0
    while i < len(tasks) and (limit is None or taken < limit):
        batch = tasks[i: i + (len(tasks) - i if limit is None else limit - taken)]
        if i:  # replacing tracks that gave no clip
            bar.total += len(batch)
            bar.refresh()
        i += len(batch)
        for result in _run_tasks(batch, executor, bar):
            results.append(result)
            taken += bool(result.records)
            _log_rejects(result)
    bar.close()
    if results and all(any(x["kind"] == "error" for x in r.rejects) for r in results):
        raise CorpusError(f"{name}: every track failed; the first error: {results[0].rejects[0]['reason']}")
    if limit is not None and taken < limit:
        log.warning("%s: only %d usable tracks (wanted %d)", name, taken, limit)
    return results


def _cut_clips(tasks_by_source: dict[str, list[TrackTask]], limited: bool, max_tracks: int | None, jobs: int,
               progress: bool) -> list[TrackResult]:
    """Every source's clips, in a pool of ``jobs`` worker processes (forked after librosa is warmed up)."""
    executor = None
    if jobs > 1 and any(tasks_by_source.values()):
        # Compile librosa's numba functions here, once: forked workers inherit them (processes compiling at the same
        # time have corrupted numba's on-disk cache, which then segfaults: see audio_analysis).
        _warm_up_analysis()
        ctx = multiprocessing.get_context("fork") if sys.platform.startswith("linux") else None
        executor = ProcessPoolExecutor(max_workers=jobs, mp_context=ctx)
    try:
        results = []
        for name, tasks in tasks_by_source.items():
            limit = SOURCES[name].small_tracks if limited else None
            if max_tracks is not None:
                limit = max_tracks if limit is None else min(limit, max_tracks)
            results += _cut_source(name, tasks, limit, executor, progress)
        return results
    finally:
        if executor is not None:
            executor.shutdown()


def _write_licences(out: Path, records: list[dict], roots: dict, renderers: _Renderers) -> None:
    """The Debian copyright file of every package the clips come from (and of the soundfont)."""
    copyrights = {name: root / "usr" / "share" / "doc" / name / "copyright" for name, (_, root) in roots.items()}
    used = {rec["source_package"] for rec in records}
    if any(rec["render"] and "soundfont" in rec["render"] for rec in records):
        used.add(SOUNDFONT_PACKAGE)
        copyrights[SOUNDFONT_PACKAGE] = renderers.soundfont_root / "usr/share/doc" / SOUNDFONT_PACKAGE / "copyright"
    for name in sorted(used):
        if copyrights[name].exists():
            atomic_write_text(out / "licenses" / f"{name}.copyright", copyrights[name].read_text(errors="replace"))


def _write_output(out: Path, results: list[TrackResult], roots: dict, renderers: _Renderers, progress: bool) -> tuple:
    """The output folder: clips (hard links to the cache), licences, manifest, rejects; ``(records, rejects)``."""
    records = sorted((rec for r in results for rec in r.records), key=lambda r: r["clip_id"])
    rejects = [rej for r in results for rej in r.rejects]
    clip_src = {rec["clip_id"]: Path(r.clip_dir) / f"{rec['clip_id']}.flac" for r in results for rec in r.records}
    for rec in tqdm(records, desc="output", unit="clip", disable=not progress, file=sys.stderr):
        _place(clip_src[rec["clip_id"]], out / rec["audio"])
    keep = {f"{rec['clip_id']}.flac" for rec in records}
    stale = [p for p in (out / "clips").glob("*.flac") if p.name not in keep]
    for p in stale:
        p.unlink()
    if stale:
        log.info("removed %d clips of an earlier build that this build does not hold", len(stale))
    _write_licences(out, records, roots, renderers)
    atomic_write_text(out / "manifest.jsonl", "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))
    atomic_write_text(out / "rejects.jsonl", "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rejects))
    return records, rejects


def build_demo_corpus(
    out_dir: str | os.PathLike,
    subset: str = "small",
    cache_dir: str | os.PathLike | None = None,
    *,
    sources: list[str] | None = None,
    max_tracks_per_source: int | None = None,
    clips_per_track: int | None = None,
    jobs: int | None = None,
    progress: bool = True,
) -> Path:
    """Build (or finish, or refresh) the demo corpus in out_dir; returns the path of its manifest.jsonl.

    subset: "small" (30 tracks from 3 small packages, one clip each) or "full" (all tracks of all packages, up to 2
    clips each). sources: restrict to these packages (names from SOURCES); max_tracks_per_source: cap the tracks
    taken from each (for tests); clips_per_track: instead of the subset's; jobs: worker processes (default: CPU
    count, at most 4).
    """
    t_start = time.time()
    if subset not in SUBSETS:
        raise ValueError(f"subset must be one of {sorted(SUBSETS)}, got {subset!r}")
    if clips_per_track is not None and clips_per_track < 1:
        raise ValueError(f"clips_per_track must be at least 1, got {clips_per_track}")
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

    roots = _fetch_packages(names, cache)
    renderers = _prepare_renderers(names, cache)
    tasks_by_source = _plan_tracks(names, roots, renderers, cache, clips_per_track or cfg["clips_per_track"])
    results = _cut_clips(tasks_by_source, cfg["limited"], max_tracks_per_source, jobs, progress)
    records, rejects = _write_output(out, results, roots, renderers, progress)

    summary = summarise(records, rejects)
    summary.update(
        subset=subset,
        sources={n: roots[n][0] for n in names},
        build_seconds=round(time.time() - t_start, 1),
        work_seconds=round(sum(r.seconds for r in results), 1),
        pipeline_version=PIPELINE_VERSION,
        analysis_version=audio_analysis.ANALYSIS_VERSION,
    )
    atomic_write_json(out / "summary.json", summary)
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
    ap.add_argument("--clips-per-track", type=int, default=None, help="at most this many clips per track (default: "
                    "the subset's)")
    ap.add_argument("--jobs", type=int, default=None, help="worker processes (default: CPUs, at most 4)")
    ap.add_argument("--no-progress", action="store_true")
    ap.add_argument("-v", "--verbose", action="store_true")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(message)s")
    try:
        manifest = build_demo_corpus(
            args.out, args.subset, args.cache_dir,
            sources=[s.strip() for s in args.sources.split(",") if s.strip()] if args.sources else None,
            max_tracks_per_source=args.max_tracks, clips_per_track=args.clips_per_track, jobs=args.jobs,
            progress=not args.no_progress,
        )
    except (CorpusError, ValueError) as e:
        log.error("%s", e)
        return 1
    print(manifest)
    return 0


if __name__ == "__main__":
    sys.exit(main())
