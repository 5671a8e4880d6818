"""The benchmark's runs: the paper's input ablation and the frame alignment, and the keys that name their outputs.

Kept apart from the runner so that the command line can list them without importing it.
"""

from __future__ import annotations

from m2mv.beats import ALIGN_MODES
from m2mv.data.schema import CONDITIONING_COLUMNS

RESULTS_FILE = "results.json"

# The paper's input ablation, after a control row: condition key -> (label, conditioning columns given to the
# prompt). The control, ``zeroed_audio``, is music only with the audio zeroed (the model sees its encoder's output
# for all-zero features, as training's ``zero_audio`` gives): a model that uses the music scores above it.
ZEROED_AUDIO = "zeroed_audio"
ABLATION: dict[str, tuple[str, tuple[str, ...]]] = {
    ZEROED_AUDIO: ("zeroed audio (no music)", ()),
    "music_only": ("music only", ()),
    "genre": ("+ genre tags", ("genre_tags",)),
    "mv_type": ("+ MV type", ("mv_type",)),
    "lyrics": ("+ lyrics understanding", ("lyrics_understanding",)),
    "all": ("all inputs", CONDITIONING_COLUMNS),
}
DEFAULT_CONDITION = "all"
# How the prompt is written: the checkpoint's own template and decoding, or NExT-GPT's (the paper's zero-shot
# baseline row; its default condition is music only). Value: (default conditions, what the table says).
PROMPTS: dict[str, tuple[tuple[str, ...] | None, str]] = {
    "checkpoint": (None, ""),
    "nextgpt": (("music_only",), "NExT-GPT zero-shot baseline: NExT-GPT's prompt and decoding"),
}
ALIGN_LABELS = {"fixed": "", "beats": ", beat-aligned frames"}  # appended to the condition's label


def run_key(condition: str, align: str = "fixed") -> str:
    """The key of one condition under one frame alignment (``all``, ``all-beats``): it names the predictions file,
    the metrics entry and the model card's ``metric_config``, so outputs of different alignments never mix."""
    return condition if align == "fixed" else f"{condition}-{align}"


def split_key(key: str) -> tuple[str, str]:
    """Inverse of :func:`run_key`: ``"all-beats"`` -> ``("all", "beats")``."""
    for align in ALIGN_MODES:
        if align != "fixed" and key.endswith(f"-{align}") and key.removesuffix(f"-{align}") in ABLATION:
            return key.removesuffix(f"-{align}"), align
    return key, "fixed"


def run_label(key: str) -> str:
    """The table / model-card label of a run key: ``"all inputs"``, ``"all inputs, beat-aligned frames"``."""
    condition, align = split_key(key)
    return ABLATION[condition][0] + ALIGN_LABELS[align]


def results_file_name(align: str) -> str:
    """``results.json`` for fixed frames, ``results-beats.json`` for beat-aligned ones."""
    return RESULTS_FILE if align == "fixed" else RESULTS_FILE.replace(".json", f"-{align}.json")
