"""What a whole song costs to describe, from one run: a 30-s clip vs a 4-min song (its 8 windows in one generate
call) vs the same 8 windows one call each; seconds, peak memory and the cost per window.

    python benchmarks/whole_song.py [--model DIR] [--max-new-tokens 64] [--json-out FILE]

The audio is real: the OpenMSX 30-s clip of tests/data, and a 4-min "song" made of that clip 8 times over (the
windows then hold the same music; what is measured is the cost, not the text). Every window generates exactly
``--max-new-tokens`` tokens (``min_new_tokens`` = ``max_new_tokens``, greedy), so the cases do the same work per
window. Each case runs in a fresh process (peak RSS is per process: ``ru_maxrss``); model loading is not timed. The
default model is the demo checkpoint (the real SmolLM2-135M-Instruct + OpenAI's real Whisper-base encoder; until
m2mv 0.4 ImageBind's audio architecture at RANDOM weights), on this machine's CPU.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

CLIP = REPO / "tests" / "data" / "openmsx-chemistry-lab-30s.ogg"
CASES = ("clip", "song-batched", "song-one-by-one")


def make_song(folder: Path, repeats: int = 8) -> Path:
    """The real 30-s clip ``repeats`` times over, as a WAV."""
    import numpy as np
    import soundfile as sf

    music, rate = sf.read(CLIP, dtype="float32", always_2d=True)
    path = folder / f"openmsx-x{repeats}.wav"
    sf.write(path, np.concatenate([music] * repeats), rate)
    return path


def run_case(case: str, model_dir: str | None, audio: Path, max_new_tokens: int) -> dict:
    """One case in this process: load, then time describing ``audio``."""
    import torch

    from m2mv.checkpoints.loading import load_checkpoint, resolve_checkpoint
    from m2mv.inference import describe_batch, plan_song

    torch.manual_seed(0)
    model, processor = load_checkpoint(resolve_checkpoint(model_dir))
    loaded_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    kwargs = {"do_sample": False, "max_new_tokens": max_new_tokens, "min_new_tokens": max_new_tokens}
    started = time.perf_counter()
    plan = plan_song(processor, audio, {}, None, processor.clip_seconds)
    groups = [plan.requests] if case != "song-one-by-one" else [[r] for r in plan.requests]
    results = [result for group in groups for result in describe_batch(model, processor, group, kwargs)]
    seconds = time.perf_counter() - started
    failed = [r.error for r in results if r.error]
    if failed:
        raise SystemExit(f"{case}: {failed}")
    peak_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"case": case, "windows": len(plan.windows), "generate_calls": len(groups), "seconds": round(seconds, 2),
            "seconds_per_window": round(seconds / len(plan.windows), 2), "peak_rss_mb": round(peak_rss, 1),
            "rss_after_load_mb": round(loaded_rss, 1), "threads": torch.get_num_threads()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="m2mv checkpoint (default: the demo checkpoint)")
    parser.add_argument("--max-new-tokens", type=int, default=64, help="tokens generated per window (default 64)")
    parser.add_argument("--json-out", help="also write the figures here")
    parser.add_argument("--case", choices=CASES, help=argparse.SUPPRESS)  # a child process: one case
    parser.add_argument("--audio", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.case:
        print(json.dumps(run_case(args.case, args.model, Path(args.audio), args.max_new_tokens)))
        return 0
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        song = make_song(Path(tmp))
        for case in CASES:
            audio = CLIP if case == "clip" else song
            command = [sys.executable, __file__, "--case", case, "--audio", str(audio), "--max-new-tokens",
                       str(args.max_new_tokens)] + (["--model", args.model] if args.model else [])
            done = subprocess.run(command, capture_output=True, text=True)
            if done.returncode != 0:
                print(done.stderr[-3000:], file=sys.stderr)
                return 1
            rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
    clip, batched, one_by_one = rows
    print(f"model: {args.model or 'the demo checkpoint'}; {args.max_new_tokens} tokens per window, greedy; "
          f"{clip['threads']} threads")
    print(f"{'case':<18}{'windows':>8}{'calls':>7}{'seconds':>9}{'s/window':>10}{'peak RSS MB':>13}{'after load':>12}")
    for row in rows:
        print(f"{row['case']:<18}{row['windows']:>8}{row['generate_calls']:>7}{row['seconds']:>9}"
              f"{row['seconds_per_window']:>10}{row['peak_rss_mb']:>13}{row['rss_after_load_mb']:>12}")
    ratio = batched["seconds"] / (batched["windows"] * clip["seconds"])
    print(f"the song batched costs {ratio:.2f}x its windows times a clip (goal: <= 1); one call per window costs "
          f"{one_by_one['seconds'] / (one_by_one['windows'] * clip['seconds']):.2f}x")
    if args.json_out:
        Path(args.json_out).write_text(json.dumps({"rows": rows, "batched_vs_windows_times_clip": round(ratio, 3)},
                                                  indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
