"""``m2mv describe``: describe audio files as a music video.

    m2mv describe song.mp3 [more files or folders] [--model DIR] [--genre rock --genre pop]
                  [--mv-type "Live Performance"] [--lyrics lyrics.txt | --lyrics-understanding text.txt]
                  [--json] [--greedy] [--align fixed|beats] [--batch-size N] [--out results.jsonl]
                  [--export srt,vtt,shots.json] [--export-dir DIR] [--span whole|START-END]
                  [--window-seconds S] [--constrained]

``--lyrics FILE`` takes the song's lyrics themselves (plain text, or LRC: see below): an LLM writes the lyrics
understanding the model is prompted with (the data pipeline's own step; ``--lyrics-model`` or
``--lyrics-llm-url``/``--lyrics-llm-model``, by default the real SmolLM2-135M-Instruct in-process).
``--lyrics-understanding FILE`` takes a ready one (as the paper's data has).

``--align beats`` snaps the frames to beats found by librosa's beat tracker (whole beats, about 2 s a frame) and
lists them in the prompt; the result reports whether the generated frames match them. ``--out`` appends one JSON
line per file as it finishes; a rerun with the same ``--out`` and settings skips the files already described
(failed ones are retried). A progress bar runs on stderr when several files are described.

Whole songs: a file longer than the model's clip (the checkpoint's ``clip_seconds``, 30 s; a file up to 1.5 clips
counts as one) is described whole by default, in windows of a clip each, all in one ``generate`` call, stitched into
one timeline: the text output prints the sections in order, ``--json`` holds ``sections`` (start, end, overview,
frames) and one flat ``frames`` list on the song's clock. ``--span START-END`` (seconds or mm:ss) describes a part;
``--window-seconds`` overrides the window length. ``--lyrics`` takes plain lyrics or a time-synced ``.lrc`` file
(``[mm:ss.xx] line``): with LRC each window's lyrics understanding is written from the lines sung inside it.

``--constrained`` holds every answer to the frames asked for (the 2-s grid, the beat frames, a window's frames):
the headers and every timestamp are written by the program and the model writes only the overview and the frame
texts (a grammar through llguidance, the ``pipeline`` extra), so every answer parses with exactly those frames.
Without it the model writes freely (the paper's setting) and may not.

``--export`` writes each description's frames for a video maker: ``DIR/<song>.srt`` and ``.vtt`` (cues an editor
shows on its timeline) and ``.shots.json`` (a shot list a text-to-video tool takes one shot at a time).

Without ``--model`` it uses the demo checkpoint (built once and cached): the real SmolLM2-135M-Instruct LM with
OpenAI's real Whisper-base encoder (frozen) and an untrained adaptor, so its text is English but does not depend
on the music yet. Train it (``m2mv train``, or ``m2mv demo``) or convert real ImageBind weights (``m2mv convert``).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from m2mv.beats import ALIGN_MODES
from m2mv.errors import UsageError

NAME = "describe"


def register(subparsers) -> None:
    parser = subparsers.add_parser(NAME, help="describe audio files as a music video", description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("inputs", nargs="+", help="audio files or folders (WAV, FLAC, OGG, Opus, MP3)")
    parser.add_argument("--model", help="m2mv checkpoint folder (default: the cached demo checkpoint)")
    parser.add_argument("--genre", action="append", help="a genre tag (repeat for several)")
    parser.add_argument("--mv-type", help="MV type from the taxonomy, e.g. 'Live Performance'")
    parser.add_argument("--lyrics", help="the song's lyrics: a text file, or time-synced .lrc (see above)")
    parser.add_argument("--lyrics-understanding", help="text file with a ready lyrics understanding")
    parser.add_argument("--lyrics-model", help="chat model for --lyrics (Hub id or folder; default SmolLM2-135M)")
    parser.add_argument("--lyrics-llm-url", help="OpenAI-compatible server for --lyrics (base URL, .../v1)")
    parser.add_argument("--lyrics-llm-model", help="model name at --lyrics-llm-url")
    parser.add_argument("--json", action="store_true", help="print the parsed overview + frames as JSON lines")
    parser.add_argument("--greedy", action="store_true", help="greedy decoding instead of the paper's sampling")
    parser.add_argument("--max-new-tokens", type=int, help="override the checkpoint's 512")
    parser.add_argument("--align", choices=ALIGN_MODES, default="fixed",
                        help="frame boundaries: fixed 2-s steps (default) or snapped to detected beats")
    parser.add_argument("--batch-size", type=int, default=1, help="files per generate() call (default 1)")
    parser.add_argument("--out", metavar="FILE.jsonl",
                        help="append one JSON line per file as it finishes; a rerun skips the files done")
    parser.add_argument("--export", help="comma-separated exports of each description: srt, vtt, shots.json")
    parser.add_argument("--export-dir", default=".", help="folder for the --export files (default: here)")
    parser.add_argument("--span", default="whole",
                        help="'whole' (default: the whole song, in windows) or START-END in seconds or mm:ss")
    parser.add_argument("--constrained", action="store_true",
                        help="hold every answer to exactly the requested frames: the program writes the timestamps, "
                             "the model the texts (llguidance: m2mv[pipeline]); default: free generation")
    parser.add_argument("--window-seconds", type=float,
                        help="window length for songs longer than a clip (default: the checkpoint's clip_seconds)")
    parser.set_defaults(run=run)


def _read_text(option: str, path: str | None) -> str | None:
    if path is None:
        return None
    file = Path(path)
    if not file.is_file():
        raise FileNotFoundError(f"{option} {file}: no such file")
    return file.read_text(encoding="utf-8").strip()


def _print(results: list[dict], args) -> int:
    """Print the results (or, with --out, a summary); the number that failed."""
    failed = written = 0
    for result in results:
        if result.get("skipped"):
            continue
        if "error" in result:
            failed += 1
            print(f"error: {result['error']}", file=sys.stderr)
        elif args.out:
            written += 1
        elif args.json:
            keys = ("align", "boundaries", "beat_times", "frames_match_boundaries", "span", "windows", "lyrics_lines")
            fields = {k: result[k] for k in keys if k in result}
            print(json.dumps({"file": result["file"], **fields, **result["parsed"]}, ensure_ascii=False))
        elif "sections" in result["parsed"]:
            print(_song_text(result))
        else:
            print(f"== {result['file']}\n{result['text']}\n")
    if args.out:
        print(f"wrote {written} description(s) to {args.out}" + (f", {failed} failed" if failed else ""),
              file=sys.stderr)
    return failed


def _song_text(result: dict) -> str:
    """A whole song as text: its sections in order, each its window's description."""
    from m2mv.data.timeline import section_heading

    start, end = result["span"]
    lines = [f"== {result['file']} ({start:g}-{end:g} s, {len(result['parsed']['sections'])} sections)"]
    for index, section in enumerate(result["parsed"]["sections"]):
        lines += ["", section_heading(index, section), section["text"]]
    return "\n".join(lines) + "\n"


def _read_lyrics(path: str | None):
    """``(plain lyrics, LRC lines)`` of ``--lyrics``: an ``.lrc`` file, or text that reads as LRC, is LRC."""
    from m2mv.data.lrc import plain_or_lrc

    if _read_text("--lyrics", path) is None:
        return None, None
    return plain_or_lrc(Path(path).read_text(encoding="utf-8-sig"), str(path))  # unstripped: LRC line numbers


def _export_stems(files: list, export_dir: Path) -> dict[str, Path]:
    """Audio file -> the export path without its extension; two inputs with one name are an error."""
    stems: dict[str, Path] = {}
    owners: dict[Path, str] = {}
    for file in files:
        stem = export_dir / Path(file).stem
        if stem in owners:
            raise UsageError(f"--export: {owners[stem]} and {file} would both write {stem}.*; export them separately")
        stems[str(file)], owners[stem] = stem, str(file)
    return stems


def _export(results: list[dict], stems: dict[str, Path], formats: list[str]) -> None:
    from m2mv.data.exports import write_exports

    for result in results:
        if result.get("skipped") or "error" in result:
            continue
        paths, dropped = write_exports(result["parsed"], stems[str(result["file"])], formats, str(result["file"]))
        note = f" ({dropped} frame(s) without a valid time span left out)" if dropped else ""
        print(f"exported {', '.join(str(p) for p in paths)}{note}", file=sys.stderr)


def run(args, extra=()) -> int:
    from m2mv.data.exports import parse_export_formats
    from m2mv.inference import describe_files, expand_inputs, lyrics_chat_model

    formats = parse_export_formats(args.export)
    from m2mv.data.timeline import parse_span

    span = parse_span(args.span)
    lyrics, lrc = _read_lyrics(args.lyrics)
    understanding = _read_text("--lyrics-understanding", args.lyrics_understanding)
    files = expand_inputs(args.inputs)
    if not files:
        print("error: no audio files found in the given inputs", file=sys.stderr)
        return 2
    stems = _export_stems(files, Path(args.export_dir)) if formats else {}
    chat = lyrics_chat_model(args.lyrics_model, args.lyrics_llm_url, args.lyrics_llm_model) \
        if (lyrics is not None or lrc is not None) and understanding is None else None
    results = describe_files(files, args.model, args.genre, args.mv_type, understanding, args.greedy,
                             args.max_new_tokens, align=args.align, out=args.out, batch_size=args.batch_size,
                             lyrics=lyrics, lyrics_chat=chat, span=span, window_seconds=args.window_seconds, lrc=lrc,
                             constrained=args.constrained)
    failed = _print(results, args)
    if formats:
        _export(results, stems, formats)
    return 1 if failed else 0
