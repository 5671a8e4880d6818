"""Model cards of m2mv checkpoints, written with ``huggingface_hub``'s ``ModelCard`` / ``ModelCardData``.

Every fact a later step needs is kept in the card's YAML metadata and read back as YAML, never from its prose:

- ``m2mv``: :class:`CardFacts` (which parts have random weights, whether the sizes are toy ones, where the language
  model and the audio encoder come from);
- ``m2mv_training`` (trained stages): the stage, its configuration, lineage and losses.

A card written before these facts existed has none: :func:`read_card` then says so (``facts is None``) and a card
that builds on it states that the random parts are unknown.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

from huggingface_hub import ModelCard, ModelCardData

from m2mv.data.fileio import atomic_write_text

FACTS_KEY = "m2mv"
TAGS = ["m2mv", "music", "music-video", "audio-text-to-text"]
USAGE = """```python
from transformers import AutoModel, AutoProcessor
model = AutoModel.from_pretrained("<this folder or repo>", trust_remote_code=True)
processor = AutoProcessor.from_pretrained("<this folder or repo>", trust_remote_code=True)
```"""


@dataclass
class CardFacts:
    """What a card states about its weights (the ``m2mv`` block of its YAML)."""

    random_parts: list[str] = field(default_factory=list)  # e.g. ["audio encoder"]: weights drawn at random
    tiny: bool = False  # toy sizes (tests and demos)
    language_model: str | None = None
    audio_encoder: str | None = None
    num_audio_tokens: int | None = None
    audio_scale: float | None = None  # the audio config's logit_scale (1: NExT-GPT, the paper's; 20: Meta's)
    audio_encoder_type: str = "imagebind"  # or the transformers model type of the encoder ("whisper", ...)

    @classmethod
    def from_dict(cls, data: dict) -> "CardFacts":
        known = {name: data[name] for name in cls.__dataclass_fields__ if name in data}
        return cls(**known)


def random_weights_warning(facts: CardFacts | None, trained: bool = False) -> str:
    """The card's warning line about random weights ("" when none are random); ``trained``: the card of a stage
    trained from a checkpoint with those facts."""
    if facts is None:
        return ("> **Random weights:** unknown: this checkpoint was trained from one whose card predates m2mv's card "
                "facts; check that card.\n")
    if not facts.random_parts and not facts.tiny:
        return ""
    line = "> **Random weights:** " + (", ".join(facts.random_parts) or "none") + "."
    if facts.tiny:
        line += " Trained from a **tiny random** checkpoint (toy sizes):" if trained else " A **tiny random** " \
            "checkpoint (toy sizes):"
    return line + " for tests and demos only; it does not describe music meaningfully.\n"


BASE_TEMPLATE = """---
{{ card_data }}
---
# {{ name }}

{{ warning }}
m2mv: music audio in, a music-video description (overview + frame-by-frame breakdown) out. Architecture of
"Cross-Modal Learning for Music-to-Music-Video Description Generation" (arXiv 2503.11190): a frozen audio
encoder (the paper's is ImageBind's audio branch), a linear adaptor, and a Llama-family language model.

- Language model: {{ facts.language_model }}
- Audio encoder: {{ facts.audio_encoder }}
- Audio tokens per input: {{ facts.num_audio_tokens }}
{% if scale %}- Audio embedding: {{ scale }}
{% endif %}- {{ adaptor }}
{{ notes }}
{{ usage }}
"""


def audio_scale_text(scale: float | None) -> str:
    """How a card names the audio embedding's scale ("" when unknown)."""
    if scale is None:
        return ""
    framework = {1.0: "NExT-GPT's audio path, the paper's framework", 20.0: "Meta's ImageBind"}.get(float(scale))
    return f"L2-normalised, times {float(scale):g}" + (f" ({framework})" if framework else "")


def base_card(name: str, facts: CardFacts, adaptor: str, notes: str = "", license: str = "other") -> ModelCard:
    """The card of a checkpoint built by the converter or the tiny builders (nothing trained by m2mv yet)."""
    tags = TAGS + [facts.audio_encoder_type] + (["tiny-random"] if facts.tiny else []) + \
        (["random-weights"] if facts.random_parts else [])
    data = ModelCardData(library_name="transformers", license=license, pipeline_tag="audio-text-to-text", tags=tags,
                         **{FACTS_KEY: asdict(facts)})
    return ModelCard.from_template(data, template_str=BASE_TEMPLATE, name=name, facts=facts, adaptor=adaptor,
                                   warning=random_weights_warning(facts), scale=audio_scale_text(facts.audio_scale),
                                   notes=notes and f"\n{notes}\n", usage=USAGE)


def read_card(folder: str | Path) -> tuple[dict, CardFacts | None]:
    """``(YAML metadata, facts)`` of a checkpoint's ``README.md``: ``({}, None)`` without a card; facts None for a
    card that predates them."""
    path = Path(folder) / "README.md"
    if not path.is_file():
        return {}, None
    meta = ModelCard.load(path).data.to_dict()
    facts = meta.get(FACTS_KEY)
    return meta, CardFacts.from_dict(facts) if isinstance(facts, dict) else None


def write_card(card: ModelCard, folder: str | Path) -> Path:
    """Write ``card`` as ``folder/README.md`` atomically."""
    path = Path(folder) / "README.md"
    atomic_write_text(path, str(card))
    return path


TRAINING_TEMPLATE = """---
{{ card_data }}
---
# {{ name }}
{{ warning }}
m2mv stage {{ stage }} ({{ task }}), trained with TRL's `SFTTrainer` from `{{ base_model }}` on `{{ dataset }}`
(config `{{ config.dataset_config }}`, split `{{ config.train_split }}`). Trained: {{ trained }}.

| | loss |
|---|---|
| final training loss (last logged step) | {{ losses.final_train_loss }} |
| mean training loss | {{ losses.mean_train_loss }} |
| held-out loss before training | {{ losses.initial_eval_loss }} |
| held-out loss after training (split `{{ config.eval_split }}`) | {{ losses.final_eval_loss }} |

Losses are token-mean cross-entropy over the answer tokens; "n/a" where the run did not measure it. The full
training configuration is in this card's metadata (`m2mv_training`) and in `{{ record_file }}`.

{{ usage }}
"""


def training_card(record: dict, facts: CardFacts | None, record_file: str, adapter_folder: str) -> ModelCard:
    """The card of a trained stage: YAML metadata (base model, dataset, tags, library, license, the weights' facts,
    the training configuration and results as numbers) and a short text saying what was trained and what is
    random."""
    stage, config, results = record["stage"], record["config"], record["results"]
    lora = config.get("lora")
    tiny = bool(facts and facts.tiny)
    tags = TAGS + ["trl", "sft", f"m2mv-stage{stage}"] + (["lora"] if lora else []) + \
        (["tiny-random"] if tiny else []) + (["random-weights"] if facts is None or facts.random_parts else [])
    data = ModelCardData(
        base_model=record["base_model"], datasets=[record["dataset"]], library_name="transformers",
        license=record["license"], pipeline_tag="audio-text-to-text", tags=tags,
        **{FACTS_KEY: asdict(facts) if facts is not None else None},
        m2mv_training={"stage": stage, "config": config, "lineage": record["lineage"],
                       "results": {k: v for k, v in results.items() if not k.endswith("_curve")}})
    if lora:
        trained = (f"the adaptor and a LoRA (r={lora['r']}, alpha={lora['alpha']}) on the language model's "
                   f"{'/'.join(lora['target_modules'])}, merged into the weights (the adapter alone is in "
                   f"`{adapter_folder}/`)")
    else:
        trained = "the adaptor only (audio encoder and language model frozen)"
    losses = {k: "n/a" if results.get(k) is None else f"{results[k]:.4f}"
              for k in ("final_train_loss", "mean_train_loss", "initial_eval_loss", "final_eval_loss")}
    return ModelCard.from_template(
        data, template_str=TRAINING_TEMPLATE, name=record["name"], warning=random_weights_warning(facts, trained=True),
        stage=stage, task="music captioning" if stage == 1 else "music-video description",
        base_model=record["base_model"], dataset=record["dataset"], config=config, trained=trained, losses=losses,
        record_file=record_file, usage=USAGE)
