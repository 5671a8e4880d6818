"""Does the model use the music? Held-out loss with the audio vs with it zeroed, over a few seeds, both stages.

    python benchmarks/audio_use.py [--model demo] [--dataset DIR] [--seeds 0,1,2] [--stages 1,2] [--work DIR]
                                   [--stage2-epochs N] [--answer-max-length N] [--json-out FILE]

Each seed trains stage 1 (``demo/stage1``) from ``--model`` and stage 2 (``demo/stage2``) from that stage 1, once
with the audio and once with ``--zero_audio true`` (m2mv/training/audio_use.py), and prints the final held-out
(validation) losses: the mean and spread over the seeds of each condition, the gap per seed, and both tests of
``m2mv.training.audio_use.summarize``: paired (with every seed the audio run ends below the zeroed run of the same
seed, by more than the gaps vary) and unpaired (every audio run below every zeroed one, by more than the seeds'
spread). Then it loads each audio run's final checkpoint and scores the held-out reference answers under the
music-only prompt with their own audio, another song's and zeroed audio (m2mv/evaluation/answer_loss.py): zeroed
features are an input training never showed, and only a model that hears its own clip scores it below another
song's. Without ``--dataset`` it builds the demo dataset (the demo's corpus and 60/20/20 split) in the work folder
and precomputes the model's encoder embeddings.

Several minutes per run on 2 CPU cores (stage 2 is the long one); runs already in ``--work`` are reused.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def demo_dataset(work: Path, model_dir: Path) -> Path:
    """The demo's dataset in ``work`` with ``model_dir``'s encoder embeddings precomputed."""
    from dataset_scripts.demo_dataset import build_demo_data
    from m2mv.checkpoints.loading import load_checkpoint
    from m2mv.data.embeddings import compute_embeddings

    dataset = work / "dataset"
    if not (dataset / "README.md").is_file():
        build_demo_data(work)
    compute_embeddings(*load_checkpoint(model_dir), dataset, progress=False)
    return dataset


def own_other_zeroed(work: Path, dataset: Path, seeds: list[int], stages: list[int],
                     max_length: int | None) -> dict:
    """Each audio run's held-out answer losses with own, another song's and zeroed audio; printed, and returned as
    ``{"stage<N>-seed<S>": {"rows": [...], "summary": {...}}}``."""
    from m2mv.checkpoints.loading import load_checkpoint
    from m2mv.data.loading import load_split
    from m2mv.data.schema import CAPTIONING, MV_DESCRIPTION
    from m2mv.evaluation.answer_loss import answer_losses, format_answer_losses, summarize_answer_losses

    config = {1: CAPTIONING, 2: MV_DESCRIPTION}
    print("held-out answer loss under the music-only prompt, each audio run's final checkpoint:")
    found = {}
    for stage in stages:
        held_out = load_split(dataset, config[stage], "validation")
        for seed in seeds:
            rows = answer_losses(*load_checkpoint(work / f"stage{stage}-audio-seed{seed}"), held_out,
                                 config[stage], max_length=max_length)
            summary = summarize_answer_losses(rows)
            found[f"stage{stage}-seed{seed}"] = {"rows": rows, "summary": summary}
            print(f"  stage {stage}, seed {seed}: {format_answer_losses(summary)}")
    return found


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="demo", help="base m2mv checkpoint (default: the demo checkpoint)")
    parser.add_argument("--dataset", type=Path, help="built m2mv dataset with embeddings (default: the demo's)")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--stages", default="1,2")
    parser.add_argument("--stage1-epochs", type=int, help="override demo/stage1's num_train_epochs")
    parser.add_argument("--stage2-epochs", type=int, help="override demo/stage2's num_train_epochs")
    parser.add_argument("--work", type=Path, help="where the runs go (kept; default: a temporary folder)")
    parser.add_argument("--answer-max-length", type=int,
                        help="cut prompt + answer to N tokens in the own/other/zeroed check (default: whole answers)")
    parser.add_argument("--json-out", type=Path)
    args = parser.parse_args(argv)
    from m2mv.checkpoints.loading import resolve_checkpoint
    from m2mv.training.audio_use import audio_use, format_summary, summarize

    seeds = [int(s) for s in args.seeds.split(",")]
    stages = [int(s) for s in args.stages.split(",")]
    options = {stage: ["--num_train_epochs", epochs]
               for stage, epochs in ((1, args.stage1_epochs), (2, args.stage2_epochs)) if epochs}
    model_dir = resolve_checkpoint(args.model)
    with tempfile.TemporaryDirectory() as tmp:
        work = args.work or Path(tmp)
        dataset = args.dataset or demo_dataset(work, model_dir)
        losses = audio_use(model_dir, dataset, work, seeds, stages, options=options)
        summary = summarize(losses)
        print(f"held-out loss, final, seeds {args.seeds} ({model_dir.name} on {dataset}):")
        print(format_summary(summary))
        answers = own_other_zeroed(work, dataset, seeds, stages, args.answer_max_length)
    if args.json_out:
        args.json_out.write_text(json.dumps({"model": str(model_dir), "dataset": str(dataset), "seeds": seeds,
                                             "options": options, "losses": losses, "summary": summary,
                                             "answer_losses": answers}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
