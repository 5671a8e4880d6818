"""The dataset contract shared by the dataset builders, training and evaluation: configs, columns, features.

Audio is stored encoded (``datasets.Audio(decode=False)``: ``{"bytes", "path"}``) and decoded with soundfile by
the processor, so no torchcodec/FFmpeg is needed. An ``mv_description`` row holds its target twice: as the text the
model learns to write (``description``) and as structured ``frames`` (``start``, ``end``, ``text``), so that the
frame spans are read, never parsed back from the text.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from mv_format_m2mv import format_mv_description, parse_mv_description

CAPTIONING = "captioning"  # stage 1: audio -> caption
MV_DESCRIPTION = "mv_description"  # stage 2: audio + conditioning -> MV description

# config name -> column name -> meaning
COLUMNS: dict[str, dict[str, str]] = {
    CAPTIONING: {
        "song_id": "stable song id (Music4All id, or the demo corpus clip id)",
        "artist": "artist name (used for artist-disjoint splits)",
        "audio": "encoded audio: {'bytes': ..., 'path': ...}",
        "caption": "target caption",
        "caption_source": "'user' (a supplied caption file) or 'rendered_from_tags' (synthetic, from tags/genres)",
    },
    MV_DESCRIPTION: {
        "song_id": "stable song id",
        "artist": "artist name",
        "audio": "encoded audio: {'bytes': ..., 'path': ...}",
        "genre_tags": "list of genre tags",
        "mv_type": "one MV type of the taxonomy (m2mv/data/mv_types.json)",
        "lyrics_understanding": "lyrics understanding text, or None",
        "description": "target MV description, in m2mv's MV format (mv_format_m2mv.format_mv_description)",
        "frames": "the description's frames: a list of {start, end, text} (seconds), the same as in its text",
        "provenance": "JSON: how the row was made (pipeline, models, prompt version, clip offset and confidence), "
                      "or None",
    },
}
# Columns that datasets written before a column existed may lack; the reader derives them (m2mv.data.loading).
DERIVED_COLUMNS = {MV_DESCRIPTION: ("frames",)}
# Columns that only some builders fill (None elsewhere); a dataset without them is complete.
OPTIONAL_COLUMNS = {MV_DESCRIPTION: ("provenance",)}

# Target column of each config, and which conditioning columns the processor reads.
TARGET_COLUMN = {CAPTIONING: "caption", MV_DESCRIPTION: "description"}
TASK = {CAPTIONING: "captioning", MV_DESCRIPTION: "mv_description"}
CONDITIONING_COLUMNS = ("genre_tags", "mv_type", "lyrics_understanding")

# Precomputed encoder embeddings live beside a dataset: one row per song, 3 x 1024 per-clip embeddings, tagged
# with the encoder weights' hash so stale ones are refused.
EMBEDDINGS_COLUMNS = {"song_id": "song id", "audio_embeds": "float32 [clips][output_dim]",
                      "encoder_hash": "sha256 of the audio encoder's weights"}


def features(config_name: str):
    """``datasets.Features`` of a config."""
    from datasets import Audio, Features, List, Value

    common = {"song_id": Value("string"), "artist": Value("string"), "audio": Audio(decode=False)}
    if config_name == CAPTIONING:
        return Features({**common, "caption": Value("string"), "caption_source": Value("string")})
    if config_name == MV_DESCRIPTION:
        frame = {"start": Value("float64"), "end": Value("float64"), "text": Value("string")}
        return Features({**common, "genre_tags": List(Value("string")), "mv_type": Value("string"),
                         "lyrics_understanding": Value("string"), "description": Value("string"),
                         "frames": List(frame), "provenance": Value("string")})
    raise ValueError(f"unknown dataset config {config_name!r}; known: {CAPTIONING}, {MV_DESCRIPTION}")


def missing_columns(config_name: str, column_names: Iterable[str]) -> list[str]:
    """Columns a config needs that a dataset lacks (columns the reader can derive, and optional ones, are not
    needed)."""
    have = set(column_names)
    spare = set(DERIVED_COLUMNS.get(config_name, ())) | set(OPTIONAL_COLUMNS.get(config_name, ()))
    return [c for c in COLUMNS[config_name] if c not in have and c not in spare]


def description_columns(description: str) -> dict:
    """The ``description`` and ``frames`` values of a target text (its frames read from it once, when written)."""
    return {"description": description, "frames": frames_of(description)}


def description_fields(overview: str, frames) -> dict:
    """The ``description`` and ``frames`` values of a target: the text in m2mv's MV format and its frames."""
    return description_columns(format_mv_description(overview, frames))


def frames_of(description: str) -> list[dict]:
    """The ``frames`` value of a description text: ``[{"start", "end", "text"}, ...]``."""
    return [{"start": f.start, "end": f.end, "text": f.text} for f in parse_mv_description(description).frames]


def frame_spans(frames: Iterable[Mapping]) -> list[tuple[float, float]]:
    """``(start, end)`` of each frame of a ``frames`` value."""
    return [(float(f["start"]), float(f["end"])) for f in frames]


def conditioning(row: Mapping, columns: Iterable[str] = CONDITIONING_COLUMNS) -> dict:
    """The prompt's conditioning from a row: only ``columns``, and only values that are present (a missing, empty or
    blank value is left out; blank genre tags are dropped)."""
    given: dict = {}
    for name in columns:
        value = row.get(name)
        if name == "genre_tags" and value is not None:
            value = [tag for tag in value if tag and tag.strip()]
        if value is None or (isinstance(value, str) and not value.strip()) or (isinstance(value, list) and not value):
            continue
        given[name] = list(value) if name == "genre_tags" else value
    return given
