"""The benchmark scripts' measuring code on a CPU at tiny size (their figures come from running them, not here)."""

import importlib.util
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


def test_full_size_stage2_tuned_options_give_the_same_first_loss(tiny_checkpoint):
    """Rows of varied lengths, padded vs packed without activation checkpointing and with fused AdamW: the
    untrained step sees the same tokens, so the same loss; tokens/s counts real tokens only."""
    from transformers import AutoConfig

    bench = load_script("training")
    config = AutoConfig.from_pretrained(tiny_checkpoint, trust_remote_code=True)
    lengths = bench.row_lengths("varied", 4, 96)
    assert len(set(lengths)) > 1 and all(24 <= n <= 96 for n in lengths)
    assert bench.row_lengths("full", 3, 96) == [96] * 3
    padded = bench.gpu_full_size_stage2(steps=1, peak=1.0, config=config, device="cpu", lengths=lengths)
    packed = bench.gpu_full_size_stage2(steps=1, peak=1.0, config=config, device="cpu", lengths=lengths,
                                        padding_free=True, activation_checkpointing=False, fused_optimizer=True)
    assert packed["first_loss"] == pytest.approx(padded["first_loss"], abs=5e-4)  # 3e-3 off without position ids
    assert padded["tokens"] == packed["tokens"] == sum(lengths) < padded["padded_tokens"] == 4 * max(lengths)
    assert packed["tokens_per_s"] == pytest.approx(sum(lengths) / packed["step_s"])
    options = ("padding_free", "activation_checkpointing", "fused_optimizer")
    assert [packed[k] for k in options] == [True, False, True] and [padded[k] for k in options] == [False, True, False]
    batch = bench.step_batch(lengths, config.text_config.vocab_size, config.audio_token_id, padding_free=True)
    assert batch["input_ids"].shape == (1, sum(lengths)) and "attention_mask" not in batch
    assert (batch["input_ids"] == config.audio_token_id).sum() == 4


def test_gpu_checks_refuse_to_run_without_a_gpu(tmp_path, capsys, monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert load_script("gpu_checks").main(["--out", str(tmp_path / "r.json")]) == 2
    assert "no GPU" in capsys.readouterr().err
    assert not (tmp_path / "r.json").exists()


def test_encoder_probe_separates_clusters_and_not_random_labels():
    import numpy as np

    probe = load_script("encoder_probe").probe
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(3, 16)) * 3
    labels = [f"class{i % 3}" for i in range(90)]
    x = np.stack([centres[i % 3] + rng.normal(size=16) for i in range(90)])
    assert probe(x[:60], labels[:60], x[60:], labels[60:])["accuracy"] == 1.0
    noise = rng.normal(size=(400, 16))  # labels unrelated to the features: about chance (1/3)
    random_labels = [f"class{v}" for v in rng.integers(0, 3, size=400)]
    assert probe(noise[:300], random_labels[:300], noise[300:], random_labels[300:])["accuracy"] < 0.5


def test_encoder_probe_runs_on_a_dataset(tiny_checkpoint, tmp_path):
    import json

    from m2mv.checkpoints.tiny import build_tiny_whisper_checkpoint
    from m2mv.training.toy import write_toy_dataset

    data = write_toy_dataset(tmp_path / "toy", n_train=12, n_eval=6, seconds=3.0)
    whisper = build_tiny_whisper_checkpoint(tmp_path / "tiny-whisper")
    out = tmp_path / "probe.json"
    assert load_script("encoder_probe").main(["--model", str(tiny_checkpoint), "--model", str(whisper),
                                              "--dataset", str(data), "--label", "mv_type",
                                              "--json-out", str(out)]) == 0
    report = json.loads(out.read_text())
    assert (report["train_songs"], report["held_out_songs"]) == (12, 6)
    assert list(report["encoders"]) == [str(tiny_checkpoint), str(whisper)]
    for result in report["encoders"].values():
        assert 0.0 <= result["accuracy"] <= 1.0 and 0.0 <= result["mean_log_mel_of_its_input"]["accuracy"] <= 1.0
    assert len(list((data / "embeddings").glob("*.parquet"))) == 2  # one per encoder, beside the dataset


def test_encoder_probe_reads_the_facts_the_demo_overview_states_and_refuses_a_dataset_without_them(tmp_path,
                                                                                                   capsys):
    from m2mv.training.toy import write_toy_dataset

    script = load_script("encoder_probe")
    from mv_format_m2mv import format_mv_description

    overview = "A live performance video for a very fast jazz track in Eb minor: deep shadows, restless."
    row = {"song_id": "s1", "genre_tags": ["jazz"], "mv_type": "Live Performance",
           "description": format_mv_description(overview, [(0.0, 2.0, "A wide shot of the stage.")])}
    labels = {label: script.label_of(row, label) for label in script.LABELS}
    assert labels == {"genre": "jazz", "mv_type": "Live Performance", "fact:tempo": "very fast", "fact:genre": "jazz",
                      "fact:key": "Eb minor", "fact:light": "deep shadows", "fact:dynamics": "restless"}
    data = write_toy_dataset(tmp_path / "toy", n_train=4, n_eval=2, seconds=3.0)  # toy texts: no demo facts
    assert script.main(["--model", "demo", "--dataset", str(data), "--label", "fact:key"]) == 2
    err = capsys.readouterr().err
    assert "its overview states no key in the demo dataset's words" in err and str(data) in err


@pytest.mark.slow
def test_encoder_probe_puts_the_real_and_random_encoders_side_by_side(tmp_path):
    import json

    from m2mv.training.toy import write_toy_dataset

    data = write_toy_dataset(tmp_path / "toy", n_train=8, n_eval=4, seconds=3.0)
    out = tmp_path / "probe.json"
    assert load_script("encoder_probe").main(["--dataset", str(data), "--json-out", str(out)]) == 0
    report = json.loads(out.read_text())
    assert list(report["encoders"]) == ["whisper_base_real", "whisper_base_random", "imagebind_huge_random"]
    assert not any(Path(r["model"]).exists() for r in report["encoders"].values())  # the probe's own, removed


def test_answer_loss_script_scores_a_checkpoint_on_joined_splits(tiny_checkpoint, tmp_path, capsys):
    import json

    from m2mv.training.toy import write_toy_dataset

    data = write_toy_dataset(tmp_path / "toy", n_train=4, n_eval=3, seconds=2.0)
    out = tmp_path / "answer-loss.json"
    assert load_script("answer_loss").main([str(tiny_checkpoint), str(data), "--config", "captioning",
                                            "--split", "train+validation", "--max-length", "64",
                                            "--json-out", str(out)]) == 0
    report = json.loads(out.read_text())
    rows, summary = report["rows"], report["summary"]
    assert summary["rows"] == len(rows) == 7 and report["split"] == "train+validation"
    assert all(r["audio_from"] != r["song_id"] for r in rows)
    assert summary["mean_own"] == pytest.approx(sum(r["own"] for r in rows) / 7)
    assert summary["own_below_other"] == sum(r["own"] < r["other"] for r in rows)
    assert f"own below other on {summary['own_below_other']} of 7 rows" in capsys.readouterr().out


def test_whole_song_benchmark_runs_each_case_in_its_own_process(tiny_checkpoint, tmp_path, capsys):
    import json

    out = tmp_path / "whole-song.json"
    assert load_script("whole_song").main(["--model", str(tiny_checkpoint), "--max-new-tokens", "2",
                                           "--json-out", str(out)]) == 0
    rows = json.loads(out.read_text())["rows"]
    assert [(r["case"], r["windows"], r["generate_calls"]) for r in rows] == [
        ("clip", 1, 1), ("song-batched", 8, 1), ("song-one-by-one", 8, 8)]
    assert all(r["peak_rss_mb"] >= r["rss_after_load_mb"] > 0 and r["seconds"] > 0 for r in rows)
    assert "the song batched costs" in capsys.readouterr().out


def test_model_package_reference_transform_runs_on_the_current_remote_code():
    """The reference path's own code (its imports from the remote code, its padding) at a stand-in filter bank."""
    import numpy as np
    import torch

    bench = load_script("model_package")
    calls = []

    def fbank(clip, **kwargs):
        calls.append((clip.shape, kwargs["num_mel_bins"]))
        return torch.zeros(198, kwargs["num_mel_bins"])

    features = bench.reference_transform(np.zeros(30 * 16000, np.float32), fbank)
    assert features.shape == (3, 1, 128, 204) and calls == [((1, 32000), 128)] * 3
