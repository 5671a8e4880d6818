"""``m2mv`` command line: describe music as a music video.

    m2mv describe song.mp3 [more files or folders] [--model DIR] [--genre rock --genre pop]
                  [--mv-type "Live Performance"] [--lyrics lyrics_understanding.txt] [--json] [--greedy]
                  [--align fixed|beats] [--out results.jsonl]
    m2mv benchmark --model DIR --dataset DIR [--split test] [--ablation]   (see m2mv/benchmark.py)
    m2mv demo [--quick]                                                   (see m2mv/demo.py)

``--align beats`` snaps the frames to beats found by librosa's beat tracker (whole beats, about 2 s a frame) and
lists them in the prompt; the result reports whether the generated frames match them (the paper's model was
trained on fixed 2-s frames only; m2mv's stage-2 training lists a target's frames in the prompt when they are not
the 2-s grid: ``prompt_frames`` in m2mv/training.py). ``--out`` appends one JSON line per file as it finishes; a
rerun with the same ``--out`` and settings skips the files already described (failed ones are retried). A progress
bar runs on stderr when several files are described.

Without ``--model`` it uses the demo checkpoint (built once and cached): the real SmolLM2-135M-Instruct LM with
ImageBind's audio architecture at RANDOM weights and an untrained adaptor, so its text is English but does not
depend on the music yet. Train it (``train_sft.py``) or convert real ImageBind weights (``m2mv-convert``).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from itertools import zip_longest
from pathlib import Path

from m2mv.beats import ALIGN_MODES, BOUNDARY_TOLERANCE_S, check_align, check_processor_lists_frames

AUDIO_SUFFIXES = {".wav", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".aiff", ".aif"}


def remote_code_hash() -> str:
    """Short hash of the three remote-code files, so cached checkpoints follow code changes."""
    import hashlib

    import configuration_m2mv
    import modeling_m2mv
    import processing_m2mv

    digest = hashlib.sha256()
    for module in (configuration_m2mv, modeling_m2mv, processing_m2mv):
        digest.update(Path(module.__file__).read_bytes())
    return digest.hexdigest()[:12]


def demo_checkpoint() -> Path:
    """The cached demo checkpoint (SmolLM2 + random-weight ImageBind audio branch), built on first use; keyed by
    the remote code's hash, since the checkpoint carries a copy of that code."""
    from m2mv.convert import build_checkpoint
    from m2mv.offline_models import cache_root, smollm2_folder

    folder = cache_root() / f"m2mv-smollm2-135m-random-imagebind-{remote_code_hash()}"
    if not (folder / "config.json").is_file():
        print(f"building the demo checkpoint in {folder} (once) ...", file=sys.stderr)
        build_checkpoint(folder, smollm2_folder())
    return folder


def expand_inputs(paths: list[str]) -> list[Path]:
    """Files as given; folders expanded to the audio files inside (sorted)."""
    files: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            files.extend(sorted(p for p in path.rglob("*") if p.suffix.lower() in AUDIO_SUFFIXES))
        else:
            files.append(path)
    return files


def describe(
    audio_paths: list[str | Path],
    model_dir: str | Path | None = None,
    genre_tags: list[str] | None = None,
    mv_type: str | None = None,
    lyrics_understanding: str | None = None,
    greedy: bool = False,
    max_new_tokens: int | None = None,
    align: str = "fixed",
    out: str | Path | None = None,
) -> list[dict]:
    """Describe each audio file; returns one dict per file: ``file``, ``text``, ``parsed`` or ``error``.

    ``align="beats"``: beat-aligned frames listed in the prompt; the dict adds ``align``, ``boundaries``,
    ``beat_times`` and ``frames_match_boundaries`` (a mismatch is also one of ``parsed["problems"]``).
    ``out``: a JSONL file that gets one line per file as it finishes (with the settings used); files already
    described there with the same settings are skipped and come back as ``{"file", "skipped": True}``.
    """
    from tqdm import tqdm
    from transformers import AutoModel, AutoProcessor

    check_align(align)
    model_dir = model_dir or demo_checkpoint()
    model = AutoModel.from_pretrained(model_dir, trust_remote_code=True).eval()
    processor = AutoProcessor.from_pretrained(model_dir, trust_remote_code=True)
    if align == "beats":
        check_processor_lists_frames(processor, model_dir)
    conditioning = {"genre_tags": genre_tags, "mv_type": mv_type, "lyrics_understanding": lyrics_understanding}
    prompt = processor.build_prompt(**conditioning)  # validates the conditioning once, before any audio
    settings = json.loads(json.dumps({
        "model": str(Path(model_dir).resolve()) if Path(model_dir).exists() else str(model_dir),  # or a Hub id
        "align": align, "genre_tags": genre_tags,
        "mv_type": processor.canonical_mv_type(mv_type) if mv_type is not None else None,
        "lyrics_understanding": lyrics_understanding, "greedy": greedy, "max_new_tokens": max_new_tokens,
    }))
    paths = [Path(p) for p in audio_paths]
    done = completed_files(Path(out), settings) if out else set()
    results: list[dict | None] = [{"file": str(p), "skipped": True} if str(p.resolve()) in done else None
                                  for p in paths]
    todo = [i for i, result in enumerate(results) if result is None]
    if len(todo) < len(paths):
        print(f"skipping {len(paths) - len(todo)} file(s) already described in {out}", file=sys.stderr)
    generate_kwargs = {"do_sample": False} if greedy else {}
    if max_new_tokens:
        generate_kwargs["max_new_tokens"] = max_new_tokens
    with open(out, "a", encoding="utf-8") if out else contextlib.nullcontext() as sink:
        for index in tqdm(todo, desc="describing", unit="file", file=sys.stderr, disable=len(todo) < 2):
            results[index] = result = _describe_one(model, processor, paths[index], prompt, conditioning, align,
                                                    generate_kwargs)
            if sink is not None:
                sink.write(json.dumps({**result, "file": str(paths[index].resolve()), "settings": settings},
                                      ensure_ascii=False) + "\n")
                sink.flush()
    return results


def _describe_one(model, processor, path: Path, prompt: str, conditioning: dict, align: str,
                  generate_kwargs: dict) -> dict:
    """One file -> its result dict (``error`` for bad audio or, with beats, a beatless file)."""
    import torch

    result: dict = {"file": str(path)}
    boundaries = None
    try:
        if align == "beats":
            from m2mv.beats import beat_frame_boundaries
            from processing_m2mv import load_audio

            waveform, rate = load_audio(path)  # read again by the processor below, so its errors name the file
            boundaries, beat_times = beat_frame_boundaries(waveform, rate, name=str(path))
            prompt = processor.build_prompt(frame_boundaries=boundaries, **conditioning)
            result.update(align="beats", boundaries=[list(b) for b in boundaries], beat_times=beat_times)
        inputs = processor(text=[prompt], audio=[str(path)])
    except ValueError as err:  # unreadable / empty / bad audio, no beats: one clear line, the batch goes on
        return {"file": str(path), "error": str(err)}
    with torch.no_grad():
        generated = model.generate(**inputs, tokenizer=processor.tokenizer, **generate_kwargs)
    text = processor.decode_answers(generated, inputs["input_ids"].shape[1])[0]
    parsed = processor.post_process_mv_description([text])[0]
    if boundaries is not None:
        problem = boundary_problem([(f.start, f.end) for f in parsed.frames], boundaries)
        result["frames_match_boundaries"] = problem is None
        if problem:
            parsed.problems.append(problem)
    result.update(text=text, parsed=parsed.to_dict())
    return result


def boundary_problem(frames: list[tuple[float, float]], boundaries: list[tuple[float, float]]) -> str | None:
    """None when the generated ``frames`` are the requested ``boundaries`` (to 10 ms), else what differs."""
    from processing_m2mv import format_frame_span

    for number, (want, got) in enumerate(zip_longest(boundaries, frames), start=1):
        if want is None or got is None or max(abs(want[0] - got[0]), abs(want[1] - got[1])) > BOUNDARY_TOLERANCE_S:
            requested = format_frame_span(*want) if want is not None else "no frame"
            generated = format_frame_span(*got) if got is not None else "nothing"
            return (f"the {len(frames)} generated frames do not match the {len(boundaries)} requested boundaries: "
                    f"frame {number} is {generated}, requested {requested}")
    return None


def completed_files(out: Path, settings: dict) -> set[str]:
    """Resolved paths that ``out`` (JSONL) holds a successful result for, made with ``settings``.

    A half-written last line (no newline: the run was killed mid-write) is cut off, so appends start clean;
    other lines that are not JSON objects are skipped with a warning.
    """
    if not out.is_file():
        return set()
    data = out.read_bytes()
    complete = data[: data.rfind(b"\n") + 1]
    if len(complete) < len(data):
        print(f"warning: {out}: dropping a half-written last line ({len(data) - len(complete)} bytes)",
              file=sys.stderr)
        with open(out, "r+b") as handle:
            handle.truncate(len(complete))
    done = set()
    for number, line in enumerate(complete.decode("utf-8", errors="replace").splitlines(), start=1):
        try:
            row = json.loads(line) if line.strip() else {}
        except json.JSONDecodeError:
            print(f"warning: {out}: line {number} is not JSON; ignored", file=sys.stderr)
            continue
        if isinstance(row, dict) and "file" in row and "error" not in row and row.get("settings") == settings:
            done.add(row["file"])
    return done


def _describe_main(args: argparse.Namespace) -> int:
    lyrics = Path(args.lyrics).read_text(encoding="utf-8").strip() if args.lyrics else None
    files = expand_inputs(args.inputs)
    if not files:
        print("error: no audio files found in the given inputs", file=sys.stderr)
        return 2
    results = describe(files, args.model, args.genre, args.mv_type, lyrics, args.greedy, args.max_new_tokens,
                       align=args.align, out=args.out)
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
            beats = {key: result[key] for key in ("align", "boundaries", "beat_times", "frames_match_boundaries")
                     if key in result}
            print(json.dumps({"file": result["file"], **beats, **result["parsed"]}, ensure_ascii=False))
        else:
            print(f"== {result['file']}\n{result['text']}\n")
    if args.out:
        print(f"wrote {written} description(s) to {args.out}" + (f", {failed} failed" if failed else ""),
              file=sys.stderr)
    return 1 if failed else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="m2mv", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    desc = commands.add_parser("describe", help="describe audio files as a music video")
    desc.add_argument("inputs", nargs="+", help="audio files or folders (WAV, FLAC, OGG, Opus, MP3)")
    desc.add_argument("--model", help="m2mv checkpoint folder (default: the cached demo checkpoint)")
    desc.add_argument("--genre", action="append", help="a genre tag (repeat for several)")
    desc.add_argument("--mv-type", help="MV type from the taxonomy, e.g. 'Live Performance'")
    desc.add_argument("--lyrics", help="text file with a lyrics understanding")
    desc.add_argument("--json", action="store_true", help="print the parsed overview + frames as JSON lines")
    desc.add_argument("--greedy", action="store_true", help="greedy decoding instead of the paper's sampling")
    desc.add_argument("--max-new-tokens", type=int, help="override the checkpoint's 512")
    desc.add_argument("--align", choices=ALIGN_MODES, default="fixed",
                      help="frame boundaries: fixed 2-s steps (default) or snapped to detected beats")
    desc.add_argument("--out", metavar="FILE.jsonl",
                      help="append one JSON line per file as it finishes; a rerun skips the files done")
    from m2mv import benchmark

    bench = commands.add_parser("benchmark", help="generate over a dataset split, score it, print a table")
    benchmark.add_arguments(bench)
    demo = commands.add_parser("demo", help="the one-command demo: corpus, dataset, training, benchmark, describe")
    demo.add_argument("--out", default="demo-output", help="output folder")
    demo.add_argument("--quick", action="store_true", help="fewer clips, 1 epoch per stage, shorter generations")
    args = parser.parse_args(argv)
    if args.command == "benchmark":
        return benchmark.run_from_args(args)
    if args.command == "demo":
        from m2mv.demo import run_demo

        run_demo(args.out, args.quick)
        return 0
    try:
        return _describe_main(args)
    except (ValueError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
