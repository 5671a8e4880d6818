"""m2mv processing: the prompt, tokenisation, and decoding of the music-video (MV) descriptions.

:class:`M2MVProcessor` builds the prompt from its chat template (the one place the template lives), expands the
audio placeholder, tokenises, masks the labels to the answer, and decodes and parses generated answers. Optional
``frame_boundaries`` list the frames to describe in the prompt (e.g. beat-aligned ones) instead of the default 2-s
steps. Its feature extractor (ImageBind's audio transform) is in ``feature_extraction_m2mv.py``; the MV format
(written and read in one place) in ``mv_format_m2mv.py``.

This file travels with every checkpoint as remote code (``trust_remote_code=True``), with the two files it
imports (transformers copies a remote-code file's relative imports with it).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from transformers import BatchFeature, ProcessorMixin

try:  # loaded as remote code from a checkpoint folder (a package)
    from .feature_extraction_m2mv import decode_audio, mono_waveforms
    from .mv_format_m2mv import (STOP_STRING, MVDescription, format_frame_span, frame_boundary_problem,
                                 parse_mv_description, strip_stop, validate_frame_boundaries)
except ImportError:  # imported from the source tree as a top-level module
    from feature_extraction_m2mv import decode_audio, mono_waveforms
    from mv_format_m2mv import (STOP_STRING, MVDescription, format_frame_span, frame_boundary_problem,
                                parse_mv_description, strip_stop, validate_frame_boundaries)

# ----------------------------------------------------------------------------------------------------------------
# The processor
# ----------------------------------------------------------------------------------------------------------------

def _chat_template(turn_start: str, audio_part: str, text_part: str = "{%- elif part['type'] == 'text' %} "
                   "{{ part['text'] }}", generation_prompt: str = "{{ stop_string }} Assistant:") -> str:
    """A prompt template: ``turn_start`` opens the user turn, ``audio_part`` renders the audio, ``text_part`` the
    instruction; the conditioning, the answer and the ``###`` separators are the same in every template."""
    return (
        "{%- for message in messages -%}"
        "{%- if message['role'] == 'user' -%}"
        + turn_start +
        "{%- for part in message['content'] -%}"
        + audio_part +
        "{%- elif part['type'] == 'genre_tags' %} Genre tags: {{ part['genre_tags'] | join(', ') }}."
        "{%- elif part['type'] == 'mv_type' %} MV type: {{ part['mv_type'] }}."
        "{%- elif part['type'] == 'lyrics_understanding' %} Lyrics understanding: {{ part['lyrics_understanding'] }}"
        "{%- elif part['type'] == 'frame_boundaries' %} Frames: {{ part['frame_boundaries'] | join(', ') }}."
        + text_part +
        "{%- endif -%}"
        "{%- endfor -%}"
        "{{ '\\n' }}"
        "{%- elif message['role'] == 'assistant' -%}"
        "{{ stop_string }} Assistant: {{ message['content'] }}{{ '\\n' + stop_string }}"
        "{%- endif -%}"
        "{%- endfor -%}"
        "{%- if add_generation_prompt -%}" + generation_prompt + "{%- endif -%}"
    )


# m2mv's prompt, NExT-GPT's training format:
# "### Human: <Audio>[audio]</Audio> {conditioning} {instruction}\n### Assistant: {answer}\n###".
# ``stop_string`` ("###") is NExT-GPT's turn separator, and so where a generated answer ends.
CHAT_TEMPLATE = _chat_template("{{ stop_string }} Human:",
                               "{%- if part['type'] == 'audio' %} <Audio>{{ audio_token }}</Audio>")

# NExT-GPT's own inference prompt (a checkpoint converted from NExT-GPT carries it, with ``tokenize_segments``):
# NExT-GPT splits "### Human: <Audio>..</Audio>  {instruction}\n### Assistant:" around the audio, gives each text
# segment its own BOS and wraps the audio embedding in its <Img> ... </Img> tokens
# (NExT-GPT-Lagacy/code/model/anyToImageVideoAudio.py, prepare_generation_embedding and _prepare_audio_embed):
# [BOS] "### Human:" <Img> [audio] </Img> [BOS] " {conditioning} {instruction}\n### Assistant:".
NEXTGPT_CHAT_TEMPLATE = _chat_template("{{ bos_token }}{{ stop_string }} Human:",
                                       "{%- if part['type'] == 'audio' -%}<Img>{{ audio_token }}</Img>{{ bos_token }}")

# DeepResonance's prompt (code/model/deepresonance.py, _prepare_one_mixed_embedding): the input segment (the audio's
# clip tokens, then its text; no BOS when it starts with the audio), then "### Human: {instruction}\n### Assistant: ",
# each tokenised on its own; the pre-LLM fusion reads the input segment only (``input_boundary``, ``fuse_input``).
DEEPRESONANCE_CHAT_TEMPLATE = _chat_template(
    "", "{%- if part['type'] == 'audio' -%}{{ audio_token }}",
    text_part="{%- elif part['type'] == 'text' -%}{{ stop_string }} Human: {{ part['text'] }}",
    generation_prompt="{{ stop_string }} Assistant:{{ ' ' }}")

# Instructions by task; "<task>_given_frames" replaces the task's instruction when the prompt lists the frames.
GIVEN_FRAMES_SUFFIX = "_given_frames"
DEFAULT_INSTRUCTIONS = {
    "captioning": "generate a caption",
    "mv_description": (
        "Describe a music video for this music: an overview, then what the video shows in each 2-second frame."
    ),
    "mv_description" + GIVEN_FRAMES_SUFFIX: (
        "Describe a music video for this music: an overview, then what the video shows in each of the given frames."
    ),
}


class M2MVProcessor(ProcessorMixin):
    """Feature extractor + tokenizer + chat template for m2mv.

    Args:
        feature_extractor: :class:`M2MVFeatureExtractor` (ImageBind's transform), or the audio encoder's own
            transformers feature extractor (``WhisperFeatureExtractor``, ...), which gets decoded mono waveforms.
        tokenizer: the LM's tokenizer, holding ``audio_token`` as a special token.
        chat_template: the prompt template (defaults to :data:`CHAT_TEMPLATE`).
        audio_token: placeholder written once per audio in the prompt, expanded to ``num_audio_tokens``.
        num_audio_tokens: LM tokens per audio (must equal the model config's).
        mv_types: the MV-type taxonomy (names); an unknown ``mv_type`` is an error that lists them.
        instructions: task name -> instruction text (``"<task>_given_frames"``: the instruction used with
            ``frame_boundaries``).
        stop_string: the prompt's turn separator, where generated answers end (``###``, NExT-GPT's).
        tokenize_segments: tokenise the prompt as NExT-GPT does: split at the tokenizer's special and added tokens,
            each text segment on its own (so a SentencePiece tokenizer prefixes each with its word boundary) and no
            BOS added (the template writes it). ``False`` (m2mv's own checkpoints): the whole prompt at once, BOS
            added by the tokenizer.
        input_boundary: where the prompt's input segment ends (DeepResonance: ``"### Human:"``, its instruction
            turn): the two sides are tokenised apart. Needs ``tokenize_segments``.
        fuse_input: also return ``fusion_mask`` marking the input segment, for a model with pre-LLM fusion.
        clip_seconds: the length of the audio clips the model learns from (30 s for the paper's data); a longer
            song is described in windows of this length (``m2mv describe --span``).
    """

    def __init__(
        self,
        feature_extractor=None,
        tokenizer=None,
        chat_template: str | None = None,
        audio_token: str = "<|audio|>",
        num_audio_tokens: int = 1,
        mv_types: list[str] | None = None,
        instructions: dict[str, str] | None = None,
        stop_string: str = STOP_STRING,
        tokenize_segments: bool = False,
        input_boundary: str | None = None,
        fuse_input: bool = False,
        clip_seconds: float = 30.0,
    ):
        if input_boundary and not tokenize_segments:
            raise ValueError("input_boundary needs tokenize_segments=True")
        if fuse_input and not input_boundary:
            raise ValueError("fuse_input needs an input_boundary (where the fused input segment ends)")
        self.audio_token = audio_token
        self.tokenize_segments = tokenize_segments
        self.input_boundary = input_boundary
        self.fuse_input = fuse_input
        if not clip_seconds > 0:
            raise ValueError(f"clip_seconds must be positive, got {clip_seconds}")
        self.clip_seconds = float(clip_seconds)
        self.stop_string = stop_string
        self.audio_token_id = tokenizer.convert_tokens_to_ids(audio_token)
        if self.audio_token_id is None or self.audio_token_id == tokenizer.unk_token_id:
            raise ValueError(f"the tokenizer has no {audio_token!r} token; add it as a special token first")
        self.num_audio_tokens = num_audio_tokens
        self.mv_types = list(mv_types or [])
        self.instructions = dict(instructions or DEFAULT_INSTRUCTIONS)
        super().__init__(feature_extractor, tokenizer, chat_template=chat_template or CHAT_TEMPLATE)

    # -- conditioning ---------------------------------------------------------------------------------------------
    def canonical_mv_type(self, mv_type: str) -> str:
        """The taxonomy's spelling of ``mv_type`` (case-insensitive); unknown types are an error listing them."""
        if not isinstance(mv_type, str) or not mv_type.strip():
            raise ValueError(f"mv_type must be a non-empty string, got {mv_type!r}")
        known = {name.casefold(): name for name in self.mv_types}
        if mv_type.strip().casefold() not in known:
            raise ValueError(f"unknown MV type {mv_type!r}; known types: {', '.join(self.mv_types)}")
        return known[mv_type.strip().casefold()]

    def build_messages(
        self,
        task: str = "mv_description",
        genre_tags: Sequence[str] | None = None,
        mv_type: str | None = None,
        lyrics_understanding: str | None = None,
        answer: str | None = None,
        frame_boundaries: Sequence[tuple[float, float]] | None = None,
    ) -> list[dict]:
        """The conversation for one example; conditioning fields left as ``None`` are omitted.

        ``frame_boundaries``: ``(start, end)`` seconds of the frames to describe (e.g. beat-aligned); the prompt
        then lists them (`` Frames: [00:00-00:02], [00:02-00:04.50].``) and asks for each of them, with the
        task's ``"<task>_given_frames"`` instruction. Without them the prompt is the 2-s-frame one.
        """
        tasks = [name for name in self.instructions if not name.endswith(GIVEN_FRAMES_SUFFIX)]
        if task not in tasks:
            raise ValueError(f"unknown task {task!r}; known tasks: {', '.join(tasks)}")
        instruction = self.instructions[task]
        if frame_boundaries is not None:
            spans = [format_frame_span(s, e) for s, e in validate_frame_boundaries(frame_boundaries)]
            if task + GIVEN_FRAMES_SUFFIX not in self.instructions:
                raise ValueError(f"task {task!r} takes no frame_boundaries (this processor has no "
                                 f"{task + GIVEN_FRAMES_SUFFIX!r} instruction)")
            instruction = self.instructions[task + GIVEN_FRAMES_SUFFIX]
        content: list[dict] = [{"type": "audio"}]
        if genre_tags is not None:
            if isinstance(genre_tags, str) or not all(isinstance(g, str) and g.strip() for g in genre_tags):
                raise ValueError(f"genre_tags must be a list of non-empty strings, got {genre_tags!r}")
            if genre_tags:
                content.append({"type": "genre_tags", "genre_tags": [" ".join(g.split()) for g in genre_tags]})
        if mv_type is not None:
            content.append({"type": "mv_type", "mv_type": self.canonical_mv_type(mv_type)})
        if lyrics_understanding is not None:
            if not isinstance(lyrics_understanding, str) or not lyrics_understanding.strip():
                raise ValueError(f"lyrics_understanding must be a non-empty string, got {lyrics_understanding!r}")
            content.append({"type": "lyrics_understanding", "lyrics_understanding": " ".join(lyrics_understanding.split())})
        if frame_boundaries is not None:
            content.append({"type": "frame_boundaries", "frame_boundaries": spans})
        content.append({"type": "text", "text": instruction})
        messages = [{"role": "user", "content": content}]
        if answer is not None:
            messages.append({"role": "assistant", "content": answer})
        return messages

    def apply_chat_template(self, conversation, chat_template=None, **kwargs):
        """The processor's chat template, with ``audio_token`` and ``stop_string`` available to it."""
        kwargs.setdefault("audio_token", self.audio_token)
        kwargs.setdefault("stop_string", self.stop_string)
        return super().apply_chat_template(conversation, chat_template=chat_template, **kwargs)

    def build_prompt(self, task: str = "mv_description", **conditioning) -> str:
        """The generation prompt (ends with ``### Assistant:``) for one example.

        ``conditioning``: ``genre_tags``, ``mv_type``, ``lyrics_understanding``, ``frame_boundaries`` (see
        :meth:`build_messages`); it is validated here, so an unknown MV type is an error before any audio is read.
        """
        if conditioning.get("frame_boundaries") is not None and "frame_boundaries" not in (self.chat_template or ""):
            raise ValueError("this processor's chat template does not render frame_boundaries (it predates them); "
                             "re-save the checkpoint's processor with the current CHAT_TEMPLATE")
        return self.apply_chat_template(self.build_messages(task, **conditioning), add_generation_prompt=True)

    def build_answer(self, answer: str) -> str:
        """The answer as the template writes it after the prompt (``" {answer}\\n###"``)."""
        messages = self.build_messages("captioning")
        prompt = self.apply_chat_template(messages, add_generation_prompt=True)
        full = self.apply_chat_template(messages + [{"role": "assistant", "content": answer}])
        return full[len(prompt):]

    # -- tokenisation ---------------------------------------------------------------------------------------------
    def __call__(
        self,
        text: str | list[str] | None = None,
        audio: Any = None,
        sampling_rate: int | Sequence[int] | None = None,
        audio_embeds: Any = None,
        answers: str | list[str] | None = None,
        max_length: int | None = None,
        padding_side: str | None = None,
        return_tensors: str | None = "pt",
        **kwargs,
    ) -> BatchFeature:
        """Tokenise prompts (each with one ``audio_token``) and featurise their audio.

        Args:
            text: prompt(s) from :meth:`build_prompt`.
            audio: one per prompt: waveforms, file paths, encoded bytes, ``{"bytes", "path"}`` or decoded
                ``{"array", "sampling_rate", "path"}`` dicts (:meth:`decode_audio`; errors name their ``path``).
            sampling_rate: the waveforms' rate, one for all or one per waveform (required for bare arrays).
            audio_embeds: precomputed per-clip encoder embeddings (batch, clips, dim) instead of ``audio``.
            answers: target answer(s) for training: adds ``labels`` (-100 on the prompt and padding).
            max_length: truncate the answer so that prompt + answer fit (the prompt is never cut).
            padding_side: ``"left"`` (default without answers: generation) or ``"right"`` (default with answers).
        """
        if text is None:
            raise ValueError("M2MVProcessor needs text= (prompts built with build_prompt)")
        prompts = [text] if isinstance(text, str) else list(text)
        if answers is not None:
            answers = [answers] if isinstance(answers, str) else list(answers)
            if len(answers) != len(prompts):
                raise ValueError(f"got {len(prompts)} prompts but {len(answers)} answers")
        has_audio = audio is not None or audio_embeds is not None
        for index, prompt in enumerate(prompts):
            count = prompt.count(self.audio_token)
            if count != (1 if has_audio else 0):
                raise ValueError(
                    f"prompt {index} holds {count} {self.audio_token!r} placeholders; expected "
                    f"{1 if has_audio else 0} ({'audio given' if has_audio else 'no audio given'})"
                )
        expanded = [p.replace(self.audio_token, self.audio_token * self.num_audio_tokens) for p in prompts]
        heads = None  # the input segments' ids
        if self.input_boundary:
            parts = [self._split_at_input_boundary(p) for p in expanded]
            heads = [self.tokenize_prompt(head) for head, _ in parts]
            rows = [head + self.tokenize_prompt(tail) for head, (_, tail) in zip(heads, parts)]
        else:
            rows = [self.tokenize_prompt(p) for p in expanded]
        labels = None
        if answers is not None:
            answer_ids = [self.tokenizer(self.build_answer(a), add_special_tokens=False)["input_ids"] for a in answers]
            if max_length is not None:
                for index, row in enumerate(rows):
                    if len(row) >= max_length:
                        raise ValueError(f"prompt {index} has {len(row)} tokens, max_length is {max_length}")
                answer_ids = [ids[: max_length - len(row)] for row, ids in zip(rows, answer_ids)]
            labels = [[-100] * len(row) + ids for row, ids in zip(rows, answer_ids)]
            rows = [row + ids for row, ids in zip(rows, answer_ids)]
        side = padding_side or ("right" if answers is not None else "left")
        data = self._pad(rows, labels, side)
        if self.fuse_input:
            marks = [[1] * len(head) + [0] * (len(row) - len(head)) for head, row in zip(heads, rows)]
            data["fusion_mask"] = self._pad(marks, None, side, pad_id=0)["input_ids"]
        if audio is not None:
            features = self.audio_features(audio, sampling_rate)
            if len(features) != len(prompts):
                raise ValueError(f"got {len(prompts)} prompts but {len(features)} audio inputs")
            data["input_features"] = features
        if audio_embeds is not None:
            data["audio_embeds"] = np.asarray(audio_embeds, dtype=np.float32)
        return BatchFeature(data, tensor_type=return_tensors)

    def tokenize_prompt(self, prompt: str) -> list[int]:
        """Token ids of one rendered prompt (see ``tokenize_segments``)."""
        if not self.tokenize_segments:
            return self.tokenizer(prompt, add_special_tokens=True)["input_ids"]
        specials = set(self.tokenizer.all_special_tokens) | set(self.tokenizer.get_added_vocab())
        pattern = "(" + "|".join(re.escape(t) for t in sorted(specials, key=len, reverse=True)) + ")"
        ids: list[int] = []
        for piece in re.split(pattern, prompt):
            if piece in specials:
                ids.append(self.tokenizer.convert_tokens_to_ids(piece))
            elif piece:
                ids.extend(self.tokenizer(piece, add_special_tokens=False)["input_ids"])
        return ids

    def _split_at_input_boundary(self, prompt: str) -> tuple[str, str]:
        """``(input segment, the rest)`` of a prompt, split where ``input_boundary`` starts."""
        index = prompt.find(self.input_boundary)
        if index < 0:
            raise ValueError(f"the prompt has no {self.input_boundary!r}, where its input segment ends")
        return prompt[:index], prompt[index:]

    def _pad(self, rows: list[list[int]], labels: list[list[int]] | None, side: str,
             pad_id: int | None = None) -> dict:
        if side not in ("left", "right"):
            raise ValueError(f"padding_side must be 'left' or 'right', got {side!r}")
        pad_id = self.tokenizer.pad_token_id if pad_id is None else pad_id
        if pad_id is None:
            raise ValueError("the tokenizer has no pad token; set tokenizer.pad_token")
        width = max(len(row) for row in rows)

        def pad(row: list[int], value: int) -> list[int]:
            filler = [value] * (width - len(row))
            return filler + row if side == "left" else row + filler

        data = {
            "input_ids": np.array([pad(r, pad_id) for r in rows], dtype=np.int64),
            "attention_mask": np.array([pad([1] * len(r), 0) for r in rows], dtype=np.int64),
        }
        if labels is not None:
            data["labels"] = np.array([pad(r, -100) for r in labels], dtype=np.int64)
        return data

    # -- audio ----------------------------------------------------------------------------------------------------
    def audio_features(self, audio: Any, sampling_rate: int | Sequence[int] | None = None) -> np.ndarray:
        """The audio encoder's inputs for ``audio`` (what ``__call__`` returns as ``input_features``).

        ImageBind's extractor reads every kind of source itself. A transformers extractor (Whisper's) reads 1-D
        arrays at its own rate only: the sources are decoded, down-mixed and resampled first, with the same errors.
        """
        extractor = self.feature_extractor
        if getattr(extractor, "reads_audio_sources", False):
            return extractor(audio, sampling_rate=sampling_rate)["input_features"]
        waveforms = mono_waveforms(audio, sampling_rate, extractor.sampling_rate)
        features = extractor(waveforms, sampling_rate=extractor.sampling_rate, return_tensors="np")
        return features[extractor.model_input_names[0]]

    @staticmethod
    def decode_audio(source: Any) -> dict:
        """Decode a file path, encoded bytes or ``{"bytes", "path"}`` dict once, with this checkpoint's decoder:
        ``{"array", "sampling_rate", "path"}``, which ``__call__`` takes as audio (errors name the path)."""
        return decode_audio(source)

    # -- decoding -------------------------------------------------------------------------------------------------
    def decode_answers(self, generated: torch.Tensor, prompt_length: int) -> list[str]:
        """The generated answers (after the prompt), cut at the ``stop_string`` and stripped."""
        texts = self.tokenizer.batch_decode(generated[:, prompt_length:], skip_special_tokens=True)
        return [strip_stop(t, self.stop_string) for t in texts]

    def post_process_mv_description(self, texts: Sequence[str],
                                    expected_duration: float | None = None) -> list[MVDescription]:
        """Parse generated texts into :class:`MVDescription` objects."""
        return [parse_mv_description(t, expected_duration) for t in texts]

    @staticmethod
    def frame_boundary_problem(frames: Sequence[tuple[float, float]],
                               boundaries: Sequence[tuple[float, float]]) -> str | None:
        """None when generated ``frames`` are the ``boundaries`` the prompt listed, else what differs."""
        return frame_boundary_problem(frames, boundaries)

    @property
    def model_input_names(self) -> list[str]:
        return ["input_ids", "attention_mask", "input_features", "audio_embeds", "fusion_mask"]


__all__ = ["CHAT_TEMPLATE", "DEEPRESONANCE_CHAT_TEMPLATE", "DEFAULT_INSTRUCTIONS", "M2MVProcessor",
           "NEXTGPT_CHAT_TEMPLATE"]
