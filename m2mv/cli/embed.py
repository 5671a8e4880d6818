"""``m2mv embed``: precompute a checkpoint's audio-encoder embeddings beside a dataset (m2mv/data/embeddings.py)."""

from __future__ import annotations

NAME = "embed"


def register(subparsers) -> None:
    parser = subparsers.add_parser(NAME, help="precompute audio embeddings beside a dataset")
    parser.add_argument("--model", required=True, help="checkpoint folder (or `demo`)")
    parser.add_argument("--dataset", required=True, help="dataset root")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.set_defaults(run=run)


def run(args, extra=()) -> int:
    from m2mv.training.data import precompute_audio_embeds

    print(precompute_audio_embeds(args.model, args.dataset, args.batch_size))
    return 0
