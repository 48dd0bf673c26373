"""C3D fine-tuned on UCF-101 (TGAN's Inception Score network), with its pixel mean."""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Mapping

import numpy as np
import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from kvideo.checkpoint import CheckpointError
from kvideo.config import Config, check
from kvideo.eval.networks import DetectorNetwork
from kvideo.models.base import Checkpoint

CONVS = (("conv1a", 64), ("conv2a", 128), ("conv3a", 256), ("conv3b", 256),
         ("conv4a", 512), ("conv4b", 512), ("conv5a", 512), ("conv5b", 512))
POOL_AFTER = {"conv1a": (1, 2, 2), "conv2a": (2, 2, 2), "conv3b": (2, 2, 2), "conv4b": (2, 2, 2), "conv5b": (2, 2, 2)}
NUM_FRAMES, CROP = 16, 112


@dataclasses.dataclass(frozen=True)
class C3DConfig(Config):
    """C3D v1 for 16 x 112 x 112 clips; `width_divisor` > 1 shrinks it (tiny test detectors only)."""

    num_classes: int = 101
    width_divisor: int = 1
    fc_width: int = 4096

    def validate(self) -> None:
        check(self.num_classes >= 2, f"num_classes must be >= 2, got {self.num_classes}")
        check(self.width_divisor in (1, 2, 4, 8, 16, 32, 64), f"width_divisor must be a power of 2 <= 64, got {self.width_divisor}")
        check(self.fc_width >= 1, f"fc_width must be >= 1, got {self.fc_width}")

    @classmethod
    def from_state_dict(cls, state: Mapping[str, torch.Tensor]) -> "C3DConfig":
        for key in ("conv1a.weight", "fc7.weight", "fc8.weight"):
            if key not in state:
                raise ValueError(f"not a C3D state dict: key {key!r} is missing")
        return cls(state["fc8.weight"].shape[0], 64 // state["conv1a.weight"].shape[0], state["fc7.weight"].shape[0])


C3DConfig.register_preset("official")
C3DConfig.register_preset("tiny", width_divisor=16, fc_width=64)


class C3D(DetectorNetwork):
    """C3D v1 (TGAN's `C3DVersion1UCF101`): 8 convs, 5 max pools (the last rounds up), 3 FC layers.

    `forward` takes BGR pixel values in [0, 255] of shape (b, 3, 16, 112, 112), subtracts the
    stored per-pixel `mean` and returns class logits (b, classes).
    """

    model_type = "c3d"
    config_class = C3DConfig

    def __init__(self, config: C3DConfig) -> None:
        super().__init__(config)
        channels = 3
        for name, width in CONVS:
            self.add_module(name, nn.Conv3d(channels, width // config.width_divisor, 3, padding=1))
            channels = width // config.width_divisor
        self.fc6 = nn.Linear(channels * 4 * 4, config.fc_width)
        self.fc7 = nn.Linear(config.fc_width, config.fc_width)
        self.fc8 = nn.Linear(config.fc_width, config.num_classes)
        self.register_buffer("mean", torch.zeros(3, NUM_FRAMES, CROP, CROP))  # BGR, [0, 255]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(b, 3, 16, 112, 112) BGR in [0, 255] -> logits (b, classes)."""
        if x.ndim != 5 or tuple(x.shape[1:]) != (3, NUM_FRAMES, CROP, CROP):
            raise ValueError(f"C3D takes (b, 3, {NUM_FRAMES}, {CROP}, {CROP}) clips, got {tuple(x.shape)}")
        x = x - self.mean
        for name, _ in CONVS:
            x = F.relu(getattr(self, name)(x))
            if name in POOL_AFTER:
                x = F.max_pool3d(x, POOL_AFTER[name], POOL_AFTER[name], ceil_mode=True)
        x = rearrange(x, "b c f h w -> b (c f h w)")  # (b, c * 1 * 4 * 4)
        x = F.relu(self.fc7(F.relu(self.fc6(x))))
        return self.fc8(x)  # (b, classes)

    def probabilities(self, x: torch.Tensor) -> torch.Tensor:
        return self(x).softmax(dim=-1)

    @classmethod
    def default_official_config(cls) -> C3DConfig:
        return C3DConfig.preset("official")

    @classmethod
    def from_chainer(cls, weights: str | Path, mean: str | Path) -> "C3D":
        """TGAN's chainer files: `conv3d_deepnetA_ucf.npz` (weights) and `mean2.npz` (pixel mean)."""
        state = chainer_state_dict(weights)
        state["mean"] = center_mean(mean)
        return cls.from_checkpoint(Checkpoint(state))


def chainer_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """`conv1a/W`, `conv1a/b`, ... -> `conv1a.weight`, `conv1a.bias`, ... (same layouts)."""
    names = {"W": "weight", "b": "bias"}
    with np.load(_require(path)) as archive:
        state = {}
        for key in archive.files:
            layer, _, param = key.rpartition("/")
            if param in names and layer:
                state[f"{layer.split('/')[-1]}.{names[param]}"] = torch.from_numpy(archive[key].astype(np.float32))
    if not state:
        raise CheckpointError(f"{str(path)!r} holds no chainer `<layer>/W` arrays: is it TGAN's conv3d_deepnetA_ucf.npz?")
    return state


def center_mean(path: str | Path) -> torch.Tensor:
    """TGAN's mean (3, 16, 128, 128) or (3, 1, 16, 128, 171) -> its central (3, 16, 112, 112) crop."""
    with np.load(_require(path)) as archive:
        mean = archive["mean"].astype(np.float32)
    if mean.ndim == 5:
        mean = mean[:, 0]
    if mean.ndim != 4 or mean.shape[:2] != (3, NUM_FRAMES) or min(mean.shape[2:]) < CROP:
        raise CheckpointError(f"unexpected C3D mean shape {mean.shape} in {str(path)!r}")
    top, left = (mean.shape[2] - CROP) // 2, (mean.shape[3] - CROP) // 2
    return torch.from_numpy(np.ascontiguousarray(mean[:, :, top:top + CROP, left:left + CROP]))


def _require(path: str | Path) -> Path:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"C3D file {str(path)!r} does not exist")
    return path
