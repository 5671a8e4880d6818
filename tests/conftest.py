"""Shared fixtures: tiny random checkpoints built by the project's own converter, offline."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing may load from a hub at test time
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import numpy as np
import pytest
import torch


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory):
    """A tiny random m2mv checkpoint (1 audio token) written by m2mv.convert."""
    from m2mv.checkpoints.tiny import build_tiny_checkpoint

    return build_tiny_checkpoint(tmp_path_factory.mktemp("ckpt") / "m2mv-tiny-random", num_audio_tokens=1)


@pytest.fixture(scope="session")
def tiny_checkpoint_3tok(tmp_path_factory):
    """A tiny random m2mv checkpoint keeping the 3 clip embeddings as 3 audio tokens."""
    from m2mv.checkpoints.tiny import build_tiny_checkpoint

    return build_tiny_checkpoint(tmp_path_factory.mktemp("ckpt3") / "m2mv-tiny-random-3tok", num_audio_tokens=3)


@pytest.fixture(scope="session")
def tiny(tiny_checkpoint):
    """(model, processor) loaded from the tiny checkpoint with the Auto classes."""
    from transformers import AutoModel, AutoProcessor

    model = AutoModel.from_pretrained(tiny_checkpoint, trust_remote_code=True).eval()
    processor = AutoProcessor.from_pretrained(tiny_checkpoint, trust_remote_code=True)
    return model, processor


@pytest.fixture
def music_like():
    """5 s of a deterministic harmonic signal with a beat (16 kHz), a stand-in waveform for fast tests."""
    rate = 16000
    t = np.arange(5 * rate) / rate
    tone = sum(np.sin(2 * np.pi * f * t) / (i + 1) for i, f in enumerate((220.0, 277.2, 329.6, 440.0)))
    beat = (np.sin(2 * np.pi * 2 * t) > 0.95).astype(float) * np.random.default_rng(0).normal(size=t.size)
    return (0.2 * tone + 0.3 * beat).astype(np.float32), rate


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
