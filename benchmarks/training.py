"""Training throughput: precomputed encoder embeddings vs re-encoding the audio at every step.

    python benchmarks/training.py                      # tiny config, toy 30-s clips; + the full-size encoder's share
    python benchmarks/training.py --dataset ./m2mv-demo --steps 40 --stage 1
    python benchmarks/training.py --skip-full-size     # only the tiny comparison

1. Same tiny config (the converter's tiny random checkpoint, m2mv/configs/tiny/stage<N>.yaml), one run each through
   train_sft.py: ``audio_embeds: off`` (decode + filter bank + encoder at every step) and ``audio_embeds: auto``
   (embeddings computed once beforehand, not counted). Training tokens/s = non-padding tokens / train_runtime
   (the trainer's own clock: data loading and collation included). Printed as a ratio.
2. Full size, one step (CPU or GPU): the demo checkpoint (SmolLM2-135M + OpenAI's real Whisper-base encoder,
   20.6M parameters; up to m2mv 0.4 ImageBind's full-size audio branch at random weights, 86.2M): time of the audio
   features, of the encoder, and of the stage-1 training step on precomputed embeddings; the encoder's (and
   features') share of a re-encoding step, and how many times faster the step on embeddings is.
3. On a GPU only (``--gpu-full-size``): a full-size stage-2 step -- Vicuna-7B-sized Llama + ImageBind-Huge audio
   branch (random weights), bf16, LoRA r=32 on q/k/v/o + the adaptor: tokens/s, MFU (6 x LM parameters x real
   tokens/s over the GPU's dense bf16 peak) and peak memory, from one run, before and after tuning. Before: batch
   2 x 1024 tokens, padded, activation checkpointing, unfused AdamW (the setup of the recorded 26.8%). Tuned:
   ``--gpu-rows`` rows (8) packed into one with position ids (``--padding_free``), no activation checkpointing
   (``--gpu-checkpointing`` keeps it), fused AdamW. ``--gpu-row-lengths varied`` gives both rows of varied lengths.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import torch  # noqa: E402

from m2mv.checkpoints.loading import demo_checkpoint  # noqa: E402
from m2mv.checkpoints.tiny import build_tiny_checkpoint  # noqa: E402
from m2mv.data.embeddings import encode_audio  # noqa: E402
from m2mv.data.loading import load_split  # noqa: E402
from m2mv.training.args import parse_args  # noqa: E402
from m2mv.training.collator import M2MVDataCollator, pack_rows  # noqa: E402
from m2mv.training.lora import lora_target_regex  # noqa: E402
from m2mv.training.data import precompute_audio_embeds  # noqa: E402
from m2mv.training.sft import main as train_stage  # noqa: E402
from m2mv.training.toy import write_toy_dataset  # noqa: E402


def tokens_per_second(trainer) -> tuple[float, int, float]:
    history = trainer.state.log_history
    runtime = next(e["train_runtime"] for e in reversed(history) if "train_runtime" in e)
    tokens = int(trainer._total_train_tokens)
    return tokens / runtime, tokens, runtime


def tiny_comparison(dataset: Path | None, steps: int, stage: int, work: Path) -> dict:
    checkpoint = build_tiny_checkpoint(work / "m2mv-tiny-random")
    if dataset is None:
        dataset = write_toy_dataset(work / "toy", n_train=32, n_eval=4, seconds=30.0)
    else:  # copy: the embeddings are written beside the dataset
        import shutil

        shutil.copytree(dataset, work / "data", ignore=shutil.ignore_patterns("embeddings"))
        dataset = work / "data"
    if stage == 2:  # stage 2 starts from a stage-1 output
        stage1 = work / "stage1"
        train_stage(*parse_args(["--config", "tiny/stage1", "--model_name_or_path", str(checkpoint), "--dataset_path",
                                 str(dataset), "--output_dir", str(stage1), "--max_steps", "1", "--audio_embeds", "off"]))
        checkpoint = stage1
    start = time.perf_counter()
    precompute_audio_embeds(checkpoint, dataset)
    embed_time = time.perf_counter() - start
    results = {}
    for mode in ("off", "auto"):
        trainer = train_stage(*parse_args([
            "--config", f"tiny/stage{stage}", "--model_name_or_path", str(checkpoint),
            "--dataset_path", str(dataset), "--output_dir", str(work / f"run-{mode}"), "--max_steps", str(steps),
            "--audio_embeds", mode, "--eval_split", "", "--logging_steps", str(steps)]))
        results[mode] = tokens_per_second(trainer)
    return {"dataset": str(dataset), "stage": stage, "steps": steps, "embed_once_s": embed_time,
            "reencode_tokens_per_s": results["off"][0], "embeds_tokens_per_s": results["auto"][0],
            "tokens": results["auto"][1], "ratio": results["auto"][0] / results["off"][0]}


def timed(fn, repeat: int = 1):
    fn()  # warm-up
    sync = torch.cuda.synchronize if torch.cuda.is_available() else (lambda: None)
    sync()
    start = time.perf_counter()
    for _ in range(repeat):
        out = fn()
    sync()
    return (time.perf_counter() - start) / repeat, out


def full_size_share(dataset: Path | None, device: str) -> dict:
    """One stage-1 step of the demo checkpoint: features, encoder, and the LM step on precomputed embeddings."""
    from transformers import AutoModel, AutoProcessor

    folder = demo_checkpoint()
    model = AutoModel.from_pretrained(folder, trust_remote_code=True).to(device)
    processor = AutoProcessor.from_pretrained(folder, trust_remote_code=True)
    model.requires_grad_(False)
    model.multi_modal_projector.requires_grad_(True)
    model.train()
    if dataset is not None:
        ds = load_split(dataset, "captioning", "train")
        rows = [ds[i] for i in range(2)]
    else:
        with tempfile.TemporaryDirectory() as tmp:
            ds = load_split(write_toy_dataset(tmp, n_train=2, n_eval=1, seconds=30.0),
                                     "captioning", "train")
            rows = [ds[i] for i in range(2)]
    collator = M2MVDataCollator(processor, "captioning", 256)
    optimizer = torch.optim.AdamW(model.multi_modal_projector.parameters(), lr=1e-4)

    feature_s, batch = timed(lambda: collator(rows))
    batch = {k: torch.as_tensor(v).to(device) for k, v in batch.items()}
    features = batch.pop("input_features")
    with torch.no_grad():
        encoder_s, embeds = timed(lambda: encode_audio(model, features))

    def step():
        loss = model(**batch, audio_embeds=embeds).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        return loss

    step_s, _ = timed(step)
    reencode = feature_s + encoder_s + step_s
    return {"device": device, "batch": 2, "tokens": int(batch["attention_mask"].sum()),
            "encoder_params_M": sum(p.numel() for p in model.audio_tower.parameters()) / 1e6,
            "features_s": feature_s, "encoder_s": encoder_s, "lm_step_s": step_s,
            "encoder_share": encoder_s / reencode, "features_share": feature_s / reencode,
            "audio_share": (feature_s + encoder_s) / reencode, "embeds_speedup": reencode / step_s}


PEAK_BF16_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0, "L40S": 362.0, "A10": 125.0}


def step_batch(lengths: list[int], vocab_size: int, audio_token_id: int, padding_free: bool) -> dict:
    """Rows of the given lengths (random tokens, one audio placeholder each, the first 64 tokens unlabelled),
    right-padded to the longest as the collator pads them, or packed into one row by its ``pack_rows``."""
    generator = torch.Generator().manual_seed(0)
    ids = torch.zeros(len(lengths), max(lengths), dtype=torch.long)
    mask = torch.zeros_like(ids)
    for row, n in enumerate(lengths):
        ids[row, :n] = torch.randint(0, vocab_size, (n,), generator=generator)
        mask[row, :n] = 1
    ids[ids == audio_token_id] = 0
    ids[:, 5] = audio_token_id  # one audio placeholder per row (num_audio_tokens=1, the paper's)
    labels = ids.masked_fill(mask == 0, -100)
    labels[:, :64] = -100
    batch = {"input_ids": ids, "attention_mask": mask, "labels": labels}
    return pack_rows(batch) if padding_free else batch


def gpu_full_size_stage2(seq_len: int = 1024, batch: int = 2, steps: int = 5, peak: float | None = None,
                         config=None, device: str = "cuda", lengths: list[int] | None = None,
                         padding_free: bool = False, activation_checkpointing: bool = True,
                         fused_optimizer: bool = False) -> dict:
    """Vicuna-7B-sized m2mv (random weights), bf16, LoRA r=32 q/k/v/o + adaptor: tokens/s and MFU of a step.

    ``lengths`` are the rows' real token counts (default: ``batch`` rows of ``seq_len``); ``padding_free`` packs
    them into one row with position ids (``--padding_free``), ``activation_checkpointing`` recomputes each layer's
    activations in the backward pass, ``fused_optimizer`` is AdamW's one-kernel CUDA step (``fused=True``).
    Tokens/s and MFU count real tokens only; MFU counts 6 x LM parameters FLOPs per token (the usual convention).
    ``config``/``device`` let the same code run small on a CPU.
    """
    from peft import LoraConfig, get_peft_model

    from configuration_m2mv import M2MVConfig
    from modeling_m2mv import M2MVForConditionalGeneration

    lengths = lengths or [seq_len] * batch
    config = config or M2MVConfig()  # ImageBind-Huge audio branch + Vicuna-7B sizes (vocab 32001)
    torch.manual_seed(0)
    if device == "cuda":  # the step before may have left a model in reference cycles
        gc.collect()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    with torch.device(device):
        model = M2MVForConditionalGeneration(config).to(torch.bfloat16)
    model.requires_grad_(False)
    audio = config.audio_config
    rows = len(lengths)
    features = torch.randn(rows, audio.clips_per_audio, audio.num_mel_bins, audio.target_length, device=device,
                           dtype=torch.bfloat16)
    with torch.no_grad():  # the frozen encoder's forward, as a re-encoding step would run it
        encoder_s, _ = timed(lambda: model.audio_tower(features).pooler_output, repeat=steps)
    model = get_peft_model(model, LoraConfig(r=32, lora_alpha=32, lora_dropout=0.1,
                                             target_modules=lora_target_regex(None),
                                             modules_to_save=["multi_modal_projector"]))
    for p in model.parameters():
        if p.requires_grad:
            p.data = p.data.float()
    if activation_checkpointing:
        getattr(model, "activation_checkpointing_enable", model.gradient_checkpointing_enable)()
        model.enable_input_require_grads()
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=1e-4, fused=fused_optimizer or None)
    inputs = {k: v.to(device) for k, v in
              step_batch(lengths, config.text_config.vocab_size, config.audio_token_id, padding_free).items()}
    inputs["audio_embeds"] = torch.randn(rows, audio.clips_per_audio, audio.output_dim, device=device)

    losses = []

    def step():
        with torch.autocast(device, dtype=torch.bfloat16):
            loss = model(**inputs).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(loss.item())

    step_s, _ = timed(step, repeat=steps)
    lm_params = sum(p.numel() for n, p in model.named_parameters() if "language_model" in n or "lm_head" in n)
    tokens = sum(lengths)
    tokens_per_s = tokens / step_s
    name = torch.cuda.get_device_name() if device == "cuda" else device
    peak = peak or next((v for k, v in PEAK_BF16_TFLOPS.items() if k in name), None)
    mfu = 6 * lm_params * tokens_per_s / (peak * 1e12) if peak else None
    report = {"gpu": name, "rows": rows, "seq_len": max(lengths), "tokens": tokens,
              "padded_tokens": rows * max(lengths), "padding_free": padding_free,
              "activation_checkpointing": activation_checkpointing, "fused_optimizer": fused_optimizer,
              "step_s": step_s, "first_loss": losses[0], "tokens_per_s": tokens_per_s, "lm_params_B": lm_params / 1e9,
              "peak_bf16_tflops": peak, "mfu": mfu, "encoder_s": encoder_s,
              "encoder_share": encoder_s / (encoder_s + step_s),
              "max_memory_GiB": torch.cuda.max_memory_allocated() / 2**30 if device == "cuda" else None}
    return report


def row_lengths(kind: str, rows: int, seq_len: int) -> list[int]:
    """``full``: every row ``seq_len`` tokens (the recorded setup); ``varied``: drawn between a quarter of it and
    all of it (seeded), as real descriptions vary."""
    if kind == "full":
        return [seq_len] * rows
    generator = torch.Generator().manual_seed(0)
    return torch.randint(seq_len // 4, seq_len + 1, (rows,), generator=generator).tolist()


def print_gpu_step(label: str, gpu: dict) -> None:
    mfu = f"{100 * gpu['mfu']:.1f}%" if gpu["mfu"] is not None else "n/a (pass --peak-tflops)"
    print(f"{label}: {gpu['rows']} rows, {gpu['tokens']} real tokens of {gpu['padded_tokens']} padded, padding-free "
          f"{gpu['padding_free']}, activation checkpointing {gpu['activation_checkpointing']}, fused AdamW "
          f"{gpu['fused_optimizer']}: {gpu['tokens_per_s']:.0f} tokens/s, MFU {mfu}, peak memory "
          f"{gpu['max_memory_GiB']:.1f} GiB; the encoder's forward ({gpu['encoder_s'] * 1e3:.1f} ms) would be "
          f"{100 * gpu['encoder_share']:.1f}% of a re-encoding step")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", type=Path, help="a built m2mv dataset (default: toy 30-s clips)")
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--stage", type=int, default=1, choices=(1, 2))
    parser.add_argument("--skip-full-size", action="store_true")
    parser.add_argument("--gpu-full-size", action="store_true", help="also the 7B-sized stage-2 step (GPU only)")
    parser.add_argument("--peak-tflops", type=float, help="the GPU's dense bf16 peak, for MFU")
    parser.add_argument("--gpu-rows", type=int, default=8, help="rows per tuned micro-batch (packed into one)")
    parser.add_argument("--gpu-checkpointing", action="store_true", help="keep activation checkpointing when tuned")
    parser.add_argument("--gpu-row-lengths", choices=("full", "varied"), default="full",
                        help="rows of 1024 tokens, or of varied lengths (padding then costs the untuned step)")
    parser.add_argument("--json-out", type=Path, help="also write the report as JSON to this file")
    args = parser.parse_args(argv)
    report = {"torch_threads": torch.get_num_threads()}
    with tempfile.TemporaryDirectory() as work:
        tiny = tiny_comparison(args.dataset, args.steps, args.stage, Path(work))
    report["tiny"] = tiny
    print(f"tiny config, stage {tiny['stage']}, {tiny['steps']} steps: re-encoding {tiny['reencode_tokens_per_s']:.0f} "
          f"tokens/s, precomputed embeddings {tiny['embeds_tokens_per_s']:.0f} tokens/s: ratio {tiny['ratio']:.1f}x "
          f"(embeddings computed once in {tiny['embed_once_s']:.1f} s)")
    if not args.skip_full_size:
        device = "cuda" if torch.cuda.is_available() else "cpu"
        full = full_size_share(args.dataset, device)
        report["full_size"] = full
        print(f"full-size encoder ({full['encoder_params_M']:.1f}M, {device}), one stage-1 step of batch 2: features "
              f"{full['features_s']:.2f} s, encoder {full['encoder_s']:.2f} s, LM step on embeddings "
              f"{full['lm_step_s']:.2f} s: the encoder is {100 * full['encoder_share']:.0f}% of a re-encoding step, "
              f"audio features + encoder {100 * full['audio_share']:.0f}%; the step on embeddings is "
              f"{full['embeds_speedup']:.1f}x faster than re-encoding")
    if args.gpu_full_size:
        if not torch.cuda.is_available():
            print("--gpu-full-size: no GPU here", file=sys.stderr)
            return 2
        before_rows = row_lengths(args.gpu_row_lengths, 2, 1024)
        gpu = gpu_full_size_stage2(peak=args.peak_tflops, lengths=before_rows)
        report["gpu_stage2"] = gpu
        print_gpu_step("full-size stage-2 step, before", gpu)
        after_rows = row_lengths(args.gpu_row_lengths, args.gpu_rows, 1024)
        tuned = gpu_full_size_stage2(peak=args.peak_tflops, lengths=after_rows, padding_free=True,
                                     activation_checkpointing=args.gpu_checkpointing, fused_optimizer=True)
        report["gpu_stage2_tuned"] = tuned
        print_gpu_step("full-size stage-2 step, tuned", tuned)
        print(f"tuned vs before, same run: {tuned['tokens_per_s'] / gpu['tokens_per_s']:.2f}x tokens/s")
    print(json.dumps(report, indent=2))
    if args.json_out:
        args.json_out.write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
