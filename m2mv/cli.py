"""``m2mv`` command line: describe music as a music video.

    m2mv describe song.mp3 [more files or folders] [--model DIR] [--genre rock --genre pop]
                  [--mv-type "Live Performance"] [--lyrics lyrics_understanding.txt] [--json] [--greedy]
    m2mv benchmark --model DIR --dataset DIR [--split test] [--ablation]   (see m2mv/benchmark.py)
    m2mv demo [--quick]                                                   (see m2mv/demo.py)

Without ``--model`` it uses the demo checkpoint (built once and cached): the real SmolLM2-135M-Instruct LM with
ImageBind's audio architecture at RANDOM weights and an untrained adaptor, so its text is English but does not
depend on the music yet. Train it (``train_sft.py``) or convert real ImageBind weights (``m2mv-convert``).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

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
) -> list[dict]:
    """Describe each audio file; returns one dict per file: ``file``, ``text``, ``parsed`` or ``error``."""
    import torch
    from transformers import AutoModel, AutoProcessor

    model_dir = model_dir or demo_checkpoint()
    model = AutoModel.from_pretrained(model_dir, trust_remote_code=True).eval()
    processor = AutoProcessor.from_pretrained(model_dir, trust_remote_code=True)
    prompt = processor.build_prompt(genre_tags=genre_tags, mv_type=mv_type,
                                    lyrics_understanding=lyrics_understanding)
    results = []
    for path in audio_paths:
        try:
            inputs = processor(text=[prompt], audio=[str(path)])
        except ValueError as err:  # unreadable / empty / bad audio: one clear line, the batch goes on
            results.append({"file": str(path), "error": str(err)})
            continue
        kwargs = {"do_sample": False} if greedy else {}
        if max_new_tokens:
            kwargs["max_new_tokens"] = max_new_tokens
        with torch.no_grad():
            out = model.generate(**inputs, tokenizer=processor.tokenizer, **kwargs)
        text = processor.decode_answers(out, inputs["input_ids"].shape[1])[0]
        parsed = processor.post_process_mv_description([text])[0]
        results.append({"file": str(path), "text": text, "parsed": parsed.to_dict()})
    return results


def _describe_main(args: argparse.Namespace) -> int:
    lyrics = Path(args.lyrics).read_text(encoding="utf-8").strip() if args.lyrics else None
    files = expand_inputs(args.inputs)
    if not files:
        print("error: no audio files found in the given inputs", file=sys.stderr)
        return 2
    results = describe(files, args.model, args.genre, args.mv_type, lyrics, args.greedy, args.max_new_tokens)
    failed = 0
    for result in results:
        if "error" in result:
            failed += 1
            print(f"error: {result['error']}", file=sys.stderr)
        elif args.json:
            print(json.dumps({"file": result["file"], **result["parsed"]}, ensure_ascii=False))
        else:
            print(f"== {result['file']}\n{result['text']}\n")
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
