"""Checkpoints written before the redesign (m2mv 0.1.0) keep working: they run their own remote code.

``tests/data/m2mv-tiny-random-v0.1.0`` was written by m2mv 0.1.0's ``m2mv-convert --tiny`` (its processor has no
``decode_audio``, its card no YAML facts). Loading it with the new classes is tested in test_modeling.py.
"""

import json
import shutil
from pathlib import Path

import yaml

from m2mv.cli import main

DATA = Path(__file__).parent / "data"
OLD = DATA / "m2mv-tiny-random-v0.1.0"
DEMO = DATA / "openmsx-chemistry-lab-30s.ogg"


def test_the_old_checkpoint_describes_with_fixed_and_beat_aligned_frames(capsys):
    for align in ("fixed", "beats"):
        code = main(["describe", str(DEMO), "--model", str(OLD), "--json", "--greedy", "--max-new-tokens", "6",
                     "--align", align])
        out, err = capsys.readouterr()
        assert code == 0, err
        (row,) = [json.loads(line) for line in out.splitlines()]
        assert row["file"] == str(DEMO) and {"overview", "frames", "problems"} <= set(row)
        if align == "beats":
            assert row["boundaries"][0][0] == 0.0 and row["boundaries"][-1][1] == 30.0 and row["beat_times"]
            assert row["frames_match_boundaries"] is False  # a random model: the mismatch is reported


def test_a_stage_trained_from_the_old_checkpoint_says_its_random_parts_are_unknown(tmp_path):
    from m2mv.training.args import parse_args
    from m2mv.training.sft import main as train_stage
    from m2mv.training.toy import write_toy_dataset

    data = write_toy_dataset(tmp_path / "toy", n_train=4, n_eval=2)
    source = tmp_path / "m2mv-tiny-random"
    shutil.copytree(OLD, source)
    out = tmp_path / "stage1"
    train_stage(*parse_args(["--config", "tiny/stage1", "--model_name_or_path", str(source), "--dataset_path",
                             str(data), "--output_dir", str(out), "--max_steps", "1", "--audio_embeds", "off",
                             "--eval_split", ""]))
    card = (out / "README.md").read_text()
    meta = yaml.safe_load(card.split("---\n")[1])
    assert "m2mv" not in meta and "random-weights" in meta["tags"]  # no facts to carry over: none invented
    assert "**Random weights:** unknown" in card
    assert (out / "processing_m2mv.py").read_text() == (OLD / "processing_m2mv.py").read_text()  # its own code
