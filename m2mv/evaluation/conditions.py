"""The benchmark's runs: the paper's input ablation and the frame alignment, and the keys that name their outputs.

Kept apart from the runner so that the command line can list them without importing it.
"""

from __future__ import annotations

from m2mv.beats import ALIGN_MODES
from m2mv.data.schema import CONDITIONING_COLUMNS
from m2mv.errors import BenchmarkError

RESULTS_FILE = "results.json"

# The paper's input ablation, after two control rows: condition key -> (label, conditioning columns given to the
# prompt). Both controls are music only. ``zeroed_audio`` zeroes the audio (the model sees its encoder's output for
# all-zero features, as training's ``zero_audio`` gives); ``other_audio`` gives each row another row's music, of
# other genre tags where there is one (benchmark.other_audio_rows). Zeroed features are an input no training row
# had, so a model can score above them on the music-only prompt without telling one song from another; another
# song's audio is real music: only a model that hears its own clip scores above that row.
ZEROED_AUDIO = "zeroed_audio"
OTHER_AUDIO = "other_audio"
ABLATION: dict[str, tuple[str, tuple[str, ...]]] = {
    ZEROED_AUDIO: ("zeroed audio (no music)", ()),
    OTHER_AUDIO: ("another song's audio", ()),
    "music_only": ("music only", ()),
    "genre": ("+ genre tags", ("genre_tags",)),
    "mv_type": ("+ MV type", ("mv_type",)),
    "lyrics": ("+ lyrics understanding", ("lyrics_understanding",)),
    "all": ("all inputs", CONDITIONING_COLUMNS),
}
DEFAULT_CONDITION = "all"


def other_audio_rows(ds, rows: int) -> list[int]:
    """The row whose audio ``other_audio`` gives each of rows ``0..rows-1`` of ``ds``: the next of those rows
    (wrapping round) with other genre tags, else the next of another song. Real music, so an input of the model's
    training distribution, but not the row's own."""
    if rows < 2:
        raise BenchmarkError(f"the {OTHER_AUDIO} condition gives each row another row's audio: it needs at least 2 "
                             f"rows, got {rows}")
    head = ds.select(range(rows))
    songs = head["song_id"]
    genres = [tuple(g or ()) for g in head["genre_tags"]] if "genre_tags" in ds.column_names else [()] * rows
    partners = []
    for i in range(rows):
        after = [(i + step) % rows for step in range(1, rows)]
        other_genre = [j for j in after if genres[j] != genres[i]]
        other_song = [j for j in after if songs[j] != songs[i]]
        if not other_song:
            raise BenchmarkError(f"the {OTHER_AUDIO} condition needs rows of another song than {songs[i]!r}")
        partners.append((other_genre or other_song)[0])
    return partners
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
