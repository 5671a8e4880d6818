"""The model: placeholders, loss masking, generation with/without cache, batching, freezing, dtypes."""

import numpy as np
import pytest
import torch


def _inputs(processor, audios, rate, **conditioning):
    prompts = [processor.build_prompt(**conditioning) for _ in audios]
    return processor(text=prompts, audio=audios, sampling_rate=rate)


def test_audio_is_scattered_into_the_placeholder_positions(tiny, music_like):
    model, processor = tiny
    inputs = _inputs(processor, [music_like[0]], music_like[1], mv_type="Animation")
    embeds = model.get_input_embeddings()(inputs["input_ids"])
    audio = model.get_audio_features(inputs["input_features"])
    mask = model.model.get_placeholder_mask(inputs["input_ids"], embeds, audio)
    merged = embeds.masked_scatter(mask, audio)
    position = (inputs["input_ids"][0] == model.config.audio_token_id).nonzero().item()
    torch.testing.assert_close(merged[0, position], audio[0, 0])
    out_direct = model(**inputs).logits
    out_embeds = model(inputs_embeds=merged, attention_mask=inputs["attention_mask"]).logits
    torch.testing.assert_close(out_direct, out_embeds)


def test_the_audio_changes_the_output(tiny, music_like):
    model, processor = tiny
    inputs = _inputs(processor, [music_like[0]], music_like[1])
    silent_ish = _inputs(processor, [np.random.default_rng(1).normal(size=80000).astype(np.float32)], 16000)
    assert not torch.allclose(model(**inputs).logits, model(**silent_ish).logits)


def test_precomputed_embeddings_equal_running_the_encoder(tiny, music_like):
    model, processor = tiny
    inputs = _inputs(processor, [music_like[0]], music_like[1])
    clip_embeds = model.audio_tower(inputs["input_features"]).pooler_output
    assert clip_embeds.shape == (1, 3, 1024)
    from_features = model(**inputs).logits
    from_embeds = model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"],
                        audio_embeds=clip_embeds).logits
    torch.testing.assert_close(from_features, from_embeds)


def test_loss_only_on_the_answer(tiny, music_like):
    model, processor = tiny
    prompt = processor.build_prompt(genre_tags=["rock"])
    batch = processor(text=[prompt], audio=[music_like[0]], sampling_rate=16000, answers=["Overview: a stage."])
    labels = batch["labels"][0]
    prompt_len = processor(text=[prompt], audio=[music_like[0]], sampling_rate=16000)["input_ids"].shape[1]
    assert (labels[:prompt_len] == -100).all() and (labels[prompt_len:] != -100).all()
    answer = processor.tokenizer.decode(labels[prompt_len:])
    assert answer == " Overview: a stage.\n###"
    # the loss is the mean cross-entropy over the answer tokens only
    logits = model(**batch).logits
    manual = torch.nn.functional.cross_entropy(logits[0, prompt_len - 1:-1], batch["input_ids"][0, prompt_len:])
    torch.testing.assert_close(model(**batch).loss, manual)


def test_answer_truncation_never_cuts_the_prompt(tiny, music_like):
    _, processor = tiny
    prompt = processor.build_prompt()
    n_prompt = processor(text=[prompt], audio=[music_like[0]], sampling_rate=16000)["input_ids"].shape[1]
    batch = processor(text=[prompt], audio=[music_like[0]], sampling_rate=16000, answers=["word " * 200],
                      max_length=n_prompt + 5)
    assert batch["input_ids"].shape[1] == n_prompt + 5
    with pytest.raises(ValueError, match="max_length"):
        processor(text=[prompt], audio=[music_like[0]], sampling_rate=16000, answers=["x"], max_length=n_prompt)


def test_greedy_with_cache_equals_greedy_without(tiny, music_like):
    model, processor = tiny
    inputs = _inputs(processor, [music_like[0]], music_like[1], mv_type="Lyric Video")
    with_cache = model.generate(**inputs, do_sample=False, max_new_tokens=24, use_cache=True)
    without = model.generate(**inputs, do_sample=False, max_new_tokens=24, use_cache=False)
    assert with_cache.shape[1] > inputs["input_ids"].shape[1]
    assert torch.equal(with_cache, without)


def test_batch_of_two_equals_each_alone_with_left_padding(tiny, music_like):
    model, processor = tiny
    wave, rate = music_like
    other = np.random.default_rng(2).normal(scale=0.1, size=3 * rate).astype(np.float32)
    prompts = [processor.build_prompt(genre_tags=["jazz", "blues", "swing"], lyrics_understanding="a long night"),
               processor.build_prompt()]
    batch = processor(text=prompts, audio=[wave, other], sampling_rate=rate)
    assert (batch["attention_mask"][1] == 0).any() and batch["attention_mask"][1, 0] == 0  # left padded
    together = model.generate(**batch, do_sample=False, max_new_tokens=12)
    for row, (prompt, audio) in enumerate(zip(prompts, [wave, other])):
        alone_inputs = processor(text=[prompt], audio=[audio], sampling_rate=rate)
        alone = model.generate(**alone_inputs, do_sample=False, max_new_tokens=12)
        new_alone = alone[0, alone_inputs["input_ids"].shape[1]:]
        new_together = together[row, batch["input_ids"].shape[1]:]
        assert torch.equal(new_alone, new_together[: new_alone.shape[0]])


def test_placeholder_count_mismatch_is_a_clear_error(tiny, music_like):
    model, processor = tiny
    inputs = _inputs(processor, [music_like[0]], music_like[1])
    ids = inputs["input_ids"].clone()
    ids[ids == model.config.audio_token_id] = processor.tokenizer.pad_token_id
    with pytest.raises(ValueError, match="placeholder tokens and audio features do not match"):
        model(input_ids=ids, input_features=inputs["input_features"])


def test_three_audio_tokens_mode(tiny_checkpoint_3tok, music_like):
    from transformers import AutoModel, AutoProcessor

    model = AutoModel.from_pretrained(tiny_checkpoint_3tok, trust_remote_code=True).eval()
    processor = AutoProcessor.from_pretrained(tiny_checkpoint_3tok, trust_remote_code=True)
    inputs = _inputs(processor, [music_like[0]], music_like[1])
    assert int((inputs["input_ids"] == model.config.audio_token_id).sum()) == 3
    assert model(**inputs).audio_hidden_states.shape == (1, 3, model.config.text_config.hidden_size)


def test_encoder_frozen_and_in_eval_mode_while_training(tiny_checkpoint, music_like):
    from transformers import AutoModel, AutoProcessor

    model = AutoModel.from_pretrained(tiny_checkpoint, trust_remote_code=True)
    processor = AutoProcessor.from_pretrained(tiny_checkpoint, trust_remote_code=True)
    model.train()
    assert not model.audio_tower.training and model.language_model.training
    assert not any(p.requires_grad for p in model.audio_tower.parameters())
    batch = processor(text=[processor.build_prompt()], audio=[music_like[0]], sampling_rate=16000,
                      answers=["Overview: x"])
    model(**batch).loss.backward()
    assert all(p.grad is None for p in model.audio_tower.parameters())
    assert model.multi_modal_projector.linear.weight.grad is not None


def test_gradient_checkpointing_gives_the_same_gradients(tiny_checkpoint, music_like):
    from transformers import AutoModel, AutoProcessor

    processor = AutoProcessor.from_pretrained(tiny_checkpoint, trust_remote_code=True)
    batch = processor(text=[processor.build_prompt()], audio=[music_like[0]], sampling_rate=16000,
                      answers=["Overview: x"])
    grads = []
    for checkpointing in (False, True):
        model = AutoModel.from_pretrained(tiny_checkpoint, trust_remote_code=True, attn_implementation="sdpa")
        model.config.text_config.attention_dropout = 0.0
        if checkpointing:
            model.activation_checkpointing_enable()
            assert model.language_model.gradient_checkpointing
        model.train()
        model(**batch).loss.backward()
        grads.append(model.multi_modal_projector.linear.weight.grad.clone())
    torch.testing.assert_close(grads[0], grads[1])


def test_audio_encoder_in_lower_dtype(tiny_checkpoint, music_like):
    from transformers import AutoModel, AutoProcessor

    model = AutoModel.from_pretrained(tiny_checkpoint, trust_remote_code=True).eval()
    processor = AutoProcessor.from_pretrained(tiny_checkpoint, trust_remote_code=True)
    inputs = _inputs(processor, [music_like[0]], music_like[1])
    reference = model(**inputs).logits
    model.set_audio_encoder_dtype(torch.bfloat16)
    assert model.audio_tower.embeddings.position_embedding.dtype == torch.bfloat16
    assert model.language_model.embed_tokens.weight.dtype == torch.float32
    low = model(**inputs).logits
    assert low.dtype == torch.float32
    torch.testing.assert_close(low, reference, atol=0.05, rtol=0.05)


def test_model_declares_what_transformers_needs(tiny):
    model, _ = tiny
    assert set(model._no_split_modules) >= {"M2MVAudioEncoderLayer", "LlamaDecoderLayer"}
    assert model.config.text_config._attn_implementation == "sdpa"
    assert model.supports_gradient_checkpointing


def test_audio_is_encoded_on_the_first_generation_step_only(tiny, music_like):
    model, processor = tiny
    inputs = _inputs(processor, [music_like[0]], music_like[1])
    calls = []
    handle = model.audio_tower.register_forward_hook(lambda *args: calls.append(1))
    try:
        model.generate(**inputs, do_sample=False, max_new_tokens=6, min_new_tokens=6)
        assert len(calls) == 1
        calls.clear()
        model.generate(**inputs, do_sample=False, max_new_tokens=6, min_new_tokens=6, use_cache=False)
        assert len(calls) == 6  # without a cache every step re-reads the whole prompt, audio included
    finally:
        handle.remove()
