"""Configuration of m2mv: an audio encoder + a linear adaptor + a Llama (Vicuna) language model.

The audio encoder is ImageBind's audio branch (:class:`M2MVAudioConfig`, the paper's, the default) or any
transformers audio encoder given as an ``audio_config`` of its own model type (``{"model_type": "whisper", ...}``:
Whisper's encoder), the way LLaVA takes any vision tower.

This file travels with every checkpoint as remote code (``trust_remote_code=True``); it imports only
``transformers`` and the other two m2mv files.
"""

from typing import ClassVar

from huggingface_hub.dataclasses import strict
from transformers import AutoConfig, PreTrainedConfig
from transformers.configuration_utils import SubConfigSpec

# How a time-axis encoder's states are pooled into ``num_audio_tokens`` equal windows.
AUDIO_POOLINGS = ("mean", "max")


@strict
class M2MVAudioConfig(PreTrainedConfig):
    """Sizes of ImageBind's audio branch. The defaults are the real one (``imagebind_huge()``'s audio branch, a ViT-B).

    Args:
        num_mel_bins: mel bins of the input filter bank (height of the spectrogram "image").
        target_length: frames per 2-s clip after padding/cropping (width of the spectrogram "image").
        patch_size: square kernel of the patch-embedding convolution.
        patch_stride: stride of the patch-embedding convolution (patches overlap: 16 with stride 10).
        hidden_size: transformer width.
        num_hidden_layers: transformer blocks.
        num_attention_heads: attention heads per block.
        intermediate_size: MLP width (4x the width in ImageBind).
        drop_path_rate: stochastic-depth rate of the last block (linearly spaced from 0).
        output_dim: size of the joint embedding space (the head's output).
        logit_scale: fixed factor applied after L2 normalisation. 1.0 (the default) is the paper's framework:
            NExT-GPT's copy of ImageBind applies only the L2 ``Normalize`` to audio and skips the scaling. 20.0 is
            Meta's ImageBind (``LearnableLogitScaling(20.0, learnable=False)``); checkpoints written before m2mv
            0.3 store 20.0 and keep it.
        patch_layer_norm_eps: eps of the LayerNorm after the patch embedding (``nn.LayerNorm`` default).
        layer_norm_eps: eps of the blocks' and the head's LayerNorms.
        clips_per_audio: 2-s clips sampled evenly over each input (ImageBind samples 3).
        initializer_range: std of the truncated-normal initialisation.
    """

    model_type = "m2mv_audio_encoder"
    base_config_key = "audio_config"

    num_mel_bins: int = 128
    target_length: int = 204
    patch_size: int = 16
    patch_stride: int = 10
    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    drop_path_rate: float = 0.1
    output_dim: int = 1024
    logit_scale: float = 1.0
    patch_layer_norm_eps: float = 1e-5
    layer_norm_eps: float = 1e-6
    clips_per_audio: int = 3
    initializer_range: float = 0.02

    @property
    def num_patches(self) -> int:
        """Patches of one clip's spectrogram (12 x 19 = 228 for the real sizes)."""
        rows = (self.num_mel_bins - self.patch_size) // self.patch_stride + 1
        cols = (self.target_length - self.patch_size) // self.patch_stride + 1
        return rows * cols

    def validate_architecture(self):
        """Reject sizes that cannot build an encoder."""
        for name in ("num_mel_bins", "target_length", "patch_size", "patch_stride", "hidden_size",
                     "num_hidden_layers", "num_attention_heads", "intermediate_size", "output_dim",
                     "clips_per_audio"):
            if getattr(self, name) < 1:
                raise ValueError(f"M2MVAudioConfig.{name} must be >= 1, got {getattr(self, name)}")
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(
                f"M2MVAudioConfig.hidden_size ({self.hidden_size}) must be divisible by num_attention_heads "
                f"({self.num_attention_heads})"
            )
        if self.patch_size > min(self.num_mel_bins, self.target_length):
            raise ValueError(
                f"M2MVAudioConfig.patch_size ({self.patch_size}) is larger than the spectrogram "
                f"({self.num_mel_bins} x {self.target_length})"
            )
        if not 0.0 <= self.drop_path_rate < 1.0:
            raise ValueError(f"M2MVAudioConfig.drop_path_rate must be in [0, 1), got {self.drop_path_rate}")


class AudioEncoderSpec(SubConfigSpec):
    """``audio_config``: ImageBind's (:class:`M2MVAudioConfig`) unless its dict names another model type, which
    then builds that type's own config (``AutoConfig.for_model``; no global registration needed)."""

    def create_subconfig(self, key, subconfig=None, **kwargs):
        model_type = subconfig.get("model_type") if isinstance(subconfig, dict) else None
        if model_type and model_type != M2MVAudioConfig.model_type:
            return AutoConfig.for_model(**subconfig), kwargs
        return super().create_subconfig(key, subconfig, **kwargs)


def audio_encoder_width(audio_config: PreTrainedConfig) -> int:
    """Width of the states a transformers audio encoder returns (``d_model`` or ``hidden_size``)."""
    for name in ("d_model", "hidden_size"):
        width = getattr(audio_config, name, None)
        if isinstance(width, int) and width > 0:
            return width
    raise ValueError(f"cannot tell the output width of a {audio_config.model_type!r} audio encoder "
                     "(its config has no d_model or hidden_size)")


@strict
class M2MVConfig(PreTrainedConfig):
    """Configuration of :class:`M2MVForConditionalGeneration`.

    Args:
        audio_config: :class:`M2MVAudioConfig` (or its dict); defaults to ImageBind-Huge's audio branch. Any
            other model type's config (e.g. a ``WhisperConfig``) builds that encoder with ``AutoModel.from_config``
            (an encoder-decoder keeps its encoder); its states are pooled over time into ``num_audio_tokens``.
        text_config: the language model's config (a ``LlamaConfig`` or its dict); defaults to Vicuna-7B sizes
            plus the placeholder token.
        audio_token_id: id of the audio placeholder token that the processor expands and the model fills.
        num_audio_tokens: ImageBind: 1 = the mean of the clip embeddings as one LM token (NExT-GPT, the paper);
            ``clips_per_audio`` = one LM token per 2-s clip. An encoder with a time axis: its states pooled in this
            many equal windows (15 for a 30-s clip = one token per 2-s frame; 1 = the mean over time).
        audio_pooling: how those windows are pooled, ``"mean"`` or ``"max"`` (time-axis encoders only).
        projector_bias: whether the adaptor ``Linear(output_dim, hidden_size)`` has a bias (NExT-GPT's has).
        freeze_audio_encoder: keep the encoder frozen (``requires_grad=False``) after loading.
        prellm_fusion_layers: DeepResonance's pre-LLM fusion: this many ``nn.TransformerEncoderLayer``s over the
            prompt's input segment (the audio tokens and the text around them) before the LM; 0 (default): none.
        prellm_fusion_dropout: dropout of those layers (DeepResonance's 0.1).
        tie_word_embeddings: follows ``text_config.tie_word_embeddings`` (SmolLM2 ties, Vicuna does not).
    """

    model_type = "m2mv"
    sub_configs_defaults: ClassVar[dict] = {
        "audio_config": AudioEncoderSpec(config_class=M2MVAudioConfig),
        # Vicuna-7B sizes with one extra vocabulary entry: the audio placeholder token (id 32000).
        "text_config": SubConfigSpec(config_class=AutoConfig, model_type="llama", init_kwargs={"vocab_size": 32001}),
    }

    audio_config: dict | PreTrainedConfig | None = None
    text_config: dict | PreTrainedConfig | None = None
    audio_token_id: int = 32000
    num_audio_tokens: int = 1
    audio_pooling: str = "mean"
    projector_bias: bool = True
    freeze_audio_encoder: bool = True
    tie_word_embeddings: bool = False
    prellm_fusion_layers: int = 0
    prellm_fusion_dropout: float = 0.1

    # Read by nothing (prompt conditioning is chosen per call); dropped when a config.json written before has them.
    _removed_keys: ClassVar[tuple[str, ...]] = ("use_genre_tags", "use_mv_type", "use_lyrics_understanding")

    def __post_init__(self, **kwargs):
        for key in self._removed_keys:
            kwargs.pop(key, None)
        super().__post_init__(**kwargs)
        # The LM head shares the input embeddings exactly when the language model's own config says so.
        self.tie_word_embeddings = bool(getattr(self.text_config, "tie_word_embeddings", False))

    @property
    def uses_imagebind(self) -> bool:
        """Whether the audio encoder is ImageBind's audio branch (else a transformers encoder with a time axis)."""
        return isinstance(self.audio_config, M2MVAudioConfig)

    @property
    def audio_embeds_shape(self) -> tuple[int, int]:
        """(tokens, width) of one audio's encoder output before the adaptor (what precomputed embeddings hold):
        ImageBind's per-clip embeddings, or a time-axis encoder's pooled states."""
        if self.uses_imagebind:
            return self.audio_config.clips_per_audio, self.audio_config.output_dim
        return self.num_audio_tokens, audio_encoder_width(self.audio_config)

    def validate_architecture(self):
        """Reject combinations that disagree with each other."""
        audio, text = self.audio_config, self.text_config
        if self.audio_pooling not in AUDIO_POOLINGS:
            raise ValueError(f"M2MVConfig.audio_pooling must be one of {AUDIO_POOLINGS}, got {self.audio_pooling!r}")
        if not self.uses_imagebind:
            audio_encoder_width(audio)
            if self.num_audio_tokens < 1:
                raise ValueError(f"M2MVConfig.num_audio_tokens must be >= 1, got {self.num_audio_tokens}")
        elif self.num_audio_tokens not in (1, audio.clips_per_audio):
            raise ValueError(
                f"M2MVConfig.num_audio_tokens must be 1 (mean of the clips) or clips_per_audio "
                f"({audio.clips_per_audio}, one token per clip), got {self.num_audio_tokens}"
            )
        if self.prellm_fusion_layers < 0:
            raise ValueError(f"M2MVConfig.prellm_fusion_layers must be >= 0, got {self.prellm_fusion_layers}")
        vocab_size = getattr(text, "vocab_size", None)
        if vocab_size is not None and not 0 <= self.audio_token_id < vocab_size:
            raise ValueError(
                f"M2MVConfig.audio_token_id ({self.audio_token_id}) is outside the language model's vocabulary "
                f"(vocab_size={vocab_size}); add the placeholder token to the tokenizer and resize the embeddings"
            )


__all__ = ["AUDIO_POOLINGS", "M2MVAudioConfig", "M2MVConfig", "audio_encoder_width"]
