"""The feature extractor is ImageBind's audio transform: parity with the reference code, and clear errors.

Oracles (tests/reference_oracles.py, fetched once from the package registry and cached outside the repo):
torchaudio 2.11's kaldi.py fbank and resample, pytorchvideo's ConstantClipsPerVideoSampler, and Meta's own
``imagebind/data.py`` audio path. Measured here (fp32 reference vs our float64 numpy): fbank max abs difference
1.4e-3 on a pure chord (near-empty mel bins), <= 2.1e-4 on noise and clipping, 0 on silence (values up to 16);
the whole pipeline <= 7e-5 after normalisation. The tolerances below leave headroom over those figures.
"""

import warnings

import numpy as np
import pytest
import soundfile as sf
import torch

import reference_oracles as ro
from feature_extraction_m2mv import AudioInputError, M2MVFeatureExtractor, clip_sample_ranges, load_audio, resample

FBANK_TOL = 2e-3  # log-mel, before normalisation
PIPELINE_TOL = 5e-4  # after normalisation (/9.138)


@pytest.fixture(scope="module")
def extractor():
    return M2MVFeatureExtractor()


def _reference_fbank(waveform: np.ndarray) -> np.ndarray:
    fbank = ro.load_kaldi_fbank()
    return fbank(torch.from_numpy(waveform)[None], htk_compat=True, sample_frequency=16000, use_energy=False,
                 window_type="hanning", num_mel_bins=128, dither=0.0, frame_length=25, frame_shift=10).numpy()


def _signals():
    rng = np.random.default_rng(0)
    t = np.arange(32000) / 16000
    return {
        "noise": rng.normal(scale=0.1, size=32000),
        "chord": sum(np.sin(2 * np.pi * f * t) for f in (261.6, 329.6, 392.0)) / 3,
        "silence": np.zeros(32000),
        "clipping": np.clip(3 * np.sin(2 * np.pi * 300 * t), -1, 1),
        "shorter_than_2s": rng.normal(scale=0.3, size=9000),
        "near_silent": rng.normal(scale=1e-4, size=32000),
    }


@pytest.mark.parametrize("name", list(_signals()))
def test_fbank_equals_torchaudio_kaldi(extractor, name):
    waveform = _signals()[name].astype(np.float32)
    ours = extractor.kaldi_fbank(waveform[None])[0]
    reference = _reference_fbank(waveform)
    assert ours.shape == reference.shape
    assert np.abs(ours - reference).max() < FBANK_TOL


def test_the_mel_bands_hold_every_filter_weight(extractor):
    filters = extractor._mel_filters()
    rebuilt = np.zeros((2 * filters.shape[0], filters.shape[1]), np.float32)
    column = 0
    for first, stop, weights in extractor._mel_bands():
        rebuilt[first:stop, column: column + weights.shape[1]] = weights.numpy()
        column += weights.shape[1]
    assert column == filters.shape[1]
    np.testing.assert_array_equal(rebuilt[0::2], filters)  # the real part's rows
    np.testing.assert_array_equal(rebuilt[1::2], filters)  # the imaginary part's rows
    assert sum((stop - first) * w.shape[1] for first, stop, w in extractor._mel_bands()) < 0.3 * rebuilt.size


def test_fbank_of_many_clips_equals_each_clip_alone(extractor):
    from feature_extraction_m2mv import FBANK_CHUNK

    clips = np.random.default_rng(9).normal(scale=0.1, size=(2 * FBANK_CHUNK + 1, 32000)).astype(np.float32)
    together = extractor.kaldi_fbank(clips)
    for clip, row in zip(clips, together):
        np.testing.assert_allclose(extractor.kaldi_fbank(clip[None])[0], row, atol=1e-5)


@pytest.mark.parametrize(
    "seconds, rate, channels",
    [(0.5, 16000, 1), (1.9, 16000, 1), (3.0, 16000, 1), (4.0, 16000, 2), (7.3, 44100, 2), (30.0, 44100, 2),
     (30.0, 22050, 1), (12.0, 48000, 1)],
)
def test_whole_transform_equals_imagebind_data_py(extractor, seconds, rate, channels):
    rng = np.random.default_rng(int(seconds * 10) + channels)
    t = np.arange(int(seconds * rate)) / rate
    music = 0.3 * np.sin(2 * np.pi * 440 * t * (1 + 0.1 * np.sin(t))) + rng.normal(scale=0.05, size=t.size)
    waveform = np.stack([music + 0.05 * c for c in range(channels)]).astype(np.float32)  # DC offset too
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        reference = ro.reference_audio_features(torch.from_numpy(waveform), rate)[0, :, 0].numpy()
        ours = extractor.extract_one(waveform, rate)
    assert ours.shape == reference.shape == (3, 128, 204)
    assert np.abs(ours - reference).max() < PIPELINE_TOL


DURATIONS = [0.5, 1.0, 1.999, 2.0, 2.0001, 2.5, 3.0, 5.0, 6.0, 7.77, 10.0, 29.99, 30.0, 30.01, 61.3, 123.456,
             299.9, 300.0, 599.99, 600.0]


@pytest.mark.parametrize("rate", [16000])
def test_clip_boundaries_equal_pytorchvideo_sampler(rate):
    for seconds in DURATIONS:
        for num_samples in (int(seconds * rate), int(seconds * rate) + 1):
            assert clip_sample_ranges(num_samples, rate) == ro.imagebind_clip_sample_slices(num_samples, rate), seconds


def test_clip_layout_of_a_30_s_input():
    # the sampler divides by the number of clips: starts at 0, 9.33 and 18.67 s
    assert clip_sample_ranges(480000, 16000) == [(0, 32000), (149333, 181333), (298666, 330666)]


@pytest.mark.parametrize("rate", [44100, 22050, 48000, 8000])
def test_resample_equals_torchaudio(rate):
    waveform = np.random.default_rng(rate).normal(size=(2, 3 * rate)).astype(np.float32)
    reference = ro.load_torchaudio_resample()(torch.from_numpy(waveform), rate, 16000).numpy()
    ours = resample(waveform, rate, 16000)
    assert ours.shape == reference.shape
    assert np.abs(ours - reference).max() < 1e-5


def test_batch_equals_items_alone(extractor):
    rng = np.random.default_rng(3)
    waves = [rng.normal(scale=0.1, size=n).astype(np.float32) for n in (48000, 160000)]
    batch = extractor(waves, sampling_rate=16000)["input_features"]
    for row, wave in zip(batch, waves):
        np.testing.assert_array_equal(row, extractor(wave, sampling_rate=16000)["input_features"][0])


def test_stereo_left_channel_is_the_reference_default_and_mean_is_a_downmix(extractor):
    rng = np.random.default_rng(4)
    stereo = rng.normal(scale=0.1, size=(2, 48000)).astype(np.float32)
    assert extractor.channel_mode == "left"
    left = extractor.extract_one(stereo, 16000)
    # the reference reads channel 0 (after removing the mean of both channels, which kaldi's per-frame DC removal
    # all but cancels)
    assert np.abs(left - extractor.extract_one(stereo[:1], 16000)).max() < 0.01
    assert np.abs(left - extractor.extract_one(stereo[1:], 16000)).max() > 1.0
    mixed = M2MVFeatureExtractor(channel_mode="mean").extract_one(stereo, 16000)
    # equal up to float32 rounding, which the log of a low mel bin (one FFT bin wide) amplifies to ~1e-4 here
    np.testing.assert_allclose(mixed, extractor.extract_one(stereo.mean(0), 16000), atol=2e-4)
    with pytest.raises(ValueError, match="channel_mode"):
        M2MVFeatureExtractor(channel_mode="right")


def test_files_are_read_at_their_own_rate(extractor, tmp_path):
    wave = np.random.default_rng(5).normal(scale=0.1, size=(3 * 44100, 2)).astype(np.float32)
    for suffix in (".wav", ".flac", ".ogg"):
        path = tmp_path / f"x{suffix}"
        sf.write(path, wave, 44100)
        from_file = extractor(str(path))["input_features"][0]
        data, rate = load_audio(path)
        assert rate == 44100 and data.shape[0] == 2
        np.testing.assert_array_equal(from_file, extractor.extract_one(data, rate))


# -- bad input ------------------------------------------------------------------------------------------------


def test_missing_sampling_rate_is_an_error(extractor):
    with pytest.raises(AudioInputError, match="sampling_rate= is required"):
        extractor(np.zeros(32000, np.float32))


@pytest.mark.parametrize(
    "waveform, message",
    [
        (np.array([0.1, np.nan] * 20000, np.float32), "NaN or infinite"),
        (np.array([0.1, np.inf] * 20000, np.float32), "NaN or infinite"),
        (np.zeros(0, np.float32), "empty audio"),
        (np.zeros(32000, np.int16), "expected a float waveform"),
        (np.zeros((32000, 2), np.float32), "channels, samples"),
        (np.zeros((2, 3, 100), np.float32), "channels, samples"),
        (np.full(300, 0.1, np.float32), "shorter than one 25-ms analysis window"),
    ],
)
def test_bad_waveforms_are_clear_errors(extractor, waveform, message):
    with pytest.raises(AudioInputError, match=message) as err:
        extractor([np.ones(32000, np.float32) * 0.1, waveform], sampling_rate=16000)
    assert "audio[1]" in str(err.value) or "clip" in str(err.value)


def test_short_audio_is_padded_like_imagebind_and_warns(extractor):
    wave = np.random.default_rng(6).normal(scale=0.1, size=16000).astype(np.float32)
    with pytest.warns(UserWarning, match="shorter than one 2-s clip"):
        features = extractor(wave, sampling_rate=16000)["input_features"][0]
    np.testing.assert_allclose(features[:, :, 98:], (0 - extractor.mean) / extractor.std, rtol=1e-6)  # 98 frames
    assert not np.allclose(features[:, :, 97], (0 - extractor.mean) / extractor.std)


def test_silence_works_and_warns(extractor):
    with pytest.warns(UserWarning, match="silent"):
        features = extractor(np.zeros(48000, np.float32), sampling_rate=16000)["input_features"]
    assert np.isfinite(features).all()


def test_missing_unreadable_and_truncated_files_name_the_file(extractor, tmp_path):
    missing = tmp_path / "nope.wav"
    with pytest.raises(AudioInputError, match="nope.wav: no such audio file"):
        extractor(str(missing))
    garbage = tmp_path / "garbage.ogg"
    garbage.write_bytes(b"this is not audio at all" * 100)
    with pytest.raises(AudioInputError, match="garbage.ogg: unreadable audio"):
        extractor(str(garbage))
    header_only = tmp_path / "header_only.wav"
    sf.write(header_only, np.zeros((100, 1), np.float32), 16000)
    header_only.write_bytes(header_only.read_bytes()[:44])  # the samples cut off
    with pytest.raises(AudioInputError, match="header_only.wav"):
        extractor(str(header_only))


def test_fbank_and_transform_on_real_music(extractor):
    """A real recording (OpenMSX, GPL-2; tests/data/README.md): fbank and the whole transform match the references."""
    from pathlib import Path

    path = Path(__file__).parent / "data" / "openmsx-chemistry-lab-30s.ogg"
    stereo, rate = load_audio(path)
    assert rate == 22050 and stereo.shape == (2, 30 * 22050)
    mono16k = resample(stereo, rate, 16000)[0]
    for start, end in clip_sample_ranges(mono16k.shape[0], 16000):
        clip = mono16k[start:end] - mono16k[start:end].mean()
        assert np.abs(extractor.kaldi_fbank(clip[None])[0] - _reference_fbank(clip)).max() < FBANK_TOL
    reference = ro.reference_audio_features(torch.from_numpy(stereo), rate)[0, :, 0].numpy()
    assert np.abs(extractor(str(path))["input_features"][0] - reference).max() < PIPELINE_TOL


def test_encoded_bytes_and_datasets_audio_dicts(extractor):
    from pathlib import Path

    path = Path(__file__).parent / "data" / "openmsx-chemistry-lab-30s.ogg"
    from_path = extractor(str(path))["input_features"]
    data = path.read_bytes()
    np.testing.assert_array_equal(extractor(data)["input_features"], from_path)
    both = extractor([{"bytes": data, "path": "song.ogg"}, {"bytes": None, "path": str(path)}])["input_features"]
    np.testing.assert_array_equal(both, np.concatenate([from_path, from_path]))
    with pytest.raises(AudioInputError, match="broken.ogg: unreadable audio"):
        extractor([{"bytes": data[:200], "path": "broken.ogg"}])
