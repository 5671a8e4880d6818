"""``m2mv app``: a web page that describes a song and draws its music video as a timeline.

    m2mv app [--model DIR] [--host 127.0.0.1] [--port N] [--concurrency-limit 1] [--max-queue 16]

Upload or record a song (any format ``m2mv describe`` reads), pick an MV type, genre tags, lyrics (plain text or
LRC) and fixed or beat frames; the page streams the generated text, then shows the overview, a timeline of the
waveform with the beats and the frames, the frames as a table, and the JSON, SRT and VTT to download. It serves on
127.0.0.1 unless ``--host`` says otherwise (``0.0.0.0`` serves the network: only where you mean to). Gradio's
queue runs ``--concurrency-limit`` requests at once (1: two users never run two generations at once on one device)
and holds ``--max-queue`` waiting. Without ``--model``: the demo checkpoint (its adaptor untrained; the page says
so). Needs the ``app`` extra: ``pip install 'm2mv[app]'``.
"""

from __future__ import annotations

import argparse
import importlib.util

from m2mv.errors import UsageError

NAME = "app"


def register(subparsers) -> None:
    parser = subparsers.add_parser(NAME, help="serve the web app (Gradio)", description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="m2mv checkpoint folder (default: the cached demo checkpoint)")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    parser.add_argument("--port", type=int, help="port (default: Gradio's, 7860, or the next free one)")
    parser.add_argument("--concurrency-limit", type=int, default=1, help="requests generated at once (default 1)")
    parser.add_argument("--max-queue", type=int, default=16, help="requests that may wait (default 16)")
    parser.set_defaults(run=run)


def run(args, extra=()) -> int:
    missing = [name for name in ("gradio", "matplotlib") if importlib.util.find_spec(name) is None]
    if missing:
        raise UsageError(f"m2mv app needs {' and '.join(missing)}: pip install 'm2mv[app]'")
    if args.concurrency_limit < 1 or args.max_queue < 1:
        raise UsageError("--concurrency-limit and --max-queue must be at least 1")
    from m2mv.app import launch

    launch(args.model, args.host, args.port, args.concurrency_limit, args.max_queue)
    return 0
