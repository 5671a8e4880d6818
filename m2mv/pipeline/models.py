"""The models the pipeline calls: a chat LLM and a frame captioner, each in-process (transformers) or served by any
OpenAI-compatible server (vLLM, TGI, llama.cpp's server, ``transformers serve``, a hosted API).

- :class:`LocalChatModel`: a transformers chat model, greedy, batched; with a JSON schema, decoding is constrained
  to it by llguidance (the ``pipeline`` extra), so the answer always parses;
- :class:`OpenAIChatModel`: ``chat.completions`` through the ``openai`` client with a configurable ``base_url`` and
  bounded concurrency; the schema is sent as ``response_format`` (servers that ignore it are caught by the
  caller's parser and retry);
- :class:`LocalCaptioner`: any image-text-to-text model (LLaVA, SmolVLM, Qwen2-VL...: a processor with a chat
  template) or an image-to-text one (BLIP...), batched;
- :class:`OpenAICaptioner`: a vision endpoint, frames sent as ``image_url`` data URLs.

A server that is down, refuses or times out is a :class:`~m2mv.errors.PipelineError` naming the URL.
"""

from __future__ import annotations

import base64
import io
import json
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from transformers import (AutoModelForCausalLM, AutoModelForImageTextToText, AutoProcessor, AutoTokenizer,
                          LogitsProcessor, LogitsProcessorList)

from m2mv.data.offline_models import smollm2_folder
from m2mv.errors import PipelineError

if TYPE_CHECKING:  # images are PIL's, but nothing here needs to import it (Pillow comes with the video extra)
    from PIL import Image

Conversation = list[dict]


def jpeg_bytes(image: "Image.Image", quality: int = 90) -> bytes:
    """A frame as JPEG bytes (how frames are kept on disk and sent to a vision endpoint)."""
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


def _dtype(name: str | None):
    return "auto" if name in (None, "auto") else getattr(torch, name)


class GrammarLogits(LogitsProcessor):
    """Constrain each row of a batch to its own grammar (llguidance, the ``pipeline`` extra; a grammar is Lark text
    or the result of ``LLMatcher.grammar_from_*``): tokens that cannot continue a valid answer get -inf; a finished
    answer may only end (``eos``, by default the tokenizer's)."""

    def __init__(self, tokenizer, grammars: Sequence[str], prompt_length: int, eos: int | None = None):
        try:
            import llguidance
            import llguidance.hf
        except ImportError as err:
            raise PipelineError("constrained decoding needs llguidance: pip install 'm2mv[pipeline]'") from err

        self.tokenizer = llguidance.hf.from_tokenizer(tokenizer)
        self.matchers = []
        for grammar in grammars:
            if not grammar.lstrip().startswith("{"):  # Lark text, not a compiled grammar
                grammar = llguidance.LLMatcher.grammar_from_lark(grammar)
            matcher = llguidance.LLMatcher(self.tokenizer, grammar, log_level=0)
            if matcher.is_error():
                raise PipelineError(f"bad grammar for constrained decoding: {matcher.get_error()}")
            self.matchers.append(matcher)
        self.prompt_length = prompt_length
        self.eos = tokenizer.eos_token_id if eos is None else eos

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        for row, matcher in enumerate(self.matchers):
            if input_ids.shape[1] > self.prompt_length and not matcher.is_stopped():
                matcher.consume_token(int(input_ids[row, -1]))
            if matcher.is_stopped() or matcher.is_error():
                allowed = np.zeros(scores.shape[1], dtype=bool)
                allowed[self.eos] = True
            else:
                bits = np.unpackbits(np.frombuffer(matcher.compute_bitmask(), dtype=np.uint8), bitorder="little")
                allowed = np.zeros(scores.shape[1], dtype=bool)
                allowed[: min(len(bits), scores.shape[1])] = bits[: scores.shape[1]].astype(bool)
            scores[row, torch.from_numpy(~allowed)] = -float("inf")
        return scores


def JSONSchemaLogits(tokenizer, schema: dict, batch: int, prompt_length: int) -> GrammarLogits:  # noqa: N802
    """Constrain every row of a batch to one JSON schema."""
    import llguidance

    return GrammarLogits(tokenizer, [llguidance.LLMatcher.grammar_from_json_schema(schema)] * batch, prompt_length)


class LocalChatModel:
    """A transformers chat model (a Hub id or a local folder), greedy and batched."""

    def __init__(self, model: str | Path, device: str = "cpu", dtype: str | None = "float32", batch_size: int = 4,
                 repetition_penalty: float = 1.2):
        self.name = str(model)
        self.repetition_penalty = repetition_penalty  # small greedy LMs loop without it
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(model)
            self.model = AutoModelForCausalLM.from_pretrained(model, dtype=_dtype(dtype)).to(device).eval()
        except (OSError, ValueError) as err:
            raise PipelineError(f"{model}: the chat model could not be loaded ({str(err).splitlines()[0]})") from err
        self.tokenizer.padding_side = "left"
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.batch_size = batch_size

    def chat(self, conversations: Sequence[Conversation], max_new_tokens: int = 512,
             json_schema: dict | None = None) -> list[str]:
        """One greedy answer per conversation."""
        answers = []
        for start in range(0, len(conversations), self.batch_size):
            answers += self._chat(conversations[start: start + self.batch_size], max_new_tokens, json_schema)
        return answers

    def _chat(self, conversations, max_new_tokens, json_schema) -> list[str]:
        prompts = [self.tokenizer.apply_chat_template(c, tokenize=False, add_generation_prompt=True)
                   for c in conversations]
        inputs = self.tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
        inputs = inputs.to(self.model.device)
        processors = None
        if json_schema is not None:
            processors = LogitsProcessorList([JSONSchemaLogits(self.tokenizer, json_schema, len(prompts),
                                                               inputs["input_ids"].shape[1])])
        with torch.no_grad():
            out = self.model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False,
                                      repetition_penalty=self.repetition_penalty, logits_processor=processors,
                                      pad_token_id=self.tokenizer.pad_token_id)
        return [t.strip() for t in self.tokenizer.batch_decode(out[:, inputs["input_ids"].shape[1]:],
                                                               skip_special_tokens=True)]


def _openai_client(base_url: str, api_key: str | None, timeout: float):
    from openai import OpenAI

    return OpenAI(base_url=base_url, api_key=api_key or "not-needed", timeout=timeout, max_retries=1)


def _call(base_url: str, request):
    """Run one request; the server's failures become a PipelineError naming the URL."""
    import openai

    try:
        return request()
    except openai.APITimeoutError as err:
        raise PipelineError(f"{base_url}: the server did not answer in time ({err})") from err
    except openai.APIConnectionError as err:
        raise PipelineError(f"{base_url}: cannot reach the server ({err}); is it running?") from err
    except openai.APIStatusError as err:
        raise PipelineError(f"{base_url}: the server refused the request (HTTP {err.status_code}: "
                            f"{str(err)[:300]})") from err


class OpenAIChatModel:
    """Any OpenAI-compatible chat server, ``concurrency`` requests at a time."""

    def __init__(self, base_url: str, model: str, api_key: str | None = None, timeout: float = 120.0,
                 concurrency: int = 4):
        self.name, self.base_url, self.concurrency = f"{model} @ {base_url}", base_url, max(1, concurrency)
        self.model = model
        self.client = _openai_client(base_url, api_key, timeout)

    def _one(self, conversation: Conversation, max_new_tokens: int, json_schema: dict | None) -> str:
        kwargs = {}
        if json_schema is not None:
            kwargs["response_format"] = {"type": "json_schema",
                                         "json_schema": {"name": "answer", "schema": json_schema, "strict": True}}
        reply = _call(self.base_url, lambda: self.client.chat.completions.create(
            model=self.model, messages=conversation, max_tokens=max_new_tokens, temperature=0.0, **kwargs))
        return (reply.choices[0].message.content or "").strip()

    def chat(self, conversations: Sequence[Conversation], max_new_tokens: int = 512,
             json_schema: dict | None = None) -> list[str]:
        with ThreadPoolExecutor(max_workers=self.concurrency) as pool:
            return list(pool.map(lambda c: self._one(c, max_new_tokens, json_schema), conversations))



def chat_model(model: str | Path | None = None, url: str | None = None, url_model: str | None = None, *,
               url_flag: str = "--llm-url", device: str = "cpu", dtype: str | None = "float32",
               timeout: float = 120.0, concurrency: int = 4) -> "LocalChatModel | OpenAIChatModel":
    """The chat LLM a command asked for: served (``url`` + ``url_model``, refused without a model name, the flag
    named by ``url_flag``), in-process (``model``: a Hub id or folder), or by default the real
    SmolLM2-135M-Instruct, in-process."""
    if url:
        if not url_model:
            model_flag = url_flag[:-len("-url")] + "-model" if url_flag.endswith("-url") else "the model name"
            raise PipelineError(f"{url_flag} needs {model_flag} (the model's name at {url})")
        if model:
            raise PipelineError(f"give either {url_flag} (a served model) or an in-process model ({model}), not both")
        return OpenAIChatModel(url, url_model, timeout=timeout, concurrency=concurrency)
    return LocalChatModel(model or smollm2_folder(), device=device, dtype=dtype)

class LocalCaptioner:
    """A transformers image-text-to-text model (or an image-to-text one without a chat template), batched."""

    def __init__(self, model: str | Path, device: str = "cpu", dtype: str | None = "float32", batch_size: int = 8,
                 max_new_tokens: int = 48):
        self.name = str(model)
        try:
            self.processor = AutoProcessor.from_pretrained(model)
            self.model = AutoModelForImageTextToText.from_pretrained(model, dtype=_dtype(dtype)).to(device).eval()
        except (OSError, ValueError) as err:
            raise PipelineError(f"{model}: the captioner could not be loaded ({str(err).splitlines()[0]})") from err
        tokenizer = getattr(self.processor, "tokenizer", None)
        if tokenizer is not None:
            tokenizer.padding_side = "left"
        self.batch_size, self.max_new_tokens = batch_size, max_new_tokens

    def caption(self, images: Sequence[Image.Image], prompt: str) -> list[str]:
        captions = []
        for start in range(0, len(images), self.batch_size):
            captions += self._caption(list(images[start: start + self.batch_size]), prompt)
        return captions

    def _caption(self, images: list[Image.Image], prompt: str) -> list[str]:
        if getattr(self.processor, "chat_template", None):
            conversation = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": prompt}]}]
            text = [self.processor.apply_chat_template(conversation, add_generation_prompt=True)] * len(images)
            inputs = self.processor(images=images, text=text, return_tensors="pt", padding=True)
        else:  # an image-to-text model (BLIP ...): no chat, the image alone
            inputs = self.processor(images=images, return_tensors="pt")
        inputs = inputs.to(self.model.device)
        with torch.no_grad():
            out = self.model.generate(**inputs, max_new_tokens=self.max_new_tokens, do_sample=False)
        if "input_ids" in inputs and out.shape[1] > inputs["input_ids"].shape[1]:
            out = out[:, inputs["input_ids"].shape[1]:]
        return [t.strip() for t in self.processor.batch_decode(out, skip_special_tokens=True)]


class OpenAICaptioner:
    """An OpenAI-compatible vision endpoint: each frame sent as a JPEG ``image_url`` data URL."""

    def __init__(self, base_url: str, model: str, api_key: str | None = None, timeout: float = 120.0,
                 concurrency: int = 4, max_new_tokens: int = 48):
        self.name, self.base_url, self.model = f"{model} @ {base_url}", base_url, model
        self.concurrency, self.max_new_tokens = max(1, concurrency), max_new_tokens
        self.client = _openai_client(base_url, api_key, timeout)

    def _one(self, image: Image.Image, prompt: str) -> str:
        url = "data:image/jpeg;base64," + base64.b64encode(jpeg_bytes(image)).decode("ascii")
        content = [{"type": "text", "text": prompt}, {"type": "image_url", "image_url": {"url": url}}]
        reply = _call(self.base_url, lambda: self.client.chat.completions.create(
            model=self.model, messages=[{"role": "user", "content": content}], max_tokens=self.max_new_tokens,
            temperature=0.0))
        return (reply.choices[0].message.content or "").strip()

    def caption(self, images: Sequence[Image.Image], prompt: str) -> list[str]:
        with ThreadPoolExecutor(max_workers=self.concurrency) as pool:
            return list(pool.map(lambda image: self._one(image, prompt), images))


def load_json_object(text: str) -> dict | None:
    """The first JSON object in a model's answer (models often wrap it in prose or code fences), or None."""
    start = text.find("{")
    while start != -1:
        try:
            value, _ = json.JSONDecoder().raw_decode(text[start:])
        except json.JSONDecodeError:
            start = text.find("{", start + 1)
            continue
        return value if isinstance(value, dict) else None
    return None
