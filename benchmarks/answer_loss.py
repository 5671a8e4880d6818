"""Does one trained checkpoint hear the song? Teacher-forced loss of held-out answers with own / other / zeroed audio.

    python benchmarks/answer_loss.py CHECKPOINT DATASET [--config captioning|mv_description]
                                     [--split validation+test] [--max-length N] [--json-out FILE]

For each row of ``--split`` of a built m2mv dataset, the mean token loss of its reference answer under the
music-only prompt with the row's own audio, with another song's audio (the benchmark's ``other_audio`` partner)
and with the audio zeroed (m2mv/evaluation/answer_loss.py). Prints the means and on how many rows the own audio
scores below the other two; ``--json-out`` keeps every row. For the demo's checkpoints after ``m2mv demo --out
OUT``: ``OUT/stage1`` with ``--config captioning`` and ``OUT/stage2`` with ``--config mv_description``, both on
``OUT/dataset``. One pass over the rows; about 4 s a row for stage 2's descriptions on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def main(argv=None) -> int:
    from m2mv.data.schema import CAPTIONING, MV_DESCRIPTION

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", help="m2mv checkpoint folder (or 'demo')")
    parser.add_argument("dataset", type=Path, help="built m2mv dataset folder")
    parser.add_argument("--config", default=MV_DESCRIPTION, choices=[CAPTIONING, MV_DESCRIPTION])
    parser.add_argument("--split", default="validation+test", help="split, or splits joined with '+'")
    parser.add_argument("--max-length", type=int, help="cut prompt + answer to N tokens (default: whole answers)")
    parser.add_argument("--json-out", type=Path)
    args = parser.parse_args(argv)

    from m2mv.checkpoints.loading import load_checkpoint
    from m2mv.data.loading import load_split
    from m2mv.evaluation.answer_loss import answer_losses, format_answer_losses, summarize_answer_losses

    held_out = load_split(args.dataset, args.config, args.split)
    start = time.perf_counter()
    rows = answer_losses(*load_checkpoint(args.checkpoint), held_out, args.config, max_length=args.max_length)
    summary = summarize_answer_losses(rows)
    print(f"{args.checkpoint}, {args.config}, {args.split} ({len(rows)} rows, {time.perf_counter() - start:.0f} s): "
          f"{format_answer_losses(summary)}")
    if args.json_out:
        args.json_out.write_text(json.dumps({"checkpoint": str(args.checkpoint), "dataset": str(args.dataset),
                                             "config": args.config, "split": args.split, "rows": rows,
                                             "summary": summary}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
