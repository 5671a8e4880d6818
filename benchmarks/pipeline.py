"""The data pipeline's speed, from one run: captions/s and merges/s in-process vs served (``transformers serve`` on
127.0.0.1), and what each stage of one 30-s song costs.

    python benchmarks/pipeline.py [--frames 8] [--merges 2] [--merge-frames 5] [--json-out FILE]

Models: the captioner with a RANDOM vision tower on the real SmolLM2-135M-Instruct (m2mv.pipeline.tiny_captioner)
and the real SmolLM2-135M-Instruct for the merge, on this machine's CPU (float32). Served: the same model files,
one server started here (its threads and the client's concurrency printed). A real VLM and a 7B LLM on a GPU are
another regime: see docs/pipeline.md for the arithmetic.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import torch  # noqa: E402

from dataset_scripts.demo_videos import assemble_music_video  # noqa: E402
from m2mv.data.offline_models import smollm2_folder  # noqa: E402
from m2mv.pipeline.merge import merge_captions  # noqa: E402
from m2mv.pipeline.models import LocalCaptioner, LocalChatModel, OpenAICaptioner, OpenAIChatModel  # noqa: E402
from m2mv.pipeline.mv_type import EmbeddingTyper  # noqa: E402
from m2mv.pipeline.prompts import merge_conversation  # noqa: E402
from m2mv.pipeline.song import Song, SongPipeline  # noqa: E402
from m2mv.pipeline.tiny_captioner import tiny_captioner_folder  # noqa: E402
from m2mv.pipeline.video import frames_at  # noqa: E402

CLIP = REPO / "tests" / "data" / "openmsx-chemistry-lab-30s.ogg"
CAPTIONS = ["A singer holds a microphone on a dark stage.", "A crowd raises its hands under red lights.",
            "A close-up of a guitar neck.", "The drummer plays under a white spotlight.",
            "A wide shot of the hall from the back.", "The band bows at the end of the song."]


def timed(fn):
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def start_server(model: Path, threads: int):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": str(threads)}
    process = subprocess.Popen([shutil.which("transformers"), "serve", str(model), "--host", "127.0.0.1", "--port",
                                str(port), "--device", "cpu", "--dtype", "float32"], env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 180
    while True:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2)
            return process, f"http://127.0.0.1:{port}/v1"
        except OSError:
            if process.poll() is not None or time.time() > deadline:
                raise RuntimeError("transformers serve did not start")
            time.sleep(0.5)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=8, help="frames to caption each way")
    parser.add_argument("--merges", type=int, default=2, help="descriptions to merge each way")
    parser.add_argument("--merge-frames", type=int, default=5, help="frames per merged description")
    parser.add_argument("--server-threads", type=int, default=2)
    parser.add_argument("--concurrency", type=int, default=2)
    parser.add_argument("--json-out", type=Path)
    args = parser.parse_args(argv)
    report = {"torch_threads": torch.get_num_threads(), "cpu_count": os.cpu_count()}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        truth = assemble_music_video(tmp / "song.mp4", CLIP, intro=4.0, cut_every=3.0)
        images = frames_at(truth["video"], [4.0 + 1.0 + 2.0 * i for i in range(args.frames)])
        spans = [(2.0 * i, 2.0 * i + 2.0) for i in range(args.merge_frames)]
        captions = [CAPTIONS[i % len(CAPTIONS)] for i in range(args.merge_frames)]
        captioner_dir, lm_dir = tiny_captioner_folder(), smollm2_folder()

        captioner, chat = LocalCaptioner(captioner_dir), LocalChatModel(lm_dir)
        seconds, _ = timed(lambda: captioner.caption(images, "Describe this frame in one sentence."))
        report["in_process_captions_per_s"] = args.frames / seconds
        seconds, _ = timed(lambda: [merge_captions(chat, captions, spans, [0] * len(spans), attempts=1)
                                    for _ in range(args.merges)])
        report["in_process_merges_per_s"] = args.merges / seconds

        # one 30-s song, stage by stage (in-process models)
        pipeline = SongPipeline(tmp / "work", captioner, chat, EmbeddingTyper())
        song = Song("song", Path(truth["video"]), clip=CLIP, genre_tags=["jazz"])
        stages = {}
        stages["align"], aligned = timed(lambda: pipeline.align(song))
        stages["frames_and_cuts"], frames = timed(lambda: pipeline.frames(song, aligned))
        stages["captions"], caps = timed(lambda: pipeline.captions(song, frames))
        stages["describe"], _ = timed(lambda: pipeline.describe(song, frames, caps))
        stages["mv_type"], _ = timed(lambda: pipeline.mv_type(song, caps))
        report["one_30s_song_seconds"] = {k: round(v, 2) for k, v in stages.items()}
        report["one_30s_song_total_s"] = round(sum(stages.values()), 1)

        for name, folder in (("captions", captioner_dir), ("merges", lm_dir)):
            process, url = start_server(folder, args.server_threads)
            try:
                if name == "captions":
                    served = OpenAICaptioner(url, str(folder), concurrency=args.concurrency)
                    seconds, _ = timed(lambda: served.caption(images, "Describe this frame in one sentence."))
                    report["served_captions_per_s"] = args.frames / seconds
                else:
                    served = OpenAIChatModel(url, str(folder), concurrency=args.concurrency)
                    conversations = [merge_conversation(captions, spans, [0] * len(spans))
                                     for _ in range(args.merges)]
                    seconds, _ = timed(lambda: served.chat(conversations, max_new_tokens=32 + 52 * len(spans)))
                    report["served_merges_per_s"] = args.merges / seconds  # one answer each, unconstrained
            finally:
                process.terminate()
                process.wait(timeout=30)
    report.update(frames=args.frames, merges=args.merges, merge_frames=args.merge_frames,
                  server_threads=args.server_threads, concurrency=args.concurrency)
    print(f"captions/s: in-process {report['in_process_captions_per_s']:.2f}, served "
          f"{report['served_captions_per_s']:.2f}; merges/s ({args.merge_frames} frames): in-process "
          f"{report['in_process_merges_per_s']:.3f} (constrained), served {report['served_merges_per_s']:.3f}; "
          f"one 30-s song: {report['one_30s_song_total_s']} s")
    print(json.dumps(report, indent=2))
    if args.json_out:
        args.json_out.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
