"""Turn the demo corpus (real music, see ``demo_corpus.py``) into m2mv's two dataset configs.

    python -m dataset_scripts.demo_dataset --corpus DIR --out DIR [--split-by song|artist] [--seed 12]

The audio is real; every text column is SYNTHETIC, rendered by the rules below from measurements of the audio
itself (tempo and beats, loudness per 2-s window, brightness = spectral centroid, key and mode) and the source
package's genre, so that a model can really learn something from the audio. The card says so, column by column.
About half of the MV descriptions (chosen by a hash of the clip id) are written on beat-aligned frames
(:func:`m2mv.beats.group_beats` of the clip's beats), the others on fixed 2-s frames.
This is not Music4All.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import time
from pathlib import Path

import numpy as np

from dataset_scripts.corpus_clips import track_of
from m2mv.beats import beats_within, group_beats
from m2mv.data.demo_words import LIGHT_BY_BRIGHTNESS, SHOT_BY_LEVEL, brightness_word, dynamics_word, tempo_word
from m2mv.data.schema import CAPTIONING, MV_DESCRIPTION, description_columns
from m2mv.data.taxonomy import mv_type, mv_type_from_genre
from m2mv.data.writing import (
    DEFAULT_RATIOS,
    DEFAULT_SEED,
    BuildReport,
    dataset_card,
    describe_splits,
    write_card,
    write_configs,
)
from m2mv.errors import DatasetError
from mv_format_m2mv import FRAME_STEP_SECONDS, format_mv_description, frame_boundaries

# -- rules: audio measurements -> words ---------------------------------------------------------------------------


def mv_type_for(genre: str, bpm: float | None) -> str:
    """Rule-based MV type: the taxonomy type whose genre hint the source genre mentions first
    (``m2mv/data/mv_types.json``), else by tempo; always a taxonomy type."""
    return mv_type_from_genre(genre) or ("Dance/Choreography" if (bpm or 0) >= 120 else "Artistic/Abstract")


def _level(dbfs: float, quiet: float, loud: float) -> str:
    return "quiet" if dbfs < quiet else "loud" if dbfs > loud else "medium"


def render_caption(record: dict) -> str:
    """Stage-1 caption from the measurements (synthetic)."""
    a = record["analysis"]
    bpm = f" at about {round(a['tempo_bpm'])} BPM" if a["tempo_bpm"] else ""
    return (f"A {tempo_word(a['tempo_bpm'])} {record['genre_tags'][0]} piece{bpm} in {a['key']}, "
            f"{brightness_word(a['centroid_mean_hz'])} in tone and {dynamics_word(a['loudness_dbfs'])} in loudness.")


def uses_beat_frames(record: dict) -> bool:
    """Whether a clip's description is written on beat-aligned frames: every second clip, chosen by the parity of
    sha256(clip id) (stable across runs and machines), and only when it has at least 2 beats inside the clip."""
    chosen = hashlib.sha256(record["clip_id"].encode("utf-8")).digest()[0] % 2 == 1
    beats = record["analysis"].get("beat_times_s") or []
    return chosen and len(beats_within(beats, record["duration_s"])) >= 2


def description_frames(record: dict) -> list[tuple[float, float]]:
    """The frame spans of a clip's description: its beats grouped by :func:`m2mv.beats.group_beats` when
    :func:`uses_beat_frames`, else the fixed 2-s frames."""
    if uses_beat_frames(record):
        return group_beats(record["analysis"]["beat_times_s"], record["duration_s"])
    return frame_boundaries(record["duration_s"])


def _window_index(start: float, end: float, window_s: float, count: int) -> int:
    """The measurement window (``window_s`` long) that holds a frame's midpoint, clipped to the ``count`` windows."""
    return min(int((start + end) / 2 // window_s), count - 1)


def render_description(record: dict, mv_type_name: str) -> str:
    """Stage-2 MV description (overview + one line per frame: 2-s frames, or beat-aligned ones for the clips
    :func:`uses_beat_frames` picks) from the measurements (synthetic). Each frame's shot and light come from the
    loudness and centroid of the analysis window holding the frame's midpoint, its cuts from its own beats."""
    a = record["analysis"]
    loudness, centroid = a["loudness_dbfs"], a["centroid_hz"]
    quiet, loud = np.percentile(loudness, 33), np.percentile(loudness, 67)
    setting = mv_type(mv_type_name).setting
    overview = (f"A {mv_type_name.lower()} video for a {tempo_word(a['tempo_bpm'])} {record['genre_tags'][0]} track in "
                f"{a['key']}: {setting}, in {LIGHT_BY_BRIGHTNESS[brightness_word(a['centroid_mean_hz'])]}, "
                f"the energy {dynamics_word(loudness)}.")
    beats = np.asarray(a.get("beat_times_s") or [])
    window_s = a.get("window_s", FRAME_STEP_SECONDS)
    frames = []
    for start, end in description_frames(record):
        level = _level(loudness[_window_index(start, end, window_s, len(loudness))], quiet, loud)
        light = LIGHT_BY_BRIGHTNESS[brightness_word(centroid[_window_index(start, end, window_s, len(centroid))])]
        on_beat = int(((beats >= start) & (beats < end)).sum())
        cut = f", {on_beat} cuts on the beat" if on_beat >= 3 and level == "loud" else ""
        frames.append((start, end, f"{SHOT_BY_LEVEL[level].capitalize()}; {light}{cut}."))  # setting: overview
    return format_mv_description(overview, frames)


# -- the build ------------------------------------------------------------------------------------------------------


def split_key_of(clip_ids: list[str]):
    """``song_id -> split key``: the id of its track's first clip, so that the clips of one track share a split and a
    corpus of one clip per track splits exactly as by clip id."""
    first: dict[str, str] = {}
    for clip_id in sorted(clip_ids):
        first.setdefault(track_of(clip_id), clip_id)
    return lambda song_id: first[track_of(song_id)]


def read_manifest(corpus_dir: Path) -> list[dict]:
    manifest = corpus_dir / "manifest.jsonl"
    if not manifest.is_file():
        raise DatasetError(f"{manifest}: no demo corpus manifest (build it with dataset_scripts.demo_corpus)")
    records = []
    for number, line in enumerate(manifest.read_text(encoding="utf-8").splitlines(), start=1):
        if line.strip():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError as err:
                raise DatasetError(f"{manifest}, row {number}: not JSON ({err})") from err
    return records


def rows_for(record: dict, corpus_dir: Path) -> tuple[dict, dict]:
    """(captioning row, mv_description row) of one clip."""
    audio_path = corpus_dir / record["audio"]
    if not audio_path.is_file():
        raise DatasetError(f"{audio_path}: audio file of clip {record['clip_id']} is missing")
    audio = {"bytes": audio_path.read_bytes(), "path": audio_path.name}
    artist = record.get("artist") or record["source_package"]
    common = {"song_id": record["clip_id"], "artist": artist, "audio": audio}
    type_name = mv_type_for(record["genre"], record["analysis"]["tempo_bpm"])
    caption = {**common, "caption": render_caption(record), "caption_source": "rendered_from_tags"}
    mv = {**common, "genre_tags": list(record["genre_tags"]), "mv_type": type_name, "lyrics_understanding": None,
          **description_columns(render_description(record, type_name))}
    return caption, mv


# The demo's split: 60/20/20 so that its test split has a handful of clips to score (the library default is 80/10/10)
DEMO_SPLIT = (0.6, 0.2, 0.2)


def build_demo_data(out_dir: str | Path, max_tracks_per_source: int | None = None,
                    progress: bool = False) -> tuple[Path, BuildReport]:
    """The demo's data as ``m2mv demo`` builds it: the small demo corpus in ``out_dir/corpus`` (renders cached
    under ~/.cache/m2mv) and its dataset in ``out_dir/dataset``, split :data:`DEMO_SPLIT` by track. Returns
    ``(dataset folder, report)``."""
    from dataset_scripts.demo_corpus import build_demo_corpus

    out_dir = Path(out_dir)
    manifest = build_demo_corpus(out_dir / "corpus", subset="small", max_tracks_per_source=max_tracks_per_source,
                                 progress=progress)
    report = build_demo_dataset(manifest.parent, out_dir / "dataset", ratios=DEMO_SPLIT, progress=progress)
    return out_dir / "dataset", report


def build_demo_dataset(corpus_dir: str | Path, out_dir: str | Path, split_by: str = "song",
                       ratios=DEFAULT_RATIOS, seed: int = DEFAULT_SEED, progress: bool = True) -> BuildReport:
    """Write both configs (Parquet + card) for a built demo corpus."""
    corpus_dir, out_dir = Path(corpus_dir), Path(out_dir)
    records = read_manifest(corpus_dir)
    caption_rows, mv_rows = zip(*(rows_for(r, corpus_dir) for r in records)) if records else ((), ())
    report = write_configs(out_dir, {CAPTIONING: caption_rows, MV_DESCRIPTION: mv_rows}, split_by, ratios, seed,
                           sum(r["duration_s"] for r in records), progress=progress,
                           song_of=split_key_of([r["clip_id"] for r in records]))
    packages = sorted({f"{r['source_package']} {r['source_version']} ({r['licence']})" for r in records})
    on_beats = sum(uses_beat_frames(r) for r in records)
    card = dataset_card(
        pretty_name="m2mv demo corpus (real music, synthetic descriptions)",
        counts=report.counts,
        license_id="other",
        source=("Real music from Debian game-music packages (GPL-2+ and Creative Commons; each row's licence and "
                "attribution are in the corpus manifest.jsonl and licenses/). NOT Music4All: a stand-in for tests "
                "and demos. Packages: " + "; ".join(packages) + "."),
        how_built=("`python -m dataset_scripts.demo_corpus` fetched the packages, rendered MIDI (fluidsynth + "
                   "TimGM6mb) and tracker modules (openmpt123), cut 30-s clips and measured tempo/beats, loudness "
                   "per 2-s window, spectral centroid and key; `python -m dataset_scripts.demo_dataset` rendered "
                   "the captions, MV types and descriptions from those measurements with fixed rules "
                   "(dataset_scripts/demo_dataset.py). About half of the descriptions "
                   f"({on_beats} of {len(records)}: the clips with an odd first byte of sha256(clip id) and at "
                   "least 2 beats) use beat-aligned frames: the clip's measured beats grouped into frames of whole "
                   "beats of about 2 s (m2mv/beats.py `group_beats`, the rule of `m2mv describe --align beats`); "
                   "the others use fixed 2-s frames. Each frame's text comes from the measurements of the 2-s "
                   "window holding its midpoint."),
        column_status={"caption": "SYNTHETIC (rendered from audio measurements)",
                       "caption_source": "real (always 'rendered_from_tags' here)",
                       "genre_tags": "real (the source package's genre words, not per-track listening)",
                       "mv_type": "SYNTHETIC (rule: source genre and tempo)",
                       "lyrics_understanding": "empty (instrumental music)",
                       "description": f"SYNTHETIC (rendered from audio measurements; {on_beats} of "
                                      f"{len(records)} on beat-aligned frames, the rest on 2-s frames)",
                       "artist": "real where the package credits it, else the package name"},
        split_info=describe_splits(split_by, seed, ratios, song_key="track (the id of its first clip: the clips of "
                                   "one track share a split)"),
        out_dir=out_dir,
    )
    write_card(out_dir, card)
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--corpus", required=True, help="demo corpus folder (with manifest.jsonl)")
    parser.add_argument("--out", required=True)
    parser.add_argument("--split-by", choices=("song", "artist"), default="song")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED)
    args = parser.parse_args(argv)
    start = time.time()
    report = build_demo_dataset(args.corpus, args.out, args.split_by, seed=args.seed)
    print(report.summary())
    print(f"written to {args.out} in {time.time() - start:.1f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
