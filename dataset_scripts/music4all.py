"""Build m2mv's two dataset configs from a local Music4All folder plus the MV files you supply.

    python -m dataset_scripts.music4all --music4all /data/music4all --out ./m2mv-music4all \\
        --frame-captions frame_captions.jsonl   # or --descriptions descriptions.jsonl
        [--captions captions.jsonl] [--mv-types mv_types.jsonl] [--lyrics-understanding lu.jsonl]
        [--split-by song|artist] [--seed 12] [--skip-bad]

Music4All (available from its authors on request; never shipped here) is read in its own layout: tab-separated
``id_information.csv`` (id, artist, song, album_name), ``id_genres.csv`` (id, genres), ``id_tags.csv`` (id, tags),
``id_lang.csv`` (id, lang) despite the ``.csv`` names, ``lyrics/{id}.txt`` and ``audios/{id}.mp3``.

Your files are JSON Lines, one object per song:
- ``--frame-captions``: ``{"id", "overview", "frames": [{"start": "00:04" | 4.0, "end": ..., "caption"}]}``: the
  per-frame captions are placed on the 2-s grid (captions overlapping a 2-s frame are joined) and formatted with
  m2mv's MV format;
- ``--descriptions``: ``{"id", "description"}``: ready descriptions, checked with m2mv's parser;
- ``--captions``: ``{"id", "caption"}`` for stage 1; without it a caption is rendered from the song's genres and
  tags and the ``caption_source`` column says ``rendered_from_tags``;
- ``--mv-types``: ``{"id", "mv_type"}`` (one of the taxonomy's 10 types);
- ``--lyrics-understanding``: ``{"id", "text"}``.

Bad input stops the build with an error naming the file and row; ``--skip-bad`` skips the song instead and lists
it in the summary.
"""

from __future__ import annotations

import argparse
import csv
import json
import time
from pathlib import Path

import soundfile
from tqdm.auto import tqdm

from m2mv.data.schema import CAPTIONING, MV_DESCRIPTION, description_columns
from m2mv.data.taxonomy import canonical_mv_type
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
from mv_format_m2mv import FRAME_STEP_SECONDS, format_mv_description, frame_boundaries, parse_mv_description, \
    parse_timestamp

CLIP_SECONDS = 30.0
TABLES = {"information": "id_information.csv", "genres": "id_genres.csv", "tags": "id_tags.csv",
          "lang": "id_lang.csv"}


class _Problems:
    """Raise at the first problem, or collect them all with ``skip_bad``."""

    def __init__(self, skip_bad: bool):
        self.skip_bad, self.skipped, self.bad_ids = skip_bad, [], set()

    def __call__(self, message: str, song_id: str | None = None) -> None:
        if not self.skip_bad:
            raise DatasetError(message)
        self.skipped.append(message)
        if song_id is not None:
            self.bad_ids.add(song_id)


def read_table(path: Path, problems: _Problems) -> dict[str, dict]:
    """A Music4All tab-separated table -> id -> row; duplicate ids are an error."""
    if not path.is_file():
        raise DatasetError(f"{path}: Music4All table missing")
    rows: dict[str, dict] = {}
    with open(path, newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle, delimiter="\t")
        if not reader.fieldnames or "id" not in reader.fieldnames:
            raise DatasetError(f"{path}: expected a tab-separated table with an 'id' column, got "
                                    f"{reader.fieldnames}")
        for number, row in enumerate(reader, start=2):
            song_id = (row.get("id") or "").strip()
            if not song_id:
                problems(f"{path}, row {number}: empty id")
            elif song_id in rows:
                problems(f"{path}, row {number}: duplicate id {song_id!r}", song_id)
            else:
                rows[song_id] = row
    return rows


def read_jsonl(path: Path, problems: _Problems) -> dict[str, tuple[int, dict]]:
    """A user JSONL file -> id -> (row number, object); duplicates and malformed rows are errors."""
    if not path.is_file():
        raise DatasetError(f"{path}: no such file")
    out: dict[str, tuple[int, dict]] = {}
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as err:
            problems(f"{path}, row {number}: not JSON ({err.msg})")
            continue
        song_id = str(obj.get("id", "")).strip() if isinstance(obj, dict) else ""
        if not song_id:
            problems(f"{path}, row {number}: no 'id'")
        elif song_id in out:
            problems(f"{path}, row {number}: duplicate id {song_id!r}", song_id)
        else:
            out[song_id] = (number, obj)
    return out


def _seconds(value, where: str) -> float:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    try:
        return parse_timestamp(str(value))
    except ValueError as err:
        raise DatasetError(f"{where}: {err}") from None


def description_from_frame_captions(obj: dict, where: str, duration: float = CLIP_SECONDS) -> str:
    """Overview + per-frame captions with timestamps -> the MV format on the 2-s grid."""
    overview = str(obj.get("overview") or "").strip()
    if not overview:
        raise DatasetError(f"{where}: empty overview")
    captions = []
    for index, frame in enumerate(obj.get("frames") or []):
        start, end = _seconds(frame.get("start"), f"{where}, frame {index}"), _seconds(frame.get("end"),
                                                                                        f"{where}, frame {index}")
        text = str(frame.get("caption") or "").strip()
        if end <= start:
            raise DatasetError(f"{where}, frame {index}: end {end:g} s is not after start {start:g} s")
        if not text:
            raise DatasetError(f"{where}, frame {index}: empty caption")
        captions.append((start, end, text))
    if not captions:
        raise DatasetError(f"{where}: no frame captions")
    frames = []
    for start, end in frame_boundaries(duration, FRAME_STEP_SECONDS):
        texts = list(dict.fromkeys(t for s, e, t in captions if s < end and e > start))
        if texts:
            frames.append((start, end, " ".join(texts)))
    return format_mv_description(overview, frames)


def _split_list(text: str | None) -> list[str]:
    return [part.strip() for part in (text or "").split(",") if part.strip()]


def _verify_audio(path: Path) -> str | None:
    """None when the MP3 decodes completely, else the reason."""
    if not path.is_file():
        return "missing audio file"
    try:
        info = soundfile.info(str(path))
        data, _ = soundfile.read(str(path), dtype="float32", always_2d=True)
    except Exception as err:
        return f"unreadable audio ({type(err).__name__}: {err})"
    if data.shape[0] == 0:
        return "audio file holds no samples"
    if info.frames and data.shape[0] < 0.9 * info.frames:
        return f"truncated audio: {data.shape[0] / info.samplerate:.2f} s decoded of {info.duration:.2f} s declared"
    return None


def build_music4all(
    music4all_dir: str | Path,
    out_dir: str | Path,
    frame_captions: str | Path | None = None,
    descriptions: str | Path | None = None,
    captions: str | Path | None = None,
    mv_types: str | Path | None = None,
    lyrics_understanding: str | Path | None = None,
    split_by: str = "song",
    ratios=DEFAULT_RATIOS,
    seed: int = DEFAULT_SEED,
    skip_bad: bool = False,
    verify_audio: bool = True,
    progress: bool = True,
) -> BuildReport:
    """Build both configs from a Music4All folder and the user's files (see the module docstring)."""
    root, out_dir = Path(music4all_dir), Path(out_dir)
    if not root.is_dir():
        raise DatasetError(f"{root}: no such Music4All folder")
    if (frame_captions is None) == (descriptions is None):
        raise DatasetError("give exactly one of frame_captions (per-frame captions) or descriptions")
    problems = _Problems(skip_bad)
    tables = {name: read_table(root / file, problems) for name, file in TABLES.items()}
    ids = set(tables["information"])
    for name in ("genres", "tags"):
        table_path = root / TABLES[name]
        for song_id in sorted(ids - set(tables[name])):
            problems(f"{table_path}: song id {song_id!r} of {TABLES['information']} is missing", song_id)
        for song_id in sorted(set(tables[name]) - ids):
            problems(f"{table_path}: song id {song_id!r} is not in {TABLES['information']}", song_id)
    targets_file = Path(frame_captions or descriptions)
    targets = read_jsonl(targets_file, problems)
    user_captions = read_jsonl(Path(captions), problems) if captions else {}
    types = read_jsonl(Path(mv_types), problems) if mv_types else {}
    lyrics = read_jsonl(Path(lyrics_understanding), problems) if lyrics_understanding else {}
    for extra_file, entries in ((targets_file, targets), (captions, user_captions), (mv_types, types),
                                (lyrics_understanding, lyrics)):
        for song_id, (number, _) in entries.items():
            if song_id not in ids:
                problems(f"{extra_file}, row {number}: song id {song_id!r} is not in {TABLES['information']}",
                         song_id)

    caption_rows, mv_rows, seconds = [], [], 0.0
    for song_id in tqdm(sorted(ids & set(targets)), desc="songs", disable=not progress, unit="song"):
        if song_id in problems.bad_ids:
            continue
        info = tables["information"][song_id]
        try:
            number, target = targets[song_id]
            where = f"{targets_file}, row {number}"
            if frame_captions:
                description = description_from_frame_captions(target, where)
            else:
                description = str(target.get("description") or "").strip()
                if not description:
                    raise DatasetError(f"{where}: empty description")
                parsed = parse_mv_description(description)
                if not parsed.is_valid:
                    raise DatasetError(f"{where}: malformed description ({'; '.join(parsed.problems)})")
            mv_type = None
            if song_id in types:
                number, obj = types[song_id]
                try:
                    mv_type = canonical_mv_type(str(obj.get("mv_type") or ""))
                except ValueError as err:
                    raise DatasetError(f"{mv_types}, row {number}: {err}") from None
            lyric = None
            if song_id in lyrics:
                number, obj = lyrics[song_id]
                lyric = str(obj.get("text") or "").strip()
                if not lyric:
                    raise DatasetError(f"{lyrics_understanding}, row {number}: empty lyrics understanding")
            audio_path = root / "audios" / f"{song_id}.mp3"
            if verify_audio and (reason := _verify_audio(audio_path)):
                raise DatasetError(f"{audio_path}: {reason}")
            genres = _split_list(tables["genres"][song_id].get("genres"))
            if not genres:
                raise DatasetError(f"{root / TABLES['genres']}: song id {song_id!r} has no genres")
        except DatasetError as err:
            problems(str(err), song_id)
            continue
        tags = _split_list(tables["tags"][song_id].get("tags"))
        audio = {"bytes": audio_path.read_bytes(), "path": audio_path.name}
        common = {"song_id": song_id, "artist": info.get("artist") or "", "audio": audio}
        if song_id in user_captions:
            caption, source = str(user_captions[song_id][1].get("caption") or "").strip(), "user"
        else:
            caption = f"A {', '.join(genres)} song" + (f", tagged {', '.join(tags[:8])}." if tags else ".")
            source = "rendered_from_tags"
        caption_rows.append({**common, "caption": caption, "caption_source": source})
        mv_rows.append({**common, "genre_tags": genres, "mv_type": mv_type, "lyrics_understanding": lyric,
                        **description_columns(description)})
        seconds += CLIP_SECONDS
    if not mv_rows:
        raise DatasetError(f"{root}: no song has both Music4All data and an MV target; nothing to write")

    report = write_configs(out_dir, {CAPTIONING: caption_rows, MV_DESCRIPTION: mv_rows}, split_by, ratios, seed,
                           seconds, problems.skipped, progress=progress)
    card = dataset_card(
        pretty_name="m2mv: Music4All music-video descriptions",
        counts=report.counts,
        license_id="other",
        source=("Audio, genres and tags from Music4All (Santana et al., 2020; available from its authors on "
                "request, under their terms: do not publish this dataset publicly unless those terms allow it); MV "
                "descriptions, MV types and lyrics understandings from the builder's own files."),
        how_built=(f"`python -m dataset_scripts.music4all` from {root.name}: targets from "
                   f"`{targets_file.name}` ({'per-frame captions placed on the 2-s grid' if frame_captions else 'ready descriptions'}); "
                   f"{len(report.skipped)} rows skipped."),
        column_status={"caption": "from the user's caption file where caption_source is 'user', else SYNTHETIC "
                                  "(rendered from genres and tags)",
                       "description": "from the user's files (e.g. frame captions merged by an LLM)",
                       "mv_type": "from the user's file (None where not given)",
                       "lyrics_understanding": "from the user's file (None where not given)"},
        split_info=describe_splits(split_by, seed, ratios),
        out_dir=out_dir,
    )
    write_card(out_dir, card)
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--music4all", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--frame-captions")
    parser.add_argument("--descriptions")
    parser.add_argument("--captions")
    parser.add_argument("--mv-types")
    parser.add_argument("--lyrics-understanding")
    parser.add_argument("--split-by", choices=("song", "artist"), default="song")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED)
    parser.add_argument("--skip-bad", action="store_true", help="skip bad songs and list them instead of stopping")
    parser.add_argument("--no-verify-audio", action="store_true", help="do not decode every MP3 to check it")
    args = parser.parse_args(argv)
    start = time.time()
    try:
        report = build_music4all(args.music4all, args.out, args.frame_captions, args.descriptions, args.captions,
                                 args.mv_types, args.lyrics_understanding, args.split_by, seed=args.seed,
                                 skip_bad=args.skip_bad, verify_audio=not args.no_verify_audio)
    except DatasetError as err:
        print(f"error: {err}")
        return 1
    print(report.summary())
    print(f"written to {args.out} in {time.time() - start:.1f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
