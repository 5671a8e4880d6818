"""Dataset rows -> model inputs, through the checkpoint's own processor (its prompt template, its tokenizer)."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
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
    ``padding_free`` (TRL's ``--padding_free``): the rows' tokens are concatenated into one row of shape (1, total)
    with ``position_ids`` restarting at 0 for each and no ``attention_mask``, so no step computes padding; the
    attention then keeps each row to itself (transformers reads the packing from the position ids; the model
    must run without a cache, as training does). The audio stays one entry per row, in order.
    ``conditioning_dropout``: each conditioning field a row gives is left out of its prompt with this probability
    (torch's global generator, which the trainer's checkpoints save, so a resumed run draws the same); the
    trainer evaluates with a copy at 0 (:meth:`for_eval`).
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
    padding_free: bool = False
    conditioning_dropout: float = 0.0

    def conditioning(self, row: Mapping) -> dict:
        if self.config_name != MV_DESCRIPTION:
            return {}
        given = conditioning(row, [column for column, flag in SWITCHES.items() if getattr(self, flag)])
        if self.conditioning_dropout:
            given = {name: value for name, value in given.items()
                     if float(torch.rand(())) >= self.conditioning_dropout}
        return given

    def for_eval(self) -> M2MVDataCollator:
        """The same collator without conditioning dropout: held-out prompts keep every field."""
        return replace(self, conditioning_dropout=0.0)

    def prompt(self, row: Mapping) -> str:
        given = self.conditioning(row)
        if self.prompt_frames and self.config_name == MV_DESCRIPTION:
            boundaries = prompt_frame_boundaries(row.get("frames"))
            if boundaries is not None:
                given["frame_boundaries"] = boundaries
        return self.processor.build_prompt(TASK[self.config_name], **given)

    def __call__(self, rows: list[dict]) -> dict:
        batch = self.padded(rows)
        return pack_rows(batch) if self.padding_free else batch

    def padded(self, rows: list[dict]) -> dict:
        """The rows right-padded to the longest, with an ``attention_mask``."""
        common = dict(text=[self.prompt(row) for row in rows],
                      answers=[row[TARGET_COLUMN[self.config_name]] for row in rows],
                      max_length=self.max_length, padding_side="right")
        if self.zero_audio_embeds is not None:
            embeds = np.repeat(self.zero_audio_embeds[None], len(rows), axis=0)
            return dict(self.processor(audio_embeds=embeds, **common))
        if self.audio_embeds is not None:
            return dict(self.processor(audio_embeds=self.audio_embeds.get_batch(r["song_id"] for r in rows), **common))
        return dict(self.processor(audio=[row["audio"] for row in rows], **common))


# padding_free and the pre-LLM fusion do not mix: refused when the collator is made, and again by pack_rows itself
FUSION_NOT_PACKED = ("padding_free: the pre-LLM fusion attends over the padded batch's input segments; train a model "
                     "with prellm_fusion_layers > 0 without --padding_free")


def pack_rows(batch: dict) -> dict:
    """A right-padded batch -> one row of its real tokens: ``input_ids``/``labels`` (1, total), ``position_ids``
    counting from 0 in each row, no ``attention_mask``; each row's first label is -100, so no row is trained to
    follow the one before it. The audio inputs are left as they are (one per row, in order)."""
    if "fusion_mask" in batch:
        raise TrainingError(FUSION_NOT_PACKED)
    keep = batch.pop("attention_mask").bool()
    lengths = keep.sum(dim=1)
    packed = {name: value for name, value in batch.items() if name not in ("input_ids", "labels")}
    packed["input_ids"] = batch["input_ids"][keep][None]
    labels = batch["labels"].clone()
    labels[:, 0] = -100
    packed["labels"] = labels[keep][None]
    packed["position_ids"] = torch.cat([torch.arange(int(n)) for n in lengths])[None]
    return packed


def zero_audio_embeddings(model) -> np.ndarray:
    """The model's own encoder output (before the adaptor) for all-zero features (what zeroed audio gives)."""
    was_training = model.audio_tower.training
    model.audio_tower.eval()
    with torch.no_grad():
        zero = encode_audio(model, zero_audio_features(model))[0]
    model.audio_tower.train(was_training)
    return zero.float().cpu().numpy()


def make_collator(model, processor, script_args, training_args, config_name: str,
                  datasets: Sequence[Any], padding_free: bool = False) -> M2MVDataCollator:
    """The collator, after checking every row's prompt and (if used) the precomputed embeddings against the model.

    Building all prompts up front turns a bad conditioning value (an unknown MV type...) or a prompt longer than
    ``max_length`` into an error before the first step, and counts the answers ``max_length`` will truncate.
    """
    collator = M2MVDataCollator(processor, config_name, training_args.max_length, script_args.use_genre_tags,
                                script_args.use_mv_type, script_args.use_lyrics_understanding,
                                script_args.prompt_frames, padding_free=padding_free,
                                conditioning_dropout=script_args.conditioning_dropout)
    if padding_free and model.config.prellm_fusion_layers:
        raise TrainingError(f"{FUSION_NOT_PACKED} (this model: prellm_fusion_layers="
                            f"{model.config.prellm_fusion_layers})")
    datasets = [ds for ds in datasets if ds is not None]
    song_ids: list[str] = []
    truncated = total = 0
    for ds in datasets:
        # every field checked and measured, whatever conditioning dropout leaves out of a training prompt
        stats = measure_lengths(processor, ds.select_columns([c for c in ds.column_names if c != "audio"]),
                                collator.for_eval())
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
