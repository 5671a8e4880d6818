"""Training runs that need their own processes: resume after SIGKILL, and 2-process DDP (gloo, CPU) vs 1 process.

Both train stage 2 (LoRA + adaptor) of a tiny checkpoint on the synthetic toy dataset, through train_sft.py in
subprocesses (one torch thread each, as on 2-core CI machines).
"""

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from safetensors.torch import load_file

from m2mv.training.args import STAGING_FOLDER, checkpoints_in
from m2mv.training.toy import write_toy_dataset

REPO = Path(__file__).resolve().parents[1]
TINY2 = REPO / "m2mv" / "configs" / "tiny" / "stage2.yaml"
CHECKPOINT_FILES = {"trainer_state.json", "adapter_model.safetensors", "optimizer.pt", "scheduler.pt",
                    "rng_state.pth"}


def env():
    return {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """A toy dataset and a stage-1 output (2 steps on the converter's tiny random checkpoint) to start stage 2 from."""
    from m2mv.checkpoints.tiny import build_tiny_checkpoint

    root = tmp_path_factory.mktemp("slow")
    data = write_toy_dataset(root / "data", n_train=32, n_eval=8, seed=5)
    tiny = build_tiny_checkpoint(root / "m2mv-tiny-random")
    stage1 = root / "stage1"
    run_python([str(REPO / "train_sft.py"), "--config", str(REPO / "m2mv/configs/tiny/stage1.yaml"), "--model_name_or_path",
                str(tiny), "--dataset_path", str(data), "--output_dir", str(stage1), "--max_steps", "2",
                "--audio_embeds", "off"])
    return root, data, stage1


def stage2_command(setup, out, *extra):
    _, data, stage1 = setup
    return [str(REPO / "train_sft.py"), "--config", str(TINY2), "--model_name_or_path", str(stage1),
            "--dataset_path", str(data), "--output_dir", str(out), "--audio_embeds", "off", *map(str, extra)]


def run_python(args, timeout=600):
    result = subprocess.run([sys.executable, *args], env=env(), capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, result.stderr[-4000:]
    return result


def max_abs_diff(a: Path, b: Path) -> float:
    x, y = load_file(str(a)), load_file(str(b))
    assert x.keys() == y.keys()
    return max(float((x[k].float() - y[k].float()).abs().max()) for k in x)


@pytest.mark.slow
def test_resume_after_sigkill_gives_the_same_weights(setup, tmp_path):
    # 40 steps, a checkpoint every 4, LoRA dropout 0.1 (the RNG state must be restored too), audio decoded per step
    extra = ["--max_steps", 40, "--save_strategy", "steps", "--save_steps", 4, "--logging_steps", 1]
    straight = tmp_path / "straight"  # through accelerate with the single-process config, as docs/training.md shows
    run_python(["-m", "accelerate.commands.launch", "--config_file",
                str(REPO / "m2mv/configs/accelerate/single_process.yaml"), *stage2_command(setup, straight, *extra)])

    killed = tmp_path / "killed"
    process = subprocess.Popen([sys.executable, *stage2_command(setup, killed, *extra)], env=env(),
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while not (killed / "checkpoint-4").is_dir():
        assert process.poll() is None, "the run ended before its first checkpoint"
        assert time.time() < deadline
        time.sleep(0.01)
    time.sleep(0.3)  # somewhere in the next steps (possibly mid-save)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not (killed / "config.json").exists(), "the run finished before it was killed: nothing was tested"
    checkpoints = checkpoints_in(killed)
    assert checkpoints and all(CHECKPOINT_FILES <= {p.name for p in c.iterdir()} for c in checkpoints), \
        "a half-written checkpoint was left"
    killed_at = json.loads((checkpoints[-1] / "trainer_state.json").read_text())["global_step"]
    assert killed_at < 40

    run_python(stage2_command(setup, killed, *extra, "--resume_from_checkpoint", "last"))
    diff = max_abs_diff(straight / "model.safetensors", killed / "model.safetensors")
    adapter_diff = max_abs_diff(straight / "adapter" / "adapter_model.safetensors",
                                killed / "adapter" / "adapter_model.safetensors")
    print(f"resumed from step {killed_at}: max abs weight diff {diff:g} (adapter {adapter_diff:g})")
    assert diff == 0.0 and adapter_diff == 0.0
    assert not (killed / STAGING_FOLDER).exists() or not any((killed / STAGING_FOLDER).iterdir())
    curve = json.loads((killed / "m2mv_training.json").read_text())["results"]["train_curve"]
    assert curve[-1][0] == 40


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


DDP_TOLERANCE = 1e-5  # max abs difference of the per-step training loss (values ~6.2)


@pytest.mark.slow
def test_two_process_ddp_matches_one_process_with_the_same_global_batch(setup, tmp_path):
    # LoRA dropout off: its random masks differ between 1 and 2 processes by design
    extra = ["--max_steps", 8, "--logging_steps", 1, "--lora_dropout", 0]
    one = tmp_path / "one"
    run_python(stage2_command(setup, one, *extra, "--per_device_train_batch_size", 4))
    two = tmp_path / "two"
    launch = ["-m", "accelerate.commands.launch", "--config_file", str(REPO / "m2mv/configs/accelerate/multi_gpu_ddp.yaml"),
              "--num_processes", "2", "--main_process_port", str(free_port())]  # torchrun; gloo with --use_cpu
    run_python([*launch, *stage2_command(setup, two, *extra, "--per_device_train_batch_size", 2,
                                         "--use_cpu", "true")])
    record_one = json.loads((one / "m2mv_training.json").read_text())
    record_two = json.loads((two / "m2mv_training.json").read_text())
    assert record_two["config"]["processes"] == 2 and record_one["config"]["processes"] == 1
    assert record_two["config"]["global_batch_size"] == record_one["config"]["global_batch_size"] == 4
    curve_one = record_one["results"]["train_curve"]
    curve_two = record_two["results"]["train_curve"]
    assert [s for s, _ in curve_one] == [s for s, _ in curve_two] == list(range(1, 9))
    diffs = [abs(a - b) for (_, a), (_, b) in zip(curve_one, curve_two)]
    weights = max_abs_diff(one / "model.safetensors", two / "model.safetensors")
    print(f"DDP vs 1 process: max loss diff {max(diffs):.2e} over 8 steps, max weight diff {weights:.2e}")
    assert max(diffs) < DDP_TOLERANCE
    assert curve_one[-1][1] < curve_one[0][1]  # and it trains
    assert weights < 1e-5
