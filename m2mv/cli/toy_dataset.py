"""``m2mv toy-dataset``: write the synthetic toy dataset (NOT music; m2mv/training/toy.py)."""

from __future__ import annotations

NAME = "toy-dataset"


def register(subparsers) -> None:
    parser = subparsers.add_parser(NAME, help="write the synthetic toy dataset (tests, smoke runs)")
    parser.add_argument("--out", required=True)
    parser.add_argument("--train", type=int, default=32)
    parser.add_argument("--eval", type=int, default=16)
    parser.add_argument("--seed", type=int, default=0)
    parser.set_defaults(run=run)


def run(args, extra=()) -> int:
    from m2mv.training.toy import write_toy_dataset

    print(write_toy_dataset(args.out, args.train, args.eval, seed=args.seed))
    return 0
