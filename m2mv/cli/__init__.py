"""The ``m2mv`` command line: one module per command, each a ``register(subparsers)`` / ``run(args)`` pair (as TRL's
``trl/cli``). Nothing imports this package; it imports the rest of m2mv, each command's implementation only when
that command runs (so ``m2mv describe`` does not import TRL).

Every command prints one line naming the file and the problem for a bad input and exits non-zero; ``--debug``
shows the traceback instead.
"""

from __future__ import annotations

import argparse
import sys
import traceback

from m2mv.cli import (app, benchmark, configs, convert, demo, demo_videos, describe, embed, lengths, pipeline,
                      tiny_checkpoint, toy_dataset, train)
from m2mv.errors import M2MVError

COMMANDS = (describe, app, benchmark, demo, train, convert, pipeline, demo_videos, embed, lengths, toy_dataset,
            tiny_checkpoint, configs)
PROG_DESCRIPTION = "m2mv: music in, a music-video description out."


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="m2mv", description=PROG_DESCRIPTION)
    parser.add_argument("--debug", action="store_true", help="show the traceback of an error")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in COMMANDS:
        command.register(commands)
    return parser


def report(err: BaseException, debug: bool) -> int:
    """Print one line for a bad input (the traceback with ``debug``); the exit code 2."""
    if debug:
        traceback.print_exception(err)
    else:
        print(f"error: {err}", file=sys.stderr)
    return 2


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args, extra = make_parser().parse_known_args(argv)
    if extra and not getattr(args, "takes_extra", False):
        make_parser().parse_args(argv)  # prints the usage and exits 2 for the unknown options
    try:
        return args.run(args, extra)
    except (M2MVError, ValueError, OSError) as err:  # the project's errors and the known errors of bad input
        return report(err, args.debug)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def convert_main(argv: list[str] | None = None) -> int:
    """``m2mv-convert``: the same as ``m2mv convert``."""
    return main(["convert", *(sys.argv[1:] if argv is None else argv)])
