"""NExT-GPT's and DeepResonance's text paths rebuilt from their code, for the converter tests (neither installs
from a registry).

Worked out from NExT-GPT at commit 60d618b, ``NExT-GPT-Lagacy/code/``: ``model/anyToImageVideoAudio.py``
(``NextGPTModel.__init__``: PEFT LoRA on q/k/v/o, the added tokens, ``resize_token_embeddings``, ``llama_proj``;
``encode_audio``; ``_prepare_audio_embed``; ``prepare_generation_embedding``), ``model/agent.py`` (``save_model``:
the parameters that require grad, plus ``llama_proj`` and the output heads, ``torch.save``d as
``pytorch_model.pt``) and ``demo_app.py`` (the prompt string). DeepResonance (sony/DeepResonance at 6a4d219):
``code/model/deepresonance.py`` (``__init__``: the same PEFT wrap and ``llama_proj``, its six tokens, the
``preencoding`` ``nn.TransformerEncoder``; ``encode_audio`` with ``imagebind_embs_seq``;
``_prepare_one_mixed_embedding``; ``_prepare_batch_mixed_embedding``) and ``code/model/agent.py`` (``save_model``
keeps ``preencoding`` too). The language model and ImageBind here are tiny and random; the layout (key names, the
tokens and their order, the prompt) is theirs.
"""

from __future__ import annotations

import re
from pathlib import Path

import torch
from peft import LoraConfig, get_peft_model
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from torch import nn
from transformers import AutoTokenizer, LlamaForCausalLM, PreTrainedTokenizerFast

from m2mv.checkpoints.nextgpt import DEEPRESONANCE, NEXTGPT
from m2mv.checkpoints.tiny import tiny_text_config

CORPUS = ("### Human: generate a caption\n### Assistant: a calm piano piece with soft strings.\n###\n"
          "Describe a music video for this music: an overview, then what the video shows in each 2-second frame. "
          "Overview: a band plays on a dark stage. Frames: [00:00-00:02] The camera opens on a street at night.")


def build_vicuna_stand_in(folder: Path, seed: int = 0) -> Path:
    """A tiny Llama with a SentencePiece-style tokenizer (a word-boundary mark before the first word of each call,
    as Llama's does): where NExT-GPT tokenises each prompt segment on its own, this shows in the ids."""
    tokenizer = Tokenizer(models.BPE(unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="first")
    tokenizer.decoder = decoders.Metaspace(replacement="\u2581", prepend_scheme="first")
    tokenizer.train_from_iterator([CORPUS] * 4, trainer=trainers.BpeTrainer(
        vocab_size=300, special_tokens=["<unk>", "<s>", "</s>"], show_progress=False))
    tokenizer.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    fast = PreTrainedTokenizerFast(tokenizer_object=tokenizer, bos_token="<s>", eos_token="</s>", unk_token="<unk>")
    torch.manual_seed(seed)
    config = tiny_text_config(len(fast), pad_token_id=None)
    LlamaForCausalLM(config).save_pretrained(folder)
    fast.save_pretrained(folder)
    return folder


class _TextPath(nn.Module):
    """The parts both frameworks build the same way (``__init__``): Vicuna wrapped in PEFT's LoRA on q/k/v/o, the
    added tokens, the resize, ``llama_proj``; every trained weight random (a fresh LoRA B is zero, a trained one
    is not)."""

    added_tokens: tuple[str, ...] = ()
    kept_by_save = ("llama_proj",)  # agent.py save_model keeps these besides the trainable parameters

    def __init__(self, vicuna: Path, r: int = 32, alpha: int = 32, imagebind_dim: int = 1024):
        super().__init__()
        self.tokenizer = AutoTokenizer.from_pretrained(vicuna)
        lm = LlamaForCausalLM.from_pretrained(vicuna)
        lm = get_peft_model(lm, LoraConfig(task_type="CAUSAL_LM", inference_mode=False, r=r, lora_alpha=alpha,
                                           lora_dropout=0.1, target_modules=["q_proj", "k_proj", "v_proj", "o_proj"]))
        self.base_vocab = len(self.tokenizer)
        for token in self.added_tokens:  # one add_tokens call per token, as _add_*_token do
            self.tokenizer.add_tokens([token])
        lm.resize_token_embeddings(len(self.tokenizer))
        # transformers 4.29.2 (theirs) builds fresh, trainable embedding modules on resize, after the PEFT wrap:
        # both tables are trained and saved whole.
        lm.get_input_embeddings().weight.requires_grad_(True)
        lm.get_output_embeddings().weight.requires_grad_(True)
        self.llama_model = lm
        self.llama_proj = nn.Linear(imagebind_dim, lm.config.hidden_size)

    def randomise(self, seed: int) -> None:
        generator = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for name, param in self.named_parameters():
                if any(k in name for k in ("lora_", "embed_tokens", "lm_head", "llama_proj", "preencoding")):
                    param.copy_(torch.randn(param.shape, generator=generator) * 0.05)
        self.eval()

    def delta_state_dict(self) -> dict[str, torch.Tensor]:
        """agent.py ``save_model``: the trainable parameters and the ones it keeps by name."""
        return {name: param.detach().clone() for name, param in self.named_parameters()
                if param.requires_grad or any(k in name for k in self.kept_by_save)}

    def _text_ids(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]


class NextGPTTextPath(_TextPath):
    """NextGPTModel's parts that the text path uses, built as its ``__init__`` builds them."""

    added_tokens = NEXTGPT.added_tokens
    kept_by_save = ("gen_text_hidden_fcs", "gen_text_hidden_fcs_video", "gen_text_hidden_fcs_audio", "llama_proj")

    def __init__(self, vicuna: Path, r: int = 32, alpha: int = 32, seed: int = 0, imagebind_dim: int = 1024):
        super().__init__(vicuna, r, alpha, imagebind_dim)
        # an output head, not on the text path
        self.gen_text_hidden_fcs = nn.ModuleList([nn.Linear(self.llama_model.config.hidden_size, 8)])
        self.randomise(seed)

    def prompt(self, instruction: str) -> str:
        """demo_app.py's first-turn prompt for one audio file."""
        return "### Human: " + "<Audio>song.wav</Audio> " + f" {instruction}"

    def generation_inputs(self, audio_embedding: torch.Tensor, instruction: str) -> tuple[list, torch.Tensor]:
        """``prepare_generation_embedding`` for one audio: the token ids (``None`` where the audio goes) and the
        ``inputs_embeds`` it hands to ``generate``. ``audio_embedding``: ImageBind's output for the audio
        (1024-d, what ``encode_audio`` gets from its ImageBind)."""
        embed = self.llama_model.get_input_embeddings()
        text = self.prompt(instruction) + "\n### Assistant:"
        ids, embeds = [], []
        for segment in re.split(r" <|> ", text):
            if segment.startswith("Audio>"):
                before, after = self._text_ids("<Img>"), self._text_ids("</Img>")
                audio = self.llama_proj(audio_embedding)[None]
                ids += before + [None] + after
                embeds += [embed(torch.tensor(before)), audio, embed(torch.tensor(after))]
            else:
                segment_ids = [self.tokenizer.bos_token_id] + self._text_ids(segment)
                ids += segment_ids
                embeds.append(embed(torch.tensor(segment_ids)))
        return ids, torch.cat(embeds)[None]

    @torch.no_grad()
    def logits(self, audio_embedding: torch.Tensor, instruction: str) -> torch.Tensor:
        """The language model's logits over the prompt (LoRA unmerged, as NExT-GPT runs it)."""
        _, inputs_embeds = self.generation_inputs(audio_embedding, instruction)
        return self.llama_model(inputs_embeds=inputs_embeds).logits[0]


class DeepResonanceTextPath(_TextPath):
    """DeepResonance's model (its ``__init__``), with ``imagebind_embs_seq`` and, when ``fusion_layers``, its
    ``prellmfusion`` (``preencoding``: ``nn.TransformerEncoderLayer(hidden, heads, intermediate, dropout=0.1,
    batch_first=True)``, PyTorch's defaults otherwise)."""

    added_tokens = DEEPRESONANCE.added_tokens
    kept_by_save = ("llama_proj", "preencoding")

    def __init__(self, vicuna: Path, fusion_layers: int = 1, r: int = 32, alpha: int = 32, seed: int = 0,
                 imagebind_dim: int = 1024):
        super().__init__(vicuna, r, alpha, imagebind_dim)
        config = self.llama_model.config
        self.preencoding = None
        if fusion_layers:
            layer = nn.TransformerEncoderLayer(d_model=config.hidden_size, nhead=config.num_attention_heads,
                                               dim_feedforward=config.intermediate_size, dropout=0.1,
                                               batch_first=True)
            self.preencoding = nn.TransformerEncoder(layer, num_layers=fusion_layers)
        self.randomise(seed)

    def generation_inputs(self, clip_embeddings: torch.Tensor, input_text: str,
                          instruction: str) -> tuple[list, torch.Tensor, int]:
        """``_prepare_one_mixed_embedding`` + ``_prepare_batch_mixed_embedding`` (one row, not training): the token
        ids (``None`` per audio token), the ``inputs_embeds`` and the length of the (fused) input segment.
        ``clip_embeddings``: (clips, 1024), ImageBind's ``audio_original``."""
        embed = self.llama_model.get_input_embeddings()
        instruction_text = "### Human: " + instruction + "\n### Assistant: "
        ids, pieces = [], []
        for i, text in enumerate(re.split(r"(<Audio>|<Image>|<Video>)", input_text)):
            if text == "":
                continue
            if text == "<Audio>":
                ids += [None] * clip_embeddings.shape[0]
                pieces.append(self.llama_proj(clip_embeddings))
            else:
                text_ids = ([self.tokenizer.bos_token_id] if i == 0 else []) + self._text_ids(text)
                ids += text_ids
                pieces.append(embed(torch.tensor(text_ids)))
        inputs = torch.cat(pieces)[None]
        if self.preencoding is not None:  # a batch of one: no padding
            inputs = self.preencoding(inputs, src_key_padding_mask=torch.zeros(inputs.shape[:2], dtype=torch.bool))
        instruction_ids = self._text_ids(instruction_text)
        return ids + instruction_ids, torch.cat([inputs, embed(torch.tensor(instruction_ids))[None]], dim=1), len(ids)

    @torch.no_grad()
    def logits(self, clip_embeddings: torch.Tensor, input_text: str, instruction: str) -> torch.Tensor:
        _, inputs_embeds, _ = self.generation_inputs(clip_embeddings, input_text, instruction)
        return self.llama_model(inputs_embeds=inputs_embeds).logits[0]
