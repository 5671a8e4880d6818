"""``m2mv pipeline``: music videos -> both dataset configs (dataset_scripts/music_videos.py; ``--help`` lists its
options). Registered without its options, as TRL registers its training commands, so that ``m2mv --help`` does not
load the pipeline's models."""

from __future__ import annotations

NAME = "pipeline"


def register(subparsers) -> None:
    parser = subparsers.add_parser(NAME, help="build the dataset from music videos (captions, LLM merge, MV type, "
                                              "lyrics); --help lists its options", add_help=False)
    parser.set_defaults(run=run, takes_extra=True)


def run(args, extra=()) -> int:
    from dataset_scripts.music_videos import main

    return main(list(extra))
