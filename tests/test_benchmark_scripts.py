"""The benchmark scripts' measuring code on a CPU at tiny size (their figures come from running them, not here)."""

import importlib.util
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def load_script(name: str):
    spec = importlib.util.spec_from_file_location(f"bench_{name}", REPO / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_full_size_stage2_step_code_runs_small_on_cpu(tiny_checkpoint):
    from transformers import AutoConfig

    bench = load_script("training")
    config = AutoConfig.from_pretrained(tiny_checkpoint, trust_remote_code=True)
    report = bench.gpu_full_size_stage2(seq_len=48, batch=2, steps=2, peak=1.0, config=config, device="cpu")
    assert report["tokens_per_s"] == pytest.approx(2 * 48 / report["step_s"])
    # MFU: 6 x LM parameters per token over the peak (1 TFLOP/s here)
    assert report["mfu"] == pytest.approx(6 * report["lm_params_B"] * 1e9 * report["tokens_per_s"] / 1e12)
    assert report["lm_params_B"] > 0 and 0 < report["encoder_share"] < 1


def test_gpu_checks_refuse_to_run_without_a_gpu(tmp_path, capsys, monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert load_script("gpu_checks").main(["--out", str(tmp_path / "r.json")]) == 2
    assert "no GPU" in capsys.readouterr().err
    assert not (tmp_path / "r.json").exists()
