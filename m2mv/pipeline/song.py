"""One song through the pipeline, stage by stage, each stage resumable (:mod:`m2mv.pipeline.records`).

``align`` -> ``frames`` (+ cuts) -> ``captions`` -> ``describe`` -> ``mv_type``; ``lyrics`` on its own. A stage that
fails records why and the song stops there with a :class:`~m2mv.errors.PipelineError` naming it; a rerun retries
it. The result is what a dataset row needs, with its provenance (models, prompt version, offset, confidence).
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import soundfile as sf
from PIL import Image

from m2mv.data.fileio import atomic_file
from m2mv.data.schema import description_columns
from m2mv.errors import PipelineError, VideoError
from m2mv.pipeline import prompts
from m2mv.pipeline.align import DEFAULT_MIN_CONFIDENCE, locate_clip
from m2mv.pipeline.lyrics import understand_lyrics
from m2mv.pipeline.merge import DEFAULT_ATTEMPTS, merge_captions
from m2mv.pipeline.records import StageRecords, file_identity, input_key
from m2mv.pipeline.models import jpeg_bytes
from m2mv.pipeline.video import frames_at, probe, read_soundtrack, scene_cuts
from mv_format_m2mv import FRAME_STEP_SECONDS, frame_boundaries

STAGES = ("align", "frames", "captions", "describe", "mv_type", "lyrics")


@dataclass
class Song:
    """One song: its video, the music clip to locate in it (a Music4All excerpt) or None, and what is known."""

    song_id: str
    video: Path
    clip: Path | None = None
    lyrics: str | None = None
    genre_tags: list[str] = field(default_factory=list)
    artist: str | None = None


@dataclass
class Settings:
    """What the results depend on besides the models (part of every stage's key)."""

    clip_seconds: float = 30.0  # the clip length, when the song has no separate clip
    start: float = 0.0  # where the clip starts in the video, when the song has no separate clip
    frame_seconds: float = FRAME_STEP_SECONDS
    min_confidence: float = DEFAULT_MIN_CONFIDENCE
    attempts: int = DEFAULT_ATTEMPTS


@dataclass
class SongResult:
    """What a dataset row takes from the pipeline."""

    audio: dict
    description: str
    frames: list[dict]
    mv_type: str
    lyrics_understanding: str | None
    provenance: dict


class SongPipeline:
    """The stages with their models and records (in ``work_dir``)."""

    def __init__(self, work_dir: str | Path, captioner, chat, typer, settings: Settings | None = None,
                 lyrics_chat=None, shard_folders: tuple[Path, ...] = ()):
        self.work = Path(work_dir)
        self.captioner, self.chat, self.typer = captioner, chat, typer
        self.lyrics_chat = lyrics_chat or chat
        self.settings = settings or Settings()
        self.shard_folders = tuple(shard_folders)  # a gathering run reads the shards' records and frames
        self.records = {stage: StageRecords(self.work, stage, self.shard_folders) for stage in STAGES}

    # -- the stages ------------------------------------------------------------------------------------------------
    def _stage(self, stage: str, song: Song, inputs: dict, compute) -> dict:
        """The stage's record for these inputs: reused when done, else computed and recorded (a failure too)."""
        key = input_key(stage=stage, **inputs)
        done = self.records[stage].done(song.song_id, key)
        if done is not None:
            return done
        try:
            result = compute()
        except (PipelineError, VideoError, ValueError, OSError) as err:
            self.records[stage].put({"song_id": song.song_id, "key": key, "error": str(err)})
            raise PipelineError(f"{song.song_id} ({stage}): {err}") from err
        return self.records[stage].put({"song_id": song.song_id, "key": key, **result})

    def align(self, song: Song) -> dict:
        s = self.settings
        inputs = {"video": file_identity(song.video), "clip": file_identity(song.clip) if song.clip else None,
                  "min_confidence": s.min_confidence, "start": s.start, "clip_seconds": s.clip_seconds}
        return self._stage("align", song, inputs, lambda: self._align(song))

    def _align(self, song: Song) -> dict:
        info = probe(song.video)
        if not info.has_video:
            raise VideoError(f"{song.video}: the video has no video stream (nothing to caption)")
        if song.clip is None:
            if info.duration < self.settings.start + self.settings.clip_seconds - 0.05:
                raise VideoError(f"{song.video}: the video ({info.duration:.1f} s) is shorter than the clip "
                                 f"({self.settings.start:g} s + {self.settings.clip_seconds:g} s)")
            return {"offset": self.settings.start, "confidence": None, "duration": self.settings.clip_seconds,
                    "video_duration": info.duration}
        soundtrack, rate = read_soundtrack(song.video)
        clip, clip_rate = sf.read(str(song.clip), dtype="float32", always_2d=True)
        try:
            found = locate_clip(soundtrack, rate, clip.T, clip_rate)
        except ValueError as err:
            raise VideoError(f"{song.video}: {err}") from err
        if found.confidence < self.settings.min_confidence:
            raise PipelineError(f"{song.clip} not found in the soundtrack of {song.video} (best match at "
                                f"{found.offset:.2f} s, confidence {found.confidence:.2f} < "
                                f"{self.settings.min_confidence:g})")
        return {"offset": found.offset, "confidence": found.confidence, "duration": len(clip) / clip_rate,
                "video_duration": info.duration}

    def frames(self, song: Song, aligned: dict) -> dict:
        inputs = {"video": file_identity(song.video), "offset": aligned["offset"], "duration": aligned["duration"],
                  "frame_seconds": self.settings.frame_seconds}
        return self._stage("frames", song, inputs, lambda: self._frames(song, aligned, input_key(**inputs)))

    def _frames(self, song: Song, aligned: dict, key: str) -> dict:
        offset, duration = aligned["offset"], aligned["duration"]
        spans = frame_boundaries(duration, self.settings.frame_seconds)
        images = frames_at(song.video, [offset + (start + end) / 2 for start, end in spans])  # mid-window
        folder = self.work / "frames" / song.song_id / key
        files = []
        for index, image in enumerate(images):
            path = folder / f"{index:03d}.jpg"
            with atomic_file(path) as tmp:
                tmp.write_bytes(jpeg_bytes(image))
            files.append(str(path.relative_to(self.work)))
        cuts = scene_cuts(song.video, offset, offset + duration)
        per_frame = None if cuts is None else [sum(offset + s <= t < offset + e for t in cuts) for s, e in spans]
        return {"spans": [list(span) for span in spans], "files": files, "cuts": per_frame,
                "cut_times": None if cuts is None else [round(t - offset, 3) for t in cuts]}

    def captions(self, song: Song, frames: dict) -> dict:
        inputs = {"frames": frames["key"], "captioner": self.captioner.name, "prompt": prompts.PROMPT_VERSION}
        return self._stage("captions", song, inputs, lambda: self._captions(frames))

    def _captions(self, frames: dict) -> dict:
        images = [Image.open(self._file(file)).convert("RGB") for file in frames["files"]]
        captions = self.captioner.caption(images, prompts.CAPTION)
        empty = [i for i, c in enumerate(captions) if not c.strip()]
        if empty:
            raise PipelineError(f"{self.captioner.name} gave empty captions for frames {empty}")
        return {"captions": captions}

    def _file(self, relative: str) -> Path:
        """A file a record names, in this work folder or in a shard's."""
        for folder in (self.work, *self.shard_folders):
            if (folder / relative).is_file():
                return folder / relative
        raise PipelineError(f"{self.work / relative}: a frame recorded earlier is missing; delete its record to redo "
                            "it")

    def describe(self, song: Song, frames: dict, captions: dict) -> dict:
        inputs = {"captions": captions["key"], "llm": self.chat.name, "prompt": prompts.PROMPT_VERSION,
                  "genre_tags": song.genre_tags, "attempts": self.settings.attempts}
        return self._stage("describe", song, inputs, lambda: self._describe(song, frames, captions))

    def _describe(self, song: Song, frames: dict, captions: dict) -> dict:
        cuts = frames["cuts"] or [None] * len(frames["spans"])
        merged = merge_captions(self.chat, captions["captions"], [tuple(s) for s in frames["spans"]], cuts,
                                song.genre_tags, self.settings.attempts, song=song.song_id)
        return {"description": merged.description, "attempts": merged.attempts}

    def mv_type(self, song: Song, captions: dict) -> dict:
        inputs = {"captions": captions["key"], "typer": self.typer.name, "prompt": prompts.PROMPT_VERSION}
        return self._stage("mv_type", song, inputs, lambda: dict(zip(("mv_type", "scores"),
                                                                     self.typer.mv_type(captions["captions"]))))

    def lyrics(self, song: Song) -> dict:
        inputs = {"lyrics": song.lyrics, "llm": self.lyrics_chat.name, "prompt": prompts.PROMPT_VERSION}
        return self._stage("lyrics", song, inputs,
                           lambda: {"lyrics_understanding": understand_lyrics(self.lyrics_chat, song.lyrics)})

    # -- the song --------------------------------------------------------------------------------------------------
    def run(self, song: Song) -> SongResult:
        """Every stage for one song (reusing what is recorded); PipelineError naming the song and stage if one
        fails."""
        aligned = self.align(song)
        frames = self.frames(song, aligned)
        captions = self.captions(song, frames)
        described = self.describe(song, frames, captions)
        typed = self.mv_type(song, captions)
        lyrics = self.lyrics(song)
        provenance = {
            "pipeline": "m2mv.pipeline", "prompt_version": prompts.PROMPT_VERSION, "video": str(song.video),
            "clip_offset_s": aligned["offset"], "clip_confidence": aligned["confidence"],
            "clip_seconds": aligned["duration"],
            "captioner": self.captioner.name, "llm": self.chat.name, "mv_type_by": self.typer.name,
            "lyrics_by": self.lyrics_chat.name if lyrics["lyrics_understanding"] else None,
            "describe_attempts": described["attempts"], "cuts_per_frame": frames["cuts"],
            "frame_captions": captions["captions"],
        }
        return SongResult(audio=self.audio(song, aligned), **description_columns(described["description"]),
                          mv_type=typed["mv_type"], lyrics_understanding=lyrics["lyrics_understanding"],
                          provenance=provenance)

    def audio(self, song: Song, aligned: dict) -> dict:
        """The row's audio: the song's clip as it is, or the aligned window of the soundtrack as FLAC."""
        if song.clip is not None:
            return {"bytes": song.clip.read_bytes(), "path": song.clip.name}
        waveform, rate = read_soundtrack(song.video)
        start = int(round(aligned["offset"] * rate))
        window = waveform[:, start: start + int(round(aligned["duration"] * rate))]
        buffer = io.BytesIO()
        sf.write(buffer, np.ascontiguousarray(window.T), rate, format="FLAC", subtype="PCM_16")
        return {"bytes": buffer.getvalue(), "path": f"{song.song_id}.flac"}
