"""The MV type of a video, one of the taxonomy's 10 (``m2mv/data/mv_types.json``).

- :class:`EmbeddingTyper` (the offline default): sentence embeddings (mean-pooled, normalised) of the frame
  captions and of each type's name, description and typical setting; the type closest to the captions' mean wins.
  The real all-MiniLM-L6-v2 installs offline (``m2mv.data.offline_models.minilm_folder``).
- :class:`LLMTyper`: the chat LLM, its answer constrained to the labels (JSON ``enum``) and validated.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from transformers import AutoModel, AutoTokenizer

from m2mv.data.offline_models import minilm_folder
from m2mv.data.taxonomy import canonical_mv_type, mv_type_entries
from m2mv.errors import PipelineError
from m2mv.pipeline import prompts
from m2mv.pipeline.models import load_json_object


class EmbeddingTyper:
    """MV type by sentence-embedding similarity between the captions and the types' descriptions."""

    def __init__(self, model: str | Path | None = None):
        folder = Path(model) if model else minilm_folder()
        self.name = f"embedding similarity ({folder.parent.name}/{folder.name})" if model is None else str(model)
        self.tokenizer = AutoTokenizer.from_pretrained(folder)
        self.model = AutoModel.from_pretrained(folder).eval()
        self.types = [entry.name for entry in mv_type_entries()]
        self.type_embeddings = self.embed([f"{e.name}: {e.description} For example {e.setting}."
                                           for e in mv_type_entries()])

    def embed(self, texts: Sequence[str]) -> torch.Tensor:
        batch = self.tokenizer(list(texts), padding=True, truncation=True, max_length=256, return_tensors="pt")
        with torch.no_grad():
            states = self.model(**batch).last_hidden_state
        mask = batch["attention_mask"].unsqueeze(-1).float()
        return torch.nn.functional.normalize((states * mask).sum(1) / mask.sum(1), dim=-1)

    def mv_type(self, captions: Sequence[str]) -> tuple[str, dict[str, float]]:
        """``(type, cosine similarity of each type)``."""
        mean = torch.nn.functional.normalize(self.embed(captions).mean(0), dim=-1)
        scores = (self.type_embeddings @ mean).tolist()
        return self.types[int(torch.tensor(scores).argmax())], {t: round(s, 4) for t, s in zip(self.types, scores)}


class LLMTyper:
    """MV type by the chat LLM, constrained to the labels."""

    def __init__(self, chat):
        self.chat, self.name = chat, f"LLM ({chat.name})"
        self.types = [entry.name for entry in mv_type_entries()]

    def mv_type(self, captions: Sequence[str]) -> tuple[str, dict[str, float]]:
        question = prompts.MV_TYPE.format(captions="\n".join(f"- {c}" for c in captions),
                                          types="; ".join(self.types))
        schema = {"type": "object", "required": ["type"], "additionalProperties": False,
                  "properties": {"type": {"type": "string", "enum": self.types}}}
        (answer,) = self.chat.chat([[{"role": "user", "content": question + ' Answer as JSON: {"type": "..."}'}]],
                                   max_new_tokens=40, json_schema=schema)
        value = load_json_object(answer) or {}
        try:
            return canonical_mv_type(str(value.get("type", answer))), {}
        except ValueError as err:
            raise PipelineError(f"{self.chat.name} answered no MV type of the taxonomy: {answer[:80]!r}") from err
