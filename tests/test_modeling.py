"""The model: placeholders, loss masking, generation with/without cache, batching, freezing, dtypes, and the
transformers conventions (cache name, tuple outputs, audio features, attention interface, compile, loading)."""

from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

OLD_CHECKPOINT = Path(__file__).parent / "data" / "m2mv-tiny-random-v0.1.0"  # written by m2mv 0.1.0, its code inside


def _inputs(processor, audios, rate, **conditioning):
    prompts = [processor.build_prompt(**conditioning) for _ in audios]
    return processor(text=prompts, audio=audios, sampling_rate=rate)


def test_audio_is_scattered_into_the_placeholder_positions(tiny, music_like):
    model, processor = tiny
    inputs = _inputs(processor, [music_like[0]], music_like[1], mv_type="Animation")
    embeds = model.get_input_embeddings()(inputs["input_ids"])
    audio = model.get_audio_features(inputs["input_features"]).pooler_output
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


# -- transformers conventions ------------------------------------------------------------------------------------


def test_old_cache_argument_name_still_feeds_the_cache(tiny, music_like):
    model, processor = tiny
    inputs = _inputs(processor, [music_like[0]], music_like[1])
    next_token = torch.tensor([[7]])
    mask = torch.cat([inputs["attention_mask"], torch.ones_like(next_token)], dim=1)
    full = model(input_ids=torch.cat([inputs["input_ids"], next_token], dim=1), input_features=inputs["input_features"],
                 attention_mask=mask).logits[:, -1]
    for owner in (model, model.model):  # the head and the base model
        prefix = model(**inputs, use_cache=True).cache
        with pytest.warns(FutureWarning, match="`past_key_values` is deprecated"):
            step = owner(input_ids=next_token, attention_mask=mask, past_key_values=prefix, use_cache=True)
        logits = step.logits if owner is model else model.lm_head(step.last_hidden_state)
        torch.testing.assert_close(logits[:, -1], full)


def test_return_dict_false_gives_tuples_by_argument_and_by_config(tiny, music_like):
    model, processor = tiny
    inputs = _inputs(processor, [music_like[0]], music_like[1])
    expected = model(**inputs)
    by_argument = model(**inputs, return_dict=False)
    assert isinstance(by_argument, tuple)
    torch.testing.assert_close(by_argument[0], expected.logits)
    base = model.model(**inputs, return_dict=False)
    assert isinstance(base, tuple)
    torch.testing.assert_close(model.lm_head(base[0]), expected.logits)
    model.config.return_dict = False
    try:
        by_config = model(**inputs)
        features = model.get_audio_features(inputs["input_features"])
    finally:
        model.config.return_dict = True
    assert isinstance(by_config, tuple) and isinstance(features, tuple)
    torch.testing.assert_close(by_config[0], expected.logits)


def test_get_audio_features_returns_an_output_whose_pooler_output_is_the_projected_audio(tiny_checkpoint_3tok,
                                                                                         music_like):
    from transformers import AutoModel, AutoProcessor
    from transformers.modeling_outputs import BaseModelOutputWithPooling

    model = AutoModel.from_pretrained(tiny_checkpoint_3tok, trust_remote_code=True).eval()
    processor = AutoProcessor.from_pretrained(tiny_checkpoint_3tok, trust_remote_code=True)
    features = _inputs(processor, [music_like[0]], music_like[1])["input_features"]
    audio = model.config.audio_config
    out = model.get_audio_features(features, output_hidden_states=True)
    assert isinstance(out, BaseModelOutputWithPooling)
    assert out.pooler_output.shape == (1, 3, model.config.text_config.hidden_size)  # one LM token per clip
    assert out.last_hidden_state.shape == (1, 3, audio.num_patches + 1, audio.hidden_size)
    assert len(out.hidden_states) == audio.num_hidden_layers + 1
    clips = model.audio_tower(features).pooler_output  # the encoder's own pooler_output: per-clip embeddings
    assert clips.shape == (1, 3, audio.output_dim)
    torch.testing.assert_close(model.multi_modal_projector(clips), out.pooler_output)
    precomputed = model.get_audio_features(audio_embeds=clips)  # training's precomputed embeddings skip the encoder
    torch.testing.assert_close(precomputed.pooler_output, out.pooler_output)
    as_tuple = model.get_audio_features(features, return_dict=False)
    assert isinstance(as_tuple, tuple)
    torch.testing.assert_close(as_tuple[1], out.pooler_output)
    with pytest.raises(ValueError, match="exactly one of input_features or audio_embeds"):
        model.get_audio_features(features, audio_embeds=clips)


def test_tied_lm_head_has_a_tensor_parallel_plan(tiny):
    model, _ = tiny
    assert type(model)._tp_plan == {"lm_head": "colwise_gather_output"}
    plan = model.tp_plan
    assert plan["lm_head"] == "colwise_gather_output"
    assert plan["model.language_model.layers.*.self_attn.q_proj"] == "colwise"  # the LM's own plan, prefixed


def test_forward_compiles_as_one_graph_and_static_cache_generation_matches(tiny, music_like):
    from transformers import StaticCache
    from transformers.generation import CompileConfig

    model, processor = tiny
    assert model._can_compile_fullgraph and model.audio_tower._can_compile_fullgraph
    inputs = _inputs(processor, [music_like[0]], music_like[1])
    expected = model.generate(**inputs, do_sample=False, max_new_tokens=4, min_new_tokens=4)
    # fullgraph=True: a graph break is an error. The "eager" backend checks the tracing without a C++ compiler.
    compile_config = CompileConfig(fullgraph=True, backend="eager", mode=None)
    compile_config._compile_all_devices = True  # generate compiles the decoding steps on accelerators only otherwise
    torch._dynamo.reset()
    try:
        compiled = model.generate(**inputs, do_sample=False, max_new_tokens=4, min_new_tokens=4,
                                  cache_implementation="static", compile_config=compile_config)
        assert hasattr(model, "_compiled_call")
        assert torch.equal(compiled, expected)
        # the prefill (audio encoder, placeholder check and scatter) compiles as one graph too
        forward = torch.compile(model.forward, fullgraph=True, backend="eager")
        cache = StaticCache(config=model.config.text_config, max_cache_len=inputs["input_ids"].shape[1] + 4)
        torch.testing.assert_close(forward(**inputs, cache=cache, use_cache=True).logits, model(**inputs).logits)
    finally:
        torch._dynamo.reset()
        for name in ("_compiled_call", "_last_compile_config"):  # generate keeps the compiled forward on the model
            model.__dict__.pop(name, None)


def test_attention_implementation_reaches_the_audio_tower(tiny_checkpoint, music_like):
    from transformers import AutoProcessor

    from modeling_m2mv import M2MVAudioEncoder, M2MVForConditionalGeneration

    model = M2MVForConditionalGeneration.from_pretrained(tiny_checkpoint).eval()
    processor = AutoProcessor.from_pretrained(tiny_checkpoint, trust_remote_code=True)
    features = _inputs(processor, [music_like[0]], music_like[1])["input_features"]
    attention = model.audio_tower.layers[0].self_attn
    audio = model.config.audio_config
    assert attention.config._attn_implementation == "sdpa"
    sdpa = model.audio_tower(features, output_attentions=True)
    assert sdpa.attentions == ()  # SDPA computes no attention weights
    model.set_attn_implementation("eager")
    assert attention.config._attn_implementation == "eager"
    eager = model.audio_tower(features, output_attentions=True)
    assert len(eager.attentions) == audio.num_hidden_layers
    # one row per token, one column per token plus ImageBind's learned bias key
    assert eager.attentions[0].shape == (3, audio.num_attention_heads, audio.num_patches + 1, audio.num_patches + 2)
    torch.testing.assert_close(eager.attentions[0].sum(-1), torch.ones(eager.attentions[0].shape[:-1]))
    torch.testing.assert_close(eager.pooler_output, sdpa.pooler_output, atol=1e-5, rtol=1e-5)
    # Declared support: eager, SDPA, flash attention (no mask, one extra key and value). Not flex attention: on a key
    # one longer than the queries it gives wrong results (torch 2.13, CPU), so it is refused rather than declared.
    assert M2MVAudioEncoder._supports_sdpa and M2MVAudioEncoder._supports_flash_attn
    assert not M2MVAudioEncoder._supports_flex_attn and not M2MVForConditionalGeneration._supports_flex_attn
    with pytest.raises(ValueError, match="flex_attention"):
        model.set_attn_implementation("flex_attention")


def _save_base_model(tiny_checkpoint, folder, change=None):
    from modeling_m2mv import M2MVForConditionalGeneration

    model = M2MVForConditionalGeneration.from_pretrained(tiny_checkpoint)
    model.model.save_pretrained(folder)  # an M2MVModel checkpoint: no lm_head, keys without the "model." prefix
    if change is not None:
        weights = load_file(folder / "model.safetensors")
        change(weights)
        save_file(weights, folder / "model.safetensors", metadata={"format": "pt"})
    return model


def test_strict_loading_allows_the_standard_base_and_head_transfer(tiny_checkpoint, tmp_path):
    from modeling_m2mv import M2MVForConditionalGeneration, M2MVModel

    full = _save_base_model(tiny_checkpoint, tmp_path / "base")
    head, info = M2MVForConditionalGeneration.from_pretrained(tmp_path / "base", output_loading_info=True)
    assert info["missing_keys"] == {"lm_head.weight"}  # reported (and initialised), as transformers does
    for name, tensor in full.model.state_dict().items():
        assert torch.equal(head.model.state_dict()[name], tensor), name
    base, info = M2MVModel.from_pretrained(tiny_checkpoint, output_loading_info=True)  # the head's checkpoint
    assert info["unexpected_keys"] == {"lm_head.weight"} and not info["missing_keys"]
    for name, tensor in full.model.state_dict().items():
        assert torch.equal(base.state_dict()[name], tensor), name
    assert not any(p.requires_grad for p in head.audio_tower.parameters())


def test_strict_loading_of_a_tied_checkpoint_ties_the_head(tiny_checkpoint, tmp_path):
    from configuration_m2mv import M2MVConfig
    from modeling_m2mv import M2MVForConditionalGeneration

    config = M2MVConfig.from_pretrained(tiny_checkpoint)
    config.text_config.tie_word_embeddings = config.tie_word_embeddings = True
    M2MVForConditionalGeneration(config).save_pretrained(tmp_path / "tied")
    assert "lm_head.weight" not in load_file(tmp_path / "tied" / "model.safetensors")
    model = M2MVForConditionalGeneration.from_pretrained(tmp_path / "tied")
    assert model.lm_head.weight is model.get_input_embeddings().weight


def test_strict_loading_still_names_a_missing_real_weight_of_a_base_checkpoint(tiny_checkpoint, tmp_path):
    from modeling_m2mv import M2MVForConditionalGeneration

    folder = tmp_path / "base"
    _save_base_model(tiny_checkpoint, folder, lambda w: w.pop("multi_modal_projector.linear.weight"))
    with pytest.raises(ValueError, match=r"missing keys: model\.multi_modal_projector\.linear\.weight") as err:
        M2MVForConditionalGeneration.from_pretrained(folder)
    assert "lm_head" not in str(err.value) and str(folder) in str(err.value)


def test_dead_conditioning_switches_are_gone_but_old_configs_load():
    from configuration_m2mv import M2MVConfig

    legacy = {"use_genre_tags": False, "use_mv_type": True, "use_lyrics_understanding": False}
    config = M2MVConfig(**legacy)
    for key in legacy:
        assert not hasattr(config, key) and key not in config.to_dict()


def test_checkpoint_written_by_m2mv_0_1_0_loads_with_the_current_classes():
    from transformers import AutoModel

    from modeling_m2mv import M2MVForConditionalGeneration

    new = M2MVForConditionalGeneration.from_pretrained(OLD_CHECKPOINT).eval()  # strict (the default)
    old = AutoModel.from_pretrained(OLD_CHECKPOINT, trust_remote_code=True).eval()  # with its own 0.1.0 code
    assert type(old).__module__.startswith("transformers_modules.") and type(old) is not type(new)
    assert old.config.use_genre_tags  # the 0.1.0 config.json has the removed switches ...
    assert not hasattr(new.config, "use_genre_tags") and "use_genre_tags" not in new.config.to_dict()  # ... dropped
    assert new.config.audio_config.logit_scale == 20.0
    generator = torch.Generator().manual_seed(0)
    features = torch.randn(2, 3, 128, 204, generator=generator)
    input_ids = torch.randint(5, new.config.text_config.vocab_size, (2, 12), generator=generator)
    input_ids[:, 1] = new.config.audio_token_id
    with torch.no_grad():
        torch.testing.assert_close(new(input_ids=input_ids, input_features=features).logits,
                                   old(input_ids=input_ids, input_features=features).logits)
        clips = new.audio_tower(features).pooler_output
    torch.testing.assert_close(clips.norm(dim=-1), torch.full((2, 3), 20.0))  # ImageBind's fixed logit scale
