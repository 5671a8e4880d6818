"""Precompute the frozen audio encoder's per-clip embeddings once, beside a built dataset.

    python -m dataset_scripts.embeddings --model CHECKPOINT --dataset DATASET_DIR [--batch-size 8]

Writes ``DATASET_DIR/embeddings/<encoder_hash[:16]>.parquet``: one row per song id with its 3 x 1024 per-clip
ImageBind embeddings, tagged with the sha256 of the encoder's weights. Training and evaluation use them when the
hash matches their model's encoder and refuse stale ones (:func:`load_embeddings`). Running the 86M-parameter
encoder over 3 clips for every sample at every step is what makes naive training slow.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from dataset_scripts.hf_dataset import DatasetBuildError

EMBEDDINGS_DIR = "embeddings"


def encoder_hash(model) -> str:
    """sha256 over the audio encoder's parameter names, shapes and float32 bytes (dtype-independent)."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.audio_tower.state_dict().items()):
        digest.update(name.encode())
        digest.update(str(tuple(tensor.shape)).encode())
        digest.update(tensor.detach().to(torch.float32).cpu().numpy().tobytes())
    return digest.hexdigest()


def embeddings_path(dataset_dir: str | Path, hash_hex: str) -> Path:
    return Path(dataset_dir) / EMBEDDINGS_DIR / f"{hash_hex[:16]}.parquet"


def _songs(dataset_dir: Path) -> dict[str, dict]:
    """song id -> audio value, over every config and split of a built dataset."""
    import pyarrow.parquet as pq

    songs: dict[str, dict] = {}
    shards = sorted(dataset_dir.glob("*/*.parquet"))
    shards = [s for s in shards if s.parent.name != EMBEDDINGS_DIR]
    if not shards:
        raise DatasetBuildError(f"{dataset_dir}: no Parquet shards (build the dataset first)")
    for shard in shards:
        table = pq.read_table(shard, columns=["song_id", "audio"])
        for song_id, audio in zip(table["song_id"].to_pylist(), table["audio"].to_pylist()):
            songs.setdefault(song_id, audio)
    return songs


def compute_embeddings(model_dir: str | Path, dataset_dir: str | Path, batch_size: int = 8,
                       progress: bool = True) -> Path:
    """Run the model's audio encoder over every song of a dataset; write the embeddings file atomically."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    from tqdm.auto import tqdm
    from transformers import AutoModel, AutoProcessor

    dataset_dir = Path(dataset_dir)
    model = AutoModel.from_pretrained(model_dir, trust_remote_code=True).eval()
    processor = AutoProcessor.from_pretrained(model_dir, trust_remote_code=True)
    hash_hex = encoder_hash(model)
    songs = _songs(dataset_dir)
    ids = sorted(songs)
    rows = []
    for start in tqdm(range(0, len(ids), batch_size), desc="encoding audio", unit="batch", disable=not progress):
        batch_ids = ids[start: start + batch_size]
        features = processor.feature_extractor([songs[i] for i in batch_ids], return_tensors="pt")
        with torch.no_grad():
            clips = model.audio_tower(features["input_features"]).pooler_output.float().numpy()
        rows.extend({"song_id": i, "audio_embeds": e.tolist(), "encoder_hash": hash_hex}
                    for i, e in zip(batch_ids, clips))
    path = embeddings_path(dataset_dir, hash_hex)
    path.parent.mkdir(parents=True, exist_ok=True)
    schema = pa.schema([("song_id", pa.string()), ("audio_embeds", pa.list_(pa.list_(pa.float32()))),
                        ("encoder_hash", pa.string())])
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    os.close(fd)
    try:
        pq.write_table(pa.Table.from_pylist(rows, schema=schema), tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


class StaleEmbeddingsError(ValueError):
    """Precomputed embeddings that do not belong to the model's encoder (or miss songs)."""


def load_embeddings(dataset_dir: str | Path, model, song_ids=None) -> dict[str, np.ndarray] | None:
    """song id -> (clips, dim) float32 embeddings for ``model``'s encoder, or None when none were computed.

    Raises :class:`StaleEmbeddingsError` when embeddings exist but none match the encoder's hash, or when some of
    ``song_ids`` are missing.
    """
    import pyarrow.parquet as pq

    folder = Path(dataset_dir) / EMBEDDINGS_DIR
    files = sorted(folder.glob("*.parquet")) if folder.is_dir() else []
    if not files:
        return None
    hash_hex = encoder_hash(model)
    path = embeddings_path(dataset_dir, hash_hex)
    if not path.is_file():
        raise StaleEmbeddingsError(
            f"{folder}: precomputed embeddings exist ({', '.join(f.name for f in files)}) but none for this model's "
            f"audio encoder (hash {hash_hex[:16]}); recompute them with `python -m dataset_scripts.embeddings` "
            "or delete them")
    table = pq.read_table(path)
    if set(table["encoder_hash"].to_pylist()) != {hash_hex}:
        raise StaleEmbeddingsError(f"{path}: rows tagged with another encoder hash")
    out = {i: np.asarray(e, dtype=np.float32) for i, e in zip(table["song_id"].to_pylist(),
                                                              table["audio_embeds"].to_pylist())}
    missing = sorted(set(song_ids or ()) - set(out))
    if missing:
        raise StaleEmbeddingsError(f"{path}: no embeddings for {len(missing)} songs (e.g. {missing[:3]}); recompute")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="m2mv checkpoint folder (its audio encoder is used)")
    parser.add_argument("--dataset", required=True, help="built dataset folder")
    parser.add_argument("--batch-size", type=int, default=8)
    args = parser.parse_args(argv)
    start = time.time()
    path = compute_embeddings(args.model, args.dataset, args.batch_size)
    print(f"wrote {path} in {time.time() - start:.1f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
