"""``m2mv lengths``: token lengths of a dataset's prompts and answers, to choose ``max_length``."""

from __future__ import annotations

import json

from m2mv.data.schema import COLUMNS, MV_DESCRIPTION

NAME = "lengths"


def register(subparsers) -> None:
    parser = subparsers.add_parser(NAME, help="token lengths of prompts and answers (to choose max_length)")
    parser.add_argument("--model", required=True, help="checkpoint folder (or `demo`): its processor is used")
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--config", default=MV_DESCRIPTION, choices=list(COLUMNS))
    parser.add_argument("--split", default="train")
    parser.add_argument("--max-length", type=int)
    parser.set_defaults(run=run)


def run(args, extra=()) -> int:
    from m2mv.checkpoints.loading import load_checkpoint
    from m2mv.data.loading import load_split
    from m2mv.training.collator import M2MVDataCollator, measure_lengths

    _, processor = load_checkpoint(args.model)
    ds = load_split(args.dataset, args.config, args.split, required=())
    collator = M2MVDataCollator(processor, args.config, args.max_length)
    stats = measure_lengths(processor, ds.select_columns([c for c in ds.column_names if c != "audio"]), collator)
    stats["suggested_max_length"] = int(-(-stats["total"]["max"] // 64) * 64)
    print(json.dumps(stats, indent=2))
    return 0
