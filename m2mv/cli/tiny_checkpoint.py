"""``m2mv tiny-checkpoint``: a tiny checkpoint whose LM is first trained on a dataset's texts (m2mv/training/toy.py);
the tiny stand-in for a pretrained LM meeting a fresh adaptor. Its audio encoder is random; its card says so."""

from __future__ import annotations

NAME = "tiny-checkpoint"


def register(subparsers) -> None:
    parser = subparsers.add_parser(NAME, help="tiny checkpoint whose LM is pre-trained on a dataset's texts")
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--steps", type=int, default=300)
    parser.set_defaults(run=run)


def run(args, extra=()) -> int:
    from m2mv.training.toy import build_text_pretrained_tiny_checkpoint

    print(build_text_pretrained_tiny_checkpoint(args.out, args.dataset, args.steps))
    return 0
