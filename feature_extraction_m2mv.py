"""ImageBind's audio transform for m2mv: audio decoding, resampling and the feature extractor.

:class:`M2MVFeatureExtractor` does exactly ImageBind's audio transform (``imagebind/data.py``) in numpy and torch:
16 kHz, 3 clips of 2 s spaced evenly over the input (pytorchvideo's ``ConstantClipsPerVideoSampler``), mean removal,
kaldi-compatible log-mel filter bank (128 bins, 25-ms Hann window, 10-ms shift), pad/crop to 204 frames,
normalise with mean -4.268 / std 9.138. :func:`load_audio` decodes files and encoded bytes with soundfile.

This file travels with every checkpoint as remote code (``trust_remote_code=True``), imported by
``processing_m2mv.py``; it imports only numpy, torch, soundfile and transformers.
"""

from __future__ import annotations

import io
import math
import warnings
from collections.abc import Sequence
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
import soundfile
import torch
from transformers import BatchFeature, SequenceFeatureExtractor
from transformers.audio_utils import mel_filter_bank, window_function

# ----------------------------------------------------------------------------------------------------------------
# Audio I/O and resampling
# ----------------------------------------------------------------------------------------------------------------

CHANNEL_MODES = ("left", "mean")
FBANK_CHUNK = 4  # clips per filter-bank pass: the buffers (about 1.6 MB a clip) stay in cache
MEL_BAND = 32  # mel filters per band of the banded mel product
SILENCE_PEAK = 1e-4  # about -80 dBFS


class AudioInputError(ValueError):
    """Audio that cannot be turned into features (unreadable, empty, NaN, wrong shape...). Names the source."""


AUDIO_FORMATS = "WAV, FLAC, OGG/Vorbis, Opus, MP3"  # what soundfile (libsndfile 1.2) decodes here


def _unreadable(name: str, err: Exception) -> AudioInputError:
    """An :class:`AudioInputError` for audio libsndfile could not open, with a message that says what happened.

    libsndfile reports an existing file it cannot decode (a text file named ``.mp3``, zeros) as "File does not
    exist or is not a regular file": the caller has already checked that the file exists, so say what is true.
    """
    detail = str(err)
    if "does not exist or is not a regular file" in detail:
        detail = f"not a recognised audio format ({AUDIO_FORMATS}) or a corrupt file"
    else:
        detail = f"{type(err).__name__}: {detail}"
    return AudioInputError(f"{name}: unreadable audio ({detail})")


def load_audio(source: str | Path | dict | bytes) -> tuple[np.ndarray, int]:
    """Read audio with soundfile as float32 (channels, samples) plus its sampling rate.

    ``source`` is a file path, encoded bytes, a ``datasets.Audio(decode=False)`` value ``{"bytes", "path"}``, or a
    decoded value ``{"array", "sampling_rate", "path"}`` (as :func:`decode_audio` returns). soundfile (libsndfile)
    reads WAV, FLAC, OGG/Vorbis, Opus and MP3. Errors name the file.
    """
    data_bytes, name = None, source
    if isinstance(source, dict):
        if source.get("array") is not None:
            return _as_channels_first(source["array"], source.get("path") or "<audio array>"), \
                int(source["sampling_rate"])
        data_bytes, name = source.get("bytes"), source.get("path") or "<audio bytes>"
        if data_bytes is None:
            source = source.get("path")
            if source is None:
                raise AudioInputError("an audio dict needs 'bytes', 'path' or 'array'")
    elif isinstance(source, (bytes, bytearray)):
        data_bytes, name = bytes(source), "<audio bytes>"
    if data_bytes is None:
        path = Path(source)
        if not path.is_file():
            raise AudioInputError(f"{path}: no such audio file")
        target = str(path)
    else:
        target = io.BytesIO(data_bytes)
    try:
        data, rate = soundfile.read(target, dtype="float32", always_2d=True)
    except Exception as err:  # libsndfile raises its own error types; name the file whatever they are
        raise _unreadable(str(name), err) from err
    if data.size == 0:
        raise AudioInputError(f"{name}: the file holds no audio samples (empty or truncated)")
    return np.ascontiguousarray(data.T), int(rate)


def _as_channels_first(array: Any, name: str) -> np.ndarray:
    """A decoded array as (channels, samples): 1-D is mono; 2-D arrays in (samples, channels) order are turned."""
    array = np.asarray(array)
    if array.ndim == 2 and array.shape[0] > array.shape[1]:
        array = array.T
    return np.ascontiguousarray(array[None] if array.ndim == 1 else array)


def audio_name(source: Any, index: int = 0) -> str:
    """How errors name an audio input: its path, else its position (``audio[3]``)."""
    if isinstance(source, dict):
        return str(source.get("path") or f"audio[{index}]")
    return str(source) if isinstance(source, (str, Path)) else f"audio[{index}]"


def decode_audio(source: str | Path | dict | bytes) -> dict:
    """Decode audio once: ``{"array": (channels, samples) float32, "sampling_rate", "path"}`` (the shape of a decoded
    ``datasets.Audio`` value), which the feature extractor takes as it is, so a file is read only once."""
    array, rate = load_audio(source)
    return {"array": array, "sampling_rate": rate, "path": audio_name(source)}


def _sinc_resample_kernel(orig: int, new: int, lowpass_filter_width: int = 6, rolloff: float = 0.99):
    """Windowed-sinc kernel of ``torchaudio.functional.resample`` (method ``sinc_interp_hann``), reduced rates."""
    base = min(orig, new) * rolloff
    width = math.ceil(lowpass_filter_width * orig / base)
    idx = torch.arange(-width, width + orig, dtype=torch.float32)[None, None] / orig
    t = torch.arange(0, -new, -1, dtype=torch.float32)[:, None, None] / new + idx
    t = (t * base).clamp_(-lowpass_filter_width, lowpass_filter_width)
    window = torch.cos(t * math.pi / lowpass_filter_width / 2) ** 2
    t = t * math.pi
    kernel = torch.where(t == 0, torch.tensor(1.0), t.sin() / t) * window * (base / orig)
    return kernel, width


def resample(waveform: np.ndarray, orig_freq: int, new_freq: int) -> np.ndarray:
    """Resample (channels, samples) float32 audio the way ImageBind does (``torchaudio.functional.resample``)."""
    if orig_freq == new_freq:
        return waveform
    gcd = math.gcd(int(orig_freq), int(new_freq))
    orig, new = int(orig_freq) // gcd, int(new_freq) // gcd
    kernel, width = _sinc_resample_kernel(orig, new)
    signal = torch.from_numpy(np.ascontiguousarray(waveform, dtype=np.float32))
    length = signal.shape[-1]
    padded = torch.nn.functional.pad(signal[:, None], (width, width + orig))
    out = torch.nn.functional.conv1d(padded, kernel, stride=orig).transpose(1, 2).reshape(signal.shape[0], -1)
    return out[:, : math.ceil(new * length / orig)].numpy()


def validate_waveform(waveform: Any, name: str) -> np.ndarray:
    """Return ``waveform`` as float32 (channels, samples); raise AudioInputError naming ``name``."""
    if isinstance(waveform, torch.Tensor):
        waveform = waveform.detach().cpu().numpy()
    waveform = np.asarray(waveform)
    if waveform.dtype.kind not in "f":
        raise AudioInputError(f"{name}: expected a float waveform in [-1, 1], got dtype {waveform.dtype}")
    if waveform.size == 0:
        raise AudioInputError(f"{name}: empty audio (0 samples)")
    if waveform.ndim == 1:
        waveform = waveform[None]
    if waveform.ndim != 2 or waveform.shape[0] > waveform.shape[1]:
        raise AudioInputError(
            f"{name}: expected a waveform of shape (samples,) or (channels, samples), got {waveform.shape}"
        )
    if not (np.isfinite(waveform.max()) and np.isfinite(waveform.min())):  # NaN propagates; no mask allocated
        raise AudioInputError(f"{name}: the waveform contains NaN or infinite samples")
    return waveform.astype(np.float32, copy=False)


def iter_waveforms(raw_speech: Any, sampling_rate: int | Sequence[int] | None, target_rate: int):
    """Each input as ``(waveform (channels, samples) float32, its rate, its name)``: files and dicts decoded (their
    own rate read), bare arrays checked against their required ``sampling_rate``."""
    if _is_single_input(raw_speech):
        raw_speech = [raw_speech]
    rates = list(sampling_rate) if isinstance(sampling_rate, Sequence) else [sampling_rate] * len(raw_speech)
    if len(rates) != len(raw_speech):
        raise AudioInputError(f"got {len(rates)} sampling rates for {len(raw_speech)} audio inputs")
    for index, (item, rate) in enumerate(zip(raw_speech, rates)):
        name = audio_name(item, index)
        if isinstance(item, (str, Path, dict, bytes)):
            waveform, rate = load_audio(item)
        elif rate is None:
            raise AudioInputError(
                f"{name}: sampling_rate= is required with raw waveforms (this extractor runs at "
                f"{target_rate} Hz and resamples other rates); pass the waveform's real rate"
            )
        else:
            waveform = item
        yield validate_waveform(waveform, name), rate, name


def warn_if_silent(waveform: np.ndarray, name: str) -> None:
    if max(waveform.max(), -waveform.min()) < SILENCE_PEAK:  # the peak, without an array of absolute values
        warnings.warn(f"{name}: the audio is silent (peak below {SILENCE_PEAK:g}); its features carry no music",
                      stacklevel=3)


def mono_waveforms(raw_speech: Any, sampling_rate: int | Sequence[int] | None, target_rate: int) -> list[np.ndarray]:
    """Inputs for a transformers feature extractor (Whisper's, ...), which reads 1-D arrays at its own rate only:
    each decoded, checked, down-mixed (channel mean) and resampled to ``target_rate`` as ImageBind's path is."""
    waveforms = []
    for waveform, rate, name in iter_waveforms(raw_speech, sampling_rate, target_rate):
        warn_if_silent(waveform, name)
        waveforms.append(resample(waveform.mean(axis=0, keepdims=True), rate, target_rate)[0])
    return waveforms


# ----------------------------------------------------------------------------------------------------------------
# ImageBind's audio transform
# ----------------------------------------------------------------------------------------------------------------


def clip_sample_ranges(
    num_samples: int, sampling_rate: int, clip_duration: float = 2.0, clips_per_audio: int = 3
) -> list[tuple[int, int]]:
    """Sample ranges ``[start, end)`` of the clips ImageBind cuts from ``num_samples`` samples.

    pytorchvideo's ``ConstantClipsPerVideoSampler`` (as ImageBind calls it) starts clip ``i`` at
    ``i * max(duration - clip, 0) / clips`` seconds in exact fractions: note the divisor is the number of clips,
    not clips - 1, so the last clip of a 30-s input starts at 18.67 s and the final ~9 s are never seen.
    ImageBind then cuts ``waveform[int(start * sr): int(end * sr)]``.
    """
    duration = num_samples / sampling_rate
    max_start = Fraction(max(duration - clip_duration, 0))
    step = Fraction(max_start, clips_per_audio)
    ranges = []
    for index in range(clips_per_audio):
        start = step * index
        end = start + Fraction(clip_duration)
        ranges.append((int(start * sampling_rate), int(end * sampling_rate)))
    return ranges


def _is_single_input(raw: Any) -> bool:
    """One input (a path, encoded audio, or one waveform array) rather than a list of them."""
    if isinstance(raw, (str, Path, dict, bytes, torch.Tensor)):
        return True
    return isinstance(raw, np.ndarray) and raw.ndim <= 2 and raw.dtype != object


class M2MVFeatureExtractor(SequenceFeatureExtractor):
    """ImageBind's audio transform, batched in numpy on top of ``transformers.audio_utils``.

    Returns ``input_features`` of shape (batch, clips_per_audio, num_mel_bins, target_length).

    Args:
        sampling_rate: rate the transform runs at (16 kHz); other rates are resampled like ImageBind does.
        clip_duration: seconds per clip (2).
        clips_per_audio: clips per input (3).
        num_mel_bins, target_length: filter-bank size (128 x 204 frames).
        frame_length_ms, frame_shift_ms: analysis window (25 ms) and hop (10 ms).
        mean, std: normalisation, ``(fbank - mean) / std``.
        channel_mode: ``"left"`` (default, reference-exact: ImageBind's kaldi fbank reads channel 0 of a
            multichannel file) or ``"mean"`` (down-mix all channels).
    """

    model_input_names = ["input_features"]
    reads_audio_sources = True  # decodes files, bytes and dicts itself (a transformers extractor takes arrays)

    def __init__(
        self,
        feature_size: int = 128,
        sampling_rate: int = 16000,
        padding_value: float = 0.0,
        clip_duration: float = 2.0,
        clips_per_audio: int = 3,
        num_mel_bins: int = 128,
        target_length: int = 204,
        frame_length_ms: float = 25.0,
        frame_shift_ms: float = 10.0,
        preemphasis: float = 0.97,
        low_frequency: float = 20.0,
        mean: float = -4.268,
        std: float = 9.138,
        channel_mode: str = "left",
        **kwargs,
    ):
        super().__init__(feature_size=feature_size, sampling_rate=sampling_rate, padding_value=padding_value,
                         **kwargs)
        if channel_mode not in CHANNEL_MODES:
            raise ValueError(f"channel_mode must be one of {CHANNEL_MODES}, got {channel_mode!r}")
        self.clip_duration = clip_duration
        self.clips_per_audio = clips_per_audio
        self.num_mel_bins = num_mel_bins
        self.target_length = target_length
        self.frame_length_ms = frame_length_ms
        self.frame_shift_ms = frame_shift_ms
        self.preemphasis = preemphasis
        self.low_frequency = low_frequency
        self.mean = mean
        self.std = std
        self.channel_mode = channel_mode

    # -- geometry -------------------------------------------------------------------------------------------------
    @property
    def frame_length(self) -> int:
        return int(self.sampling_rate * self.frame_length_ms / 1000)

    @property
    def hop_length(self) -> int:
        return int(self.sampling_rate * self.frame_shift_ms / 1000)

    @property
    def fft_length(self) -> int:
        return 1 << (self.frame_length - 1).bit_length()

    @property
    def clip_samples(self) -> int:
        return int(self.clip_duration * self.sampling_rate)

    def _mel_filters(self) -> np.ndarray:
        """Kaldi's triangular mel filters, (fft_length // 2 + 1, num_mel_bins), computed once."""
        cached = self.__dict__.get("_mel_filter_cache")
        if cached is not None:
            return cached
        with warnings.catch_warnings():
            # Expected: with 128 bins at 16 kHz and a 512-point FFT the lowest kaldi filter is empty, in torchaudio too.
            warnings.filterwarnings("ignore", message="At least one mel filter has all zero values")
            filters = mel_filter_bank(
                num_frequency_bins=self.fft_length // 2 + 1,
                num_mel_filters=self.num_mel_bins,
                min_frequency=self.low_frequency,
                max_frequency=self.sampling_rate / 2,
                sampling_rate=self.sampling_rate,
                norm=None,
                mel_scale="kaldi",
                triangularize_in_mel_space=True,
            )
        filters = filters.astype(np.float32)
        self.__dict__["_mel_filter_cache"] = filters
        return filters

    def to_dict(self) -> dict[str, Any]:
        output = super().to_dict()
        output.pop("_mel_filter_cache", None)
        output.pop("_window_cache", None)
        output.pop("_mel_band_cache", None)
        return output

    # -- the transform ----------------------------------------------------------------------------------------
    def _window(self) -> np.ndarray:
        """Kaldi's "hanning" window (symmetric Hann), float32, computed once."""
        cached = self.__dict__.get("_window_cache")
        if cached is None:
            cached = window_function(self.frame_length, "hann", periodic=False).astype(np.float32)
            self.__dict__["_window_cache"] = cached
        return cached

    def _mel_bands(self) -> list[tuple[int, int, torch.Tensor]]:
        """The mel filters as bands of ``MEL_BAND`` filters, each with the FFT bins it reads: ``(first, stop, weights)``
        over the interleaved (real, imag) squared spectrum, so ``weights`` has each bin's row twice. Computed once.

        Kaldi's triangular filters are sparse (a filter reads a few bins), so the bands together read a quarter of
        the dense (257 x 128) product, which is most of the transform's arithmetic."""
        cached = self.__dict__.get("_mel_band_cache")
        if cached is None:
            filters = self._mel_filters()
            interleaved = torch.from_numpy(np.repeat(filters, 2, axis=0))  # row 2k and 2k+1: bin k's re and im
            cached = []
            for first_filter in range(0, filters.shape[1], MEL_BAND):
                bins = np.nonzero(filters[:, first_filter: first_filter + MEL_BAND].any(axis=1))[0]
                first, stop = (2 * int(bins[0]), 2 * int(bins[-1]) + 2) if len(bins) else (0, 2)
                cached.append((first, stop, interleaved[first:stop, first_filter: first_filter + MEL_BAND].clone()))
            self.__dict__["_mel_band_cache"] = cached
        return cached

    def _windowed_frames(self, clips: torch.Tensor) -> torch.Tensor:
        """(n, samples) -> (n, frames, fft_length): kaldi's frames (snip_edges) with the DC offset removed,
        pre-emphasis and the Hann window applied, zero-padded to the FFT length, in one buffer written from a
        strided view of the clips. The order of kaldi's (mean removal, then pre-emphasis) is kept: it is the more
        precise one in float32 for a clip with a DC offset."""
        length = self.frame_length
        frames = clips.unfold(-1, length, self.hop_length)
        padded = torch.empty(*frames.shape[:-1], self.fft_length, dtype=torch.float32)
        padded[..., length:].zero_()
        signal = padded[..., :length]
        signal.copy_(frames).sub_(frames.mean(dim=-1, keepdim=True))  # remove_dc_offset
        previous = signal[..., :-1].clone()
        signal[..., 1:].sub_(previous, alpha=self.preemphasis)
        signal[..., :1].mul_(1.0 - self.preemphasis)
        signal.mul_(torch.from_numpy(self._window()))
        return padded

    def kaldi_fbank(self, clips: np.ndarray) -> np.ndarray:
        """Kaldi-compatible log-mel filter bank of equal-length mono clips (n, samples) -> (n, frames, mel).

        float32 throughout, like torchaudio's kaldi.fbank: frames (snip_edges), per-frame DC removal,
        pre-emphasis, Hann window, 512-point power spectrum, kaldi mel filters, log with an epsilon floor. In torch
        (its FFT and matmul use both cores; numpy's FFT is single-threaded and pads a copy), a few clips at a time
        so that the buffers stay in cache, and with the mel filters applied band by band (:meth:`_mel_bands`).
        """
        if clips.shape[-1] < self.frame_length:
            raise AudioInputError(
                f"a clip of {clips.shape[-1]} samples is shorter than one {self.frame_length_ms:g}-ms analysis window"
            )
        signal = torch.from_numpy(np.ascontiguousarray(clips, dtype=np.float32))
        floor = float(np.finfo(np.float32).eps)
        out = []
        with torch.no_grad():
            for chunk in signal.split(FBANK_CHUNK):
                padded = self._windowed_frames(chunk)
                squared = torch.view_as_real(torch.fft.rfft(padded, dim=-1)).flatten(-2).square_()  # re^2, im^2
                mel = torch.cat([squared[..., first:stop] @ weights for first, stop, weights in self._mel_bands()], -1)
                out.append(mel.clamp_min_(floor).log_())
        return torch.cat(out).numpy()

    def _pad_or_crop(self, fbank: np.ndarray) -> np.ndarray:
        """(n, frames, mel) -> (n, mel, target_length), zero-padded or cropped at the end like ImageBind."""
        fbank = fbank.transpose(0, 2, 1)[..., : self.target_length]
        missing = self.target_length - fbank.shape[-1]
        if missing > 0:
            fbank = np.pad(fbank, ((0, 0), (0, 0), (0, missing)))
        return fbank

    def _mean_removed_clips(self, waveform: np.ndarray) -> list[np.ndarray]:
        """Cut the clips and remove each one's mean (over all channels) exactly as ImageBind's ``data.py`` does:
        in place, in float32, in clip order, on views of one buffer, so that clips that overlap (inputs shorter
        than 6 s) see the earlier clips' mean removal in their shared samples."""
        ranges = clip_sample_ranges(waveform.shape[1], self.sampling_rate, self.clip_duration, self.clips_per_audio)
        if all(end <= start for (_, end), (start, _) in zip(ranges, ranges[1:])):  # disjoint: copy only the clips
            clips = [waveform[:, start:end].astype(np.float32, copy=True) for start, end in ranges]
            for clip in clips:
                clip -= clip.mean(dtype=np.float32)
            return clips
        buffer = waveform.astype(np.float32, copy=True)
        clips = []
        for start, end in ranges:
            view = buffer[:, start:end]
            view -= view.mean(dtype=np.float32)
            clips.append(view.copy())
        return clips

    def _select_channel(self, clips: np.ndarray) -> np.ndarray:
        """(channels, n, samples) mean-removed clips -> (n, samples) mono, by ``channel_mode``."""
        return clips[0] if self.channel_mode == "left" else clips.mean(axis=0)

    def extract_one(self, waveform: np.ndarray, sampling_rate: int, name: str = "audio") -> np.ndarray:
        """One (channels, samples) waveform -> (clips, mel, frames) normalised features."""
        return self._extract_checked(validate_waveform(waveform, name), sampling_rate, name)

    def _extract_checked(self, waveform: np.ndarray, sampling_rate: int, name: str) -> np.ndarray:
        """:meth:`extract_one` of a waveform :func:`validate_waveform` has already checked (no second scan)."""
        if sampling_rate != self.sampling_rate:
            waveform = resample(waveform, sampling_rate, self.sampling_rate)
        num_samples = waveform.shape[1]
        if num_samples < self.clip_samples:
            warnings.warn(
                f"{name}: {num_samples / self.sampling_rate:.2f} s is shorter than one {self.clip_duration:g}-s clip; "
                "its filter bank is zero-padded like ImageBind's",
                stacklevel=3,
            )
        warn_if_silent(waveform, name)
        clips = self._mean_removed_clips(waveform)
        if len({clip.shape[-1] for clip in clips}) == 1:  # the common case: one batched filter bank
            fbank = self.kaldi_fbank(self._select_channel(np.stack(clips, axis=1)))
        else:
            fbank = np.concatenate([self.kaldi_fbank(self._select_channel(clip[:, None])) for clip in clips])
        features = self._pad_or_crop(fbank)
        return ((features - self.mean) / self.std).astype(np.float32)

    def __call__(
        self,
        raw_speech: np.ndarray | Sequence[np.ndarray] | str | Path | Sequence[str | Path],
        sampling_rate: int | Sequence[int] | None = None,
        return_tensors: str | None = None,
        **kwargs,
    ) -> BatchFeature:
        """Featurise one waveform, a batch of waveforms, or audio file paths.

        Args:
            raw_speech: a float waveform (samples,) or (channels, samples), file path(s), encoded bytes,
                ``datasets.Audio(decode=False)`` dicts ``{"bytes", "path"}`` or decoded dicts ``{"array",
                "sampling_rate", "path"}`` (:func:`decode_audio`) -- one or a list.
            sampling_rate: the rate of the given waveforms, one for all or one per input. Required for arrays (a
                wrong rate would silently give wrong features); ignored for files and dicts, whose own rate is read.
            return_tensors: ``"pt"`` or ``"np"``.
        """
        features = [self._extract_checked(waveform, rate, name)
                    for waveform, rate, name in iter_waveforms(raw_speech, sampling_rate, self.sampling_rate)]
        return BatchFeature({"input_features": np.stack(features)}, tensor_type=return_tensors)


__all__ = [
    "AudioInputError",
    "M2MVFeatureExtractor",
    "audio_name",
    "clip_sample_ranges",
    "decode_audio",
    "iter_waveforms",
    "load_audio",
    "mono_waveforms",
    "resample",
    "validate_waveform",
]
