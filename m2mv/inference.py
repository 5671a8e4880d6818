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

import numpy as np
import torch
from tqdm.auto import tqdm

from feature_extraction_m2mv import SILENCE_PEAK
from m2mv.beats import ALIGN_MODES, NoBeatsError, beat_frame_boundaries
from m2mv.checkpoints.loading import load_checkpoint, resolve_checkpoint
from m2mv.data.embeddings import zero_audio_features
from m2mv.data.fileio import append_jsonl, read_jsonl
from m2mv.data.lrc import LyricLine, check_within, lines_between
from m2mv.data.schema import conditioning
from m2mv.data.timeline import resolve_span, song_windows, stitch_sections
from m2mv.errors import UsageError
from m2mv.pipeline.lyrics import understand_lyrics
from m2mv.pipeline.models import chat_model
from mv_format_m2mv import description_literals, frame_boundaries, frame_boundary_problem, mv_description_grammar


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
    constrained_frames: list[tuple[float, float]] | None = None  # the frames a constrained answer was held to

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


def _prepare(processor, request: DescribeRequest, align: str, beat_fallback: bool, constrained: bool = False):
    """``(result, audio for the processor, prompt)`` of one request; ``prompt`` is None when the request failed.
    ``constrained``: the frames the answer will be held to (the beat frames, else the 2-s grid of the audio)."""
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
    if constrained:
        duration = decoded["array"].shape[-1] / decoded["sampling_rate"]
        result.constrained_frames = result.boundaries or frame_boundaries(round(duration, 2))
    return result, (request.audio if _legacy(processor) else decoded), prompt


def _parse(processor, result: DescribeResult, answer: str) -> None:
    """Parse ``answer`` into ``result``; with requested boundaries, a mismatch becomes one of its problems."""
    result.text = answer
    result.parsed = processor.post_process_mv_description([answer])[0]
    requested = result.boundaries or result.constrained_frames
    if requested is not None:
        compare = frame_boundary_problem if _legacy(processor) else processor.frame_boundary_problem
        problem = compare([(f.start, f.end) for f in result.parsed.frames], requested)
        result.frames_match_boundaries = problem is None
        if problem:
            result.parsed.problems.append(problem)


def frame_grammars(model, processor, frames: Sequence[Sequence[tuple[float, float]]], max_new_tokens: int | None):
    """``(grammars, eos)``: for each row, the grammar of the description with exactly its ``frames``
    (``mv_description_grammar``), each text's token budget set so that the whole answer fits in ``max_new_tokens``;
    and the token a finished answer ends with (the generation config's first end token)."""
    budget = int(max_new_tokens or model.generation_config.max_new_tokens or 512)
    grammars = []
    for row in frames:
        fixed = len(processor.tokenizer("".join(description_literals(row)), add_special_tokens=False)["input_ids"])
        per_text = (budget - fixed - 2) // (len(row) + 1)
        if per_text < 3:
            raise UsageError(f"max_new_tokens={budget} is too few for a constrained answer with {len(row)} frames "
                             f"(at least {fixed + 2 + 3 * (len(row) + 1)})")
        grammars.append(mv_description_grammar(row, min(per_text, 60)))
    eos = model.generation_config.eos_token_id
    return grammars, (eos[0] if isinstance(eos, list) else eos)


def _generate(model, processor, prompts: list[str], audio: list[dict], generate_kwargs: dict,
              seed: int | None, frames: list | None = None, zero_audio: bool = False) -> list[str | Exception]:
    """One ``generate`` call for the batch; a batch whose audio fails is redone one by one so that one bad file
    fails one request. Returns the answer texts, or the audio error of a request. ``frames``: each row's answer is
    constrained to a description with exactly these frames (:func:`frame_grammars`). ``zero_audio``: the encoder
    gets all-zero features instead of the audio's (the benchmark's control row)."""
    try:
        inputs = processor(text=prompts, audio=audio)
    except ValueError as err:  # bad audio: too short for one analysis window, NaN ...
        if len(prompts) == 1:
            return [err]
        return [_generate(model, processor, [p], [a], generate_kwargs, None if seed is None else seed + k,
                          None if frames is None else [frames[k]], zero_audio)[0]
                for k, (p, a) in enumerate(zip(prompts, audio))]
    if zero_audio:
        features = inputs["input_features"]
        inputs["input_features"] = zero_audio_features(model).to(features.dtype).expand(features.shape).contiguous()
    inputs = inputs.to(model.device)
    if seed is not None:
        torch.manual_seed(seed)
    kwargs = dict(generate_kwargs)
    if frames is not None:
        from transformers import LogitsProcessorList

        from m2mv.pipeline.models import GrammarLogits

        grammars, eos = frame_grammars(model, processor, frames, kwargs.get("max_new_tokens"))
        kwargs["logits_processor"] = LogitsProcessorList([GrammarLogits(processor.tokenizer, grammars,
                                                                        inputs["input_ids"].shape[1], eos)])
    with torch.no_grad():
        generated = model.generate(**inputs, tokenizer=processor.tokenizer, **kwargs)
    return processor.decode_answers(generated, inputs["input_ids"].shape[1])


def describe_batch(
    model,
    processor,
    requests: Sequence[DescribeRequest],
    generate_kwargs: dict | None = None,
    align: str = "fixed",
    seed: int | None = None,
    beat_fallback: bool = False,
    constrained: bool = False,
    zero_audio: bool = False,
) -> list[DescribeResult]:
    """Describe a batch of songs with one ``generate`` call; one :class:`DescribeResult` per request, in order.

    Args:
        generate_kwargs: overrides of the checkpoint's ``generation_config.json`` (``do_sample``, ``max_new_tokens``).
        align: ``"fixed"`` (the plain prompt, 2-s frames) or ``"beats"`` (each song's detected beats grouped into
            frames of about 2 s, listed in the prompt; a generated description whose frames differ gets a problem).
        seed: ``torch.manual_seed`` before generating (sampling), or None to leave the generator alone.
        beat_fallback: with ``align="beats"``, prompt a song with too few beats with fixed frames (and say why in
            ``beat_fallback``) instead of failing it.
        constrained: hold each answer to the description format with exactly the requested frames (the beat frames,
            else the audio's 2-s grid): the program writes the headers and every timestamp, the model the overview
            and the frame texts (llguidance, the ``pipeline`` extra), so every answer parses with those frames.
            False: free generation, the paper's setting.
        zero_audio: give the encoder all-zero features instead of each song's (what training's ``zero_audio``
            gives): the control that shows how much of an answer comes from the music.
    """
    prepared = [_prepare(processor, request, align, beat_fallback, constrained) for request in requests]
    ready = [(result, decoded, prompt) for result, decoded, prompt in prepared if prompt is not None]
    if ready:
        frames = [result.constrained_frames for result, _, _ in ready] if constrained else None
        answers = _generate(model, processor, [p for _, _, p in ready], [d for _, d, _ in ready],
                            dict(generate_kwargs or {}), seed, frames, zero_audio)
        for (result, _, _), answer in zip(ready, answers):
            if isinstance(answer, Exception):  # the features' error, which may not name the audio
                message = str(answer)
                result.error = message if result.name in message else f"{result.name}: {message}"
                result.error_kind = "audio"
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


@dataclass
class SongPlan:
    """How one file is described: its decoded audio, the span, and the windows (one request each)."""

    path: Path
    span: tuple[float, float]
    windows: list[tuple[float, float]]
    requests: list[DescribeRequest]
    lyrics_lines: list[list[LyricLine]] | None = None
    warnings: list[str] = field(default_factory=list)
    decoded: dict | None = None  # ``{"array", "sampling_rate"}`` of the whole file

    @property
    def whole_clip(self) -> bool:
        """One window from the file's start: described and reported as a clip, as before whole songs."""
        return len(self.windows) == 1 and self.span[0] == 0.0


def plan_song(processor, path: Path, given: dict, span: tuple[float, float] | None, window_seconds: float,
              lrc: Sequence[LyricLine] | None = None, lyrics_chat=None) -> SongPlan:
    """Decode ``path`` once and cut the span into windows, each a request on its own slice of the audio. With
    ``lrc`` each window's lyrics understanding is written by ``lyrics_chat`` from the lines sung inside it (no
    line: no understanding). A bad file or span raises ValueError naming it."""
    decoded = _decode(processor, str(path))
    rate, array = decoded["sampling_rate"], decoded["array"]
    duration = array.shape[-1] / rate
    warnings = _length_warning(path, duration)
    start, end = resolve_span(span, duration, str(path))
    windows = song_windows((start, end), window_seconds)
    if lrc is not None:
        check_within(lrc, duration, str(path))
    requests, lines = [], []
    for w_start, w_end in windows:
        piece = {**decoded, "array": array[..., int(round(w_start * rate)): int(round(w_end * rate))]}
        if not np.abs(piece["array"]).max(initial=0.0) > SILENCE_PEAK:
            where = "" if len(windows) == 1 else f" {w_start:g}-{w_end:g} s"
            warnings.append(f"{path}{where}: silent (peak below {SILENCE_PEAK:g}); described anyway")
        window_given = dict(given)
        if lrc is not None:
            sung = lines_between(lrc, w_start, w_end)
            lines.append(sung)
            window_given["lyrics_understanding"] = understand_lyrics(lyrics_chat,
                                                                     "\n".join(line.text for line in sung))
        name = str(path) if len(windows) == 1 and w_start == 0 else f"{path} [{w_start:g}-{w_end:g} s]"
        requests.append(DescribeRequest(audio=piece, name=name, conditioning=conditioning(window_given)))
    return SongPlan(path, (start, end), windows, requests, lines if lrc is not None else None, warnings, decoded)


def _length_warning(path: Path, decoded_seconds: float) -> list[str]:
    """A warning when the file decodes shorter than its header says (a truncated MP3 decodes without an error)."""
    import soundfile

    try:
        info = soundfile.info(str(path))
    except RuntimeError:
        return []
    header = info.frames / info.samplerate if info.samplerate else 0.0
    if header - decoded_seconds > 0.5:
        return [f"{path}: decodes to {decoded_seconds:.1f} s but its header says {header:.1f} s (truncated?); "
                "describing what decodes"]
    return []


def _lines_dicts(lines: Sequence[LyricLine]) -> list[dict]:
    """The LRC lines a window used, as a result records them."""
    return [{"time": line.time, "text": line.text} for line in lines]


def _song_dict(plan: SongPlan, results: Sequence[DescribeResult]) -> dict:
    """The result of a file described in windows (or over a span): ``sections`` and one flat ``frames`` list."""
    failed = [r for r in results if r.error is not None]
    if failed:
        return {"file": str(plan.path), "error": "; ".join(r.error for r in failed)}
    extra = []
    for index, result in enumerate(results):
        fields = {"text": result.text, **result.beat_fields()}
        if plan.lyrics_lines is not None:
            fields["lyrics_lines"] = _lines_dicts(plan.lyrics_lines[index])
            fields["lyrics_understanding"] = plan.requests[index].conditioning.get("lyrics_understanding")
        extra.append(fields)
    song = stitch_sections(plan.windows, [r.parsed.to_dict() for r in results], extra)
    return {"file": str(plan.path), "span": list(plan.span), "windows": [list(w) for w in plan.windows],
            "text": "\n\n".join(r.text for r in results), "parsed": song}


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
    span: tuple[float, float] | None = None,
    window_seconds: float | None = None,
    lrc: Sequence[LyricLine] | None = None,
    constrained: bool = False,
    checkpoint: tuple | None = None,
    streamer=None,
    return_audio: bool = False,
) -> list[dict]:
    """Describe audio files; one dict per file: ``file``, ``text``, ``parsed`` (or ``error``), and ``warnings``
    when a file decodes shorter than its header says or is silent (each also printed on stderr).

    ``lyrics``: the song's lyrics themselves; the lyrics understanding of the prompt is then written from them by
    ``lyrics_chat`` (:func:`lyrics_chat_model`; the pipeline's own step, :mod:`m2mv.pipeline.lyrics`). Give either
    ``lyrics`` or a ready ``lyrics_understanding``.

    ``align="beats"``: beat-aligned frames listed in the prompt; the dict adds ``align``, ``boundaries``,
    ``beat_times`` and ``frames_match_boundaries`` (a mismatch is also one of ``parsed["problems"]``).
    ``out``: a JSONL file that gets one line per file as it finishes (with the settings used); files already
    described there with the same settings are skipped and come back as ``{"file", "skipped": True}``.
    ``model_dir`` None: the demo checkpoint. ``batch_size`` files go through one ``generate`` call.

    Whole songs: a file (or ``span``, ``(start, end)`` seconds) longer than 1.5 windows of ``window_seconds`` (by
    default the checkpoint's ``clip_seconds``, 30 s) is cut into windows, all of a file's windows described in the
    same ``generate`` call, each from its own audio; its dict then holds ``span``, ``windows`` and a ``parsed``
    song: ``sections`` (start, end, overview, frames on the song's clock) and one flat ``frames`` list
    (:func:`m2mv.data.timeline.stitch_sections`). ``lrc``: time-synced lyrics (:mod:`m2mv.data.lrc`); each window's
    lyrics understanding is written from the lines sung inside it, and its section lists them.
    ``constrained``: every answer held to exactly the requested frames (see :func:`describe_batch`).

    ``checkpoint``: ``(model, processor)`` already loaded from ``model_dir`` (the web app loads once and serves many
    requests); None loads it here. ``streamer``: a transformers streamer (``TextIteratorStreamer``) that gets the
    text as it is generated when a batch is one request (a clip); a batch of several requests (several files, a song
    in windows) is not streamed, since transformers' streamers take one row. ``return_audio``: each described
    file's dict also holds ``audio``, the ``{"array", "sampling_rate"}`` it was decoded to (decoded once; never
    written to ``out``).
    """
    check_align(align)
    if constrained:
        try:
            import llguidance  # noqa: F401  (checked before the model loads; used by m2mv.pipeline.models)
        except ImportError as err:
            raise UsageError("constrained frames need llguidance: pip install 'm2mv[pipeline]'") from err
    if batch_size < 1:
        raise UsageError(f"batch_size must be at least 1, got {batch_size}")
    if sum(x is not None for x in (lyrics, lyrics_understanding, lrc)) > 1:
        raise UsageError("give the lyrics (--lyrics) or a ready lyrics understanding (--lyrics-understanding), not "
                         "both")
    if lyrics is not None:
        lyrics_understanding = understand_lyrics(lyrics_chat or lyrics_chat_model(), lyrics)
        if lyrics_understanding is None:
            print("note: the lyrics hold no words to understand (empty or instrumental): no lyrics understanding",
                  file=sys.stderr)
    model_dir = resolve_checkpoint(model_dir)
    model, processor = checkpoint if checkpoint is not None else load_checkpoint(model_dir)
    given = {"genre_tags": genre_tags, "mv_type": mv_type, "lyrics_understanding": lyrics_understanding}
    check_requests(processor, [conditioning(given)], align, model_dir)
    settings = json.loads(json.dumps({
        "model": str(model_dir.resolve()), "align": align, "genre_tags": genre_tags,
        "mv_type": processor.canonical_mv_type(mv_type) if mv_type is not None else None,
        "lyrics_understanding": lyrics_understanding, "greedy": greedy, "max_new_tokens": max_new_tokens,
        **({"span": list(span)} if span is not None else {}),
        **({"window_seconds": window_seconds} if window_seconds is not None else {}),
        **({"lrc": [[line.time, line.text] for line in lrc]} if lrc is not None else {}),
        **({"constrained": True} if constrained else {})}))
    window_seconds = float(window_seconds or getattr(processor, "clip_seconds", 30.0))
    if lrc is not None and lyrics_chat is None:
        lyrics_chat = lyrics_chat_model()
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
        plans = {}
        for i in batch:
            if _legacy(processor):  # a 0.1.0 checkpoint: no decoded audio to cut, clips only
                plans[i] = SongPlan(paths[i], (0.0, 0.0), [(0.0, 0.0)],
                                    [DescribeRequest(str(paths[i]), str(paths[i]), conditioning(given))])
                continue
            try:
                plans[i] = plan_song(processor, paths[i], given, span, window_seconds, lrc, lyrics_chat)
            except ValueError as err:  # unreadable audio, a span past its end, LRC past its end: this file fails
                results[i] = {"file": str(paths[i]), "error": str(err)}
                continue
            for warning in plans[i].warnings:
                print(f"warning: {warning}", file=sys.stderr)
            if not plans[i].whole_clip:
                print(f"note: {paths[i]}: describing {plans[i].span[0]:g}-{plans[i].span[1]:g} s in "
                      f"{len(plans[i].windows)} window(s) of about {window_seconds:g} s (the model's clip)",
                      file=sys.stderr)
        requests = [request for plan in plans.values() for request in plan.requests]
        streamed = {"streamer": streamer} if streamer is not None and len(requests) == 1 else {}
        described = iter(describe_batch(model, processor, requests, {**generate_kwargs, **streamed}, align=align,
                                        constrained=constrained))
        for i, plan in plans.items():
            song = [next(described) for _ in plan.requests]
            results[i] = _result_dict(paths[i], song[0]) if plan.whole_clip else _song_dict(plan, song)
            if plan.warnings:
                results[i]["warnings"] = list(plan.warnings)  # also printed above; a server shows them
            if plan.whole_clip and plan.lyrics_lines is not None and "error" not in results[i]:
                results[i]["lyrics_lines"] = _lines_dicts(plan.lyrics_lines[0])
        if out:
            append_jsonl(out, [{**results[i], "file": str(paths[i].resolve()), "settings": settings} for i in batch])
        if return_audio:
            for i, plan in plans.items():
                if plan.decoded is not None and "error" not in results[i]:
                    results[i]["audio"] = {key: plan.decoded[key] for key in ("array", "sampling_rate")}
        bar.update(len(batch))
    bar.close()
    return results
