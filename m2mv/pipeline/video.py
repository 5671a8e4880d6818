"""Reading music videos with PyAV (FFmpeg, bundled in its wheel): the streams, the soundtrack, frames at given
times, and the scene cuts (PySceneDetect, the optional ``scenedetect-headless`` extra).

Every error is a :class:`~m2mv.errors.VideoError` naming the file: not a video, no video or no audio stream, an
undecodable or truncated file, a time outside the video.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np
from PIL import Image

from m2mv.errors import VideoError


@dataclass(frozen=True)
class VideoInfo:
    """What a video file holds: its duration (seconds) and whether it has a picture and a soundtrack."""

    path: str
    duration: float
    has_video: bool
    has_audio: bool
    width: int = 0
    height: int = 0


def _open(path: str | Path):
    path = Path(path)
    if not path.is_file():
        raise VideoError(f"{path}: no such video file")
    try:
        return av.open(str(path))
    except (av.FFmpegError, OSError, ValueError) as err:
        raise VideoError(f"{path}: not a readable video ({type(err).__name__}: {err})") from err


def probe(path: str | Path) -> VideoInfo:
    """The streams and duration of a video file (the longest stream's, when the container does not say)."""
    with _open(path) as container:
        video, audio = container.streams.video, container.streams.audio
        durations = [float(s.duration * s.time_base) for s in container.streams if s.duration and s.time_base]
        duration = container.duration / av.time_base if container.duration else max(durations, default=0.0)
        first = video[0] if video else None
        return VideoInfo(str(path), float(duration), bool(video), bool(audio),
                         first.codec_context.width if first else 0, first.codec_context.height if first else 0)


def read_soundtrack(path: str | Path) -> tuple[np.ndarray, int]:
    """The video's first audio stream as float32 (channels, samples) and its sampling rate."""
    with _open(path) as container:
        if not container.streams.audio:
            raise VideoError(f"{path}: the video has no audio stream (no soundtrack to align the music with)")
        stream = container.streams.audio[0]
        resampler = av.AudioResampler(format="fltp")  # planar float, the stream's own layout and rate
        chunks = []
        try:
            for frame in container.decode(stream):
                chunks.extend(out.to_ndarray() for out in resampler.resample(frame))
            chunks.extend(out.to_ndarray() for out in resampler.resample(None))
        except av.FFmpegError as err:
            raise VideoError(f"{path}: the soundtrack does not decode ({type(err).__name__}: {err})") from err
        if not chunks:
            raise VideoError(f"{path}: the audio stream holds no samples")
        return np.ascontiguousarray(np.concatenate(chunks, axis=1), dtype=np.float32), int(stream.rate)


def frames_at(path: str | Path, times: list[float]) -> list[Image.Image]:
    """RGB frames of the video at ``times`` (seconds, increasing): for each, the first frame shown at or after it."""
    images = []
    with _open(path) as container:
        if not container.streams.video:
            raise VideoError(f"{path}: the video has no video stream (nothing to caption)")
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        for time in times:
            container.seek(max(0, int(time / stream.time_base)), stream=stream, backward=True, any_frame=False)
            try:
                frame = next((f for f in container.decode(stream) if f.time is not None and f.time >= time - 1e-3),
                             None)
            except av.FFmpegError as err:
                raise VideoError(f"{path}: the picture does not decode near {time:.2f} s ({err})") from err
            if frame is None:
                raise VideoError(f"{path}: no frame at {time:.2f} s (the video ends before it: truncated?)")
            images.append(frame.to_image())
    return images


LEAD_S = 1.0  # seconds of video read before a window, so that a cut near its start is seen


def scene_cuts(path: str | Path, start: float, end: float) -> list[float] | None:
    """Times (seconds) of the hard cuts inside ``(start, end)``, found by PySceneDetect's ``ContentDetector`` on the
    PyAV backend; None when PySceneDetect is not installed (``pip install 'm2mv[video]'``)."""
    try:
        from scenedetect import ContentDetector, SceneManager, open_video
    except ImportError:  # the optional extra: descriptions then say nothing of cuts
        return None
    try:
        video = open_video(str(path), backend="pyav")
        lead = max(0.0, float(start) - LEAD_S)  # ContentDetector reports no cut in its first frames: start earlier
        if lead > 0:
            video.seek(lead)  # PySceneDetect reads an int as a frame number, a float as seconds
        manager = SceneManager()
        manager.add_detector(ContentDetector())
        manager.detect_scenes(video, end_time=float(end), show_progress=False)
    except Exception as err:  # PySceneDetect wraps decoding errors in its own types: name the file
        raise VideoError(f"{path}: scene detection failed ({type(err).__name__}: {err})") from err
    starts = [scene_start.seconds for scene_start, _ in manager.get_scene_list()][1:]  # the first: no cut
    return [round(t, 3) for t in starts if start + 1e-3 < t < end - 1e-3]
