"""m2mv processing: ImageBind's audio transform, the prompt, and the music-video (MV) description format.

- :class:`M2MVFeatureExtractor` does exactly ImageBind's audio transform (``imagebind/data.py``) in numpy: 16 kHz,
  3 clips of 2 s spaced evenly over the input (pytorchvideo's ``ConstantClipsPerVideoSampler``), mean removal,
  kaldi-compatible log-mel filter bank (128 bins, 25-ms Hann window, 10-ms shift), pad/crop to 204 frames,
  normalise with mean -4.268 / std 9.138.
- :class:`M2MVProcessor` builds the prompt from its chat template (the one place the template lives), expands
  the audio placeholder, tokenises, and masks the labels to the answer. Optional ``frame_boundaries`` list the
  frames to describe in the prompt (e.g. beat-aligned ones) instead of the default 2-s steps.
- :func:`format_mv_description` / :func:`parse_mv_description` are the one home of the output format:
  an overview, then one line per frame ``[MM:SS-MM:SS] text`` (2-s steps by default).

This file travels with every checkpoint as remote code (``trust_remote_code=True``).
"""

from __future__ import annotations

import math
import re
import warnings
from dataclasses import asdict, dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from transformers import BatchFeature, ProcessorMixin, SequenceFeatureExtractor
from transformers.audio_utils import mel_filter_bank, window_function

# ----------------------------------------------------------------------------------------------------------------
# Audio I/O and resampling
# ----------------------------------------------------------------------------------------------------------------

CHANNEL_MODES = ("left", "mean")
SILENCE_PEAK = 1e-4  # about -80 dBFS


class AudioInputError(ValueError):
    """Audio that cannot be turned into features (unreadable, empty, NaN, wrong shape...). Names the source."""


def load_audio(source: str | Path | dict | bytes) -> tuple[np.ndarray, int]:
    """Read audio with soundfile as float32 (channels, samples) plus its sampling rate.

    ``source`` is a file path, encoded bytes, or a ``datasets.Audio(decode=False)`` value ``{"bytes", "path"}``.
    soundfile (libsndfile) reads WAV, FLAC, OGG/Vorbis, Opus and MP3. Errors name the file.
    """
    import io

    import soundfile

    data_bytes, name = None, source
    if isinstance(source, dict):
        data_bytes, name = source.get("bytes"), source.get("path") or "<audio bytes>"
        if data_bytes is None:
            source = source.get("path")
            if source is None:
                raise AudioInputError("an audio dict needs 'bytes' or 'path'")
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
        raise AudioInputError(f"{name}: unreadable audio ({type(err).__name__}: {err})") from err
    if data.size == 0:
        raise AudioInputError(f"{name}: the file holds no audio samples (empty or truncated)")
    return np.ascontiguousarray(data.T), int(rate)


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
        return output

    # -- the transform ----------------------------------------------------------------------------------------
    def _window(self) -> np.ndarray:
        """Kaldi's "hanning" window (symmetric Hann), float32, computed once."""
        cached = self.__dict__.get("_window_cache")
        if cached is None:
            cached = window_function(self.frame_length, "hann", periodic=False).astype(np.float32)
            self.__dict__["_window_cache"] = cached
        return cached

    def kaldi_fbank(self, clips: np.ndarray) -> np.ndarray:
        """Kaldi-compatible log-mel filter bank of equal-length mono clips (n, samples) -> (n, frames, mel).

        float32 throughout, like torchaudio's kaldi.fbank: frames (snip_edges), per-frame DC removal,
        pre-emphasis, Hann window, 512-point power spectrum, kaldi mel filters, log with an epsilon floor.
        """
        if clips.shape[-1] < self.frame_length:
            raise AudioInputError(
                f"a clip of {clips.shape[-1]} samples is shorter than one {self.frame_length_ms:g}-ms analysis window"
            )
        frames = np.lib.stride_tricks.sliding_window_view(clips, self.frame_length, axis=-1)[..., :: self.hop_length, :]
        frames = frames.astype(np.float32)
        frames -= frames.mean(axis=-1, keepdims=True)  # remove_dc_offset
        frames[..., 1:] -= self.preemphasis * frames[..., :-1].copy()
        frames[..., 0] *= 1.0 - self.preemphasis
        frames *= self._window()
        spectrum = np.fft.rfft(frames, n=self.fft_length, axis=-1)
        power = spectrum.real**2 + spectrum.imag**2
        mel = power.astype(np.float32) @ self._mel_filters()
        return np.log(np.maximum(mel, np.finfo(np.float32).eps))

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
        buffer = waveform.astype(np.float32, copy=True)
        ranges = clip_sample_ranges(buffer.shape[1], self.sampling_rate, self.clip_duration, self.clips_per_audio)
        clips = []
        for start, end in ranges:
            view = buffer[:, start:end]
            view -= view.mean(dtype=np.float32)
            clips.append(view.copy())
        return clips

    def _select_channel(self, clips: np.ndarray) -> np.ndarray:
        """(channels, n, samples) mean-removed clips -> (n, samples) mono, by ``channel_mode``."""
        return clips[0] if self.channel_mode == "left" else clips.mean(axis=0)

    def _validate(self, waveform: Any, name: str) -> np.ndarray:
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
        if not np.isfinite(waveform).all():
            raise AudioInputError(f"{name}: the waveform contains NaN or infinite samples")
        return waveform.astype(np.float32, copy=False)

    def extract_one(self, waveform: np.ndarray, sampling_rate: int, name: str = "audio") -> np.ndarray:
        """One (channels, samples) waveform -> (clips, mel, frames) normalised features."""
        waveform = self._validate(waveform, name)
        if sampling_rate != self.sampling_rate:
            waveform = resample(waveform, sampling_rate, self.sampling_rate)
        num_samples = waveform.shape[1]
        if num_samples < self.clip_samples:
            warnings.warn(
                f"{name}: {num_samples / self.sampling_rate:.2f} s is shorter than one {self.clip_duration:g}-s clip; "
                "its filter bank is zero-padded like ImageBind's",
                stacklevel=3,
            )
        if np.abs(waveform).max() < SILENCE_PEAK:
            warnings.warn(f"{name}: the audio is silent (peak below {SILENCE_PEAK:g}); its features carry no music",
                          stacklevel=3)
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
        sampling_rate: int | None = None,
        return_tensors: str | None = None,
        **kwargs,
    ) -> BatchFeature:
        """Featurise one waveform, a batch of waveforms, or audio file paths.

        Args:
            raw_speech: a float waveform (samples,) or (channels, samples), file path(s), encoded bytes or
                ``datasets.Audio(decode=False)`` dicts ``{"bytes", "path"}`` -- one or a list.
            sampling_rate: the rate of the given waveforms. Required for arrays (a wrong rate would silently give
                wrong features); ignored for files, whose own rate is read.
            return_tensors: ``"pt"`` or ``"np"``.
        """
        if _is_single_input(raw_speech):
            raw_speech = [raw_speech]
        features = []
        for index, item in enumerate(raw_speech):
            if isinstance(item, (str, Path, dict, bytes)):
                waveform, rate = load_audio(item)
                if isinstance(item, dict):
                    name = item.get("path") or f"audio[{index}]"
                else:
                    name = f"audio[{index}]" if isinstance(item, bytes) else item
                features.append(self.extract_one(waveform, rate, name=str(name)))
                continue
            if sampling_rate is None:
                raise AudioInputError(
                    f"audio[{index}]: sampling_rate= is required with raw waveforms (this extractor runs at "
                    f"{self.sampling_rate} Hz and resamples other rates); pass the waveform's real rate"
                )
            features.append(self.extract_one(item, sampling_rate, name=f"audio[{index}]"))
        return BatchFeature({"input_features": np.stack(features)}, tensor_type=return_tensors)


# ----------------------------------------------------------------------------------------------------------------
# The MV description format: the one place it is written and read
# ----------------------------------------------------------------------------------------------------------------

FRAME_STEP_SECONDS = 2.0
_TIMESTAMP = r"(\d{1,3}):(\d{2}(?:\.\d{1,3})?)"
_FRAME_LINE = re.compile(rf"^\s*\[{_TIMESTAMP}\s*-\s*{_TIMESTAMP}\]\s*(.*)$")
_PARTIAL_FRAME_LINE = re.compile(r"^\s*\[[\d:.\s-]*\]?\s*")
OVERVIEW_HEADER = "Overview:"
FRAMES_HEADER = "Frames:"


@dataclass
class MVFrame:
    """One frame of the breakdown: ``start``-``end`` seconds and what the video shows."""

    start: float
    end: float
    text: str


@dataclass
class MVDescription:
    """A parsed MV description. ``problems`` lists what was malformed (empty when the text was well formed)."""

    overview: str
    frames: list[MVFrame] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def is_valid(self) -> bool:
        return not self.problems

    def to_dict(self) -> dict:
        return asdict(self)


def format_timestamp(seconds: float) -> str:
    """``MM:SS`` for whole seconds, ``MM:SS.ss`` otherwise (beat-aligned frames)."""
    minutes, rest = divmod(float(seconds), 60.0)
    if abs(rest - round(rest)) < 1e-6:
        rest = round(rest)
        if rest == 60:
            minutes, rest = minutes + 1, 0
        return f"{int(minutes):02d}:{int(rest):02d}"
    return f"{int(minutes):02d}:{rest:05.2f}"


def parse_timestamp(text: str) -> float:
    """Inverse of :func:`format_timestamp`: ``"01:04.50"`` -> 64.5."""
    match = re.fullmatch(_TIMESTAMP, text.strip())
    if not match:
        raise ValueError(f"malformed timestamp {text!r} (expected MM:SS or MM:SS.ss)")
    return int(match.group(1)) * 60 + float(match.group(2))


def frame_boundaries(duration: float, step: float = FRAME_STEP_SECONDS) -> list[tuple[float, float]]:
    """Fixed-step frame boundaries over ``duration`` seconds (15 frames of 2 s for a 30-s clip)."""
    count = max(1, math.ceil(duration / step - 1e-9))
    return [(i * step, min((i + 1) * step, duration)) for i in range(count)]


def format_frame_span(start: float, end: float) -> str:
    """A frame's time span as written in descriptions and prompts: ``[MM:SS-MM:SS]``."""
    return f"[{format_timestamp(start)}-{format_timestamp(end)}]"


def validate_frame_boundaries(boundaries: Sequence[tuple[float, float]]) -> list[tuple[float, float]]:
    """``boundaries`` as a list of ``(start, end)`` floats; non-empty, each ``0 <= start < end``, increasing and
    non-overlapping, else a ValueError saying which frame is wrong."""
    if isinstance(boundaries, (str, bytes)) or not isinstance(boundaries, Sequence) or not boundaries:
        raise ValueError(f"frame_boundaries must be a non-empty list of (start, end) seconds, got {boundaries!r}")
    checked: list[tuple[float, float]] = []
    for index, pair in enumerate(boundaries):
        try:
            start, end = (float(value) for value in pair)
        except (TypeError, ValueError):
            raise ValueError(f"frame_boundaries[{index}] must be a (start, end) pair of seconds, got {pair!r}"
                             ) from None
        if not (math.isfinite(start) and math.isfinite(end)) or start < 0 or end <= start:
            raise ValueError(f"frame_boundaries[{index}] = ({start:g}, {end:g}) s: need 0 <= start < end")
        if checked and start < checked[-1][1] - 1e-6:
            raise ValueError(f"frame_boundaries[{index}] starts at {start:g} s, before the previous frame ends at "
                             f"{checked[-1][1]:g} s (frames must be increasing and non-overlapping)")
        checked.append((start, end))
    return checked


def format_mv_description(overview: str, frames: Sequence[MVFrame | tuple[float, float, str]]) -> str:
    """Write an MV description: the overview, then one ``[MM:SS-MM:SS] text`` line per frame."""
    overview = " ".join(overview.split())
    if not overview:
        raise ValueError("an MV description needs a non-empty overview")
    lines = [f"{OVERVIEW_HEADER} {overview}", FRAMES_HEADER]
    previous_end = None
    for frame in frames:
        start, end, text = (frame.start, frame.end, frame.text) if isinstance(frame, MVFrame) else frame
        text = " ".join(str(text).split())
        if not text:
            raise ValueError(f"frame {format_timestamp(start)}-{format_timestamp(end)} has no text")
        if end <= start or (previous_end is not None and start < previous_end - 1e-6):
            raise ValueError(f"frame {start}-{end} s is empty or overlaps the previous frame")
        lines.append(f"{format_frame_span(start, end)} {text}")
        previous_end = end
    return "\n".join(lines)


def parse_mv_description(text: str, expected_duration: float | None = None) -> MVDescription:
    """Parse a (possibly generated) MV description back into an :class:`MVDescription`.

    Tolerant: a truncated last frame, stray lines and a missing header are reported in ``problems`` instead of
    raising. With ``expected_duration`` it also reports frames missing at the end.
    """
    text = text.split("\n###")[0].strip()
    problems: list[str] = []
    overview_lines: list[str] = []
    frames: list[MVFrame] = []
    lines = [line for line in text.splitlines() if line.strip()]
    for number, line in enumerate(lines, start=1):
        stripped = line.strip()
        if stripped.startswith(FRAMES_HEADER) and stripped != FRAMES_HEADER and not frames:
            stripped = stripped.removeprefix(FRAMES_HEADER).strip()  # "Frames: [00:00-00:02] ..." on one line
            problems.append(f"line {number}: the first frame is on the {FRAMES_HEADER!r} line")
        match = _FRAME_LINE.match(stripped)
        if match:
            start = int(match.group(1)) * 60 + float(match.group(2))
            end = int(match.group(3)) * 60 + float(match.group(4))
            body = match.group(5).strip()
            if end <= start:
                problems.append(f"line {number}: frame end {end:g} s is not after its start {start:g} s")
            if frames and start < frames[-1].end - 1e-6:
                problems.append(f"line {number}: frame starting at {start:g} s overlaps the previous frame")
            if not body:
                problems.append(f"line {number}: frame {start:g}-{end:g} s has no text")
            frames.append(MVFrame(start, end, body))
        elif stripped.startswith("["):
            kind = "truncated" if number == len(lines) else "malformed"
            problems.append(f"line {number}: {kind} frame line {stripped[:40]!r}")
        elif stripped == FRAMES_HEADER:
            continue
        elif frames:
            problems.append(f"line {number}: text after the frames that is not a frame: {stripped[:40]!r}")
        else:
            overview_lines.append(stripped.removeprefix(OVERVIEW_HEADER).strip())
    overview = " ".join(part for part in overview_lines if part)
    if not overview:
        problems.append("no overview")
    elif not text.lstrip().startswith(OVERVIEW_HEADER):
        problems.append(f"the overview does not start with {OVERVIEW_HEADER!r}")
    if not frames:
        problems.append("no frames")
    if expected_duration is not None and frames and frames[-1].end < expected_duration - 1e-6:
        problems.append(f"the frames end at {frames[-1].end:g} s, before the clip's end at {expected_duration:g} s")
    return MVDescription(overview=overview, frames=frames, problems=problems)


# ----------------------------------------------------------------------------------------------------------------
# The processor
# ----------------------------------------------------------------------------------------------------------------

# NExT-GPT's prompt: "### Human: <Audio>[audio]</Audio> {conditioning} {instruction}\n### Assistant: {answer}\n###".
CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    "{%- if message['role'] == 'user' -%}"
    "### Human:"
    "{%- for part in message['content'] -%}"
    "{%- if part['type'] == 'audio' %} <Audio>{{ audio_token }}</Audio>"
    "{%- elif part['type'] == 'genre_tags' %} Genre tags: {{ part['genre_tags'] | join(', ') }}."
    "{%- elif part['type'] == 'mv_type' %} MV type: {{ part['mv_type'] }}."
    "{%- elif part['type'] == 'lyrics_understanding' %} Lyrics understanding: {{ part['lyrics_understanding'] }}"
    "{%- elif part['type'] == 'frame_boundaries' %} Frames: {{ part['frame_boundaries'] | join(', ') }}."
    "{%- elif part['type'] == 'text' %} {{ part['text'] }}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{{ '\\n' }}"
    "{%- elif message['role'] == 'assistant' -%}"
    "### Assistant: {{ message['content'] }}{{ '\\n###' }}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}### Assistant:{%- endif -%}"
)

# Instructions by task; "<task>_given_frames" replaces the task's instruction when the prompt lists the frames.
GIVEN_FRAMES_SUFFIX = "_given_frames"
DEFAULT_INSTRUCTIONS = {
    "captioning": "generate a caption",
    "mv_description": (
        "Describe a music video for this music: an overview, then what the video shows in each 2-second frame."
    ),
    "mv_description" + GIVEN_FRAMES_SUFFIX: (
        "Describe a music video for this music: an overview, then what the video shows in each of the given frames."
    ),
}


class M2MVProcessor(ProcessorMixin):
    """Feature extractor + tokenizer + chat template for m2mv.

    Args:
        feature_extractor: :class:`M2MVFeatureExtractor`.
        tokenizer: the LM's tokenizer, holding ``audio_token`` as a special token.
        chat_template: the prompt template (defaults to :data:`CHAT_TEMPLATE`).
        audio_token: placeholder written once per audio in the prompt, expanded to ``num_audio_tokens``.
        num_audio_tokens: LM tokens per audio (must equal the model config's).
        mv_types: the MV-type taxonomy (names); an unknown ``mv_type`` is an error that lists them.
        instructions: task name -> instruction text (``"<task>_given_frames"``: the instruction used with
            ``frame_boundaries``).
    """

    def __init__(
        self,
        feature_extractor=None,
        tokenizer=None,
        chat_template: str | None = None,
        audio_token: str = "<|audio|>",
        num_audio_tokens: int = 1,
        mv_types: list[str] | None = None,
        instructions: dict[str, str] | None = None,
    ):
        self.audio_token = audio_token
        self.audio_token_id = tokenizer.convert_tokens_to_ids(audio_token)
        if self.audio_token_id is None or self.audio_token_id == tokenizer.unk_token_id:
            raise ValueError(f"the tokenizer has no {audio_token!r} token; add it as a special token first")
        self.num_audio_tokens = num_audio_tokens
        self.mv_types = list(mv_types or [])
        self.instructions = dict(instructions or DEFAULT_INSTRUCTIONS)
        super().__init__(feature_extractor, tokenizer, chat_template=chat_template or CHAT_TEMPLATE)

    # -- conditioning ---------------------------------------------------------------------------------------------
    def canonical_mv_type(self, mv_type: str) -> str:
        """The taxonomy's spelling of ``mv_type`` (case-insensitive); unknown types are an error listing them."""
        if not isinstance(mv_type, str) or not mv_type.strip():
            raise ValueError(f"mv_type must be a non-empty string, got {mv_type!r}")
        known = {name.casefold(): name for name in self.mv_types}
        if mv_type.strip().casefold() not in known:
            raise ValueError(f"unknown MV type {mv_type!r}; known types: {', '.join(self.mv_types)}")
        return known[mv_type.strip().casefold()]

    def build_messages(
        self,
        task: str = "mv_description",
        genre_tags: Sequence[str] | None = None,
        mv_type: str | None = None,
        lyrics_understanding: str | None = None,
        answer: str | None = None,
        frame_boundaries: Sequence[tuple[float, float]] | None = None,
    ) -> list[dict]:
        """The conversation for one example; conditioning fields left as ``None`` are omitted.

        ``frame_boundaries``: ``(start, end)`` seconds of the frames to describe (e.g. beat-aligned); the prompt
        then lists them (`` Frames: [00:00-00:02], [00:02-00:04.50].``) and asks for each of them, with the
        task's ``"<task>_given_frames"`` instruction. Without them the prompt is the 2-s-frame one.
        """
        tasks = [name for name in self.instructions if not name.endswith(GIVEN_FRAMES_SUFFIX)]
        if task not in tasks:
            raise ValueError(f"unknown task {task!r}; known tasks: {', '.join(tasks)}")
        instruction = self.instructions[task]
        if frame_boundaries is not None:
            spans = [format_frame_span(s, e) for s, e in validate_frame_boundaries(frame_boundaries)]
            if task + GIVEN_FRAMES_SUFFIX not in self.instructions:
                raise ValueError(f"task {task!r} takes no frame_boundaries (this processor has no "
                                 f"{task + GIVEN_FRAMES_SUFFIX!r} instruction)")
            instruction = self.instructions[task + GIVEN_FRAMES_SUFFIX]
        content: list[dict] = [{"type": "audio"}]
        if genre_tags is not None:
            if isinstance(genre_tags, str) or not all(isinstance(g, str) and g.strip() for g in genre_tags):
                raise ValueError(f"genre_tags must be a list of non-empty strings, got {genre_tags!r}")
            if genre_tags:
                content.append({"type": "genre_tags", "genre_tags": [" ".join(g.split()) for g in genre_tags]})
        if mv_type is not None:
            content.append({"type": "mv_type", "mv_type": self.canonical_mv_type(mv_type)})
        if lyrics_understanding is not None:
            if not isinstance(lyrics_understanding, str) or not lyrics_understanding.strip():
                raise ValueError(f"lyrics_understanding must be a non-empty string, got {lyrics_understanding!r}")
            content.append({"type": "lyrics_understanding", "lyrics_understanding": " ".join(lyrics_understanding.split())})
        if frame_boundaries is not None:
            content.append({"type": "frame_boundaries", "frame_boundaries": spans})
        content.append({"type": "text", "text": instruction})
        messages = [{"role": "user", "content": content}]
        if answer is not None:
            messages.append({"role": "assistant", "content": answer})
        return messages

    def apply_chat_template(self, conversation, chat_template=None, **kwargs):
        """The processor's chat template, with ``audio_token`` available to it."""
        kwargs.setdefault("audio_token", self.audio_token)
        return super().apply_chat_template(conversation, chat_template=chat_template, **kwargs)

    def build_prompt(self, task: str = "mv_description", **conditioning) -> str:
        """The generation prompt (ends with ``### Assistant:``) for one example."""
        if conditioning.get("frame_boundaries") is not None and "frame_boundaries" not in (self.chat_template or ""):
            raise ValueError("this processor's chat template does not render frame_boundaries (it predates them); "
                             "re-save the checkpoint's processor with the current CHAT_TEMPLATE")
        return self.apply_chat_template(self.build_messages(task, **conditioning), add_generation_prompt=True)

    def build_answer(self, answer: str) -> str:
        """The answer as the template writes it after the prompt (``" {answer}\\n###"``)."""
        messages = self.build_messages("captioning")
        prompt = self.apply_chat_template(messages, add_generation_prompt=True)
        full = self.apply_chat_template(messages + [{"role": "assistant", "content": answer}])
        return full[len(prompt):]

    # -- tokenisation ---------------------------------------------------------------------------------------------
    def __call__(
        self,
        text: str | list[str] | None = None,
        audio: Any = None,
        sampling_rate: int | None = None,
        audio_embeds: Any = None,
        answers: str | list[str] | None = None,
        max_length: int | None = None,
        padding_side: str | None = None,
        return_tensors: str | None = "pt",
        **kwargs,
    ) -> BatchFeature:
        """Tokenise prompts (each with one ``audio_token``) and featurise their audio.

        Args:
            text: prompt(s) from :meth:`build_prompt`.
            audio: waveform(s) or file path(s), one per prompt.
            sampling_rate: the waveforms' rate (required for arrays).
            audio_embeds: precomputed per-clip encoder embeddings (batch, clips, dim) instead of ``audio``.
            answers: target answer(s) for training: adds ``labels`` (-100 on the prompt and padding).
            max_length: truncate the answer so that prompt + answer fit (the prompt is never cut).
            padding_side: ``"left"`` (default without answers: generation) or ``"right"`` (default with answers).
        """
        if text is None:
            raise ValueError("M2MVProcessor needs text= (prompts built with build_prompt)")
        prompts = [text] if isinstance(text, str) else list(text)
        if answers is not None:
            answers = [answers] if isinstance(answers, str) else list(answers)
            if len(answers) != len(prompts):
                raise ValueError(f"got {len(prompts)} prompts but {len(answers)} answers")
        has_audio = audio is not None or audio_embeds is not None
        for index, prompt in enumerate(prompts):
            count = prompt.count(self.audio_token)
            if count != (1 if has_audio else 0):
                raise ValueError(
                    f"prompt {index} holds {count} {self.audio_token!r} placeholders; expected "
                    f"{1 if has_audio else 0} ({'audio given' if has_audio else 'no audio given'})"
                )
        expanded = [p.replace(self.audio_token, self.audio_token * self.num_audio_tokens) for p in prompts]
        rows = [self.tokenizer(p, add_special_tokens=True)["input_ids"] for p in expanded]
        labels = None
        if answers is not None:
            answer_ids = [self.tokenizer(self.build_answer(a), add_special_tokens=False)["input_ids"] for a in answers]
            if max_length is not None:
                for index, row in enumerate(rows):
                    if len(row) >= max_length:
                        raise ValueError(f"prompt {index} has {len(row)} tokens, max_length is {max_length}")
                answer_ids = [ids[: max_length - len(row)] for row, ids in zip(rows, answer_ids)]
            labels = [[-100] * len(row) + ids for row, ids in zip(rows, answer_ids)]
            rows = [row + ids for row, ids in zip(rows, answer_ids)]
        data = self._pad(rows, labels, padding_side or ("right" if answers is not None else "left"))
        if audio is not None:
            features = self.feature_extractor(audio, sampling_rate=sampling_rate)["input_features"]
            if len(features) != len(prompts):
                raise ValueError(f"got {len(prompts)} prompts but {len(features)} audio inputs")
            data["input_features"] = features
        if audio_embeds is not None:
            data["audio_embeds"] = np.asarray(audio_embeds, dtype=np.float32)
        return BatchFeature(data, tensor_type=return_tensors)

    def _pad(self, rows: list[list[int]], labels: list[list[int]] | None, side: str) -> dict:
        if side not in ("left", "right"):
            raise ValueError(f"padding_side must be 'left' or 'right', got {side!r}")
        pad_id = self.tokenizer.pad_token_id
        if pad_id is None:
            raise ValueError("the tokenizer has no pad token; set tokenizer.pad_token")
        width = max(len(row) for row in rows)

        def pad(row: list[int], value: int) -> list[int]:
            filler = [value] * (width - len(row))
            return filler + row if side == "left" else row + filler

        data = {
            "input_ids": np.array([pad(r, pad_id) for r in rows], dtype=np.int64),
            "attention_mask": np.array([pad([1] * len(r), 0) for r in rows], dtype=np.int64),
        }
        if labels is not None:
            data["labels"] = np.array([pad(r, -100) for r in labels], dtype=np.int64)
        return data

    # -- decoding -------------------------------------------------------------------------------------------------
    def decode_answers(self, generated: torch.Tensor, prompt_length: int) -> list[str]:
        """The generated answers (after the prompt), cut at the ``###`` stop and stripped."""
        texts = self.tokenizer.batch_decode(generated[:, prompt_length:], skip_special_tokens=True)
        return [t.split("###")[0].strip() for t in texts]

    def post_process_mv_description(self, texts: Sequence[str], expected_duration: float | None = None):
        """Parse generated texts into :class:`MVDescription` objects."""
        return [parse_mv_description(t, expected_duration) for t in texts]

    @property
    def model_input_names(self) -> list[str]:
        return ["input_ids", "attention_mask", "input_features", "audio_embeds"]


__all__ = [
    "AudioInputError",
    "M2MVFeatureExtractor",
    "M2MVProcessor",
    "MVDescription",
    "MVFrame",
    "clip_sample_ranges",
    "format_frame_span",
    "format_mv_description",
    "frame_boundaries",
    "load_audio",
    "parse_mv_description",
    "resample",
    "validate_frame_boundaries",
]
