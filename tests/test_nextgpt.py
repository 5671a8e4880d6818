"""``m2mv convert --nextgpt`` / ``--deepresonance``: a delta checkpoint in the framework's exact layout (tiny,
random) becomes an m2mv checkpoint that computes what the framework's own text path computes
(tests/nextgpt_oracle.py)."""

import json
import shutil

import pytest
import torch
from transformers import AutoModel, AutoProcessor

import reference_oracles as ro
from configuration_m2mv import M2MVAudioConfig
from feature_extraction_m2mv import M2MVFeatureExtractor
from m2mv.checkpoints.nextgpt import DEEPRESONANCE, NEXTGPT, build_framework_checkpoint
from m2mv.cli import main
from nextgpt_oracle import DeepResonanceTextPath, NextGPTTextPath, build_vicuna_stand_in
from processing_m2mv import DEEPRESONANCE_CHAT_TEMPLATE, DEFAULT_INSTRUCTIONS, NEXTGPT_CHAT_TEMPLATE

SMALL_IMAGEBIND = dict(audio_embed_dim=64, audio_num_blocks=2, audio_num_heads=4, out_embed_dim=1024,
                       audio_drop_path=0.1)
SMALL_AUDIO = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=256)


@pytest.fixture(scope="module")
def nextgpt(tmp_path_factory):
    """(NExT-GPT stand-in, its delta file, the Vicuna stand-in folder, an ImageBind .pth, Meta's ImageBind)."""
    root = tmp_path_factory.mktemp("nextgpt")
    vicuna = build_vicuna_stand_in(root / "vicuna-7b-v0")
    reference = NextGPTTextPath(vicuna, r=32, alpha=32, seed=1)
    delta = root / "7b_tiva_v0" / "pytorch_model.pt"
    delta.parent.mkdir()
    torch.save(reference.delta_state_dict(), delta)
    imagebind = ro.build_reference_imagebind(small=True, seed=4, **SMALL_IMAGEBIND)
    imagebind_path = root / "imagebind_huge.pth"
    torch.save(imagebind.state_dict(), imagebind_path)
    return reference, delta, vicuna, imagebind_path, imagebind


@pytest.fixture(scope="module")
def converted(nextgpt, tmp_path_factory):
    _, delta, vicuna, imagebind_path, _ = nextgpt
    out = tmp_path_factory.mktemp("out") / "m2mv-nextgpt-7b-tiva-v0"
    return build_framework_checkpoint(NEXTGPT, out, delta.parent, vicuna, imagebind_path,
                                    audio_config=M2MVAudioConfig(**SMALL_AUDIO))


def test_the_delta_has_nextgpts_layout(nextgpt):
    reference, delta, *_ = nextgpt
    keys = set(torch.load(delta, weights_only=True))
    assert "llama_model.base_model.model.model.layers.0.self_attn.q_proj.lora_A.default.weight" in keys
    assert {"llama_proj.weight", "llama_proj.bias", "llama_model.base_model.model.model.embed_tokens.weight",
            "llama_model.base_model.model.lm_head.weight", "gen_text_hidden_fcs.0.weight"} <= keys
    assert not any(".mlp." in k or "layernorm" in k for k in keys)  # the base model's own weights are not in it
    base = reference.base_vocab  # 32000 for Vicuna: <Img> is then 32000, [AUD7] 32037
    assert len(reference.tokenizer) == base + len(NEXTGPT.added_tokens)
    assert reference.tokenizer.convert_tokens_to_ids(["<Img>", "</Img>", "[AUD7]"]) == [base, base + 1, base + 37]


def test_converted_checkpoint_computes_nextgpts_text_path(nextgpt, converted):
    reference, _, _, _, imagebind = nextgpt
    model = AutoModel.from_pretrained(converted, trust_remote_code=True).eval()
    processor = AutoProcessor.from_pretrained(converted, trust_remote_code=True)
    assert processor.chat_template == NEXTGPT_CHAT_TEMPLATE and processor.tokenize_segments
    assert model.config.audio_config.logit_scale == 1.0 and model.config.num_audio_tokens == 1

    wave = torch.randn(16000 * 12, generator=torch.Generator().manual_seed(0)).numpy() * 0.1
    instruction = DEFAULT_INSTRUCTIONS["mv_description"]
    inputs = processor(text=processor.build_prompt(), audio=[wave], sampling_rate=16000)
    features = torch.from_numpy(M2MVFeatureExtractor()([wave], sampling_rate=16000)["input_features"])
    audio_embedding = ro.nextgpt_audio_embedding(imagebind, features[:, :, None])[0]  # NExT-GPT's ImageBind call

    ids, _ = reference.generation_inputs(audio_embedding, instruction)
    ours = inputs["input_ids"][0].tolist()
    assert ours == [model.config.audio_token_id if i is None else i for i in ids]  # the prompt, token for token
    assert ours.count(reference.tokenizer.bos_token_id) == 2  # a BOS before each text segment, as NExT-GPT puts them

    expected = reference.logits(audio_embedding, instruction)
    with torch.no_grad():
        logits = model(**inputs).logits[0]
    vocab = len(reference.tokenizer)
    assert logits.shape[-1] == vocab + 1  # + m2mv's audio placeholder
    torch.testing.assert_close(logits[:, :vocab], expected, rtol=1e-4, atol=1e-4)


def test_weights_are_nextgpts_projection_merged_lora_and_tables(nextgpt, converted):
    reference, *_ = nextgpt
    model = AutoModel.from_pretrained(converted, trust_remote_code=True)
    lm = reference.llama_model
    vocab = len(reference.tokenizer)
    torch.testing.assert_close(model.multi_modal_projector.linear.weight, reference.llama_proj.weight)
    torch.testing.assert_close(model.multi_modal_projector.linear.bias, reference.llama_proj.bias)
    torch.testing.assert_close(model.get_input_embeddings().weight[:vocab], lm.get_input_embeddings().weight)
    torch.testing.assert_close(model.lm_head.weight[:vocab], lm.get_output_embeddings().weight)
    attention = lm.base_model.model.model.layers[1].self_attn.v_proj
    a, b = attention.lora_A["default"].weight, attention.lora_B["default"].weight
    merged = attention.base_layer.weight + (32 / 32) * b @ a  # W + (alpha / r) B A
    torch.testing.assert_close(model.model.language_model.layers[1].self_attn.v_proj.weight, merged)


def test_generation_follows_nextgpts_decoding_and_never_emits_the_placeholder(converted):
    model = AutoModel.from_pretrained(converted, trust_remote_code=True).eval()
    config = model.generation_config
    assert (config.temperature, config.top_p, config.do_sample) == (0.4, 1.0, True)
    assert config.suppress_tokens == [model.config.audio_token_id]
    processor = AutoProcessor.from_pretrained(converted, trust_remote_code=True)
    inputs = processor(text=processor.build_prompt(), audio=[torch.zeros(32000).numpy() + 0.01],
                       sampling_rate=16000)
    with torch.no_grad():
        model.lm_head.weight[model.config.audio_token_id] = 100.0  # make the placeholder the likeliest token
        out = model.generate(**inputs, do_sample=False, max_new_tokens=4)
    assert model.config.audio_token_id not in out[0, inputs["input_ids"].shape[1]:].tolist()
    card = (converted / "README.md").read_text()
    assert "NExT-GPT" in card and "L2-normalised, times 1 (NExT-GPT's audio path" in card


def test_cli_converts_and_refuses_bad_deltas(nextgpt, tmp_path, capsys):
    reference, delta, vicuna, _, _ = nextgpt
    state = torch.load(delta, weights_only=True)
    lora_a = "llama_model.base_model.model.model.layers.1.self_attn.k_proj.lora_A.default.weight"

    def convert(bad_state, name):
        path = tmp_path / name / "pytorch_model.pt"
        path.parent.mkdir()
        torch.save(bad_state, path)
        code = main(["convert", "--nextgpt", str(path), "--lm", str(vicuna), "--out", str(tmp_path / f"out-{name}")])
        return code, capsys.readouterr().err

    missing = dict(state)
    del missing[lora_a]
    code, err = convert(missing, "missing")
    assert code == 2 and "missing: " + lora_a in err and not (tmp_path / "out-missing").exists()
    code, err = convert(dict(state, **{"llama_model.base_model.model.model.norm.weight": torch.ones(64)}), "extra")
    assert code == 2 and "unexpected: llama_model.base_model.model.model.norm.weight" in err
    code, err = convert(dict(state, **{lora_a: torch.zeros(16, 64)}), "shape")
    assert code == 2 and "LoRA ranks differ" in err
    rows = "llama_model.base_model.model.model.embed_tokens.weight"
    short = dict(state, **{rows: state[rows][:-1], "llama_model.base_model.model.lm_head.weight": state[rows][:-1]})
    code, err = convert(short, "vocab")
    rows_left = reference.base_vocab + len(NEXTGPT.added_tokens) - 1
    assert code == 2 and f"the delta's embedding tables have {rows_left} rows" in err and "Vicuna-7B v0" in err

    for flags in (["--tiny"], ["--num-audio-tokens", "3"], ["--audio-scale", "imagebind"]):
        code = main(["convert", "--nextgpt", str(delta), "--lm", str(vicuna), "--out", str(tmp_path / "x"), *flags])
        assert code == 2 and "--nextgpt" in capsys.readouterr().err
    out = tmp_path / "cli"
    assert main(["convert", "--nextgpt", str(delta), "--lm", str(vicuna), "--out", str(out)]) == 0
    assert "RANDOM weights" in (out / "README.md").read_text()  # no --imagebind: said so
    assert json.loads((out / "config.json").read_text())["audio_config"]["logit_scale"] == 1.0
    shutil.rmtree(out)


def test_the_zero_shot_baseline_row_is_one_benchmark_command(converted, tmp_path, capsys):
    from m2mv.training.toy import write_toy_dataset

    data = write_toy_dataset(tmp_path / "toy", n_train=1, n_eval=2, seconds=3.0)
    model = shutil.copytree(converted, tmp_path / "m2mv-nextgpt")
    out = tmp_path / "bench"
    code = main(["benchmark", "--model", str(model), "--dataset", str(data), "--split", "validation",
                 "--prompt", "nextgpt", "--max-new-tokens", "6", "--bertscore-model", "none", "--no-progress",
                 "--output-dir", str(out)])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "NExT-GPT zero-shot baseline: NExT-GPT's prompt and decoding\n\n| inputs |" in captured.out
    assert "| music only |" in captured.out and "| all inputs |" not in captured.out  # music only by default
    records = [json.loads(line) for line in (out / "predictions-music_only.jsonl").read_text().splitlines()]
    assert len(records) == 2 and all("prediction" in r and "error" not in r for r in records)
    results = json.loads((out / "results.json").read_text())
    assert results["prompt"] == "nextgpt" and results["decoding"]["temperature"] == 0.4
    assert "BLEU-1 (music only)" in (model / "README.md").read_text()


def test_the_nextgpt_prompt_needs_a_nextgpt_checkpoint(tiny_checkpoint, tmp_path, capsys):
    from m2mv.training.toy import write_toy_dataset

    data = write_toy_dataset(tmp_path / "toy", n_train=1, n_eval=1, seconds=3.0)
    code = main(["benchmark", "--model", str(tiny_checkpoint), "--dataset", str(data), "--split", "validation",
                 "--prompt", "nextgpt", "--bertscore-model", "none", "--output-dir", str(tmp_path / "bench")])
    err = capsys.readouterr().err
    assert code == 2 and "NExT-GPT's prompt needs its tokens (<Img>, </Img>)" in err and "--nextgpt" in err


# -- DeepResonance ------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def deepresonance(nextgpt, tmp_path_factory):
    """{variant: (DeepResonance stand-in, converted folder)} for beta (pre-LLM fusion) and alpha (none)."""
    _, _, vicuna, imagebind_path, _ = nextgpt
    root = tmp_path_factory.mktemp("deepresonance")
    built = {}
    for variant, layers in (("beta", 1), ("alpha", 0)):
        reference = DeepResonanceTextPath(vicuna, fusion_layers=layers, seed=2)
        delta = root / variant / "pytorch_model.pt"
        delta.parent.mkdir()
        torch.save(reference.delta_state_dict(), delta)
        out = build_framework_checkpoint(DEEPRESONANCE, root / f"m2mv-deepresonance-{variant}", delta, vicuna,
                                         imagebind_path, audio_config=M2MVAudioConfig(**SMALL_AUDIO))
        built[variant] = reference, out
    return built


def _clip_embeddings(imagebind, wave):
    features = torch.from_numpy(M2MVFeatureExtractor()([wave], sampling_rate=16000)["input_features"])
    return ro.nextgpt_audio_clip_embeddings(imagebind, features[:, :, None])[0]  # (3, 1024), no x20, no mean


@pytest.mark.parametrize("variant", ["beta", "alpha"])
def test_converted_deepresonance_computes_its_text_path(nextgpt, deepresonance, variant):
    imagebind = nextgpt[4]
    reference, folder = deepresonance[variant]
    model = AutoModel.from_pretrained(folder, trust_remote_code=True).eval()
    processor = AutoProcessor.from_pretrained(folder, trust_remote_code=True)
    assert processor.chat_template == DEEPRESONANCE_CHAT_TEMPLATE and model.config.num_audio_tokens == 3
    assert model.config.prellm_fusion_layers == (1 if variant == "beta" else 0)
    assert model.config.audio_config.logit_scale == 1.0

    wave = torch.randn(16000 * 9, generator=torch.Generator().manual_seed(3)).numpy() * 0.1
    instruction = DEFAULT_INSTRUCTIONS["mv_description"]
    inputs = processor(text=processor.build_prompt(genre_tags=["rock", "pop"]), audio=[wave], sampling_rate=16000)
    clips = _clip_embeddings(imagebind, wave)
    ids, _, fused = reference.generation_inputs(clips, "<Audio> Genre tags: rock, pop.", instruction)
    ours = inputs["input_ids"][0].tolist()
    assert ours == [model.config.audio_token_id if i is None else i for i in ids]
    assert reference.tokenizer.bos_token_id not in ours  # the input starts with the audio: no BOS, as theirs
    if variant == "beta":
        assert inputs["fusion_mask"][0].tolist() == [1] * fused + [0] * (len(ids) - fused)
    else:
        assert "fusion_mask" not in inputs
    expected = reference.logits(clips, "<Audio> Genre tags: rock, pop.", instruction)
    with torch.no_grad():
        logits = model(**inputs).logits[0]
    torch.testing.assert_close(logits[:, :len(reference.tokenizer)], expected, rtol=1e-4, atol=1e-4)


def test_fused_batches_equal_single_rows_and_generate(nextgpt, deepresonance):
    imagebind = nextgpt[4]
    reference, folder = deepresonance["beta"]
    model = AutoModel.from_pretrained(folder, trust_remote_code=True).eval()
    processor = AutoProcessor.from_pretrained(folder, trust_remote_code=True)
    waves = [torch.randn(16000 * s, generator=torch.Generator().manual_seed(s)).numpy() * 0.1 for s in (4, 7)]
    prompts = [processor.build_prompt(), processor.build_prompt(genre_tags=["jazz"], mv_type="Live Performance")]
    batch = processor(text=prompts, audio=waves, sampling_rate=16000)  # left-padded, different fused lengths
    with torch.no_grad():
        together = model(**batch).logits[:, -1]
        for row, (prompt, wave) in enumerate(zip(prompts, waves)):
            alone = model(**processor(text=prompt, audio=[wave], sampling_rate=16000)).logits[0, -1]
            torch.testing.assert_close(together[row], alone, rtol=1e-4, atol=1e-4)
        expected = reference.logits(_clip_embeddings(imagebind, waves[1]),
                                    "<Audio> Genre tags: jazz. MV type: Live Performance.",
                                    DEFAULT_INSTRUCTIONS["mv_description"])[-1]
        torch.testing.assert_close(together[1, :len(reference.tokenizer)], expected, rtol=1e-4, atol=1e-4)
        out = model.generate(**batch, do_sample=False, max_new_tokens=3)  # fusion on the first step only
    assert out.shape == (2, batch["input_ids"].shape[1] + 3)
    with pytest.raises(ValueError, match="pass the processor's fusion_mask"):
        model(**{k: v for k, v in batch.items() if k != "fusion_mask"})
    assert model.generation_config.temperature == 0.1
    assert "DeepResonance" in (folder / "README.md").read_text()


def test_processor_options_that_cannot_work_are_refused(converted):
    processor = AutoProcessor.from_pretrained(converted, trust_remote_code=True)
    parts = dict(feature_extractor=processor.feature_extractor, tokenizer=processor.tokenizer)
    with pytest.raises(ValueError, match="input_boundary needs tokenize_segments=True"):
        type(processor)(**parts, input_boundary="### Human:")
    with pytest.raises(ValueError, match="fuse_input needs an input_boundary"):
        type(processor)(**parts, tokenize_segments=True, fuse_input=True)
    boundary = type(processor)(**parts, chat_template=NEXTGPT_CHAT_TEMPLATE, tokenize_segments=True,
                               input_boundary="no such text")
    with pytest.raises(ValueError, match="the prompt has no 'no such text'"):
        boundary(text=boundary.build_prompt(), audio=[torch.zeros(16000).numpy()], sampling_rate=16000)
