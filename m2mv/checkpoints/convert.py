"""Build m2mv checkpoints: ImageBind-Huge's audio branch (or any transformers audio encoder) + any Llama/Vicuna
folder (``m2mv-convert``).

    m2mv-convert --imagebind imagebind_huge.pth --lm ./vicuna-7b-v1.5 --out ./m2mv-vicuna-7b
    m2mv-convert --audio-encoder ./whisper-base --lm ./vicuna-7b-v1.5 --out ./m2mv-whisper-vicuna-7b

The ImageBind file is read with ``torch.load(weights_only=True)`` (no pickle code runs); only its audio
branch is kept. Without ``--imagebind`` the audio encoder gets random weights, and the model card says so.
:func:`assemble_model` and :func:`save_checkpoint` are shared with the tiny builders (``m2mv.checkpoints.tiny``).
"""

from __future__ import annotations

import logging
import math
import pickle
from pathlib import Path

import torch
from transformers import AutoFeatureExtractor, AutoModel, AutoModelForCausalLM, AutoTokenizer, GenerationConfig

from configuration_m2mv import M2MVAudioConfig, M2MVConfig
from feature_extraction_m2mv import M2MVFeatureExtractor
from m2mv.checkpoints.cards import CardFacts, base_card, write_card
from m2mv.data.fileio import atomic_directory
from m2mv.data.taxonomy import load_mv_types
from m2mv.errors import CheckpointError
from modeling_m2mv import (M2MVAudioEncoder, M2MVForConditionalGeneration, M2MVMultiModalProjector,
                           build_audio_tower)
from mv_format_m2mv import STOP_STRING
from processing_m2mv import DEFAULT_INSTRUCTIONS, M2MVProcessor

logger = logging.getLogger(__name__)

AUDIO_TOKEN = "<|audio|>"
IMAGEBIND_AUDIO_PREFIXES = (
    "modality_preprocessors.audio.",
    "modality_trunks.audio.",
    "modality_heads.audio.",
    "modality_postprocessors.audio.",
)
AUTO_MAP = {
    "AutoConfig": "configuration_m2mv.M2MVConfig",
    "AutoModel": "modeling_m2mv.M2MVForConditionalGeneration",
    "AutoModelForCausalLM": "modeling_m2mv.M2MVForConditionalGeneration",
    "AutoModelForMultimodalLM": "modeling_m2mv.M2MVForConditionalGeneration",
}
# The audio encoder's output scale (``M2MVAudioConfig.logit_scale``) by framework: NExT-GPT, which the paper trains
# in, applies only ImageBind's L2 normalisation to audio; Meta's ImageBind also multiplies by a fixed 20.
AUDIO_SCALES = {"nextgpt": 1.0, "imagebind": 20.0}
IMAGEBIND_LOGIT_SCALE = AUDIO_SCALES["imagebind"]  # the buffer Meta's checkpoint stores (as its log)
# Paper's decoding: temperature 0.1, top-p 1.0, up to 512 new tokens, stop at "###".
DECODING_DEFAULTS = {"do_sample": True, "temperature": 0.1, "top_p": 1.0, "max_new_tokens": 512}


# ----------------------------------------------------------------------------------------------------------------
# ImageBind -> m2mv key mapping
# ----------------------------------------------------------------------------------------------------------------


def imagebind_audio_key_map(num_layers: int) -> dict[str, str]:
    """Meta's audio-branch key -> our ``M2MVAudioEncoder`` key (``in_proj`` is split separately)."""
    keys = {
        "modality_preprocessors.audio.cls_token": "embeddings.class_embedding",
        "modality_preprocessors.audio.pos_embedding_helper.pos_embed": "embeddings.position_embedding",
        "modality_preprocessors.audio.rgbt_stem.proj.weight": "embeddings.patch_embedding.projection.weight",
        "modality_preprocessors.audio.rgbt_stem.norm_layer.weight": "embeddings.patch_embedding.layer_norm.weight",
        "modality_preprocessors.audio.rgbt_stem.norm_layer.bias": "embeddings.patch_embedding.layer_norm.bias",
        "modality_heads.audio.0.weight": "head.layer_norm.weight",
        "modality_heads.audio.0.bias": "head.layer_norm.bias",
        "modality_heads.audio.2.weight": "head.projection.weight",
    }
    for i in range(num_layers):
        ours, theirs = f"layers.{i}.", f"modality_trunks.audio.blocks.{i}."
        keys.update({
            theirs + "attn.bias_k": ours + "self_attn.key_bias_token",
            theirs + "attn.bias_v": ours + "self_attn.value_bias_token",
            theirs + "attn.out_proj.weight": ours + "self_attn.out_proj.weight",
            theirs + "attn.out_proj.bias": ours + "self_attn.out_proj.bias",
            theirs + "norm_1.weight": ours + "layer_norm1.weight",
            theirs + "norm_1.bias": ours + "layer_norm1.bias",
            theirs + "norm_2.weight": ours + "layer_norm2.weight",
            theirs + "norm_2.bias": ours + "layer_norm2.bias",
            theirs + "mlp.fc1.weight": ours + "mlp.fc1.weight",
            theirs + "mlp.fc1.bias": ours + "mlp.fc1.bias",
            theirs + "mlp.fc2.weight": ours + "mlp.fc2.weight",
            theirs + "mlp.fc2.bias": ours + "mlp.fc2.bias",
        })
    return keys


def convert_imagebind_audio_state_dict(
    state_dict: dict[str, torch.Tensor], config: M2MVAudioConfig, source: str = "checkpoint"
) -> dict[str, torch.Tensor]:
    """Meta's ImageBind state dict (whole model or audio branch only) -> ``M2MVAudioEncoder`` state dict.

    Raises :class:`CheckpointError` naming every missing, unexpected or mis-shaped audio key.
    """
    audio = {k: v for k, v in state_dict.items() if k.startswith(IMAGEBIND_AUDIO_PREFIXES)}
    if not audio:
        raise CheckpointError(f"{source}: no ImageBind audio-branch keys (expected keys starting with "
                              f"{IMAGEBIND_AUDIO_PREFIXES[0]!r}); is this an ImageBind checkpoint?")
    key_map = imagebind_audio_key_map(config.num_hidden_layers)
    expected = set(key_map) | {f"modality_trunks.audio.blocks.{i}.attn.{p}"
                               for i in range(config.num_hidden_layers) for p in ("in_proj_weight", "in_proj_bias")}
    scale_key = "modality_postprocessors.audio.1.log_logit_scale"  # a buffer in Meta's state dict (= log 20)
    missing, unexpected = sorted(expected - set(audio)), sorted(set(audio) - expected - {scale_key})
    if missing or unexpected:
        raise CheckpointError(f"{source}: audio-branch keys do not match a {config.num_hidden_layers}-layer encoder; "
                              f"missing: {missing or 'none'}; unexpected: {unexpected or 'none'}")
    # The file's scale is Meta's fixed 20 whichever framework the config follows (NExT-GPT loads the same file and
    # skips it); anything else is not ImageBind's audio branch.
    if scale_key in audio:
        scale = float(audio[scale_key].exp())
        if not math.isclose(scale, IMAGEBIND_LOGIT_SCALE, rel_tol=1e-4):
            raise CheckpointError(f"{source}: audio logit scale {scale:g}, expected ImageBind's fixed "
                                  f"{IMAGEBIND_LOGIT_SCALE:g}")
    converted = {ours: audio[theirs] for theirs, ours in key_map.items()}
    hidden = config.hidden_size
    for i in range(config.num_hidden_layers):
        prefix = f"modality_trunks.audio.blocks.{i}.attn."
        weight, bias = audio[prefix + "in_proj_weight"], audio[prefix + "in_proj_bias"]
        if weight.shape != (3 * hidden, hidden):
            raise CheckpointError(f"{source}: {prefix}in_proj_weight has shape {tuple(weight.shape)}, "
                                  f"expected {(3 * hidden, hidden)}")
        for name, w, b in zip(("q_proj", "k_proj", "v_proj"), weight.chunk(3), bias.chunk(3)):
            converted[f"layers.{i}.self_attn.{name}.weight"] = w
            converted[f"layers.{i}.self_attn.{name}.bias"] = b
    for key, shape in _audio_shapes(config).items():
        if tuple(converted[key].shape) != shape:
            raise CheckpointError(f"{source}: {key} has shape {tuple(converted[key].shape)}, expected {shape} "
                                  "for this audio config")
    return {k: v.contiguous() for k, v in converted.items()}


def _audio_shapes(config: M2MVAudioConfig) -> dict[str, tuple[int, ...]]:
    """Parameter shapes of an ``M2MVAudioEncoder`` with ``config``, computed without allocating it."""
    with torch.device("meta"):
        return {k: tuple(v.shape) for k, v in M2MVAudioEncoder(config).state_dict().items()}


def load_imagebind_checkpoint(path: str | Path) -> dict[str, torch.Tensor]:
    """Read an ImageBind ``.pth`` with ``weights_only=True``; errors name the file."""
    return load_state_dict_file(path, "ImageBind")


def load_state_dict_file(path: str | Path, what: str) -> dict[str, torch.Tensor]:
    """A PyTorch state-dict file (``what`` names it in errors) read with ``weights_only=True``: no pickled code
    runs; a ``{"model": state}`` wrapper is unwrapped."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such {what} checkpoint file")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except pickle.UnpicklingError as err:  # weights_only refuses pickled code: say so in one line
        raise CheckpointError(f"{path}: not a readable PyTorch checkpoint: it holds pickled objects besides tensors, "
                              "which torch.load(weights_only=True) refuses to run; save the state dict alone "
                              "(torch.save(model.state_dict(), ...))") from err
    except Exception as err:
        detail = str(err).strip().splitlines()[0] if str(err).strip() else ""
        raise CheckpointError(f"{path}: not a readable PyTorch checkpoint ({type(err).__name__}: {detail})") from err
    if isinstance(state, dict) and "model" in state and isinstance(state["model"], dict):
        state = state["model"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{path}: expected a state dict of tensors")
    return state


# ----------------------------------------------------------------------------------------------------------------
# Assembling and saving a checkpoint
# ----------------------------------------------------------------------------------------------------------------


def _prepare_tokenizer(tokenizer):
    """Add the audio placeholder and a pad token if missing."""
    if AUDIO_TOKEN not in tokenizer.get_vocab():
        tokenizer.add_special_tokens({"additional_special_tokens": [AUDIO_TOKEN]})
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.unk_token or tokenizer.eos_token
    return tokenizer


def _stop_token_ids(tokenizer) -> list[int]:
    """Token id of the template's ``###`` stop if it is one token after a newline, else nothing."""
    ids = tokenizer("\n" + STOP_STRING, add_special_tokens=False)["input_ids"]
    last = ids[-1] if ids else None
    if last is not None and tokenizer.decode([last]).strip() == STOP_STRING:
        return [last]
    return []


def build_generation_config(tokenizer, text_config) -> GenerationConfig:
    """The paper's decoding defaults; stops at ``###`` (as a token id when it is one token, else a stop string)."""
    eos = text_config.eos_token_id if isinstance(text_config.eos_token_id, list) else [text_config.eos_token_id]
    stops = _stop_token_ids(tokenizer)
    kwargs = dict(DECODING_DEFAULTS, bos_token_id=text_config.bos_token_id, pad_token_id=tokenizer.pad_token_id,
                  eos_token_id=[i for i in eos if i is not None] + stops)
    if not stops:
        kwargs["stop_strings"] = [STOP_STRING]
    return GenerationConfig(**kwargs)


def build_processor(tokenizer, num_audio_tokens: int, channel_mode: str = "left", feature_extractor=None,
                    **processor_options) -> M2MVProcessor:
    """The processor of a new checkpoint: ImageBind's transform (or ``feature_extractor``, the audio encoder's own),
    the tokenizer, the taxonomy, the instructions; ``processor_options`` (``chat_template``, ``tokenize_segments``)
    for an imported checkpoint's own prompt."""
    feature_extractor = feature_extractor or M2MVFeatureExtractor(channel_mode=channel_mode)
    return M2MVProcessor(feature_extractor, tokenizer, audio_token=AUDIO_TOKEN,
                         num_audio_tokens=num_audio_tokens, mv_types=load_mv_types(),
                         instructions=dict(DEFAULT_INSTRUCTIONS), stop_string=STOP_STRING, **processor_options)


def assemble_model(
    language_model,
    tokenizer,
    audio_config,
    audio_state: dict[str, torch.Tensor] | None,
    num_audio_tokens: int = 1,
    seed: int = 0,
    zero_adaptor: bool = True,
    projector_state: dict[str, torch.Tensor] | None = None,
    config_options: dict | None = None,
    extra_state: dict[str, torch.Tensor] | None = None,
) -> M2MVForConditionalGeneration:
    """Put an LM (``LlamaForCausalLM``), an audio encoder state (or random) and an adaptor together.

    ``audio_config``: an :class:`M2MVAudioConfig` (ImageBind) or a transformers audio encoder's config; its
    ``audio_state`` has the keys of the tower :func:`build_audio_tower` makes of it.

    ``zero_adaptor``: start a fresh adaptor at zero (real LMs); ``False`` keeps a random adaptor (tiny test models,
    where the audio must visibly change the output). ``projector_state``: a trained adaptor's ``weight`` and
    ``bias`` (an imported checkpoint's) instead of a fresh one. ``config_options``: more ``M2MVConfig`` fields
    (e.g. ``prellm_fusion_layers``) and ``extra_state`` the weights of the parts they add (keys as in the model).
    """
    tokenizer = _prepare_tokenizer(tokenizer)
    if language_model.get_input_embeddings().num_embeddings < len(tokenizer):
        language_model.resize_token_embeddings(len(tokenizer), mean_resizing=True)
    text_config = language_model.config
    config = M2MVConfig(audio_config=audio_config, text_config=text_config,
                        audio_token_id=tokenizer.convert_tokens_to_ids(AUDIO_TOKEN),
                        num_audio_tokens=num_audio_tokens, **(config_options or {}))
    config.auto_map = dict(AUTO_MAP)
    dtype = language_model.get_input_embeddings().weight.dtype
    torch.manual_seed(seed)
    audio_tower = build_audio_tower(config)  # the encoder's own random init unless a state is given
    if audio_state is not None:
        audio_tower.load_state_dict(audio_state, strict=True)
    projector = M2MVMultiModalProjector(config)
    # A fresh adaptor starts at zero: the audio token is then a zero vector the LM tolerates (a random one of
    # ImageBind's norm 20 derails a real LM's English), and stage-1 training moves it (its input is not zero).
    if projector_state is not None:
        projector.linear.load_state_dict(projector_state, strict=True)
    elif zero_adaptor:
        torch.nn.init.zeros_(projector.linear.weight)
        if projector.linear.bias is not None:
            torch.nn.init.zeros_(projector.linear.bias)
    else:
        torch.nn.init.normal_(projector.linear.weight, std=text_config.initializer_range)
    state = {f"model.audio_tower.{k}": v for k, v in audio_tower.state_dict().items()}
    state.update({f"model.multi_modal_projector.{k}": v.to(dtype) for k, v in projector.state_dict().items()})
    for key, value in language_model.state_dict().items():
        state["lm_head.weight" if key == "lm_head.weight" else "model.language_model." + key.removeprefix("model.")] = value
    if text_config.tie_word_embeddings:
        state.pop("lm_head.weight", None)
    state.update({k: v.to(dtype) for k, v in (extra_state or {}).items()})
    with torch.device("meta"):
        model = M2MVForConditionalGeneration(config)
    result = model.load_state_dict(state, strict=False, assign=True)
    allowed_missing = {"lm_head.weight"} if text_config.tie_word_embeddings else set()
    if set(result.missing_keys) - allowed_missing or result.unexpected_keys:
        raise CheckpointError(f"assembling failed: missing {result.missing_keys}, unexpected {result.unexpected_keys}")
    _copy_buffers(model, language_model)
    model.tie_weights()
    model.model.audio_tower.requires_grad_(not config.freeze_audio_encoder)
    model.generation_config = build_generation_config(tokenizer, text_config)
    return model.eval()


def _copy_buffers(model, language_model) -> None:
    """The buffers that no state dict holds (the LM's rotary frequencies), left on the meta device by building
    the model there: taken from the language model, so that the assembled model runs as it is."""
    source = dict(language_model.named_buffers())
    for name, buffer in list(model.named_buffers()):
        if buffer.is_meta:
            value = source.get(name.replace("model.language_model.", "model.", 1))
            if value is None:
                raise CheckpointError(f"assembling failed: no value for buffer {name}")
            owner, _, leaf = name.rpartition(".")
            model.get_submodule(owner)._buffers[leaf] = value


def save_checkpoint(model, processor, out_dir: str | Path, card) -> Path:
    """Write weights (safetensors), the remote code, the processor and the card (a ``ModelCard``) atomically.

    The remote code is copied by transformers itself (``register_for_auto_class``): each class's file and the files
    it imports relatively.
    """
    out_dir = Path(out_dir)
    if out_dir.exists() and any(out_dir.iterdir()):
        raise FileExistsError(f"{out_dir}: output folder exists and is not empty")
    M2MVConfig.register_for_auto_class()
    M2MVForConditionalGeneration.register_for_auto_class("AutoModelForCausalLM")
    M2MVFeatureExtractor.register_for_auto_class("AutoFeatureExtractor")
    M2MVProcessor.register_for_auto_class("AutoProcessor")
    with atomic_directory(out_dir) as staging:
        model.config.auto_map = dict(AUTO_MAP)
        model.save_pretrained(staging)
        processor.save_pretrained(staging)
        write_card(card, staging)
    return out_dir


def build_checkpoint(
    out_dir: str | Path,
    lm_path: str | Path,
    imagebind_path: str | Path | None = None,
    gguf_file: str | None = None,
    num_audio_tokens: int = 1,
    dtype: torch.dtype | None = None,
    seed: int = 0,
    audio_scale: str = "nextgpt",
) -> Path:
    """ImageBind ``.pth`` (or random audio weights) + a Llama/Vicuna folder -> an m2mv checkpoint folder.

    ``audio_scale``: a key of :data:`AUDIO_SCALES` (``nextgpt``, the paper's framework, or Meta's ``imagebind``).
    """
    audio_config = M2MVAudioConfig(logit_scale=audio_scale_value(audio_scale))
    audio_state = None
    if imagebind_path is not None:
        audio_state = convert_imagebind_audio_state_dict(load_imagebind_checkpoint(imagebind_path), audio_config,
                                                         source=str(imagebind_path))
    tokenizer, language_model = load_language_model(lm_path, gguf_file, dtype)
    model = assemble_model(language_model, tokenizer, audio_config, audio_state, num_audio_tokens, seed)
    name = Path(out_dir).name
    model.config.name_or_path = name
    facts = CardFacts(
        random_parts=[] if imagebind_path else ["audio encoder"],
        language_model=f"{Path(lm_path).name}{' / ' + gguf_file if gguf_file else ''}",
        audio_encoder=(f"ImageBind-Huge audio branch from {Path(imagebind_path).name}" if imagebind_path
                       else "ImageBind-Huge audio architecture with RANDOM weights (no ImageBind checkpoint given)"),
        num_audio_tokens=num_audio_tokens, audio_scale=audio_config.logit_scale)
    card = base_card(name, facts, ZERO_ADAPTOR_NOTE)
    return save_checkpoint(model, build_processor(tokenizer, num_audio_tokens), out_dir, card)


def load_audio_encoder(path: str | Path):
    """``(config, encoder state dict, feature extractor, where the weights come from)`` of a transformers audio
    model folder (``WhisperForConditionalGeneration``, ``WhisperModel``, an AST or wav2vec2 folder, ...); an
    encoder-decoder keeps its encoder. Errors name the folder."""
    path = Path(path)
    if not (path / "config.json").is_file():
        raise CheckpointError(f"{path}: not an audio model folder (no config.json)")
    try:
        model = AutoModel.from_pretrained(path, dtype=torch.float32)
        feature_extractor = AutoFeatureExtractor.from_pretrained(path)
    except (OSError, ValueError) as err:
        raise CheckpointError(f"{path}: the audio encoder could not be loaded ({type(err).__name__}: "
                              f"{str(err).splitlines()[0]})") from err
    if "audio" not in getattr(model, "input_modalities", ()) and model.main_input_name not in (
            "input_features", "input_values"):
        raise CheckpointError(f"{path}: a {model.config.model_type!r} model is not an audio encoder")
    encoder = model.get_encoder() if model.config.is_encoder_decoder else model
    source_file = path / "SOURCE.txt"
    source = source_file.read_text().strip() if source_file.is_file() else f"weights from {path.name}"
    return model.config, encoder.state_dict(), feature_extractor, source


def build_audio_encoder_checkpoint(
    out_dir: str | Path,
    lm_path: str | Path,
    audio_encoder_path: str | Path,
    num_audio_tokens: int = 15,
    audio_pooling: str = "mean",
    gguf_file: str | None = None,
    dtype: torch.dtype | None = None,
    seed: int = 0,
) -> Path:
    """A transformers audio encoder folder (Whisper, ...) + a Llama folder -> an m2mv checkpoint whose audio is
    ``num_audio_tokens`` tokens of the encoder's states pooled over time (15 = one per 2 s of a 30-s clip)."""
    audio_config, audio_state, feature_extractor, source = load_audio_encoder(audio_encoder_path)
    tokenizer, language_model = load_language_model(lm_path, gguf_file, dtype)
    model = assemble_model(language_model, tokenizer, audio_config, audio_state, num_audio_tokens, seed,
                           config_options={"audio_pooling": audio_pooling})
    name = Path(out_dir).name
    model.config.name_or_path = name
    facts = CardFacts(language_model=f"{Path(lm_path).name}{' / ' + gguf_file if gguf_file else ''}",
                      audio_encoder=f"{audio_config.model_type} encoder ({source}), frozen, states pooled "
                                    f"({audio_pooling}) over {num_audio_tokens} equal windows",
                      num_audio_tokens=num_audio_tokens, audio_encoder_type=audio_config.model_type)
    card = base_card(name, facts, ZERO_ADAPTOR_NOTE)
    processor = build_processor(tokenizer, num_audio_tokens, feature_extractor=feature_extractor)
    return save_checkpoint(model, processor, out_dir, card)


def audio_scale_value(name: str) -> float:
    """The ``logit_scale`` of a framework name in :data:`AUDIO_SCALES`; an unknown name is an error listing them."""
    if name not in AUDIO_SCALES:
        raise CheckpointError(f"unknown audio scale {name!r}; expected one of {sorted(AUDIO_SCALES)}")
    return AUDIO_SCALES[name]


ZERO_ADAPTOR_NOTE = "The adaptor is freshly initialised at zero: train it (stage 1) before the audio means anything."


def load_language_model(lm_path: str | Path, gguf_file: str | None = None, dtype: torch.dtype | None = None):
    """``(tokenizer, LlamaForCausalLM)`` from a folder (GGUF weights dequantised); errors name the folder."""
    path = Path(lm_path)
    if not (path / "config.json").is_file() and not (gguf_file and (path / gguf_file).is_file()):
        raise CheckpointError(f"{path}: not a language-model folder (no config.json"
                              + (f" and no {gguf_file}" if gguf_file else "") + ")")
    kwargs = {"gguf_file": gguf_file} if gguf_file else {}
    try:
        tokenizer = AutoTokenizer.from_pretrained(path, **kwargs)
        language_model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype or "auto", **kwargs)
    except (OSError, ValueError) as err:
        raise CheckpointError(f"{path}: the language model could not be loaded ({type(err).__name__}: "
                              f"{str(err).splitlines()[0]})") from err
    if getattr(language_model, "hf_quantizer", None) is not None:  # GGUF weights are dequantised on load
        language_model.hf_quantizer = None
        if hasattr(language_model.config, "quantization_config"):
            del language_model.config.quantization_config
    if language_model.config.model_type != "llama":
        raise CheckpointError(f"{path}: expected a Llama-architecture LM, got model_type="
                              f"{language_model.config.model_type!r}")
    return tokenizer, language_model
