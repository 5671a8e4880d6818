"""Describing a folder of songs: one by one vs batched (``m2mv describe --batch-size``), from one run.

    python benchmarks/describe_batch.py [--model DIR] [--songs 8] [--batch-size 4] [--max-new-tokens 128]

The songs are the first ``--songs`` clips of the demo corpus (real game music, 30 s each; cached under
~/.cache/m2mv), each a different track. Both passes go through ``m2mv.inference.describe_files`` (the CLI's path:
decoding, features, prompt, ``generate``, parsing), greedy, on one loaded checkpoint (loading is not timed): first
``batch_size=1``, then ``--batch-size`` files per ``generate`` call (left padding, the audio encoded as one batch).
Prints songs/s of each, the ratio, and whether every song's text is the same both ways (greedy decoding: it should
be); then how much of each pass was the audio encoder (a fixed cost per song on a CPU, batched or not), the speedup
of the rest, and the new tokens a song got (an untrained adaptor stops early; longer answers favour batching). The
default model is the demo checkpoint (the real SmolLM2-135M-Instruct + OpenAI's real Whisper-base encoder), on this
machine's CPU.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def demo_clips(work: Path, count: int) -> list[Path]:
    """The first ``count`` clips of the demo corpus, as files."""
    from dataset_scripts.demo_corpus import build_demo_corpus

    manifest = build_demo_corpus(work / "corpus", subset="small", progress=False)
    records = [json.loads(line) for line in manifest.read_text().splitlines()[:count]]
    if len(records) < count:
        raise SystemExit(f"the demo corpus has {len(records)} clips, fewer than --songs {count}")
    return [manifest.parent / record["audio"] for record in records]


class EncoderClock:
    """Seconds spent in the model's audio encoder (its ``get_audio_features``, the encoder and the adaptor), timed
    by wrapping the method on the loaded model for the benchmark's run."""

    def __init__(self, model):
        self.seconds = 0.0
        # the innermost owner (M2MVModel): the generation class only delegates to it
        owner = [m for m in model.modules() if hasattr(type(m), "get_audio_features")][-1]
        encode = owner.get_audio_features

        def timed_encode(*args, **kwargs):
            started = time.perf_counter()
            try:
                return encode(*args, **kwargs)
            finally:
                self.seconds += time.perf_counter() - started

        owner.get_audio_features = timed_encode


def timed(files: list[Path], checkpoint: tuple, model_dir: Path, batch_size: int, max_new_tokens: int,
          clock: EncoderClock) -> tuple[float, float, list[dict]]:
    """``(seconds, of which in the audio encoder, results)`` of describing ``files``, ``batch_size`` per generate
    call."""
    from m2mv.inference import describe_files

    clock.seconds = 0.0
    started = time.perf_counter()
    results = describe_files(files, model_dir, greedy=True, max_new_tokens=max_new_tokens, batch_size=batch_size,
                             progress=False, checkpoint=checkpoint)
    return time.perf_counter() - started, clock.seconds, results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="checkpoint folder (default: the demo checkpoint)")
    parser.add_argument("--songs", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--max-new-tokens", type=int, default=128)
    args = parser.parse_args(argv)

    import torch

    from m2mv.checkpoints.loading import load_checkpoint, resolve_checkpoint

    model_dir = resolve_checkpoint(args.model)
    checkpoint = load_checkpoint(model_dir)
    clock = EncoderClock(checkpoint[0])
    with tempfile.TemporaryDirectory() as work:
        files = demo_clips(Path(work), args.songs)
        timed(files[:1], checkpoint, model_dir, 1, 8, clock)  # warm-up
        one_s, one_enc, one = timed(files, checkpoint, model_dir, 1, args.max_new_tokens, clock)
        batch_s, batch_enc, batched = timed(files, checkpoint, model_dir, args.batch_size, args.max_new_tokens, clock)
    failed = [r["error"] for r in one + batched if "error" in r]
    if failed:
        raise SystemExit(f"describing failed: {failed[0]}")
    same = sum(a["text"] == b["text"] for a, b in zip(one, batched))
    tokenizer = checkpoint[1].tokenizer
    new_tokens = sum(len(tokenizer(r["text"], add_special_tokens=False)["input_ids"]) for r in one) / args.songs
    report = {"model": model_dir.name, "songs": args.songs, "batch_size": args.batch_size,
              "max_new_tokens": args.max_new_tokens, "one_by_one_s": round(one_s, 2), "batched_s": round(batch_s, 2),
              "one_by_one_songs_per_s": round(args.songs / one_s, 4),
              "batched_songs_per_s": round(args.songs / batch_s, 4), "speedup": round(one_s / batch_s, 2),
              "one_by_one_encoder_s": round(one_enc, 2), "batched_encoder_s": round(batch_enc, 2),
              "speedup_outside_the_encoder": round((one_s - one_enc) / (batch_s - batch_enc), 2),
              "mean_new_tokens": round(new_tokens, 1),
              "same_text": f"{same}/{args.songs}", "threads": torch.get_num_threads(),
              "machine": f"{platform.machine()}, {os.cpu_count()} cores"}
    print(json.dumps(report))
    print(f"{args.songs} songs, greedy, up to {args.max_new_tokens} new tokens: one by one {one_s:.1f} s "
          f"({report['one_by_one_songs_per_s']:.3f} songs/s), batch {args.batch_size} {batch_s:.1f} s "
          f"({report['batched_songs_per_s']:.3f} songs/s): {report['speedup']:.2f}x; same text {same}/{args.songs}")
    print(f"  in the audio encoder: {one_enc:.1f} s one by one, {batch_enc:.1f} s batched (a batch does not make a "
          f"CPU's encoder faster); the rest (prompt, decoding, {new_tokens:.0f} new tokens a song on average) "
          f"{report['speedup_outside_the_encoder']:.2f}x faster batched")
    return 0


if __name__ == "__main__":
    sys.exit(main())
