"""The training paths that need a GPU, run end to end on tiny configs, plus the full-size stage-2 step.

    python benchmarks/gpu_checks.py --out gpu-checks.json

Each check trains through ``m2mv train`` (the same commands as docs/training.md) on the toy dataset with the
tiny configs, then loads the output folder with ``AutoModel`` on the GPU in bf16 and generates:

1. single process, bf16 (``m2mv/configs/accelerate/single_process.yaml``): stage 1, then stage 2 from its output,
   padded and padding-free (``--padding_free true``);
2. FSDP2 (``m2mv/configs/accelerate/fsdp.yaml``) stage 2, one process per GPU;
3. DeepSpeed ZeRO-2 (``m2mv/configs/accelerate/deepspeed_zero2.yaml``) stage 2, if ``deepspeed`` is installed;
4. ``benchmarks/training.py --skip-full-size --gpu-full-size``: the tiny embeddings-vs-re-encoding ratio on
   the GPU and the Vicuna-7B-sized stage-2 step (tokens/s, MFU, peak memory, encoder share), before and after
   tuning (padding-free, no activation checkpointing, fused AdamW), from one run.

A failing check is recorded with the end of its log and the others still run; the exit code is 1 if any failed.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def run(name: str, cmd: list[str], log_dir: Path, timeout: float) -> dict:
    """Run one command, log it to ``log_dir/name.log``; returns status, wall time and the log's tail."""
    start = time.perf_counter()
    log = log_dir / f"{name}.log"
    with open(log, "w") as handle:
        try:
            rc = subprocess.run(cmd, cwd=REPO, stdout=handle, stderr=subprocess.STDOUT, timeout=timeout).returncode
        except subprocess.TimeoutExpired:
            rc = "timeout"
    result = {"command": " ".join(cmd), "rc": rc, "wall_s": round(time.perf_counter() - start, 1)}
    if rc != 0:
        result["log_tail"] = log.read_text(errors="replace")[-3000:]
    print(f"[{name}] rc={rc} in {result['wall_s']} s", flush=True)
    return result


def load_and_generate(folder: Path, device: str = "cuda") -> dict:
    """Load an output folder on the GPU in bf16 and generate a few tokens from a toy clip."""
    import numpy as np
    import torch
    from transformers import AutoModel, AutoProcessor

    model = AutoModel.from_pretrained(folder, trust_remote_code=True, dtype=torch.bfloat16).to(device).eval()
    processor = AutoProcessor.from_pretrained(folder, trust_remote_code=True)
    t = np.arange(16000 * 10) / 16000
    audio = (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    inputs = processor(text=[processor.build_prompt("captioning")], audio=[audio], sampling_rate=16000)
    inputs = {k: v.to(device) for k, v in inputs.items()}
    inputs["input_features"] = inputs["input_features"].to(torch.bfloat16)
    with torch.no_grad():
        out = model.generate(**inputs, max_new_tokens=8, do_sample=False)
    return {"new_tokens": int(out.shape[1] - inputs["input_ids"].shape[1]), "dtype": str(model.dtype)}


def final_losses(folder: Path) -> dict:
    """The losses the run recorded in its output (``m2mv_training.json``), without the curves."""
    results = json.loads((folder / "m2mv_training.json").read_text())["results"]
    return {k: v for k, v in results.items() if not k.endswith("_curve")}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("gpu-checks.json"))
    parser.add_argument("--logs", type=Path, help="folder for each check's log (default: beside --out)")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds per check")
    args = parser.parse_args(argv)
    import torch

    if not torch.cuda.is_available():
        print("no GPU here: these checks need one", file=sys.stderr)
        return 2
    from m2mv.checkpoints.tiny import build_tiny_checkpoint
    from m2mv.training.toy import write_toy_dataset

    logs = args.logs or args.out.parent
    logs.mkdir(parents=True, exist_ok=True)
    gpus = torch.cuda.device_count()
    report: dict = {"gpu": torch.cuda.get_device_name(), "gpus": gpus, "torch": torch.__version__,
                    "cuda": torch.version.cuda, "checks": {}}
    checks = report["checks"]
    py = sys.executable
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        toy = write_toy_dataset(work / "toy", n_train=32, n_eval=8, seconds=10.0)
        tiny = build_tiny_checkpoint(work / "tiny")
        common = ["--dataset_path", str(toy), "--bf16", "true", "--num_train_epochs", "2", "--eval_strategy", "epoch"]

        def train(name: str, launcher: list[str], stage: int, model: Path, *extra: str) -> Path:
            out = work / name
            cmd = [*launcher, "-m", "m2mv", "train", "--config", f"tiny/stage{stage}",
                   "--model_name_or_path", str(model), "--output_dir", str(out), *common, *extra]
            checks[name] = run(name, cmd, logs, args.timeout)
            if checks[name]["rc"] == 0:
                checks[name]["losses"] = final_losses(out)
                try:
                    checks[name]["generate"] = load_and_generate(out)
                except Exception as err:  # noqa: BLE001 - record and go on to the next check
                    checks[name]["rc"] = f"load/generate failed: {err!r}"
            args.out.write_text(json.dumps(report, indent=2))  # as far as it got, if the whole run is stopped
            return out

        accelerate = [py, "-m", "accelerate.commands.launch"]
        single = [*accelerate, "--config_file", "m2mv/configs/accelerate/single_process.yaml"]
        stage1 = train("single_bf16_stage1", single, 1, tiny)
        train("single_bf16_stage2", single, 2, stage1)
        train("single_bf16_stage2_padding_free", single, 2, stage1, "--padding_free", "true")
        train("fsdp2_stage2", [*accelerate, "--config_file", "m2mv/configs/accelerate/fsdp.yaml",
                               "--num_processes", str(gpus)], 2, stage1)
        try:
            import deepspeed  # noqa: F401

            train("deepspeed_zero2_stage2", [*accelerate, "--config_file", "m2mv/configs/accelerate/deepspeed_zero2.yaml",
                                             "--num_processes", str(gpus)], 2, stage1)
        except ImportError:
            checks["deepspeed_zero2_stage2"] = {"rc": "not run: deepspeed is not installed"}
        checks["benchmark"] = run("benchmark", [py, "benchmarks/training.py", "--skip-full-size", "--gpu-full-size",
                                                "--json-out", str(logs / "training-benchmark.json")],
                                  logs, args.timeout * 2)
    bench = logs / "training-benchmark.json"
    if bench.is_file():
        report["training_benchmark"] = json.loads(bench.read_text())
    args.out.write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))
    return 0 if all(c.get("rc") == 0 for c in checks.values() if not str(c.get("rc")).startswith("not run")) else 1


if __name__ == "__main__":
    sys.exit(main())
