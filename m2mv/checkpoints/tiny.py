"""Tiny random m2mv checkpoints for tests and demos: ImageBind's real audio architecture and a Llama at toy sizes.

Names, cards and logs say they are tiny and random; nothing here pretends to be a real model.
"""

from __future__ import annotations

from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import (LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast, WhisperConfig,
                          WhisperFeatureExtractor)

from configuration_m2mv import M2MVAudioConfig
from m2mv.checkpoints.cards import CardFacts, base_card
from m2mv.checkpoints.convert import AUDIO_TOKEN, assemble_model, audio_scale_value, build_processor, save_checkpoint

TINY_NAME = "m2mv-tiny-random"
TINY_LM = "tiny random Llama (2 layers, width 64)"
TINY_ENCODER = "tiny random ImageBind audio architecture (2 layers, width 32)"
TINY_WHISPER_NAME = "m2mv-tiny-random-whisper"
TINY_WHISPER_ENCODER = "tiny random Whisper encoder architecture (1 layer, width 32; real 80-mel 30-s input)"

_TINY_CORPUS = """### Human: <Audio></Audio> Genre tags: rock, pop, electronic, jazz, folk, orchestral, ambient.
MV type: Live Performance. Lyrics understanding: the song is about love, loss, hope and the night.
### Assistant: Overview: a band plays on a dark stage under red and blue lights while the crowd dances.
Frames:
[00:00-00:02] The camera opens on a city street at night.
[00:02-00:04] The singer walks toward the camera in slow motion.
[00:04-00:06] Close-up of hands on a guitar as sparks fall.
[00:28-00:30] The screen fades to black.
###
generate a caption. Describe a music video for this music: an overview, then what the video shows in each
2-second frame. A calm piano piece with soft strings; a fast techno track with heavy drums and bass.
The video shows dancers, animated shapes, a story of two friends, a desert road, waves and a bright sky.
"""


def make_tiny_tokenizer():
    """A byte-level BPE tokenizer (vocab 512) trained on a built-in text; deterministic, for tests only."""
    specials = ["<unk>", "<s>", "</s>", "<pad>", AUDIO_TOKEN]
    tokenizer = Tokenizer(models.BPE(unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=512, special_tokens=specials, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tokenizer.train_from_iterator([_TINY_CORPUS] * 4, trainer=trainer)
    tokenizer.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, bos_token="<s>", eos_token="</s>", unk_token="<unk>",
                                   pad_token="<pad>", additional_special_tokens=[AUDIO_TOKEN])


def tiny_audio_config(**overrides) -> M2MVAudioConfig:
    """ImageBind's audio architecture at toy width and depth (real 128x204 input, real patching)."""
    sizes = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128, output_dim=1024)
    return M2MVAudioConfig(**{**sizes, **overrides})


def tiny_text_config(vocab_size: int, **overrides) -> LlamaConfig:
    sizes = dict(vocab_size=vocab_size, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                 num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=2048,
                 bos_token_id=1, eos_token_id=2, pad_token_id=3, tie_word_embeddings=False)
    return LlamaConfig(**{**sizes, **overrides})


def tiny_whisper_config(**overrides) -> WhisperConfig:
    """Whisper's encoder at toy width and depth with its real input (80 mel bins x 3000 frames of 30 s)."""
    sizes = dict(d_model=32, encoder_layers=1, encoder_attention_heads=4, encoder_ffn_dim=64, decoder_layers=1,
                 decoder_attention_heads=4, decoder_ffn_dim=64, vocab_size=64, max_target_positions=32,
                 pad_token_id=0, bos_token_id=1, eos_token_id=2, decoder_start_token_id=1)
    return WhisperConfig(**{**sizes, **overrides})


def build_tiny_whisper_checkpoint(out_dir: str | Path, num_audio_tokens: int = 15, seed: int = 0) -> Path:
    """A tiny random m2mv checkpoint whose audio encoder is a toy Whisper encoder (its states pooled into
    ``num_audio_tokens`` tokens) with Whisper's own feature extractor; the adaptor is random, as in
    :func:`build_tiny_checkpoint`."""
    torch.manual_seed(seed)
    tokenizer = make_tiny_tokenizer()
    language_model = LlamaForCausalLM(tiny_text_config(len(tokenizer)))
    audio_config = tiny_whisper_config()
    model = assemble_model(language_model, tokenizer, audio_config, None, num_audio_tokens, seed, zero_adaptor=False)
    model.config.name_or_path = TINY_WHISPER_NAME
    facts = CardFacts(random_parts=["language model", "audio encoder", "adaptor"], tiny=True,
                      language_model=TINY_LM, audio_encoder=TINY_WHISPER_ENCODER, num_audio_tokens=num_audio_tokens,
                      audio_encoder_type="whisper")
    card = base_card(TINY_WHISPER_NAME, facts, "The adaptor has random weights (so that the audio visibly changes "
                     "the output).")
    processor = build_processor(tokenizer, num_audio_tokens, feature_extractor=WhisperFeatureExtractor())
    return save_checkpoint(model, processor, out_dir, card)


def build_tiny_checkpoint(out_dir: str | Path, num_audio_tokens: int = 1, seed: int = 0,
                          audio_scale: str = "nextgpt") -> Path:
    """A tiny random m2mv checkpoint (toy-sized ImageBind audio branch + toy Llama) for tests and demos. Its adaptor
    is random, not zero, so that the audio visibly changes the output. ``audio_scale``: as in the converter."""
    torch.manual_seed(seed)
    tokenizer = make_tiny_tokenizer()
    language_model = LlamaForCausalLM(tiny_text_config(len(tokenizer)))
    audio_config = tiny_audio_config(logit_scale=audio_scale_value(audio_scale))
    model = assemble_model(language_model, tokenizer, audio_config, None, num_audio_tokens, seed, zero_adaptor=False)
    model.config.name_or_path = TINY_NAME
    facts = CardFacts(random_parts=["language model", "audio encoder", "adaptor"], tiny=True,
                      language_model=TINY_LM, audio_encoder=TINY_ENCODER, num_audio_tokens=num_audio_tokens,
                      audio_scale=model.config.audio_config.logit_scale)
    card = base_card(TINY_NAME, facts, "The adaptor has random weights (so that the audio visibly changes the output).")
    return save_checkpoint(model, build_processor(tokenizer, num_audio_tokens), out_dir, card)
