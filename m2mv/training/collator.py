"""Dataset rows -> model inputs, through the checkpoint's own processor (its prompt template, its tokenizer)."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from m2mv.data.embeddings import AudioEmbedsTable, encode_audio, load_embeddings, zero_audio_features
from m2mv.data.loading import dataset_root
from m2mv.data.schema import CONDITIONING_COLUMNS, MV_DESCRIPTION, TARGET_COLUMN, TASK, conditioning, frame_spans
from m2mv.errors import TrainingError
from mv_format_m2mv import is_fixed_grid

logger = logging.getLogger("m2mv.training")
SWITCHES = dict(zip(CONDITIONING_COLUMNS, ("use_genre_tags", "use_mv_type", "use_lyrics_understanding")))


def prompt_frame_boundaries(frames: Sequence[Mapping] | None) -> list[tuple[float, float]] | None:
    """The spans of a target's ``frames`` when they are NOT the fixed 2-s grid over its length (compared to the
    timestamps' 10-ms precision): the frames its prompt lists. None for fixed-grid or frameless targets."""
    spans = frame_spans(frames or [])
    return None if not spans or is_fixed_grid(spans) else spans


@dataclass
class M2MVDataCollator:
    """Dataset rows -> model inputs, through the checkpoint's processor.

    Prompt: the processor's template with the task's instruction and the conditioning the switches allow (fields
    missing or empty in a row are left out); with ``prompt_frames``, a target whose ``frames`` are not the fixed
    2-s grid (:func:`prompt_frame_boundaries`) also gets them listed in the prompt; labels: -100 everywhere but the
    answer (and its ``\\n###`` stop).
    Audio: precomputed embeddings from ``audio_embeds`` when given, else the row's encoded audio. ``zero_audio``
    replaces every input's features by zeros: the model then sees ``zero_audio_embeds``, its own encoder's output
    for all-zero features (computed once), which is exactly what zeroed features give.
    """

    processor: Any
    config_name: str
    max_length: int | None = None
    use_genre_tags: bool = True
    use_mv_type: bool = True
    use_lyrics_understanding: bool = True
    prompt_frames: bool = True
    audio_embeds: AudioEmbedsTable | None = None
    zero_audio_embeds: np.ndarray | None = None

    def conditioning(self, row: Mapping) -> dict:
        if self.config_name != MV_DESCRIPTION:
            return {}
        return conditioning(row, [column for column, flag in SWITCHES.items() if getattr(self, flag)])

    def prompt(self, row: Mapping) -> str:
        given = self.conditioning(row)
        if self.prompt_frames and self.config_name == MV_DESCRIPTION:
            boundaries = prompt_frame_boundaries(row.get("frames"))
            if boundaries is not None:
                given["frame_boundaries"] = boundaries
        return self.processor.build_prompt(TASK[self.config_name], **given)

    def __call__(self, rows: list[dict]) -> dict:
        common = dict(text=[self.prompt(row) for row in rows],
                      answers=[row[TARGET_COLUMN[self.config_name]] for row in rows],
                      max_length=self.max_length, padding_side="right")
        if self.zero_audio_embeds is not None:
            embeds = np.repeat(self.zero_audio_embeds[None], len(rows), axis=0)
            return dict(self.processor(audio_embeds=embeds, **common))
        if self.audio_embeds is not None:
            return dict(self.processor(audio_embeds=self.audio_embeds.get_batch(r["song_id"] for r in rows), **common))
        return dict(self.processor(audio=[row["audio"] for row in rows], **common))


def zero_audio_embeddings(model) -> np.ndarray:
    """The model's own encoder output (before the adaptor) for all-zero features (what zeroed audio gives)."""
    was_training = model.audio_tower.training
    model.audio_tower.eval()
    with torch.no_grad():
        zero = encode_audio(model, zero_audio_features(model))[0]
    model.audio_tower.train(was_training)
    return zero.float().cpu().numpy()


def make_collator(model, processor, script_args, training_args, config_name: str,
                  datasets: Sequence[Any]) -> M2MVDataCollator:
    """The collator, after checking every row's prompt and (if used) the precomputed embeddings against the model.

    Building all prompts up front turns a bad conditioning value (an unknown MV type...) or a prompt longer than
    ``max_length`` into an error before the first step, and counts the answers ``max_length`` will truncate.
    """
    collator = M2MVDataCollator(processor, config_name, training_args.max_length, script_args.use_genre_tags,
                                script_args.use_mv_type, script_args.use_lyrics_understanding,
                                script_args.prompt_frames)
    datasets = [ds for ds in datasets if ds is not None]
    song_ids: list[str] = []
    truncated = total = 0
    for ds in datasets:
        stats = measure_lengths(processor, ds.select_columns([c for c in ds.column_names if c != "audio"]), collator)
        truncated, total = truncated + stats["truncated"], total + stats["rows"]
        song_ids.extend(ds["song_id"])
    if truncated:
        logger.warning("max_length %s truncates %d of %d answers; measure with `m2mv lengths`",
                       training_args.max_length, truncated, total)
    if script_args.zero_audio:
        collator.zero_audio_embeds = zero_audio_embeddings(model)
        return collator
    root = dataset_root(script_args.dataset_path, config_name)
    collator.audio_embeds = load_embeddings(root, model, song_ids, setting=script_args.audio_embeds)
    if collator.audio_embeds is not None:
        logger.info("using precomputed audio embeddings from %s", collator.audio_embeds.path)
        return collator
    for ds in datasets:
        if "audio" not in ds.column_names:
            raise TrainingError(
                f"{script_args.dataset_path}: no 'audio' column and no precomputed embeddings "
                f"({'audio_embeds: off' if script_args.audio_embeds == 'off' else 'none found'}): nothing to train on")
    logger.info("no precomputed audio embeddings: encoding the audio at every step")
    return collator


def measure_lengths(processor, ds, collator: M2MVDataCollator) -> dict:
    """Token lengths of prompt, answer and both (with the audio placeholders expanded), and how many answers
    ``collator.max_length`` truncates; raises naming the row when a prompt cannot be built or is too long."""
    target = TARGET_COLUMN[collator.config_name]
    prompts, answers = [], []
    for index, row in enumerate(ds):
        try:
            prompt = collator.prompt(row)
        except ValueError as err:
            raise TrainingError(f"row {index} (song {row.get('song_id')!r}): {err}") from err
        answer = row[target]
        if not isinstance(answer, str) or not answer.strip():
            raise TrainingError(f"row {index} (song {row.get('song_id')!r}): empty {target!r}")
        prompts.append(prompt.replace(processor.audio_token, processor.audio_token * processor.num_audio_tokens))
        answers.append(processor.build_answer(answer))
    prompt_len = np.array([len(ids) for ids in processor.tokenizer(prompts, add_special_tokens=True)["input_ids"]])
    answer_len = np.array([len(ids) for ids in processor.tokenizer(answers, add_special_tokens=False)["input_ids"]])
    total = prompt_len + answer_len
    limit = collator.max_length
    if limit is not None and (prompt_len >= limit).any():
        index = int(np.argmax(prompt_len >= limit))
        raise TrainingError(f"row {index}: the prompt alone has {prompt_len[index]} tokens, max_length is {limit}")

    def pct(values, q):
        return int(np.percentile(values, q)) if len(values) else 0

    return {"rows": len(total), "truncated": int((total > limit).sum()) if limit else 0,
            "prompt": {"max": int(prompt_len.max(initial=0)), "p50": pct(prompt_len, 50)},
            "answer": {"max": int(answer_len.max(initial=0)), "p50": pct(answer_len, 50), "p99": pct(answer_len, 99)},
            "total": {"max": int(total.max(initial=0)), "p50": pct(total, 50), "p99": pct(total, 99)}}
