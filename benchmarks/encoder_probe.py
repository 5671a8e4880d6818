"""How much of a dataset's labels can the audio encoder's embeddings tell apart? A linear probe.

    python benchmarks/encoder_probe.py --model DIR --dataset DIR [--label genre|mv_type]

For a model to learn from the audio, its frozen encoder must map songs of different kinds to different embeddings.
This fits a ridge classifier (numpy, closed form; the penalty picked by 5-fold cross-validation on the train split)
from each song's mean clip embedding to a label of the ``mv_description`` config (the first genre tag, or the MV
type), trains on ``train`` and scores the other splits (song-disjoint), next to two baselines: always the most
frequent class, and the same probe on the mean log-mel spectrum of the same 2-s clips (what the encoder reads).

It explains the demo's training figures: ImageBind's architecture at RANDOM weights keeps little of what tells the
demo corpus's genres apart, so a model trained on it gains nothing from the audio on held-out songs (docs/training.md).
Run it on real ImageBind weights to see how much more they carry.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402

PENALTIES = (0.1, 1.0, 10.0, 100.0, 1000.0, 10000.0)


def ridge_fit(x: np.ndarray, labels: list[str], penalty: float) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """One-vs-rest ridge regression on one-hot targets (features standardised beforehand)."""
    classes = sorted(set(labels))
    y = np.array([[float(label == c) for c in classes] for label in labels])
    offset = y.mean(0)
    weights = np.linalg.solve(x.T @ x + penalty * np.eye(x.shape[1]), x.T @ (y - offset))
    return weights, offset, classes


def ridge_accuracy(x: np.ndarray, labels: list[str], x_test: np.ndarray, test_labels: list[str],
                   penalty: float) -> float:
    weights, offset, classes = ridge_fit(x, labels, penalty)
    predicted = [classes[i] for i in np.argmax(x_test @ weights + offset, axis=1)]
    return float(np.mean([p == t for p, t in zip(predicted, test_labels)]))


def probe(x: np.ndarray, labels: list[str], x_test: np.ndarray, test_labels: list[str], folds: int = 5) -> dict:
    """Standardise on train, choose the penalty by k-fold CV on train, score the held-out rows."""
    mean, std = x.mean(0), x.std(0) + 1e-8
    x, x_test = (x - mean) / std, (x_test - mean) / std
    order = np.random.default_rng(0).permutation(len(x))
    parts = np.array_split(order, min(folds, len(x)))

    def cv(penalty: float) -> float:
        scores = []
        for part in parts:
            keep = np.setdiff1d(order, part)
            scores.append(ridge_accuracy(x[keep], [labels[i] for i in keep], x[part], [labels[i] for i in part],
                                         penalty))
        return float(np.mean(scores))

    penalty = max(PENALTIES, key=cv)
    return {"accuracy": ridge_accuracy(x, labels, x_test, test_labels, penalty), "penalty": penalty}


def song_features(dataset: Path, model_dir: Path) -> tuple[dict, dict, dict]:
    """song id -> mean clip embedding, mean log-mel spectrum of the clips, and the mv_description row."""
    import torch

    from m2mv.checkpoints.loading import load_checkpoint
    from m2mv.data.embeddings import compute_embeddings, embeddings_path, encoder_hash, load_embeddings
    from m2mv.data.loading import load_split
    from m2mv.data.schema import MV_DESCRIPTION
    from m2mv.errors import DatasetError

    rows: dict[str, dict] = {}
    for split in ("train", "validation", "test"):
        try:
            ds = load_split(dataset, MV_DESCRIPTION, split)
        except DatasetError:
            continue
        for row in ds:
            rows[row["song_id"]] = {**row, "split": split}
    model, processor = load_checkpoint(model_dir)
    if not embeddings_path(dataset, encoder_hash(model)).is_file():  # none yet for this encoder: compute them once
        compute_embeddings(model, processor, dataset, progress=False)
    stored = load_embeddings(dataset, model, rows)
    embeds = {song: stored[song].mean(0) for song in rows}
    spectra = {}
    for song, row in rows.items():
        features = processor.feature_extractor([row["audio"]["bytes"]])["input_features"]
        spectra[song] = torch.as_tensor(features)[0].mean(dim=(0, 2)).numpy()  # mel bins, over clips and frames
    return embeds, spectra, rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="m2mv checkpoint folder, or `demo` for the demo checkpoint")
    parser.add_argument("--dataset", required=True, type=Path, help="built m2mv dataset (mv_description config)")
    parser.add_argument("--label", default="genre", choices=("genre", "mv_type"))
    parser.add_argument("--json-out", type=Path)
    args = parser.parse_args(argv)
    from m2mv.checkpoints.loading import resolve_checkpoint

    model_dir = resolve_checkpoint(args.model)
    embeds, spectra, rows = song_features(args.dataset, model_dir)

    def label(row: dict) -> str:
        return row["genre_tags"][0] if args.label == "genre" else row["mv_type"]

    train = [s for s, r in rows.items() if r["split"] == "train"]
    test = [s for s, r in rows.items() if r["split"] != "train"]
    if not train or not test:
        print(f"error: {args.dataset} needs a train split and at least one other split", file=sys.stderr)
        return 2
    y, y_test = [label(rows[s]) for s in train], [label(rows[s]) for s in test]
    majority = max(sorted(set(y)), key=y.count)
    report = {"model": str(model_dir), "dataset": str(args.dataset), "label": args.label, "train_songs": len(train),
              "held_out_songs": len(test), "classes": len(set(y)),
              "majority_accuracy": float(np.mean([t == majority for t in y_test]))}
    for name, table in (("encoder_embeddings", embeds), ("mean_log_mel_spectrum", spectra)):
        report[name] = probe(np.stack([table[s] for s in train]), y, np.stack([table[s] for s in test]), y_test)
    print(f"{args.label} of {len(test)} held-out songs ({report['classes']} classes, {len(train)} train songs): "
          f"majority class {report['majority_accuracy']:.2f}, linear probe on the encoder's embeddings "
          f"{report['encoder_embeddings']['accuracy']:.2f}, on the mean log-mel spectrum "
          f"{report['mean_log_mel_spectrum']['accuracy']:.2f}")
    text = json.dumps(report, indent=2)
    print(text)
    if args.json_out:
        args.json_out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
