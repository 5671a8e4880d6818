"""Precomputed embeddings of the frozen audio encoder, beside a built dataset: compute, locate, validate.

``DATASET_ROOT/embeddings/<encoder_hash[:16]>.parquet`` holds one row per song id with its encoder output before
the adaptor (ImageBind: its per-clip embeddings, 3 x 1024; a time-axis encoder: its pooled states, e.g. 15 x 512 for
Whisper-base), tagged with the sha256 of the encoder's weights. Training and evaluation use them when the hash
matches their model's encoder and refuse stale ones. Running the 86M-parameter encoder over 3 clips for every sample
at every step is what makes naive training slow.

Write them with ``m2mv embed --model CHECKPOINT --dataset DATASET_ROOT`` (or :func:`compute_embeddings`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from datasets import load_dataset
from tqdm.auto import tqdm

from m2mv.data.fileio import atomic_file
from m2mv.data.schema import EMBEDDINGS_COLUMNS
from m2mv.errors import DatasetError, StaleEmbeddingsError

EMBEDDINGS_DIR = "embeddings"
RECOMPUTE = "recompute them (m2mv embed --model MODEL --dataset DATASET) or set audio_embeds: off"


def audio_embeds_shape(config) -> tuple[int, int]:
    """(tokens, width) of one audio's encoder output before the adaptor. Checkpoints written before m2mv 0.5 run
    remote code without ``audio_embeds_shape``: their encoder is ImageBind's (clips x output_dim)."""
    shape = getattr(config, "audio_embeds_shape", None)
    audio = config.audio_config
    return tuple(shape) if shape is not None else (audio.clips_per_audio, audio.output_dim)


def uses_imagebind(config) -> bool:
    return bool(getattr(config, "uses_imagebind", True))


def encode_audio(model, features: torch.Tensor) -> torch.Tensor:
    """The encoder's output before the adaptor, (batch, tokens, width) (see ``encode_audio`` of the model); for
    the remote code of checkpoints before m2mv 0.5, its ImageBind tower's per-clip embeddings."""
    if hasattr(model, "encode_audio"):
        return model.encode_audio(features).pooler_output
    param = next(model.audio_tower.parameters())
    return model.audio_tower(features.to(param.device, param.dtype)).pooler_output


def zero_audio_features(model) -> torch.Tensor:
    """All-zero encoder inputs for one audio (older remote code: ImageBind's clip spectrograms)."""
    if hasattr(model, "zero_audio_features"):
        return model.zero_audio_features(1)
    audio = model.config.audio_config
    return torch.zeros(1, audio.clips_per_audio, audio.num_mel_bins, audio.target_length)


def audio_features(processor, audio) -> torch.Tensor:
    """The processor's encoder inputs for a batch of audio values (older remote code: its feature extractor's)."""
    if hasattr(processor, "audio_features"):
        return torch.from_numpy(np.asarray(processor.audio_features(audio)))
    return processor.feature_extractor(audio, return_tensors="pt")["input_features"]


def encoder_hash(model) -> str:
    """sha256 over the audio encoder's parameter names, shapes and float32 bytes (dtype-independent: bf16 rounding
    changes it, loading the same weights in another dtype and back does not), and its output scale when it is not
    Meta's 20 (so the hashes of checkpoints written before the scale was a choice stay what they were)."""
    digest = hashlib.sha256()
    if uses_imagebind(model.config):
        scale = float(model.audio_tower.config.logit_scale)
        if scale != 20.0:
            digest.update(f"logit_scale={scale!r}".encode())
    else:  # a time-axis encoder's embeddings are its states pooled: the pooling is part of what they are
        digest.update(f"{model.config.audio_config.model_type}:{model.config.num_audio_tokens}:"
                      f"{model.config.audio_pooling}".encode())
    for name, tensor in sorted(model.audio_tower.state_dict().items()):
        digest.update(name.encode())
        digest.update(str(tuple(tensor.shape)).encode())
        digest.update(tensor.detach().to(torch.float32).cpu().numpy().tobytes())
    return digest.hexdigest()


def embeddings_path(dataset_root: str | Path, hash_hex: str) -> Path:
    return Path(dataset_root) / EMBEDDINGS_DIR / f"{hash_hex[:16]}.parquet"


def _songs(dataset_root: Path) -> dict[str, dict]:
    """song id -> audio value, over every config and split of a built dataset."""
    shards = [s for s in sorted(dataset_root.glob("*/*.parquet")) if s.parent.name != EMBEDDINGS_DIR]
    if not shards:
        raise DatasetError(f"{dataset_root}: no Parquet shards (build the dataset first)")
    songs: dict[str, dict] = {}
    for shard in shards:
        table = pq.read_table(shard, columns=["song_id", "audio"])
        for song_id, audio in zip(table["song_id"].to_pylist(), table["audio"].to_pylist()):
            songs.setdefault(song_id, audio)
    return songs


def compute_embeddings(model, processor, dataset_root: str | Path, batch_size: int = 8,
                       progress: bool = True) -> Path:
    """Run ``model``'s audio encoder over every song of a dataset; write the embeddings file atomically."""
    dataset_root = Path(dataset_root)
    hash_hex = encoder_hash(model)
    songs = _songs(dataset_root)
    ids = sorted(songs)
    rows = []
    for start in tqdm(range(0, len(ids), batch_size), desc="encoding audio", unit="batch", disable=not progress):
        batch_ids = ids[start: start + batch_size]
        features = audio_features(processor, [songs[i] for i in batch_ids])
        with torch.no_grad():
            clips = encode_audio(model, features)
        rows.extend({"song_id": i, "audio_embeds": e.tolist(), "encoder_hash": hash_hex}
                    for i, e in zip(batch_ids, clips.float().cpu().numpy()))
    schema = pa.schema([("song_id", pa.string()), ("audio_embeds", pa.list_(pa.list_(pa.float32()))),
                        ("encoder_hash", pa.string())])
    path = embeddings_path(dataset_root, hash_hex)
    with atomic_file(path) as tmp:
        pq.write_table(pa.Table.from_pylist(rows, schema=schema), tmp)
    return path


class AudioEmbedsTable(Mapping):
    """Precomputed per-clip embeddings, ``song_id -> (clips, dim)`` float32, memory-mapped through ``datasets``
    (the whole table is not loaded into every training process)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        ds = load_dataset("parquet", data_files={"embeds": [str(self.path)]}, split="embeds")
        missing = [c for c in EMBEDDINGS_COLUMNS if c not in ds.column_names]
        if missing:
            raise StaleEmbeddingsError(f"{self.path}: embedding rows lack column(s) {missing} "
                                       f"(expected {list(EMBEDDINGS_COLUMNS)})")
        self.hashes = set(ds.unique("encoder_hash"))
        ids = ds["song_id"]
        self.index = {song_id: i for i, song_id in enumerate(ids)}
        if len(self.index) != len(ids):
            raise StaleEmbeddingsError(f"{self.path}: duplicate song_id rows")
        self.table = ds.select_columns(["audio_embeds"]).with_format("numpy")

    def __getitem__(self, song_id: str) -> np.ndarray:
        return np.asarray(self.table[self.index[song_id]]["audio_embeds"], dtype=np.float32)

    def __iter__(self) -> Iterator[str]:
        return iter(self.index)

    def __len__(self) -> int:
        return len(self.index)

    def get_batch(self, song_ids: Iterable[str]) -> np.ndarray:
        """(batch, clips, dim) embeddings of ``song_ids``; non-finite values are a StaleEmbeddingsError."""
        song_ids = list(song_ids)
        rows = np.asarray(self.table[[self.index[s] for s in song_ids]]["audio_embeds"], dtype=np.float32)
        if not np.isfinite(rows).all():
            raise StaleEmbeddingsError(f"{self.path}: non-finite precomputed embeddings for songs {song_ids}")
        return rows

    def validate(self, model, song_ids: Iterable[str] = ()) -> None:
        """Refuse embeddings of another encoder, of another shape, or that miss songs of the data."""
        expected = encoder_hash(model)
        if self.hashes != {expected}:
            found = ", ".join(sorted(h[:16] for h in self.hashes))
            raise StaleEmbeddingsError(
                f"precomputed audio embeddings in {self.path} are stale: they were made by audio encoder {found}, "
                f"the model's encoder is {expected[:16]}; {RECOMPUTE}")
        expected_shape = audio_embeds_shape(model.config)
        shape = tuple(np.asarray(self.table[0]["audio_embeds"]).shape)
        if shape != expected_shape:
            raise StaleEmbeddingsError(f"{self.path}: embeddings have shape {shape}, the model expects "
                                       f"{expected_shape}")
        missing = sorted({s for s in song_ids if s not in self.index})
        if missing:
            raise StaleEmbeddingsError(
                f"{self.path}: no embeddings for {len(missing)} songs of the data (e.g. {missing[:3]}): they have no "
                f"precomputed embedding; {RECOMPUTE}")


def locate_embeddings(dataset_root: str | Path, model, setting: str = "auto") -> Path | None:
    """The embeddings file to use for ``model``: None for ``setting="off"``, or ``"auto"`` when none were computed;
    else ``setting`` as a file, or this encoder's file in the folder ``setting`` or ``<dataset_root>/embeddings``.

    Embeddings that exist but not for this model's encoder are stale: an error, not a silent fallback.
    """
    if setting == "off":
        return None
    expected = encoder_hash(model)
    folder = Path(dataset_root) / EMBEDDINGS_DIR if setting == "auto" else Path(setting)
    if setting != "auto" and not folder.is_dir():
        if not folder.is_file():
            raise DatasetError(f"audio_embeds {folder}: no such file or folder (use `auto`, `off` or the path of "
                               "precomputed embeddings)")
        return folder
    found = sorted(folder.glob("*.parquet")) if folder.is_dir() else []
    if not found:
        if setting == "auto":
            return None
        raise DatasetError(f"audio_embeds {folder}: the folder holds no embeddings")
    path = folder / f"{expected[:16]}.parquet"
    if not path.is_file():
        raise StaleEmbeddingsError(
            f"precomputed audio embeddings in {folder} are stale: they were made by other audio encoder(s) "
            f"({', '.join(f.stem for f in found)}), none for this model's audio encoder {expected[:16]}; {RECOMPUTE}")
    return path


def load_embeddings(dataset_root: str | Path, model, song_ids: Iterable[str] = (),
                    setting: str = "auto") -> AudioEmbedsTable | None:
    """The validated embeddings of ``model``'s encoder for a dataset (see :func:`locate_embeddings`), or None."""
    path = locate_embeddings(dataset_root, model, setting)
    if path is None:
        return None
    table = AudioEmbedsTable(path)
    table.validate(model, song_ids)
    return table
