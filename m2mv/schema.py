"""The dataset contract shared by the dataset builder, training and evaluation: configs, columns, features.

Audio is stored encoded (``datasets.Audio(decode=False)``: ``{"bytes", "path"}``) and decoded with soundfile by
the processor, so no torchcodec/FFmpeg is needed.
"""

from __future__ import annotations

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
        "description": "target MV description, in the format of processing_m2mv.format_mv_description",
    },
}

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
        return Features({**common, "genre_tags": List(Value("string")), "mv_type": Value("string"),
                         "lyrics_understanding": Value("string"), "description": Value("string")})
    raise ValueError(f"unknown dataset config {config_name!r}; known: {CAPTIONING}, {MV_DESCRIPTION}")


def missing_columns(config_name: str, column_names) -> list[str]:
    """Columns a config needs that a dataset lacks."""
    return [c for c in COLUMNS[config_name] if c not in set(column_names)]
