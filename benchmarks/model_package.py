"""Model-package benchmark: feature extraction vs ImageBind's reference transform, and KV-cache generation speed.

    python benchmarks/model_package.py [--clips 60] [--new-tokens 512] [--generation-model tiny|demo|both]

Prints, from one run:
- clips/s of M2MVFeatureExtractor vs the reference: torchaudio's kaldi fbank per clip, as ImageBind's data.py runs
  it (torchaudio 2.11's kaldi.py, fetched by tests/reference_oracles.py) -> ratio; and vs the arithmetic limit (the
  FLOPs of a clip's filter bank at the machine's float32 matmul rate, measured in the same run);
- clips/s of decoding the same inputs from FLAC, OGG and MP3 files (soundfile), which now costs more than features;
- generate tokens/s with vs without the KV cache -> ratio: on the tiny random m2mv model (2 layers, where per-step
  overhead hides the cache) and on the demo checkpoint (the real 30-layer SmolLM2-135M), ``--generation-model``.
Timings are wall-clock on whatever machine runs it; the figures say so.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # the reference oracles live with the tests
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def reference_transform(waveform: np.ndarray, fbank, rate: int = 16000) -> torch.Tensor:
    """ImageBind's per-clip path (data.py): clip, subtract mean, kaldi fbank, pad to 204, normalise."""
    from feature_extraction_m2mv import clip_sample_ranges

    signal = torch.from_numpy(waveform)[None]
    clips = []
    for start, end in clip_sample_ranges(signal.shape[1], rate):
        clip = signal[:, start:end]
        clip = clip - clip.mean()
        mel = fbank(clip, htk_compat=True, sample_frequency=rate, use_energy=False, window_type="hanning",
                    num_mel_bins=128, dither=0.0, frame_length=25, frame_shift=10).transpose(0, 1)
        mel = torch.nn.functional.pad(mel, (0, 204 - mel.shape[1]))[:, :204]
        clips.append((mel[None] + 4.268) / 9.138)
    return torch.stack(clips)


REPEATS = 3  # passes of each feature path (and of each decoder); the fastest is quoted


def matmul_gflops(size: int = 2048, repeats: int = 5) -> float:
    """The machine's float32 matmul rate (torch, all its threads), best of ``repeats``: the arithmetic peak."""
    a = torch.randn(size, size)
    a @ a
    best = min(_seconds(lambda: a @ a) for _ in range(repeats))
    return 2 * size**3 / best / 1e9


def _seconds(step) -> float:
    start = time.perf_counter()
    step()
    return time.perf_counter() - start


def fbank_flops(extractor) -> tuple[float, float]:
    """FLOPs of one clip's filter bank: ``(dense, ours)``. Both count the frame arithmetic (DC removal,
    pre-emphasis, window: 5 per sample of a frame), a 512-point real FFT (2.5 N log2 N) and the squares; ``dense``
    applies the (257 x 128) mel filters as one product (the issue's arithmetic), ``ours`` the bands m2mv computes."""
    frames = 1 + (extractor.clip_samples - extractor.frame_length) // extractor.hop_length
    n = extractor.fft_length
    common = 5 * extractor.frame_length + 2.5 * n * np.log2(n) + 2 * (n + 2)
    dense = 2 * (n // 2 + 1) * extractor.num_mel_bins
    ours = sum(2 * (stop - first) * weights.shape[1] for first, stop, weights in extractor._mel_bands())
    return frames * (common + dense), frames * (common + ours)


def bench_decoding(waves: list[np.ndarray], work: Path) -> None:
    """Seconds to decode the inputs from FLAC, OGG/Vorbis and MP3 files (soundfile, as describe and the dataset
    builder read them), as clips/s to set beside the features'."""
    import soundfile

    from feature_extraction_m2mv import load_audio

    for suffix, fmt in ((".flac", "FLAC"), (".ogg", "OGG"), (".mp3", "MP3")):
        paths = []
        for i, wave in enumerate(waves):
            path = work / f"input{i}{suffix}"
            soundfile.write(path, wave, 16000, format=fmt)
            paths.append(path)
        seconds = min(_seconds(lambda: [load_audio(p) for p in paths]) for _ in range(REPEATS))
        print(f"  decoding {fmt:<6} (soundfile)     {3 * len(paths) / seconds:9.1f} clips/s  "
              f"({len(paths) / seconds:.1f} 30-s files/s)")


def bench_features(num_inputs: int) -> None:
    import reference_oracles as ro
    from feature_extraction_m2mv import M2MVFeatureExtractor

    fbank = ro.load_kaldi_fbank()
    extractor = M2MVFeatureExtractor()
    rng = np.random.default_rng(0)
    waves = [rng.normal(scale=0.1, size=30 * 16000).astype(np.float32) for _ in range(num_inputs)]
    extractor(waves[:2], sampling_rate=16000)  # warm-up
    reference_transform(waves[0], fbank)
    peak = matmul_gflops()
    ours_s = min(_seconds(lambda: extractor(waves, sampling_rate=16000)) for _ in range(REPEATS))
    ref_s = min(_seconds(lambda: [reference_transform(w, fbank) for w in waves]) for _ in range(REPEATS))
    ours = extractor(waves, sampling_rate=16000)["input_features"]
    reference = [reference_transform(w, fbank) for w in waves]
    diff = max(float(np.abs(o - r[:, 0].numpy()).max()) for o, r in zip(ours, reference))
    clips = 3 * num_inputs
    dense, banded = fbank_flops(extractor)
    print(f"features: {clips} clips of 2 s (from {num_inputs} 30-s inputs, 16 kHz), best of {REPEATS} passes each; "
          f"matmul peak {peak:.0f} GFLOP/s")
    print(f"  ours (torch, per input)        {clips / ours_s:9.1f} clips/s")
    print(f"  reference (torchaudio kaldi)   {clips / ref_s:9.1f} clips/s")
    print(f"  ratio ours/reference           {ref_s / ours_s:9.2f}x   (max abs diff {diff:.2e})")
    print(f"  arithmetic limit, dense mel    {peak * 1e9 / dense:9.1f} clips/s  ({dense / 1e6:.1f} MFLOP a clip at the "
          f"peak); ours reaches {clips / ours_s * dense / (peak * 1e9):.0%} of it")
    print(f"  ours does {banded / 1e6:.1f} MFLOP a clip (banded mel): {clips / ours_s * banded / 1e9:.1f} GFLOP/s, "
          f"{clips / ours_s * banded / (peak * 1e9):.0%} of the peak")
    with tempfile.TemporaryDirectory() as work:
        bench_decoding(waves, Path(work))


def tiny_model():
    """``(model, processor, label)`` of the tiny random checkpoint (Llama 2 x 64)."""
    from transformers import AutoModel, AutoProcessor

    from m2mv.checkpoints.tiny import build_tiny_checkpoint

    with tempfile.TemporaryDirectory() as tmp:
        folder = build_tiny_checkpoint(Path(tmp) / "m2mv-tiny-random")
        model = AutoModel.from_pretrained(folder, trust_remote_code=True).eval()
        processor = AutoProcessor.from_pretrained(folder, trust_remote_code=True)
    return model, processor, "tiny random m2mv (Llama 2x64)"


def demo_model():
    """``(model, processor, label)`` of the demo checkpoint: the real SmolLM2-135M-Instruct (30 layers, width 576)
    + OpenAI's real Whisper-base encoder."""
    from m2mv.checkpoints.loading import demo_checkpoint, load_checkpoint

    model, processor = load_checkpoint(demo_checkpoint())
    return model.eval(), processor, "the demo checkpoint (SmolLM2-135M, 30 layers x 576)"


def bench_generation(new_tokens: int, model, processor, label: str) -> None:
    """Greedy tokens/s with vs without the KV cache, exactly ``new_tokens`` each."""
    wave = np.random.default_rng(1).normal(scale=0.1, size=30 * 16000).astype(np.float32)
    inputs = processor(text=[processor.build_prompt(genre_tags=["rock"], mv_type="Animation")], audio=[wave],
                       sampling_rate=16000)
    rates = {}
    for use_cache in (True, False):
        kwargs = dict(do_sample=False, max_new_tokens=new_tokens, min_new_tokens=new_tokens, use_cache=use_cache)
        with torch.no_grad():
            model.generate(**inputs, **dict(kwargs, max_new_tokens=4, min_new_tokens=4))  # warm-up
            start = time.perf_counter()
            out = model.generate(**inputs, **kwargs)
        seconds = time.perf_counter() - start
        produced = out.shape[1] - inputs["input_ids"].shape[1]
        rates[use_cache] = produced / seconds
    print(f"generation: {label}, prompt {inputs['input_ids'].shape[1]} tokens, {new_tokens} new tokens, greedy")
    print(f"  with KV cache                  {rates[True]:9.1f} tokens/s")
    print(f"  without KV cache               {rates[False]:9.1f} tokens/s")
    print(f"  ratio                          {rates[True] / rates[False]:9.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clips", type=int, default=60, help="30-s inputs to featurise (3 clips each)")
    parser.add_argument("--new-tokens", type=int, default=512, help="new tokens (the paper decodes up to 512)")
    parser.add_argument("--generation-model", choices=("tiny", "demo", "both"), default="both",
                        help="the KV-cache comparison on the tiny model, the demo checkpoint's real LM, or both")
    args = parser.parse_args()
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch "
          f"{torch.__version__}, {torch.get_num_threads()} threads")
    bench_features(args.clips)
    for name, build in (("tiny", tiny_model), ("demo", demo_model)):
        if args.generation_model in (name, "both"):
            bench_generation(args.new_tokens, *build())


if __name__ == "__main__":
    main()
