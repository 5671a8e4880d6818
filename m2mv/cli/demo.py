"""``m2mv demo``: the one-command demo on the built-in demo corpus (m2mv/demo.py)."""

from __future__ import annotations

NAME = "demo"


def register(subparsers) -> None:
    parser = subparsers.add_parser(NAME, help="the one-command demo: corpus, dataset, training, benchmark, describe")
    parser.add_argument("--out", default="demo-output", help="output folder")
    parser.add_argument("--quick", action="store_true", help="fewer clips, 1 epoch per stage, shorter generations")
    parser.set_defaults(run=run)


def run(args, extra=()) -> int:
    from m2mv.demo import run_demo

    run_demo(args.out, args.quick)
    return 0
