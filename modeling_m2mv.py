"""m2mv model: an audio encoder, a linear adaptor, and a Llama (Vicuna) language model.

The audio encoder is ImageBind's audio branch (the paper's, defined here) or any transformers audio encoder built
from the config's ``audio_config`` (Whisper's encoder, ...), whose states are pooled over time into
``num_audio_tokens`` tokens.

Built the way transformers' own multimodal LLMs are (LLaVA, Qwen2-Audio): the processor expands one audio
placeholder token to ``config.num_audio_tokens`` copies, the model encodes the audio, projects it into the LM's
embedding space and writes it over the placeholders with ``masked_scatter``. The audio is used on the first
generation step only; later steps read the KV cache.

This file travels with every checkpoint as remote code (``trust_remote_code=True``).
"""

import os
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import AutoModel, GenerationMixin, PreTrainedModel
from transformers import initialization as init
from transformers.cache_utils import Cache
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_outputs import BaseModelOutputWithPast, BaseModelOutputWithPooling, CausalLMOutputWithPast
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS, slice_logits_to_keep
from transformers.processing_utils import Unpack
from transformers.utils import TransformersKwargs, can_return_tuple, torch_compilable_check
from transformers.utils.deprecation import deprecate_kwarg
from transformers.utils.output_capturing import capture_outputs

try:  # loaded as remote code from a checkpoint folder (a package)
    from .configuration_m2mv import M2MVAudioConfig, M2MVConfig
except ImportError:  # imported from the source tree as a top-level module
    from configuration_m2mv import M2MVAudioConfig, M2MVConfig


@dataclass
class M2MVModelOutputWithPast(BaseModelOutputWithPast):
    """Base-model outputs plus the projected audio tokens (``audio_hidden_states``, batch x tokens x hidden)."""

    audio_hidden_states: torch.Tensor | None = None


@dataclass
class M2MVCausalLMOutputWithPast(CausalLMOutputWithPast):
    """Causal-LM outputs plus the projected audio tokens (``audio_hidden_states``, batch x tokens x hidden)."""

    audio_hidden_states: torch.Tensor | None = None


# ----------------------------------------------------------------------------------------------------------------
# ImageBind's audio branch
# ----------------------------------------------------------------------------------------------------------------


class M2MVAudioPatchEmbedding(nn.Module):
    """Overlapping 16x16 patches (stride 10) of the (mel x frames) spectrogram, then LayerNorm."""

    def __init__(self, config: M2MVAudioConfig):
        super().__init__()
        self.projection = nn.Conv2d(
            1, config.hidden_size, kernel_size=config.patch_size, stride=config.patch_stride, bias=False
        )
        self.layer_norm = nn.LayerNorm(config.hidden_size, eps=config.patch_layer_norm_eps)

    def forward(self, spectrograms: torch.Tensor) -> torch.Tensor:
        """(N, 1, mel, frames) -> (N, patches, hidden)."""
        patches = self.projection(spectrograms).flatten(2).transpose(1, 2)
        return self.layer_norm(patches)


class M2MVAudioEmbeddings(nn.Module):
    """Patch embedding, a prepended CLS token and a learned positional embedding (no LayerNorm after)."""

    def __init__(self, config: M2MVAudioConfig):
        super().__init__()
        self.patch_embedding = M2MVAudioPatchEmbedding(config)
        self.class_embedding = nn.Parameter(torch.zeros(1, 1, config.hidden_size))
        self.position_embedding = nn.Parameter(torch.zeros(1, config.num_patches + 1, config.hidden_size))

    def forward(self, spectrograms: torch.Tensor) -> torch.Tensor:
        patches = self.patch_embedding(spectrograms)
        cls = self.class_embedding.expand(patches.shape[0], -1, -1)
        return torch.cat([cls, patches], dim=1) + self.position_embedding


def eager_attention_forward(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float,
    dropout: float = 0.0,
    **kwargs,
) -> tuple[torch.Tensor, torch.Tensor]:
    attn_weights = torch.matmul(query, key.transpose(2, 3)) * scaling
    if attention_mask is not None:
        attn_weights = attn_weights + attention_mask
    attn_weights = nn.functional.softmax(attn_weights, dim=-1)
    attn_weights = nn.functional.dropout(attn_weights, p=dropout, training=module.training)
    attn_output = torch.matmul(attn_weights, value).transpose(1, 2).contiguous()
    return attn_output, attn_weights


class M2MVAudioAttention(nn.Module):
    """Multi-head self-attention with learned key/value bias tokens (``nn.MultiheadAttention(add_bias_kv=True)``).

    The bias tokens are one extra key and one extra value appended to every sequence; they are easy to miss and
    change every output. The attention itself runs on ``config._attn_implementation`` (eager, SDPA, ...).
    """

    def __init__(self, config: M2MVAudioConfig):
        super().__init__()
        self.config = config
        self.num_heads = config.num_attention_heads
        self.head_dim = config.hidden_size // config.num_attention_heads
        self.scaling = self.head_dim**-0.5
        self.is_causal = False
        self.q_proj = nn.Linear(config.hidden_size, config.hidden_size)
        self.k_proj = nn.Linear(config.hidden_size, config.hidden_size)
        self.v_proj = nn.Linear(config.hidden_size, config.hidden_size)
        self.key_bias_token = nn.Parameter(torch.zeros(1, 1, config.hidden_size))
        self.value_bias_token = nn.Parameter(torch.zeros(1, 1, config.hidden_size))
        self.out_proj = nn.Linear(config.hidden_size, config.hidden_size)

    def forward(
        self, hidden_states: torch.Tensor, **kwargs: Unpack[TransformersKwargs]
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        batch, length, _ = hidden_states.shape
        hidden_shape = (batch, -1, self.num_heads, self.head_dim)
        query = self.q_proj(hidden_states).view(hidden_shape).transpose(1, 2)
        key = torch.cat([self.k_proj(hidden_states), self.key_bias_token.expand(batch, -1, -1)], dim=1)
        value = torch.cat([self.v_proj(hidden_states), self.value_bias_token.expand(batch, -1, -1)], dim=1)
        key, value = key.view(hidden_shape).transpose(1, 2), value.view(hidden_shape).transpose(1, 2)

        attention_interface: Callable = ALL_ATTENTION_FUNCTIONS.get_interface(
            self.config._attn_implementation, eager_attention_forward
        )
        attn_output, attn_weights = attention_interface(
            self, query, key, value, attention_mask=None, dropout=0.0, scaling=self.scaling, **kwargs
        )
        attn_output = attn_output.reshape(batch, length, -1).contiguous()
        return self.out_proj(attn_output), attn_weights


class M2MVAudioMLP(nn.Module):
    """Linear, GELU, Linear."""

    def __init__(self, config: M2MVAudioConfig):
        super().__init__()
        self.fc1 = nn.Linear(config.hidden_size, config.intermediate_size)
        self.fc2 = nn.Linear(config.intermediate_size, config.hidden_size)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(hidden_states)))


def drop_path(hidden_states: torch.Tensor, rate: float, training: bool) -> torch.Tensor:
    """Stochastic depth: drop the whole residual branch per sample with probability ``rate`` while training."""
    if rate == 0.0 or not training:
        return hidden_states
    keep = 1.0 - rate
    mask = hidden_states.new_empty((hidden_states.shape[0],) + (1,) * (hidden_states.ndim - 1)).bernoulli_(keep)
    return hidden_states * mask / keep


class M2MVAudioEncoderLayer(GradientCheckpointingLayer):
    """Pre-norm transformer block: x + DropPath(Attn(LN(x))), then x + DropPath(MLP(LN(x)))."""

    def __init__(self, config: M2MVAudioConfig, drop_path_rate: float):
        super().__init__()
        self.layer_norm1 = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.self_attn = M2MVAudioAttention(config)
        self.layer_norm2 = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.mlp = M2MVAudioMLP(config)
        self.drop_path_rate = drop_path_rate

    def forward(self, hidden_states: torch.Tensor, **kwargs: Unpack[TransformersKwargs]) -> torch.Tensor:
        attended, _ = self.self_attn(self.layer_norm1(hidden_states), **kwargs)
        hidden_states = hidden_states + drop_path(attended, self.drop_path_rate, self.training)
        transformed = self.mlp(self.layer_norm2(hidden_states))
        return hidden_states + drop_path(transformed, self.drop_path_rate, self.training)


class M2MVAudioHead(nn.Module):
    """LayerNorm, take the CLS token, project to the joint space, L2-normalise, multiply by the fixed scale
    (``config.logit_scale``: 1 in NExT-GPT, the paper's framework; 20 in Meta's ImageBind)."""

    def __init__(self, config: M2MVAudioConfig):
        super().__init__()
        self.layer_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.projection = nn.Linear(config.hidden_size, config.output_dim, bias=False)
        self.logit_scale = config.logit_scale

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        cls = self.layer_norm(hidden_states)[:, 0]
        return F.normalize(self.projection(cls), dim=-1) * self.logit_scale


class M2MVAudioEncoder(PreTrainedModel):
    """ImageBind's audio branch: (batch, clips, mel, frames) spectrograms -> (batch, clips, output_dim) embeddings.

    The per-clip embeddings are returned as ``pooler_output``; averaging them over the clips gives ImageBind's
    own audio embedding (what NExT-GPT feeds its adaptor). ``last_hidden_state`` is (batch, clips, patches + 1,
    hidden); each clip is encoded on its own, so ``hidden_states`` and ``attentions`` (on request) are per layer
    over the batch * clips sequences.
    """

    config: M2MVAudioConfig
    main_input_name = "input_features"
    input_modalities = "audio"
    supports_gradient_checkpointing = True
    _no_split_modules = ["M2MVAudioEncoderLayer"]
    _supports_sdpa = True
    _supports_flash_attn = True
    _supports_attention_backend = True
    _can_compile_fullgraph = True
    _can_record_outputs = {"hidden_states": M2MVAudioEncoderLayer, "attentions": M2MVAudioAttention}

    def __init__(self, config: M2MVAudioConfig):
        super().__init__(config)
        self.embeddings = M2MVAudioEmbeddings(config)
        steps = max(config.num_hidden_layers - 1, 1)
        rates = [config.drop_path_rate * i / steps for i in range(config.num_hidden_layers)]  # torch.linspace(0, r, n)
        self.layers = nn.ModuleList(M2MVAudioEncoderLayer(config, rate) for rate in rates)
        self.head = M2MVAudioHead(config)
        self.gradient_checkpointing = False
        self.post_init()

    def _init_weights(self, module: nn.Module) -> None:
        """ImageBind's initialisation: truncated normal (std 0.02) for linear layers and the learned tokens."""
        std = self.config.initializer_range
        if isinstance(module, (nn.Linear, nn.Conv2d)):
            init.trunc_normal_(module.weight, std=std)
            if module.bias is not None:
                init.zeros_(module.bias)
        elif isinstance(module, nn.LayerNorm):
            init.ones_(module.weight)
            init.zeros_(module.bias)
        elif isinstance(module, M2MVAudioEmbeddings):
            init.trunc_normal_(module.class_embedding, std=std)
            init.trunc_normal_(module.position_embedding, std=std)
        elif isinstance(module, M2MVAudioAttention):
            init.trunc_normal_(module.key_bias_token, std=std)
            init.trunc_normal_(module.value_bias_token, std=std)

    # `last_hidden_state` is batch-first (batch, clips, ...), the captured layer outputs are per clip: keep both as is.
    @capture_outputs(tie_last_hidden_states=False)
    def forward(
        self, input_features: torch.Tensor, **kwargs: Unpack[TransformersKwargs]
    ) -> tuple | BaseModelOutputWithPooling:
        """Encode ``input_features`` (batch, clips, mel, frames) into per-clip embeddings (batch, clips, out)."""
        expected = (self.config.num_mel_bins, self.config.target_length)
        if input_features.ndim != 4 or tuple(input_features.shape[-2:]) != expected:
            raise ValueError(
                f"M2MVAudioEncoder expects input_features of shape (batch, clips, {expected[0]}, {expected[1]}), "
                f"got {tuple(input_features.shape)}"
            )
        batch, clips = input_features.shape[:2]
        spectrograms = input_features.reshape(batch * clips, 1, *expected).to(self.embeddings.position_embedding.dtype)
        hidden_states = self.embeddings(spectrograms)
        for layer in self.layers:
            hidden_states = layer(hidden_states, **kwargs)
        clip_embeddings = self.head(hidden_states).reshape(batch, clips, -1)
        return BaseModelOutputWithPooling(
            last_hidden_state=hidden_states.reshape(batch, clips, *hidden_states.shape[1:]),
            pooler_output=clip_embeddings,
        )


# ----------------------------------------------------------------------------------------------------------------
# Adaptor and the multimodal LM
# ----------------------------------------------------------------------------------------------------------------


def build_audio_tower(config: M2MVConfig) -> nn.Module:
    """ImageBind's audio branch, or the transformers audio encoder of ``config.audio_config`` (``AutoModel``; an
    encoder-decoder such as Whisper keeps only its encoder)."""
    if config.uses_imagebind:
        return M2MVAudioEncoder(config.audio_config)
    model = AutoModel.from_config(config.audio_config)
    return model.get_encoder() if getattr(config.audio_config, "is_encoder_decoder", False) else model


def pool_over_time(states: torch.Tensor, tokens: int, pooling: str = "mean") -> torch.Tensor:
    """(batch, time, width) encoder states -> (batch, tokens, width), each token pooled over an equal window."""
    windows = states.transpose(1, 2)
    pooled = F.adaptive_max_pool1d(windows, tokens) if pooling == "max" else F.adaptive_avg_pool1d(windows, tokens)
    return pooled.transpose(1, 2)


class M2MVMultiModalProjector(nn.Module):
    """The adaptor: one ``Linear(width, hidden_size)`` from the audio encoder's space (ImageBind's 1024-d joint
    space, or a time-axis encoder's state width) into the LM's embeddings."""

    def __init__(self, config: M2MVConfig):
        super().__init__()
        self.linear = nn.Linear(
            config.audio_embeds_shape[1], config.text_config.hidden_size, bias=config.projector_bias
        )

    def forward(self, audio_embeddings: torch.Tensor) -> torch.Tensor:
        return self.linear(audio_embeddings.to(self.linear.weight.dtype))


class M2MVPreLLMFusion(nn.Module):
    """DeepResonance's pre-LLM fusion: ``nn.TransformerEncoder`` layers (PyTorch's defaults: post-norm, ReLU) over
    the prompt's input segment, the positions where ``fusion_mask`` is set (the audio tokens and the text around
    them, one contiguous run per row), before the language model; the instruction turn is left as it is."""

    def __init__(self, config: M2MVConfig):
        super().__init__()
        text = config.text_config
        layer = nn.TransformerEncoderLayer(d_model=text.hidden_size, nhead=text.num_attention_heads,
                                           dim_feedforward=text.intermediate_size,
                                           dropout=config.prellm_fusion_dropout, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, num_layers=config.prellm_fusion_layers, enable_nested_tensor=False)

    def forward(self, inputs_embeds: torch.Tensor, fusion_mask: torch.Tensor) -> torch.Tensor:
        mask = fusion_mask.to(torch.bool)
        lengths = mask.sum(dim=1)
        width = int(lengths.max())
        if width == 0:
            return inputs_embeds
        # The fused positions of each row, in order, right-padded (what DeepResonance's encoder sees).
        order = torch.argsort((~mask).to(torch.int8), dim=1, stable=True)[:, :width]
        segment = inputs_embeds.gather(1, order.unsqueeze(-1).expand(-1, -1, inputs_embeds.shape[-1]))
        padding = torch.arange(width, device=mask.device)[None] >= lengths[:, None]
        fused = self.encoder(segment, src_key_padding_mask=padding)
        return inputs_embeds.masked_scatter(mask.unsqueeze(-1).expand_as(inputs_embeds), fused[~padding])


class M2MVPreTrainedModel(PreTrainedModel):
    config: M2MVConfig
    base_model_prefix = "model"
    input_modalities = ("audio", "text")
    supports_gradient_checkpointing = True
    _no_split_modules = ["M2MVAudioEncoderLayer", "LlamaDecoderLayer"]
    _skip_keys_device_placement = ["cache"]
    # Those of both parts (the audio tower's are in M2MVAudioEncoder; flex attention is not among them).
    _supports_flash_attn = True
    _supports_sdpa = True
    _supports_attention_backend = True
    _can_compile_fullgraph = True
    # Weights of the task head only: a base-model checkpoint has none (they are initialised, as transformers does
    # when a base checkpoint is loaded into a head) and the base model drops a head checkpoint's.
    _head_weights = ("lm_head.",)

    @classmethod
    def from_pretrained(
        cls, pretrained_model_name_or_path: str | os.PathLike | None, *args, strict: bool = True, **kwargs
    ) -> "M2MVPreTrainedModel | tuple[M2MVPreTrainedModel, dict]":
        """``PreTrainedModel.from_pretrained`` that, with ``strict=True`` (the default), refuses a checkpoint whose
        weights do not match the config (missing, unexpected or mis-shaped keys) instead of silently
        initialising them at random.

        As in transformers, the task head may be absent (a base-model checkpoint loaded into
        :class:`M2MVForConditionalGeneration`) or extra (a full checkpoint loaded into :class:`M2MVModel`), and a
        tied ``lm_head`` is never stored. Without a checkpoint (``pretrained_model_name_or_path=None`` with a
        ``state_dict``) nothing is refused.
        """
        want_info = kwargs.pop("output_loading_info", False)
        model, info = super().from_pretrained(pretrained_model_name_or_path, *args, output_loading_info=True, **kwargs)
        head = cls._head_weights
        problems = {
            "missing keys": sorted(key for key in map(str, info["missing_keys"]) if not key.startswith(head)),
            "unexpected keys": sorted(key for key in map(str, info["unexpected_keys"]) if not key.startswith(head)),
            "mismatched keys": sorted(map(str, info["mismatched_keys"])),
        }
        problems = {kind: keys for kind, keys in problems.items() if keys}
        if strict and problems and pretrained_model_name_or_path is not None:
            details = "; ".join(f"{kind}: {', '.join(keys[:8])}{' ...' if len(keys) > 8 else ''}"
                                for kind, keys in problems.items())
            raise ValueError(f"{pretrained_model_name_or_path}: the checkpoint does not match its config ({details}). "
                             "Pass strict=False to load it anyway with those weights initialised at random.")
        if model.config.freeze_audio_encoder:  # loading replaces the parameters, so freeze again
            model.audio_tower.requires_grad_(False)
        return (model, info) if want_info else model


class M2MVModel(M2MVPreTrainedModel):
    """Audio encoder + adaptor + language model without the LM head."""

    def __init__(self, config: M2MVConfig):
        super().__init__(config)
        self.audio_tower = build_audio_tower(config)
        self.multi_modal_projector = M2MVMultiModalProjector(config)
        self.language_model = AutoModel.from_config(config.text_config)
        self.prellm_fusion = M2MVPreLLMFusion(config) if config.prellm_fusion_layers else None
        if config.freeze_audio_encoder:
            self.audio_tower.requires_grad_(False)
        self.post_init()

    def train(self, mode: bool = True) -> "M2MVModel":
        """Like ``nn.Module.train``, but a frozen audio encoder stays in eval mode (no drop-path noise)."""
        super().train(mode)
        if self.config.freeze_audio_encoder:
            self.audio_tower.eval()
        return self

    def get_input_embeddings(self) -> nn.Module:
        return self.language_model.get_input_embeddings()

    def set_input_embeddings(self, value: nn.Module) -> None:
        self.language_model.set_input_embeddings(value)

    def encode_audio(
        self, input_features: torch.Tensor, **kwargs: Unpack[TransformersKwargs]
    ) -> BaseModelOutputWithPooling:
        """The audio encoder's output before the adaptor: ``pooler_output`` (batch, *config.audio_embeds_shape*),
        what precomputed embeddings hold. ImageBind: its per-clip embeddings. A time-axis encoder: its last
        states pooled into ``num_audio_tokens`` windows (``audio_pooling``). The other fields are the tower's."""
        param = next(self.audio_tower.parameters())
        outputs = self.audio_tower(input_features.to(param.device, param.dtype), return_dict=True, **kwargs)
        if not self.config.uses_imagebind:
            outputs.pooler_output = pool_over_time(outputs.last_hidden_state, self.config.num_audio_tokens,
                                                   self.config.audio_pooling)
        return outputs

    def zero_audio_features(self, batch: int = 1) -> torch.Tensor:
        """All-zero encoder inputs of one audio's shape (ImageBind's clips, or Whisper's 30-s log-mel)."""
        audio = self.config.audio_config
        if self.config.uses_imagebind:
            shape = (audio.clips_per_audio, audio.num_mel_bins, audio.target_length)
        elif hasattr(audio, "num_mel_bins") and hasattr(audio, "max_source_positions"):  # Whisper-like
            shape = (audio.num_mel_bins, 2 * audio.max_source_positions)
        else:
            raise ValueError(f"zero_audio_features does not know the input shape of a {audio.model_type!r} encoder")
        return torch.zeros(batch, *shape)

    @can_return_tuple
    def get_audio_features(
        self,
        input_features: torch.Tensor | None = None,
        audio_embeds: torch.Tensor | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> tuple | BaseModelOutputWithPooling:
        """Audio -> LM input embeddings, returned as ``pooler_output`` of shape (batch, num_audio_tokens, hidden).

        Args:
            input_features: the feature extractor's output (ImageBind: spectrograms (batch, clips, mel, frames);
                Whisper: log-mel (batch, mel, 3000)); the other fields of the output are the audio tower's
                (``output_hidden_states``/``output_attentions`` go to it).
            audio_embeds: precomputed encoder embeddings (batch, *config.audio_embeds_shape*, see
                :meth:`encode_audio`); skips the encoder, and the output then holds only ``pooler_output``.
        """
        if (input_features is None) == (audio_embeds is None):
            raise ValueError("get_audio_features needs exactly one of input_features or audio_embeds")
        if audio_embeds is None:
            audio_outputs = self.encode_audio(input_features, **kwargs)
            audio_embeds = audio_outputs.pooler_output
        else:
            audio_outputs = BaseModelOutputWithPooling()
        expected = self.config.audio_embeds_shape
        if audio_embeds.ndim != 3 or tuple(audio_embeds.shape[1:]) != expected:
            raise ValueError(f"audio_embeds must have shape (batch, {expected[0]}, {expected[1]}), "
                             f"got {tuple(audio_embeds.shape)}")
        if self.config.uses_imagebind and self.config.num_audio_tokens == 1:
            audio_embeds = audio_embeds.mean(dim=1, keepdim=True)
        audio_outputs.pooler_output = self.multi_modal_projector(audio_embeds)
        return audio_outputs

    def get_placeholder_mask(
        self, input_ids: torch.LongTensor | None, inputs_embeds: torch.Tensor, audio_features: torch.Tensor
    ) -> torch.Tensor:
        """Boolean mask (batch, seq, hidden) of the audio placeholder positions; checks their count."""
        if input_ids is None:
            placeholder = self.get_input_embeddings()(
                torch.tensor(self.config.audio_token_id, dtype=torch.long, device=inputs_embeds.device)
            )
            mask = (inputs_embeds == placeholder).all(-1)
        else:
            mask = input_ids == self.config.audio_token_id
        n_tokens, n_features = mask.sum(), audio_features.shape[0] * audio_features.shape[1]
        torch_compilable_check(
            n_tokens == n_features,
            lambda: f"Audio placeholder tokens and audio features do not match: {int(n_tokens)} placeholder tokens in "
            f"the input ids, {n_features} audio tokens from {audio_features.shape[0]} audio inputs x "
            f"num_audio_tokens={self.config.num_audio_tokens}. Build the inputs with M2MVProcessor.",
        )
        return mask.unsqueeze(-1).expand_as(inputs_embeds).to(inputs_embeds.device)

    def _fuse_input_segment(self, inputs_embeds: torch.Tensor, fusion_mask: torch.Tensor | None,
                            cache: Cache | None) -> torch.Tensor:
        """The pre-LLM fusion over the prompt's input segment (first step only: later steps read the cache)."""
        if self.prellm_fusion is None:
            if fusion_mask is not None:
                raise ValueError("fusion_mask given, but this model has no pre-LLM fusion (prellm_fusion_layers=0)")
            return inputs_embeds
        if fusion_mask is None:
            if cache is None or cache.get_seq_length() == 0:
                raise ValueError("this model fuses the prompt's input segment before the LM (prellm_fusion_layers="
                                 f"{self.config.prellm_fusion_layers}): pass the processor's fusion_mask")
            return inputs_embeds
        if fusion_mask.shape != inputs_embeds.shape[:2]:
            raise ValueError(f"fusion_mask has shape {tuple(fusion_mask.shape)}, expected "
                             f"{tuple(inputs_embeds.shape[:2])} (batch, sequence)")
        return self.prellm_fusion(inputs_embeds, fusion_mask.to(inputs_embeds.device))

    @can_return_tuple
    @deprecate_kwarg("past_key_values", "5.40.0", new_name="cache")
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        input_features: torch.Tensor | None = None,
        audio_embeds: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        cache: Cache | None = None,
        inputs_embeds: torch.Tensor | None = None,
        use_cache: bool | None = None,
        fusion_mask: torch.Tensor | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> tuple | M2MVModelOutputWithPast:
        r"""
        fusion_mask (`torch.Tensor` of shape `(batch_size, sequence_length)`, *optional*):
            The prompt's input segment, fused by the pre-LLM fusion layers (``config.prellm_fusion_layers``) before
            the language model; the processor of such a checkpoint returns it. Needed on the first step only.
        """
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("You must specify exactly one of input_ids or inputs_embeds")
        if inputs_embeds is None:
            inputs_embeds = self.get_input_embeddings()(input_ids)

        audio_features = None
        if input_features is not None or audio_embeds is not None:
            audio_features = self.get_audio_features(input_features, audio_embeds, return_dict=True).pooler_output
            audio_features = audio_features.to(inputs_embeds.device, inputs_embeds.dtype)
            mask = self.get_placeholder_mask(input_ids, inputs_embeds, audio_features)
            inputs_embeds = inputs_embeds.masked_scatter(mask, audio_features)
        inputs_embeds = self._fuse_input_segment(inputs_embeds, fusion_mask, cache)

        outputs = self.language_model(
            attention_mask=attention_mask,
            position_ids=position_ids,
            cache=cache,
            inputs_embeds=inputs_embeds,
            use_cache=use_cache,
            return_dict=True,
            **kwargs,
        )
        return M2MVModelOutputWithPast(
            last_hidden_state=outputs.last_hidden_state,
            cache=outputs.cache,
            hidden_states=outputs.hidden_states,
            attentions=outputs.attentions,
            audio_hidden_states=audio_features,
        )


class M2MVForConditionalGeneration(M2MVPreTrainedModel, GenerationMixin):
    """m2mv with the LM head: music in, a music-video description out.

    ``labels`` set to -100 are ignored by the loss, so the processor masks everything but the answer.
    """

    _tied_weights_keys = {"lm_head.weight": "model.language_model.embed_tokens.weight"}
    _tp_plan = {"lm_head": "colwise_gather_output"}

    def __init__(self, config: M2MVConfig):
        super().__init__(config)
        self.model = M2MVModel(config)
        self.lm_head = nn.Linear(config.text_config.hidden_size, config.text_config.vocab_size, bias=False)
        self.post_init()

    def get_input_embeddings(self) -> nn.Module:
        return self.model.get_input_embeddings()

    def set_input_embeddings(self, value: nn.Module) -> None:
        self.model.set_input_embeddings(value)

    def get_output_embeddings(self) -> nn.Module:
        return self.lm_head

    def set_output_embeddings(self, value: nn.Module) -> None:
        self.lm_head = value

    @property
    def audio_tower(self) -> nn.Module:
        return self.model.audio_tower

    @property
    def multi_modal_projector(self) -> M2MVMultiModalProjector:
        return self.model.multi_modal_projector

    @property
    def language_model(self) -> nn.Module:
        return self.model.language_model

    def get_audio_features(
        self,
        input_features: torch.Tensor | None = None,
        audio_embeds: torch.Tensor | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> tuple | BaseModelOutputWithPooling:
        """See :meth:`M2MVModel.get_audio_features`."""
        return self.model.get_audio_features(input_features, audio_embeds, **kwargs)

    def encode_audio(
        self, input_features: torch.Tensor, **kwargs: Unpack[TransformersKwargs]
    ) -> BaseModelOutputWithPooling:
        """See :meth:`M2MVModel.encode_audio`."""
        return self.model.encode_audio(input_features, **kwargs)

    def zero_audio_features(self, batch: int = 1) -> torch.Tensor:
        """See :meth:`M2MVModel.zero_audio_features`."""
        return self.model.zero_audio_features(batch)

    def set_audio_encoder_dtype(self, dtype: torch.dtype) -> None:
        """Run the (frozen) audio encoder in ``dtype`` (e.g. bfloat16) while the LM keeps its own dtype."""
        self.model.audio_tower.to(dtype)

    @can_return_tuple
    @deprecate_kwarg("past_key_values", "5.40.0", new_name="cache")
    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        input_features: torch.Tensor | None = None,
        audio_embeds: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        cache: Cache | None = None,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.LongTensor | None = None,
        use_cache: bool | None = None,
        logits_to_keep: int | torch.Tensor = 0,
        fusion_mask: torch.Tensor | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> tuple | M2MVCausalLMOutputWithPast:
        r"""
        fusion_mask (`torch.Tensor` of shape `(batch_size, sequence_length)`, *optional*):
            See :meth:`M2MVModel.forward` (checkpoints with pre-LLM fusion only).
        """
        if labels is not None and use_cache is None:
            # A loss needs no cache, and without one a padding-free batch (position ids restarting per row, no
            # attention mask) keeps each row's attention to itself; with one, transformers cannot see the packing
            use_cache = False
        outputs = self.model(
            input_ids=input_ids,
            input_features=input_features,
            audio_embeds=audio_embeds,
            attention_mask=attention_mask,
            position_ids=position_ids,
            cache=cache,
            inputs_embeds=inputs_embeds,
            use_cache=use_cache,
            fusion_mask=fusion_mask,
            return_dict=True,
            **kwargs,
        )
        logits = self.lm_head(slice_logits_to_keep(outputs.last_hidden_state, logits_to_keep))

        loss = None
        if labels is not None:
            loss = self.loss_function(
                logits=logits, labels=labels, vocab_size=self.config.text_config.vocab_size, **kwargs
            )
        return M2MVCausalLMOutputWithPast(
            loss=loss,
            logits=logits,
            cache=outputs.cache,
            hidden_states=outputs.hidden_states,
            attentions=outputs.attentions,
            audio_hidden_states=outputs.audio_hidden_states,
        )

    def prepare_inputs_for_generation(
        self,
        input_ids: torch.LongTensor,
        cache: Cache | None = None,
        attention_mask: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        is_first_iteration: bool | None = False,
        **kwargs,
    ) -> dict:
        """Pass the audio (features or precomputed embeddings) on the first step only; later steps use the cache."""
        model_inputs = super().prepare_inputs_for_generation(
            input_ids, cache=cache, attention_mask=attention_mask, inputs_embeds=inputs_embeds,
            is_first_iteration=is_first_iteration, **kwargs
        )
        if not is_first_iteration and kwargs.get("use_cache", True):
            model_inputs.pop("audio_embeds", None)
            model_inputs.pop("input_features", None)
            model_inputs.pop("fusion_mask", None)
        return model_inputs


__all__ = [
    "M2MVAudioEncoder",
    "M2MVForConditionalGeneration",
    "M2MVModel",
    "M2MVMultiModalProjector",
    "M2MVPreLLMFusion",
    "M2MVPreTrainedModel",
    "build_audio_tower",
    "pool_over_time",
]
