"""``m2mv demo-videos``: the data pipeline end to end on real videos (m2mv/demo_videos.py)."""

from __future__ import annotations

NAME = "demo-videos"


def register(subparsers) -> None:
    parser = subparsers.add_parser(NAME, help="the data pipeline on real videos: slideshows of real photographs with "
                                              "real music, and real footage; prints the records")
    parser.add_argument("--out", default="demo-videos-output", help="output folder")
    parser.add_argument("--clip-seconds", type=float, default=8.0,
                        help="seconds of each music clip (short: every 2 s is a frame to caption and describe)")
    parser.set_defaults(run=run)


def run(args, extra=()) -> int:
    from m2mv.demo_videos import run_video_demo

    run_video_demo(args.out, args.clip_seconds)
    return 0
