"""Describing music with a loaded checkpoint: the one path from audio to a parsed MV description.

:func:`describe_batch` is shared by ``m2mv describe``, the benchmark and whatever comes next. For each request it
reads the audio once (the checkpoint's own decoder), detects beats there when frames are beat-aligned, builds the
prompt with the checkpoint's processor, generates for the whole batch in one ``generate`` call, and decodes and
parses the answers with the checkpoint's processor. A request that fails (unreadable audio, no beats, a prompt the
checkpoint cannot build) fails alone, with an error naming it; the others go on.

Checkpoints written by m2mv 0.1.0 carry a processor without ``decode_audio`` and ``frame_boundary_problem``: for
them the audio is decoded with their own module's ``load_audio`` and read again by their feature extractor, and the
frames are compared with this package's MV format (:func:`_legacy`).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from m2mv.beats import ALIGN_MODES, NoBeatsError, beat_frame_boundaries
from m2mv.checkpoints.loading import load_checkpoint, resolve_checkpoint
from m2mv.data.fileio import append_jsonl, read_jsonl
from m2mv.data.schema import conditioning
from m2mv.errors import UsageError
from m2mv.pipeline.lyrics import understand_lyrics
from m2mv.pipeline.models import chat_model
from mv_format_m2mv import frame_boundary_problem


@dataclass
class DescribeRequest:
    """One song to describe: its ``audio`` (a path, encoded bytes or ``{"bytes", "path"}``), the ``name`` its
    errors and results carry, and the prompt's ``conditioning`` (genre_tags, mv_type, lyrics_understanding)."""

    audio: Any
    name: str
    conditioning: dict = field(default_factory=dict)


@dataclass
class DescribeResult:
    """What one request gave: the generated ``text`` and its ``parsed`` description, or an ``error``.

    With beat-aligned frames: the ``boundaries`` listed in the prompt and the ``beat_times`` they come from, or the
    ``beat_fallback`` reason when too few beats were found and the fixed-frame prompt was used instead.
    """

    name: str
    text: str | None = None
    parsed: Any = None  # the checkpoint's MVDescription
    error: str | None = None  # what went wrong, naming the audio
    error_kind: str | None = None  # "audio" (unreadable, too short...), "beats" (too few) or "prompt" (bad conditioning)
    align: str = "fixed"
    boundaries: list[tuple[float, float]] | None = None
    beat_times: list[float] | None = None
    beat_fallback: str | None = None
    frames_match_boundaries: bool | None = None  # whether the generated frames are the requested boundaries

    def beat_fields(self) -> dict:
        """The beat-alignment fields of a result record (empty with fixed frames)."""
        if self.align == "fixed":
            return {}
        fields = {"align": self.align}
        if self.boundaries is not None:
            fields.update(boundaries=[list(b) for b in self.boundaries], beat_times=self.beat_times)
            if self.frames_match_boundaries is not None:
                fields["frames_match_boundaries"] = self.frames_match_boundaries
        if self.beat_fallback is not None:
            fields["beat_fallback"] = self.beat_fallback
        return fields


def check_align(align: str) -> None:
    """``align`` is a known mode; ``beats`` needs librosa. Checked before any model loads."""
    if align not in ALIGN_MODES:
        raise UsageError(f"align must be one of {', '.join(ALIGN_MODES)}, got {align!r}")
    if align == "beats":
        try:
            import librosa  # noqa: F401  (only checked here: m2mv.beats imports it where beats are detected)
        except ImportError as err:
            raise UsageError("--align beats needs librosa: pip install 'm2mv[data]'") from err


def check_requests(processor, conditionings: Sequence[dict], align: str, model_dir: Any = "the checkpoint") -> None:
    """Build each distinct conditioning's prompt once (with a frame list for ``align="beats"``), so that an unknown
    MV type or a checkpoint whose template cannot list frames is an error before any audio is read."""
    check_align(align)
    seen = []
    for given in conditionings:
        if given not in seen:
            seen.append(given)
            processor.build_prompt(**given)
    if align == "beats":
        try:
            processor.build_prompt(frame_boundaries=[(0.0, 2.0)])
        except (TypeError, ValueError) as err:
            raise UsageError(f"{model_dir}: this checkpoint's processor cannot list frames in the prompt ({err}); "
                             "use --align fixed or re-save it with the current processing_m2mv.py") from err


def _legacy(processor) -> bool:
    """Whether the processor comes from a checkpoint written by m2mv 0.1.0 (no ``decode_audio``)."""
    return not hasattr(processor, "decode_audio")


def _decode(processor, audio) -> dict:
    """Decode once with the checkpoint's own code: ``{"array", "sampling_rate", "path"}``."""
    if _legacy(processor):
        array, rate = sys.modules[type(processor).__module__].load_audio(audio)
        return {"array": array, "sampling_rate": rate}
    return processor.decode_audio(audio)


def _prepare(processor, request: DescribeRequest, align: str, beat_fallback: bool):
    """``(result, audio for the processor, prompt)`` of one request; ``prompt`` is None when the request failed."""
    result = DescribeResult(name=request.name, align=align)
    try:
        decoded = _decode(processor, request.audio)
    except ValueError as err:  # unreadable / empty audio: names the file
        result.error, result.error_kind = str(err), "audio"
        return result, None, None
    conditioning = dict(request.conditioning)
    if align == "beats":
        try:
            result.boundaries, result.beat_times = beat_frame_boundaries(decoded["array"], decoded["sampling_rate"],
                                                                         name=request.name)
            conditioning["frame_boundaries"] = result.boundaries
        except NoBeatsError as err:
            if not beat_fallback:
                result.error, result.error_kind = str(err), "beats"
                return result, None, None
            result.beat_fallback = err.reason
    try:
        prompt = processor.build_prompt(**conditioning)
    except ValueError as err:  # e.g. an MV type the checkpoint's taxonomy lacks
        result.error, result.error_kind = str(err), "prompt"
        return result, None, None
    return result, (request.audio if _legacy(processor) else decoded), prompt


def _parse(processor, result: DescribeResult, answer: str) -> None:
    """Parse ``answer`` into ``result``; with requested boundaries, a mismatch becomes one of its problems."""
    result.text = answer
    result.parsed = processor.post_process_mv_description([answer])[0]
    if result.boundaries is not None:
        compare = frame_boundary_problem if _legacy(processor) else processor.frame_boundary_problem
        problem = compare([(f.start, f.end) for f in result.parsed.frames], result.boundaries)
        result.frames_match_boundaries = problem is None
        if problem:
            result.parsed.problems.append(problem)


def _generate(model, processor, prompts: list[str], audio: list[dict], generate_kwargs: dict,
              seed: int | None) -> list[str | Exception]:
    """One ``generate`` call for the batch; a batch whose audio fails is redone one by one so that one bad file
    fails one request. Returns the answer texts, or the audio error of a request."""
    try:
        inputs = processor(text=prompts, audio=audio)
    except ValueError as err:  # bad audio: too short for one analysis window, NaN ...
        if len(prompts) == 1:
            return [err]
        return [_generate(model, processor, [p], [a], generate_kwargs, None if seed is None else seed + k)[0]
                for k, (p, a) in enumerate(zip(prompts, audio))]
    inputs = inputs.to(model.device)
    if seed is not None:
        torch.manual_seed(seed)
    with torch.no_grad():
        generated = model.generate(**inputs, tokenizer=processor.tokenizer, **generate_kwargs)
    return processor.decode_answers(generated, inputs["input_ids"].shape[1])


def describe_batch(
    model,
    processor,
    requests: Sequence[DescribeRequest],
    generate_kwargs: dict | None = None,
    align: str = "fixed",
    seed: int | None = None,
    beat_fallback: bool = False,
) -> list[DescribeResult]:
    """Describe a batch of songs with one ``generate`` call; one :class:`DescribeResult` per request, in order.

    Args:
        generate_kwargs: overrides of the checkpoint's ``generation_config.json`` (``do_sample``, ``max_new_tokens``).
        align: ``"fixed"`` (the plain prompt, 2-s frames) or ``"beats"`` (each song's detected beats grouped into
            frames of about 2 s, listed in the prompt; a generated description whose frames differ gets a problem).
        seed: ``torch.manual_seed`` before generating (sampling), or None to leave the generator alone.
        beat_fallback: with ``align="beats"``, prompt a song with too few beats with fixed frames (and say why in
            ``beat_fallback``) instead of failing it.
    """
    prepared = [_prepare(processor, request, align, beat_fallback) for request in requests]
    ready = [(result, decoded, prompt) for result, decoded, prompt in prepared if prompt is not None]
    if ready:
        answers = _generate(model, processor, [p for _, _, p in ready], [d for _, d, _ in ready],
                            dict(generate_kwargs or {}), seed)
        for (result, _, _), answer in zip(ready, answers):
            if isinstance(answer, Exception):
                result.error, result.error_kind = str(answer), "audio"
            else:
                _parse(processor, result, answer)
    return [result for result, _, _ in prepared]


# ----------------------------------------------------------------------------------------------------------------
# Describing files (m2mv describe, the demo)
# ----------------------------------------------------------------------------------------------------------------

AUDIO_SUFFIXES = {".wav", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".aiff", ".aif"}


def expand_inputs(paths: Sequence[str | Path]) -> list[Path]:
    """Files as given; folders expanded to the audio files inside (sorted)."""
    files: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            files.extend(sorted(p for p in path.rglob("*") if p.suffix.lower() in AUDIO_SUFFIXES))
        else:
            files.append(path)
    return files


def _result_dict(path: Path, result: DescribeResult) -> dict:
    """What ``describe_files`` returns (and ``--out`` records) for one file."""
    if result.error is not None:
        return {"file": str(path), "error": result.error}
    return {"file": str(path), **result.beat_fields(), "text": result.text, "parsed": result.parsed.to_dict()}


def completed_files(out: Path, settings: dict) -> set[str]:
    """Resolved paths that ``out`` (JSONL) holds a successful result for, made with ``settings``; a half-written
    last line is cut off (m2mv.data.fileio.read_jsonl)."""
    return {row["file"] for _, row in read_jsonl(out, kind="describe result")
            if "file" in row and "error" not in row and row.get("settings") == settings}


def lyrics_chat_model(model: str | None = None, url: str | None = None, url_model: str | None = None):
    """The LLM that writes a lyrics understanding for ``--lyrics``: a served one (``url`` + ``url_model``), a
    transformers chat model (``model``), or by default the real SmolLM2-135M-Instruct, in-process."""
    return chat_model(model, url, url_model, url_flag="--lyrics-llm-url")


def describe_files(
    audio_paths: Sequence[str | Path],
    model_dir: str | Path | None = None,
    genre_tags: list[str] | None = None,
    mv_type: str | None = None,
    lyrics_understanding: str | None = None,
    greedy: bool = False,
    max_new_tokens: int | None = None,
    align: str = "fixed",
    out: str | Path | None = None,
    batch_size: int = 1,
    progress: bool = True,
    lyrics: str | None = None,
    lyrics_chat=None,
) -> list[dict]:
    """Describe audio files; one dict per file: ``file``, ``text``, ``parsed`` (or ``error``).

    ``lyrics``: the song's lyrics themselves; the lyrics understanding of the prompt is then written from them by
    ``lyrics_chat`` (:func:`lyrics_chat_model`; the pipeline's own step, :mod:`m2mv.pipeline.lyrics`). Give either
    ``lyrics`` or a ready ``lyrics_understanding``.

    ``align="beats"``: beat-aligned frames listed in the prompt; the dict adds ``align``, ``boundaries``,
    ``beat_times`` and ``frames_match_boundaries`` (a mismatch is also one of ``parsed["problems"]``).
    ``out``: a JSONL file that gets one line per file as it finishes (with the settings used); files already
    described there with the same settings are skipped and come back as ``{"file", "skipped": True}``.
    ``model_dir`` None: the demo checkpoint. ``batch_size`` files go through one ``generate`` call.
    """
    check_align(align)
    if batch_size < 1:
        raise UsageError(f"batch_size must be at least 1, got {batch_size}")
    if lyrics is not None and lyrics_understanding is not None:
        raise UsageError("give the lyrics (--lyrics) or a ready lyrics understanding (--lyrics-understanding), not "
                         "both")
    if lyrics is not None:
        lyrics_understanding = understand_lyrics(lyrics_chat or lyrics_chat_model(), lyrics)
        if lyrics_understanding is None:
            print("note: the lyrics hold no words to understand (empty or instrumental): no lyrics understanding",
                  file=sys.stderr)
    model_dir = resolve_checkpoint(model_dir)
    model, processor = load_checkpoint(model_dir)
    given = {"genre_tags": genre_tags, "mv_type": mv_type, "lyrics_understanding": lyrics_understanding}
    check_requests(processor, [conditioning(given)], align, model_dir)
    settings = json.loads(json.dumps({
        "model": str(model_dir.resolve()), "align": align, "genre_tags": genre_tags,
        "mv_type": processor.canonical_mv_type(mv_type) if mv_type is not None else None,
        "lyrics_understanding": lyrics_understanding, "greedy": greedy, "max_new_tokens": max_new_tokens}))
    paths = [Path(p) for p in audio_paths]
    done = completed_files(Path(out), settings) if out else set()
    results: list[dict | None] = [{"file": str(p), "skipped": True} if str(p.resolve()) in done else None
                                  for p in paths]
    todo = [i for i, result in enumerate(results) if result is None]
    if len(todo) < len(paths):
        print(f"skipping {len(paths) - len(todo)} file(s) already described in {out}", file=sys.stderr)
    generate_kwargs = {"do_sample": False} if greedy else {}
    if max_new_tokens:
        generate_kwargs["max_new_tokens"] = max_new_tokens
    bar = tqdm(total=len(todo), desc="describing", unit="file", file=sys.stderr, disable=not progress or len(todo) < 2)
    for start in range(0, len(todo), batch_size):
        batch = todo[start: start + batch_size]
        requests = [DescribeRequest(audio=str(paths[i]), name=str(paths[i]), conditioning=conditioning(given))
                    for i in batch]
        for index, result in zip(batch, describe_batch(model, processor, requests, generate_kwargs, align=align)):
            results[index] = _result_dict(paths[index], result)
        if out:
            append_jsonl(out, [{**results[i], "file": str(paths[i].resolve()), "settings": settings} for i in batch])
        bar.update(len(batch))
    bar.close()
    return results
