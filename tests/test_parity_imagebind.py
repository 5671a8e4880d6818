"""Our audio encoder is ImageBind's: Meta's code and ours, same weights (through the converter), same outputs; with
``logit_scale=1`` (the default) it is what NExT-GPT, the paper's framework, feeds its adaptor."""

import numpy as np
import pytest
import torch

import reference_oracles as ro
from configuration_m2mv import M2MVAudioConfig
from m2mv.checkpoints.convert import convert_imagebind_audio_state_dict, load_imagebind_checkpoint
from m2mv.errors import CheckpointError
from modeling_m2mv import M2MVAudioEncoder
from feature_extraction_m2mv import M2MVFeatureExtractor

SMALL = dict(audio_embed_dim=64, audio_num_blocks=2, audio_num_heads=4, out_embed_dim=1024, audio_drop_path=0.1)


def _features(batch=2, seed=0):
    rng = np.random.default_rng(seed)
    waves = [rng.normal(scale=0.1, size=int(16000 * s)).astype(np.float32) for s in (30.0, 3.5)[:batch]]
    return torch.from_numpy(M2MVFeatureExtractor()(waves, sampling_rate=16000)["input_features"])


def _ours_from_reference(reference, config, tmp_path):
    """Save Meta's weights as a .pth, convert them with m2mv.convert, load our encoder."""
    path = tmp_path / "imagebind.pth"
    torch.save(reference.state_dict(), path)
    state = convert_imagebind_audio_state_dict(load_imagebind_checkpoint(path), config, source=str(path))
    encoder = M2MVAudioEncoder(config).eval()
    encoder.load_state_dict(state, strict=True)
    return encoder


def _assert_same_embeddings(reference, ours):
    """Meta's forward (x20) against ours with ``logit_scale=20``."""
    features = _features()
    with torch.no_grad():
        expected_clips = ro.reference_audio_clip_embeddings(reference, features[:, :, None])
        expected_mean = ro.reference_audio_embedding(reference, features[:, :, None])
        clips = ours(features).pooler_output
    assert clips.shape == expected_clips.shape == (2, 3, 1024)
    assert (clips - expected_clips).abs().max() < 1e-4
    assert (clips.mean(dim=1) - expected_mean).abs().max() < 1e-4
    return (clips - expected_clips).abs().max().item()


def _assert_nextgpt_embedding(reference, ours):
    """NExT-GPT's audio path (L2 only, mean of the clips) against ours with ``logit_scale=1``: the mean the
    model's one audio token is projected from."""
    features = _features()
    with torch.no_grad():
        expected = ro.nextgpt_audio_embedding(reference, features[:, :, None])
        meta = ro.reference_audio_embedding(reference, features[:, :, None])
        clips = ours(features).pooler_output
    assert (clips.mean(dim=1) - expected).abs().max() < 1e-5
    torch.testing.assert_close(clips.norm(dim=-1), torch.ones(2, 3))  # each clip unit-norm ...
    assert (expected.norm(dim=-1) < 1).all()  # ... their mean is not re-normalised
    torch.testing.assert_close(meta, 20 * expected, rtol=1e-4, atol=1e-4)  # Meta's is the same, x20


def _small_config(**overrides):
    return M2MVAudioConfig(**SMALL_CONFIG, **overrides)


def test_small_encoder_matches_meta_code(tmp_path):
    reference = ro.build_reference_imagebind(small=True, seed=1, **SMALL)
    ours = _ours_from_reference(reference, _small_config(logit_scale=20.0), tmp_path)
    _assert_same_embeddings(reference, ours)


def test_the_default_audio_path_is_nextgpts(tmp_path):
    assert M2MVAudioConfig().logit_scale == 1.0
    reference = ro.build_reference_imagebind(small=True, seed=1, **SMALL)
    ours = _ours_from_reference(reference, _small_config(), tmp_path)  # the same .pth Meta's code loads
    _assert_nextgpt_embedding(reference, ours)


@pytest.mark.slow
def test_full_size_imagebind_huge_audio_branch_matches_meta_and_nextgpt_code(tmp_path):
    reference = ro.build_reference_imagebind(small=False, seed=2)
    ours = _ours_from_reference(reference, M2MVAudioConfig(logit_scale=20.0), tmp_path)  # otherwise the real sizes
    assert sum(p.numel() for p in ours.parameters()) == 86_235_648
    _assert_same_embeddings(reference, ours)
    ours.config.logit_scale = ours.head.logit_scale = 1.0  # the same weights on NExT-GPT's path
    _assert_nextgpt_embedding(reference, ours)


# -- converter errors ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def small_state():
    return dict(ro.build_reference_imagebind(small=True, seed=3, **SMALL).state_dict())


SMALL_CONFIG = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=256)


def test_missing_key_is_named(small_state):
    state = dict(small_state)
    del state["modality_trunks.audio.blocks.1.attn.bias_k"]
    with pytest.raises(CheckpointError, match=r"missing: \['modality_trunks.audio.blocks.1.attn.bias_k'\]"):
        convert_imagebind_audio_state_dict(state, M2MVAudioConfig(**SMALL_CONFIG))


def test_extra_key_is_named(small_state):
    state = dict(small_state, **{"modality_trunks.audio.blocks.2.norm_1.weight": torch.ones(64)})
    with pytest.raises(CheckpointError, match="unexpected: .*blocks.2.norm_1.weight"):
        convert_imagebind_audio_state_dict(state, M2MVAudioConfig(**SMALL_CONFIG))


def test_misshaped_key_is_named(small_state):
    with pytest.raises(CheckpointError, match="has shape"):
        convert_imagebind_audio_state_dict(small_state, M2MVAudioConfig(**dict(SMALL_CONFIG, intermediate_size=128)))


def test_a_file_whose_audio_scale_is_not_imagebinds_is_refused(small_state):
    for scale in (1.0, 20.0):  # the file's buffer is Meta's 20 whichever scale the config follows
        convert_imagebind_audio_state_dict(small_state, M2MVAudioConfig(**SMALL_CONFIG, logit_scale=scale))
    state = dict(small_state, **{"modality_postprocessors.audio.1.log_logit_scale": torch.tensor(5.0).log()})
    with pytest.raises(CheckpointError, match="audio logit scale 5, expected ImageBind's fixed 20"):
        convert_imagebind_audio_state_dict(state, M2MVAudioConfig(**SMALL_CONFIG))


def test_other_modalities_are_dropped(small_state):
    converted = convert_imagebind_audio_state_dict(small_state, M2MVAudioConfig(**SMALL_CONFIG))
    assert not any("vision" in k or "text" in k for k in converted)
    assert len(converted) == len(M2MVAudioEncoder(M2MVAudioConfig(**SMALL_CONFIG)).state_dict())


def test_unreadable_or_foreign_checkpoints_are_refused(tmp_path):
    with pytest.raises(CheckpointError, match="no such ImageBind checkpoint"):
        load_imagebind_checkpoint(tmp_path / "missing.pth")
    corrupt = tmp_path / "corrupt.pth"
    corrupt.write_bytes(b"PK\x03\x04 not really a checkpoint")
    with pytest.raises(CheckpointError, match="corrupt.pth: not a readable PyTorch checkpoint"):
        load_imagebind_checkpoint(corrupt)
    foreign = tmp_path / "foreign.pth"
    torch.save({"encoder.weight": torch.zeros(2)}, foreign)
    with pytest.raises(CheckpointError, match="no ImageBind audio-branch keys"):
        convert_imagebind_audio_state_dict(load_imagebind_checkpoint(foreign), M2MVAudioConfig())


def test_pickled_code_is_never_executed(tmp_path):
    class Payload:
        def __reduce__(self):
            return (exec, ("raise SystemExit('pickle code ran')",))

    evil = tmp_path / "evil.pth"
    torch.save({"x": Payload()}, evil, _use_new_zipfile_serialization=True)
    with pytest.raises(CheckpointError, match="not a readable PyTorch checkpoint"):
        load_imagebind_checkpoint(evil)
