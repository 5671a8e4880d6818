"""Import NExT-GPT's and DeepResonance's released checkpoints into m2mv: their text path, audio in, text out.

    m2mv convert --nextgpt 7b_tiva_v0/pytorch_model.pt --lm ./vicuna-7b-v0 --imagebind imagebind_huge.pth --out DIR
    m2mv convert --deepresonance deepresonance_beta/pytorch_model.pt --lm ./vicuna-7b-v0 --imagebind ... --out DIR

Both save a delta with ``torch.save`` of their trainable parameters (``code/model/agent.py``, ``save_model``): the
input projection ``llama_proj`` (``Linear(1024, 4096)``), the LoRA weights on Vicuna-7B v0's q/k/v/o projections
(r=32, alpha=32, PEFT's ``...lora_A.default.weight`` names), and the whole input and output embedding tables,
resized for the tokens they add. NExT-GPT's image/video/audio output heads (``gen_text_hidden_fcs*``) serve only
its generation of other media and are left out; DeepResonance beta's pre-LLM fusion (``preencoding.*``, one
``nn.TransformerEncoderLayer``) becomes the model's ``prellm_fusion``. Both apply ImageBind's L2 normalisation to
audio without the x20 (m2mv's default audio scale); NExT-GPT averages the three clips into one token,
DeepResonance (``imagebind_embs_seq``) keeps three. The prompt is each framework's own, as the folder's chat
template; the LoRA is merged with PEFT (``W + (alpha/r) B A``). m2mv's audio placeholder is one extra vocabulary
entry that generation never emits (``suppress_tokens``), so the sampled distribution is theirs.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from configuration_m2mv import M2MVAudioConfig
from m2mv.checkpoints.cards import CardFacts, base_card
from m2mv.checkpoints.convert import (AUDIO_SCALES, assemble_model, build_processor, convert_imagebind_audio_state_dict,
                                      load_imagebind_checkpoint, load_language_model, load_state_dict_file,
                                      save_checkpoint)
from m2mv.errors import CheckpointError
from processing_m2mv import DEEPRESONANCE_CHAT_TEMPLATE, NEXTGPT_CHAT_TEMPLATE

LORA_ALPHA = 32  # both frameworks' config yaml (stage_3 / stage_2); the file stores no alpha (r is read from shapes)
LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj")
DELTA_FILE = "pytorch_model.pt"
LM_PREFIX = "llama_model.base_model.model."  # PEFT's wrapping of their `llama_model`
FUSION_PREFIX = "preencoding."  # DeepResonance's nn.TransformerEncoder


@dataclass(frozen=True)
class Framework:
    """What differs between the frameworks' text paths."""

    name: str
    added_tokens: tuple[str, ...]  # in their order (``add_tokens``, not special)
    ignored_prefixes: tuple[str, ...]  # delta keys not on the text path
    num_audio_tokens: int
    chat_template: str
    decoding: dict
    notes: str
    input_boundary: str | None = None  # where the prompt's input segment ends (tokenised apart; fused if any)


NEXTGPT = Framework(
    name="NExT-GPT",
    # ids 32000-32037 on Vicuna's 32000 (anyToImageVideoAudio.py, _add_image_token/_add_video_token/_add_audio_token;
    # base.yaml's num_gen_img_tokens 4, num_gen_video_tokens 24, num_gen_audio_tokens 8)
    added_tokens=("<Img>", "</Img>", *(f"[IMG{i}]" for i in range(4)), *(f"[VID{i}]" for i in range(24)),
                  *(f"[AUD{i}]" for i in range(8))),
    ignored_prefixes=("gen_text_hidden_fcs.", "gen_text_hidden_fcs_video.", "gen_text_hidden_fcs_audio."),
    num_audio_tokens=1,
    chat_template=NEXTGPT_CHAT_TEMPLATE,
    # inference.py samples at temperature 0.4, top-p 1.0; its 150 new tokens cannot hold an MV description, so the
    # paper's limit (512) is kept.
    decoding={"temperature": 0.4, "top_p": 1.0, "max_new_tokens": 512},
    notes=("Converted from NExT-GPT (`7b_tiva_v0`) by `m2mv convert --nextgpt`: its text path only (the image, "
           "video and audio generation heads are left out). The prompt is NExT-GPT's inference prompt "
           "(`[BOS] ### Human: <Img>[audio]</Img> [BOS] {instruction}\\n### Assistant:`, this folder's chat "
           "template); decoding samples at temperature 0.4, top-p 1.0 as its `inference.py` does (up to 512 new "
           "tokens). Zero-shot on m2mv's data (`m2mv benchmark --model DIR --prompt nextgpt`) it is the paper's "
           "NExT-GPT baseline row."),
)

DEEPRESONANCE = Framework(
    name="DeepResonance",
    # deepresonance.py adds "<Img>", "</Img>", then calls add_tokens with Python sets ({"<Vid>"} ...), which
    # transformers 4.29 stores as the sets' string forms: ids 32000-32005, never used in a prompt.
    added_tokens=("<Img>", "</Img>", "{'<Vid>'}", "{'</Vid>'}", "{'<Aud>'}", "{'</Aud>'}"),
    ignored_prefixes=(),
    num_audio_tokens=3,  # imagebind_embs_seq: one token per 2-s clip
    chat_template=DEEPRESONANCE_CHAT_TEMPLATE,
    decoding={"temperature": 0.1, "top_p": 1.0, "max_new_tokens": 512},  # inference_deepresonance.py defaults
    input_boundary="### Human:",  # the input segment and the instruction turn are tokenised apart
    notes=("Converted from DeepResonance by `m2mv convert --deepresonance`: the three clip embeddings as three "
           "tokens (`imagebind_embs_seq`), and its pre-LLM fusion over the input segment where the checkpoint has "
           "one (beta). The prompt is DeepResonance's (`{input}### Human: {instruction}\\n### Assistant: `, the "
           "input segment holding the audio tokens and the conditioning text, no BOS): where its training data put "
           "the conditioning is not published, so that placement is m2mv's. Decoding samples at temperature 0.1, "
           "top-p 1.0, up to 512 new tokens, as its inference script does."),
)


def load_delta(path: str | Path, framework: Framework) -> dict[str, torch.Tensor]:
    """A framework's delta checkpoint: the ``pytorch_model.pt`` file, or the folder holding it."""
    path = Path(path)
    if path.is_dir():
        path = path / DELTA_FILE
    return load_state_dict_file(path, f"{framework.name} delta")


def _lora_keys(language_model) -> dict[str, tuple[str, str]]:
    """Delta LoRA key -> (the LM parameter it adapts, ``lora_A``/``lora_B``)."""
    keys = {}
    for name, _ in language_model.named_parameters():
        module, _, leaf = name.rpartition(".")
        if leaf == "weight" and module.rsplit(".", 1)[-1] in LORA_TARGETS:
            for part in ("lora_A", "lora_B"):
                keys[f"{LM_PREFIX}{module}.{part}.default.weight"] = (name, part)
    return keys


def _fusion_shapes(text_config, layers: int) -> dict[str, tuple[int, ...]]:
    """Key -> shape of DeepResonance's ``preencoding`` (``nn.TransformerEncoder`` of ``layers`` layers)."""
    with torch.device("meta"):
        layer = torch.nn.TransformerEncoderLayer(text_config.hidden_size, text_config.num_attention_heads,
                                                 text_config.intermediate_size, batch_first=True)
        shapes = {k: tuple(v.shape) for k, v in layer.state_dict().items()}
    return {f"{FUSION_PREFIX}layers.{i}.{k}": shape for i in range(layers) for k, shape in shapes.items()}


def split_delta(state: dict[str, torch.Tensor], language_model, framework: Framework, source: str) -> dict:
    """Check the delta's keys and shapes against the language model; return its parts: ``lora`` (PEFT parameter
    name -> tensor), ``embed_tokens``, ``lm_head``, ``projector`` (``weight``, ``bias``), ``fusion`` (key ->
    tensor, DeepResonance beta), ``fusion_layers`` and the LoRA rank ``r``. A missing, unexpected or mis-shaped
    key is an error naming it."""
    base = {name: tuple(p.shape) for name, p in language_model.named_parameters()}
    lora_keys = _lora_keys(language_model)
    tables = {f"{LM_PREFIX}model.embed_tokens.weight": "embed_tokens", f"{LM_PREFIX}lm_head.weight": "lm_head"}
    projector = {"llama_proj.weight": "weight", "llama_proj.bias": "bias"}
    fusion_layers = 0
    if framework is DEEPRESONANCE:
        indices = {k.split(".")[2] for k in state if k.startswith(FUSION_PREFIX + "layers.")}
        fusion_layers = len(indices)
    fusion_shapes = _fusion_shapes(language_model.config, fusion_layers)
    expected = set(lora_keys) | set(tables) | set(projector) | set(fusion_shapes)
    present = {k for k in state if not (framework.ignored_prefixes and k.startswith(framework.ignored_prefixes))}
    missing, unexpected = sorted(expected - present), sorted(present - expected)
    if missing or unexpected:
        raise CheckpointError(f"{source}: not a {framework.name} delta for this language model; missing: "
                              f"{_few(missing)}; unexpected: {_few(unexpected)}")
    ranks = {state[k].shape[0] for k, (_, part) in lora_keys.items() if part == "lora_A"}
    if len(ranks) != 1:
        raise CheckpointError(f"{source}: LoRA ranks differ between layers ({sorted(ranks)})")
    r = ranks.pop()
    hidden = language_model.config.hidden_size
    shapes = {key: ((r, base[name][1]) if part == "lora_A" else (base[name][0], r))
              for key, (name, part) in lora_keys.items()}
    rows = state[f"{LM_PREFIX}model.embed_tokens.weight"].shape[0]
    shapes.update({key: (rows, hidden) for key in tables})
    shapes.update({"llama_proj.weight": (hidden, state["llama_proj.weight"].shape[1]), "llama_proj.bias": (hidden,)})
    shapes.update(fusion_shapes)
    for key, shape in shapes.items():
        if tuple(state[key].shape) != shape:
            raise CheckpointError(f"{source}: {key} has shape {tuple(state[key].shape)}, expected {shape}")
    return {"lora": {key.removeprefix("llama_model."): state[key] for key in lora_keys}, "r": r,
            **{part: state[key] for key, part in tables.items()},
            "projector": {part: state[key] for key, part in projector.items()},
            "fusion": {"model.prellm_fusion.encoder." + k.removeprefix(FUSION_PREFIX): state[k] for k in fusion_shapes},
            "fusion_layers": fusion_layers}


def _few(keys: list[str]) -> str:
    return "none" if not keys else ", ".join(keys[:6]) + (f" ... ({len(keys)} in all)" if len(keys) > 6 else "")


def add_framework_tokens(tokenizer, framework: Framework, rows: int, source: str):
    """Add the framework's tokens in its order; the vocabulary must then match the delta's embedding rows."""
    tokenizer.add_tokens(list(framework.added_tokens))
    if len(tokenizer) != rows:
        raise CheckpointError(f"{source}: the delta's embedding tables have {rows} rows, but the language model's "
                              f"tokenizer with {framework.name}'s {len(framework.added_tokens)} tokens has "
                              f"{len(tokenizer)}: give --lm the Vicuna-7B v0 folder {framework.name} was trained on")
    return tokenizer


def merge_lora(language_model, lora: dict[str, torch.Tensor], r: int, alpha: int = LORA_ALPHA):
    """The delta's LoRA merged into the weights with PEFT (``W + (alpha/r) B A``)."""
    try:
        from peft import LoraConfig, get_peft_model
    except ImportError as err:
        raise CheckpointError("importing a LoRA needs PEFT: pip install 'm2mv[train]'") from err
    config = LoraConfig(r=r, lora_alpha=alpha, lora_dropout=0.0, target_modules=list(LORA_TARGETS),
                        task_type="CAUSAL_LM")
    peft_model = get_peft_model(language_model, config)
    dtype = language_model.get_input_embeddings().weight.dtype
    result = peft_model.load_state_dict({k: v.to(dtype) for k, v in lora.items()}, strict=False)
    missing_lora = sorted(k for k in result.missing_keys if "lora_" in k)
    if result.unexpected_keys or missing_lora:
        raise CheckpointError(f"merging the LoRA failed: unexpected {_few(sorted(result.unexpected_keys))}; "
                              f"missing {_few(missing_lora)}")
    return peft_model.merge_and_unload()


def build_framework_checkpoint(
    framework: Framework,
    out_dir: str | Path,
    delta_path: str | Path,
    lm_path: str | Path,
    imagebind_path: str | Path | None = None,
    dtype: torch.dtype | None = None,
    audio_config: M2MVAudioConfig | None = None,
) -> Path:
    """A framework's delta + its Vicuna-7B v0 + ImageBind (or a random audio encoder, said in the card) -> an m2mv
    checkpoint whose text output is the framework's. ``audio_config``: ImageBind-Huge's sizes unless given
    (tests)."""
    source = str(delta_path)
    tokenizer, language_model = load_language_model(lm_path, None, dtype)
    parts = split_delta(load_delta(delta_path, framework), language_model, framework, source)
    add_framework_tokens(tokenizer, framework, parts["embed_tokens"].shape[0], source)
    language_model.resize_token_embeddings(len(tokenizer))
    with torch.no_grad():  # both tables were trained and saved whole (resized after the PEFT wrap)
        language_model.get_input_embeddings().weight.copy_(parts["embed_tokens"])
        language_model.get_output_embeddings().weight.copy_(parts["lm_head"])
    language_model = merge_lora(language_model, parts["lora"], parts["r"])
    audio_config = audio_config or M2MVAudioConfig()
    if audio_config.logit_scale != AUDIO_SCALES["nextgpt"]:
        raise CheckpointError(f"{framework.name}'s audio path has no x20: the audio config's logit_scale must be 1.0")
    audio_state = None
    if imagebind_path is not None:
        audio_state = convert_imagebind_audio_state_dict(load_imagebind_checkpoint(imagebind_path), audio_config,
                                                         source=str(imagebind_path))
    lm_dtype = language_model.get_input_embeddings().weight.dtype
    fusion = {"prellm_fusion_layers": parts["fusion_layers"]} if parts["fusion_layers"] else None
    model = assemble_model(language_model, tokenizer, audio_config, audio_state, framework.num_audio_tokens,
                           projector_state={k: v.to(lm_dtype) for k, v in parts["projector"].items()},
                           config_options=fusion, extra_state=parts["fusion"])
    model.generation_config.update(**framework.decoding, suppress_tokens=[model.config.audio_token_id])
    name = Path(out_dir).name
    model.config.name_or_path = name
    fused = f", pre-LLM fusion ({parts['fusion_layers']} layer)" if parts["fusion_layers"] else ""
    facts = CardFacts(
        random_parts=[] if imagebind_path else ["audio encoder"],
        language_model=f"{Path(lm_path).name} with {framework.name}'s LoRA (r={parts['r']}, alpha={LORA_ALPHA}) "
                       f"and embeddings from {Path(source).name}, merged{fused}",
        audio_encoder=(f"ImageBind-Huge audio branch from {Path(imagebind_path).name}" if imagebind_path
                       else "ImageBind-Huge audio architecture with RANDOM weights (no ImageBind checkpoint given)"),
        num_audio_tokens=framework.num_audio_tokens, audio_scale=audio_config.logit_scale)
    card = base_card(name, facts, f"The adaptor is {framework.name}'s `llama_proj`.", notes=framework.notes)
    processor = build_processor(tokenizer, framework.num_audio_tokens, chat_template=framework.chat_template,
                                tokenize_segments=True, input_boundary=framework.input_boundary,
                                fuse_input=bool(fusion))
    return save_checkpoint(model, processor, out_dir, card)


def use_framework_prompt(model, processor, framework: Framework, source: str = "the checkpoint") -> None:
    """Prompt and sample a loaded checkpoint as ``framework`` does (its chat template, per-segment tokenisation,
    its decoding): the zero-shot baseline. The checkpoint must hold the framework's tokens and audio tokens (one
    converted from it)."""
    vocab = processor.tokenizer.get_vocab()
    missing = [t for t in framework.added_tokens[:2] if t not in vocab]
    if missing or model.config.num_audio_tokens != framework.num_audio_tokens:
        raise CheckpointError(f"{source}: {framework.name}'s prompt needs its tokens ({', '.join(missing) or 'ok'}) "
                              f"and {framework.num_audio_tokens} audio token(s) (this one has "
                              f"{model.config.num_audio_tokens}): convert its checkpoint with m2mv convert "
                              f"--{framework.name.lower().replace('-', '')}")
    processor.chat_template = framework.chat_template
    processor.tokenize_segments = True
    processor.input_boundary = framework.input_boundary
    processor.fuse_input = bool(model.config.prellm_fusion_layers)
    model.generation_config.update(**framework.decoding)
