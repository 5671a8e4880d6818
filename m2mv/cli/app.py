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

from m2mv.app.options import ServeOptions
from m2mv.errors import UsageError

NAME = "app"


def register(subparsers) -> None:
    parser = subparsers.add_parser(NAME, help="serve the web app (Gradio)", description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="m2mv checkpoint folder (default: the cached demo checkpoint)")
    defaults = ServeOptions()
    parser.add_argument("--host", default=defaults.host,
                        help=f"address to bind (default {defaults.host}: this machine only)")
    parser.add_argument("--port", type=int, help="port (default: Gradio's, 7860, or the next free one)")
    parser.add_argument("--concurrency-limit", type=int, default=defaults.concurrency_limit,
                        help=f"requests generated at once (default {defaults.concurrency_limit})")
    parser.add_argument("--max-queue", type=int, default=defaults.max_queue,
                        help=f"requests that may wait (default {defaults.max_queue})")
    parser.set_defaults(run=run)


def run(args, extra=()) -> int:
    missing = [name for name in ("gradio", "matplotlib") if importlib.util.find_spec(name) is None]
    if missing:
        raise UsageError(f"m2mv app needs {' and '.join(missing)}: pip install 'm2mv[app]'")
    options = ServeOptions(args.host, args.port, args.concurrency_limit, args.max_queue)  # checked before loading
    from m2mv.app import launch

    launch(args.model, options)
    return 0
