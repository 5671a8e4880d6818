"""Build m2mv's two dataset configs from music videos: the paper's data pipeline (m2mv/pipeline/).

    python -m dataset_scripts.music_videos --videos VIDEOS_DIR --out DATASET --work WORK \\
        [--captioner MODEL | --captioner-url URL --captioner-model NAME] [--llm MODEL | --llm-url URL --llm-model NAME]
        [--mv-type embedding|llm] [--start 0 --clip-seconds 30] [--min-confidence 0.5] [--shard i/N] [--skip-bad]
    python -m dataset_scripts.music_videos --manifest songs.jsonl --out DATASET --work WORK ...
    python -m dataset_scripts.music_videos --music4all /data/music4all --videos VIDEOS_DIR --out DATASET --work WORK ...

Songs come from a folder of videos named by song id (any container PyAV reads), a JSON Lines manifest
(``{"id", "video", "audio"?: the clip, "lyrics"?, "genre_tags"?, "artist"?}``), or a Music4All folder plus a folder
of its songs' videos (``audios/{id}.mp3`` is the 30-s clip to locate in each video, ``lyrics/{id}.txt`` the lyrics,
``id_genres.csv`` the genres). Each song goes through the pipeline (:class:`m2mv.pipeline.song.SongPipeline`:
align, frames and cuts, captions, description, MV type, lyrics understanding), resumable in ``--work``; then both
configs are written with m2mv's builder (Parquet + card), the ``provenance`` column saying how each row was made.

With ``--shard i/N`` only the songs of shard i are processed (into ``WORK/shard-i-of-N``) and no dataset is written:
N machines or GPUs split the songs; a last run without ``--shard`` reads every shard's records and writes the
dataset. Bad input (a video with no audio or picture, a truncated file, a clip not found, a server that is down, a
reply that never parses) stops the build with a message naming the song and file, or with ``--skip-bad`` is
counted in the summary and skipped.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from tqdm.auto import tqdm

from dataset_scripts.music4all import TABLES, _Problems, _split_list, read_table
from m2mv.data.fileio import read_jsonl
from m2mv.data.schema import CAPTIONING, MV_DESCRIPTION
from m2mv.data.writing import DEFAULT_RATIOS, DEFAULT_SEED, BuildReport, dataset_card, describe_splits, write_card, \
    write_configs
from m2mv.errors import DatasetError, PipelineError
from m2mv.pipeline import prompts
from m2mv.pipeline.models import LocalCaptioner, OpenAICaptioner, chat_model
from m2mv.pipeline.mv_type import EmbeddingTyper, LLMTyper
from m2mv.pipeline.song import Settings, Song, SongPipeline

VIDEO_SUFFIXES = (".mp4", ".mkv", ".webm", ".mov", ".avi", ".m4v", ".ogv", ".mpg", ".mpeg")


# -- the songs ---------------------------------------------------------------------------------------------------


def songs_from_folder(folder: Path) -> list[Song]:
    """One song per video file, its id the file name without the suffix."""
    if not folder.is_dir():
        raise DatasetError(f"{folder}: no such folder of videos")
    videos = sorted(p for p in folder.iterdir() if p.suffix.lower() in VIDEO_SUFFIXES)
    if not videos:
        raise DatasetError(f"{folder}: no video files ({', '.join(VIDEO_SUFFIXES)})")
    return [Song(song_id=p.stem, video=p) for p in videos]


def songs_from_manifest(manifest: Path) -> list[Song]:
    """One song per manifest line; relative paths are relative to the manifest's folder."""
    if not manifest.is_file():
        raise DatasetError(f"{manifest}: no such manifest")
    songs, seen = [], set()
    for number, row in read_jsonl(manifest, kind="manifest row"):
        where = f"{manifest}:{number}"
        if not row.get("id") or not row.get("video"):
            raise DatasetError(f"{where}: a manifest row needs 'id' and 'video'")
        if row["id"] in seen:
            raise DatasetError(f"{where}: duplicate id {row['id']!r}")
        seen.add(row["id"])
        tags = row.get("genre_tags") or []
        if isinstance(tags, str) or not all(isinstance(t, str) for t in tags):
            raise DatasetError(f"{where}: genre_tags must be a list of strings")
        songs.append(Song(song_id=str(row["id"]), video=manifest.parent / row["video"],
                          clip=manifest.parent / row["audio"] if row.get("audio") else None,
                          lyrics=row.get("lyrics"), genre_tags=list(tags), artist=row.get("artist")))
    return songs


def songs_from_music4all(root: Path, videos: Path) -> list[Song]:
    """The Music4All songs that have a video in ``videos`` (named by song id)."""
    problems = _Problems(skip_bad=False)
    information = read_table(root / TABLES["information"], problems)
    genres = read_table(root / TABLES["genres"], problems)
    songs = []
    for song in songs_from_folder(videos):
        if song.song_id not in information:
            raise DatasetError(f"{song.video}: song id {song.song_id!r} is not in {root / TABLES['information']}")
        lyrics = root / "lyrics" / f"{song.song_id}.txt"
        song.clip = root / "audios" / f"{song.song_id}.mp3"
        song.lyrics = lyrics.read_text(encoding="utf-8", errors="replace") if lyrics.is_file() else None
        song.genre_tags = _split_list(genres.get(song.song_id, {}).get("genres"))
        song.artist = information[song.song_id].get("artist") or None
        songs.append(song)
    return songs


def parse_shard(text: str | None) -> tuple[int, int] | None:
    """``"i/N"`` -> ``(i, N)`` with 0 <= i < N."""
    if text is None:
        return None
    try:
        index, count = (int(part) for part in text.split("/"))
    except ValueError:
        raise DatasetError(f"--shard {text!r}: expected i/N, e.g. 0/4") from None
    if not 0 <= index < count:
        raise DatasetError(f"--shard {text!r}: need 0 <= i < N")
    return index, count


def in_shard(song_id: str, shard: tuple[int, int]) -> bool:
    """Whether a song belongs to shard ``(i, N)``: a hash of its id, stable across machines."""
    return int(hashlib.sha256(song_id.encode()).hexdigest(), 16) % shard[1] == shard[0]


# -- the build ---------------------------------------------------------------------------------------------------


@dataclass
class PipelineReport:
    """What the pipeline did: songs done, failures by stage (and each reason), seconds."""

    done: int = 0
    failed: dict[str, list[str]] = field(default_factory=dict)
    seconds: float = 0.0
    dataset: BuildReport | None = None

    def summary(self) -> str:
        lines = [f"songs described: {self.done}; failed: {sum(map(len, self.failed.values()))} "
                 f"({self.seconds:.0f} s)"]
        for stage, reasons in sorted(self.failed.items()):
            lines.append(f"  {stage}: {len(reasons)}")
            lines.extend(f"    - {reason}" for reason in reasons[:20])
        if self.dataset is not None:
            lines.append(self.dataset.summary())
        return "\n".join(lines)


def _stage_of(err: PipelineError) -> str:
    text = str(err)
    return text.split("(", 1)[1].split(")", 1)[0] if "(" in text else "song"


def run_pipeline(pipeline: SongPipeline, songs: Iterable[Song], skip_bad: bool, progress: bool = True):
    """``(results by song id, report)``: every song through every stage (records reused)."""
    songs = list(songs)
    report, results = PipelineReport(), {}
    start = time.time()
    for song in tqdm(songs, desc="songs", unit="song", disable=not progress, file=sys.stderr):
        try:
            results[song.song_id] = (song, pipeline.run(song))
        except PipelineError as err:
            if not skip_bad:
                raise
            report.failed.setdefault(_stage_of(err), []).append(str(err))
    report.done, report.seconds = len(results), time.time() - start
    return results, report


def dataset_rows(results: dict) -> dict[str, list[dict]]:
    """Both configs' rows. The captioning target is rendered from the genre tags (songs without any have no
    captioning row); the MV description and its columns come from the pipeline."""
    captioning, described = [], []
    for song_id, (song, result) in sorted(results.items()):
        common = {"song_id": song_id, "artist": song.artist or "", "audio": result.audio}
        if song.genre_tags:
            captioning.append({**common, "caption": f"A {', '.join(song.genre_tags)} song.",
                               "caption_source": "rendered_from_tags"})
        described.append({**common, "genre_tags": song.genre_tags, "mv_type": result.mv_type,
                          "lyrics_understanding": result.lyrics_understanding, "description": result.description,
                          "frames": result.frames, "provenance": json.dumps(result.provenance, ensure_ascii=False)})
    return {CAPTIONING: captioning, MV_DESCRIPTION: described}


def write_dataset(out: Path, results: dict, pipeline: SongPipeline, report: PipelineReport, split_by: str,
                  ratios, seed: int, progress: bool) -> BuildReport:
    rows = dataset_rows(results)
    seconds = sum(result.provenance["clip_seconds"] for _, result in results.values())
    built = write_configs(out, rows, split_by, ratios, seed, seconds,
                          [r for reasons in report.failed.values() for r in reasons], progress=progress)
    llm, captioner, typer = pipeline.chat.name, pipeline.captioner.name, pipeline.typer.name
    card = dataset_card(
        pretty_name="m2mv: music-video descriptions from music videos",
        counts=built.counts,
        license_id="other",
        source=("Audio and video frames from the music videos given to `dataset_scripts.music_videos` (their own "
                "licences apply); every text column written by the models named below."),
        how_built=(f"`python -m dataset_scripts.music_videos` (prompt version {prompts.PROMPT_VERSION}): each song's "
                   "clip located in the video's soundtrack by cross-correlation, one frame per 2-s window (mid-window, "
                   "PyAV) and the scene cuts per window (PySceneDetect), each frame captioned, the captions and cuts "
                   "merged into the description by an LLM (its answer checked by m2mv's parser), the MV type and the "
                   f"lyrics understanding written; {len(built.skipped)} songs failed. The `provenance` column of each "
                   "row holds its models, prompt version, clip offset and confidence, and the frame captions."),
        column_status={"description": f"MODEL-WRITTEN: frame captions by {captioner}, merged by {llm}",
                       "frames": f"the description's frames (MODEL-WRITTEN, {llm})",
                       "mv_type": f"MODEL-CHOSEN: {typer}",
                       "lyrics_understanding": f"MODEL-WRITTEN: {pipeline.lyrics_chat.name} (None without lyrics)",
                       "caption": "SYNTHETIC (rendered from the genre tags)",
                       "provenance": "how the row was made (JSON)"},
        split_info=describe_splits(split_by, seed, ratios),
        out_dir=out,
    )
    write_card(out, card)
    return built


# -- the command line --------------------------------------------------------------------------------------------


def make_models(args):
    """``(captioner, chat LLM, MV typer)`` from the options (in-process models load here)."""
    chat = chat_model(args.llm, args.llm_url, args.llm_model, device=args.device, dtype=args.dtype,
                      timeout=args.timeout, concurrency=args.concurrency)
    if args.captioner_url:
        captioner = OpenAICaptioner(args.captioner_url, args.captioner_model, timeout=args.timeout,
                                    concurrency=args.concurrency)
    elif args.captioner:
        captioner = LocalCaptioner(args.captioner, device=args.device, dtype=args.dtype)
    else:
        raise DatasetError("give a captioner: --captioner MODEL (a Hub id or folder of an image-text-to-text model) "
                           "or --captioner-url URL --captioner-model NAME")
    typer = LLMTyper(chat) if args.mv_type == "llm" else EmbeddingTyper(args.embedding_model)
    return captioner, chat, typer


def build(args) -> PipelineReport:
    if sum(bool(x) for x in (args.manifest, args.music4all, args.videos and not args.music4all)) != 1:
        raise DatasetError("give one input: --videos DIR, --manifest FILE.jsonl, or --music4all DIR with --videos DIR")
    if args.music4all and not args.videos:
        raise DatasetError("--music4all needs --videos DIR (the songs' videos, named by song id)")
    if args.music4all:
        songs = songs_from_music4all(Path(args.music4all), Path(args.videos))
    elif args.manifest:
        songs = songs_from_manifest(Path(args.manifest))
    else:
        songs = songs_from_folder(Path(args.videos))
    shard = parse_shard(args.shard)
    work = Path(args.work)
    if shard is not None:
        songs = [s for s in songs if in_shard(s.song_id, shard)]
        work = work / f"shard-{shard[0]}-of-{shard[1]}"
    captioner, chat, typer = make_models(args)
    settings = Settings(clip_seconds=args.clip_seconds, start=args.start, min_confidence=args.min_confidence,
                        attempts=args.attempts)
    pipeline = SongPipeline(work, captioner, chat, typer, settings, shard_folders=sorted(Path(args.work).glob(
        "shard-*-of-*")) if shard is None else ())
    results, report = run_pipeline(pipeline, songs, args.skip_bad, progress=not args.no_progress)
    if shard is None:
        if not results:
            raise DatasetError("no song went through the pipeline; nothing to write")
        report.dataset = write_dataset(Path(args.out), results, pipeline, report, args.split_by, DEFAULT_RATIOS,
                                       args.seed, progress=not args.no_progress)
    return report


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument("--videos", help="folder of music videos named by song id")
    parser.add_argument("--manifest", help="JSON Lines manifest: id, video, audio (clip), lyrics, genre_tags, artist")
    parser.add_argument("--music4all", help="Music4All folder (with --videos: the songs' videos)")
    parser.add_argument("--out", required=True, help="dataset folder to write (both configs)")
    parser.add_argument("--work", required=True, help="folder for the per-song records and frames (resumable)")
    parser.add_argument("--captioner", help="image-text-to-text model (Hub id or folder), in-process")
    parser.add_argument("--captioner-url", help="OpenAI-compatible vision endpoint (base URL, e.g. .../v1)")
    parser.add_argument("--captioner-model", help="model name at --captioner-url")
    parser.add_argument("--llm", help="chat model (Hub id or folder), in-process (default: SmolLM2-135M-Instruct)")
    parser.add_argument("--llm-url", help="OpenAI-compatible chat endpoint (base URL, e.g. http://127.0.0.1:8000/v1)")
    parser.add_argument("--llm-model", help="model name at --llm-url")
    parser.add_argument("--mv-type", choices=("embedding", "llm"), default="embedding",
                        help="MV type by caption/type-description embedding similarity (default) or by the LLM")
    parser.add_argument("--embedding-model", help="sentence-embedding model folder (default: all-MiniLM-L6-v2)")
    parser.add_argument("--start", type=float, default=0.0, help="clip start in the video when no clip is given")
    parser.add_argument("--clip-seconds", type=float, default=30.0, help="clip length when no clip is given")
    parser.add_argument("--min-confidence", type=float, default=Settings.min_confidence,
                        help="alignment confidence below which a clip is 'not found'")
    parser.add_argument("--attempts", type=int, default=Settings.attempts, help="LLM answers per description")
    parser.add_argument("--shard", help="i/N: process only shard i of N (no dataset written)")
    parser.add_argument("--skip-bad", action="store_true", help="skip failing songs and list them")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds per server request")
    parser.add_argument("--concurrency", type=int, default=4, help="server requests at a time")
    parser.add_argument("--split-by", choices=("song", "artist"), default="song")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED)
    parser.add_argument("--no-progress", action="store_true")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = add_arguments(argparse.ArgumentParser(description=__doc__,
                                                   formatter_class=argparse.RawDescriptionHelpFormatter))
    try:
        report = build(parser.parse_args(argv))
    except (DatasetError, PipelineError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(report.summary())
    return 1 if report.failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
