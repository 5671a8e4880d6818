"""Does a model use the music? The same training runs with the audio and with it zeroed, over a few seeds.

Each seed trains stage 1 from the base checkpoint and stage 2 from that seed's stage 1 (``m2mv train`` with the
packaged configs, each run in its own process), once as configured and once with ``--zero_audio true`` (the model
sees its encoder's output for all-zero features). The audio is used when, with every seed, the run with the audio
ends at a lower held-out loss than the zeroed run of the same seed, by more than the gaps vary between seeds; the
stricter test, every audio run below every zeroed one by more than the seeds' spread, is reported beside it
(:func:`summarize`). ``benchmarks/audio_use.py`` prints the table; ``tests/test_audio_use.py`` asserts it on the
demo corpus.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from m2mv.errors import TrainingError

CONDITIONS = ("audio", "zeroed")


def held_out_losses(run_dir: Path) -> tuple[float, float]:
    """``(held-out loss before, after)`` from a trained stage's ``m2mv_training.json``."""
    results = json.loads((run_dir / "m2mv_training.json").read_text(encoding="utf-8"))["results"]
    if results["final_eval_loss"] is None:
        raise TrainingError(f"{run_dir}: the run logged no held-out loss (set an eval split and eval_strategy)")
    return results["initial_eval_loss"], results["final_eval_loss"]


def train_stage(config: str, base: Path, dataset: Path, out: Path, seed: int, zeroed: bool,
                options: Sequence[str] = ()) -> tuple[float, float]:
    """One ``m2mv train`` run in its own process (kept when already done); its held-out losses."""
    if not (out / "m2mv_training.json").is_file():
        command = [sys.executable, "-m", "m2mv", "train", "--config", config, "--model_name_or_path", str(base),
                   "--dataset_path", str(dataset), "--output_dir", str(out), "--seed", str(seed),
                   "--eval_on_start", "true", "--save_strategy", "no", *map(str, options)]
        if zeroed:
            command += ["--zero_audio", "true"]
        subprocess.run(command, check=True)
    return held_out_losses(out)


def audio_use(base: str | Path, dataset: str | Path, work: str | Path, seeds: Sequence[int] = (0, 1),
              stages: Sequence[int] = (1, 2), configs: str = "demo/stage{stage}",
              options: dict[int, Sequence[str]] | None = None) -> dict:
    """Held-out losses ``{stage: {condition: {seed: (before, after)}}}`` of the runs with and without the audio.

    ``options``: extra ``m2mv train`` options per stage (``{2: ["--num_train_epochs", "1"]}``). Stage 2 of a seed
    starts from that seed's stage 1 of the same condition (from ``base`` when stage 1 is not run)."""
    work, base, dataset = Path(work), Path(base), Path(dataset)
    losses: dict = {stage: {condition: {} for condition in CONDITIONS} for stage in stages}
    for seed in seeds:
        for condition in CONDITIONS:
            start = base
            for stage in stages:
                out = work / f"stage{stage}-{condition}-seed{seed}"
                losses[stage][condition][seed] = train_stage(configs.format(stage=stage), start, dataset, out, seed,
                                                             condition == "zeroed", (options or {}).get(stage, ()))
                start = out
    return losses


def summarize(losses: dict) -> dict:
    """Per stage: each condition's final held-out losses, mean and spread (max - min over seeds); the per-seed gaps
    (zeroed - audio, same seed: same data order and initialisation) and their mean.

    ``uses_audio`` (the paired test): with every seed the audio run ends below its zeroed run, and the mean gap
    exceeds the spread of the gaps. ``beyond_seed_spread`` (the stricter, unpaired one): every audio run below every
    zeroed run and the gap of the means above both conditions' spreads over seeds."""
    summary = {}
    for stage, by_condition in losses.items():
        seeds = sorted(by_condition["audio"])
        finals = {c: [by_condition[c][seed][1] for seed in seeds] for c in CONDITIONS}
        stats = {c: {"final": values, "mean": sum(values) / len(values), "spread": max(values) - min(values)}
                 for c, values in finals.items()}
        gaps = [zeroed - audio for audio, zeroed in zip(finals["audio"], finals["zeroed"])]
        gap = sum(gaps) / len(gaps)
        summary[stage] = {**stats, "seeds": seeds, "gaps": gaps, "gap": gap,
                          "uses_audio": min(gaps) > 0 and gap > max(gaps) - min(gaps),
                          "beyond_seed_spread": max(finals["audio"]) < min(finals["zeroed"])
                          and gap > max(stats["audio"]["spread"], stats["zeroed"]["spread"])}
    return summary


def format_summary(summary: dict) -> str:
    """A Markdown table of :func:`summarize`'s figures."""
    lines = ["| stage | held-out loss with audio: mean (spread; per seed) | zeroed audio | gap per seed (mean) | "
             "audio used (paired) | beyond the seeds' spread |", "|---|---|---|---|---|---|"]
    for stage, s in summary.items():
        cell = {c: f"{s[c]['mean']:.4f} ({s[c]['spread']:.4f}; " + ", ".join(f"{v:.4f}" for v in s[c]["final"]) + ")"
                for c in CONDITIONS}
        gaps = ", ".join(f"{g:.4f}" for g in s["gaps"])
        lines.append(f"| {stage} | {cell['audio']} | {cell['zeroed']} | {gaps} ({s['gap']:.4f}) | "
                     f"{'yes' if s['uses_audio'] else 'no'} | {'yes' if s['beyond_seed_spread'] else 'no'} |")
    return "\n".join(lines)
