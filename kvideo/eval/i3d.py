"""Inception-I3D (Kinetics-400) with piergiaj/pytorch-i3d key names: the FVD feature network."""
from __future__ import annotations

import dataclasses
from typing import Any, Mapping

import torch
import torch.nn.functional as F
from einops import reduce
from torch import nn

from kvideo.config import Config, check
from kvideo.eval.networks import DetectorNetwork

# (name, branch widths b0, b1a, b1b, b2a, b2b, b3b) of each Inception module; pools between them.
MIXED_3 = (("Mixed_3b", (64, 96, 128, 16, 32, 32)), ("Mixed_3c", (128, 128, 192, 32, 96, 64)))
MIXED_4 = (
    ("Mixed_4b", (192, 96, 208, 16, 48, 64)),
    ("Mixed_4c", (160, 112, 224, 24, 64, 64)),
    ("Mixed_4d", (128, 128, 256, 24, 64, 64)),
    ("Mixed_4e", (112, 144, 288, 32, 64, 64)),
    ("Mixed_4f", (256, 160, 320, 32, 128, 128)),
)
MIXED_5 = (("Mixed_5b", (256, 160, 320, 32, 128, 128)), ("Mixed_5c", (384, 192, 384, 48, 128, 128)))
BN_EPS = 1e-3  # piergiaj / TensorFlow I3D; VideoGPT's i3d_pretrained_400.pt was trained with 1e-5


@dataclasses.dataclass(frozen=True)
class I3DConfig(Config):
    """Inception-I3D. The official network takes 224 x 224 frames (its final average pool is
    2 x 7 x 7); `width_divisor` > 1 and a smaller `input_size` make tiny test detectors.
    `bn_eps` and `input_range` are the conventions the weights were trained with (they differ
    between the circulating files: see kvideo.eval.detectors.KNOWN_DETECTORS)."""

    num_classes: int = 400
    in_channels: int = 3
    width_divisor: int = 1
    input_size: int = 224
    bn_eps: float = BN_EPS
    input_range: tuple[float, float] = (-1.0, 1.0)

    def validate(self) -> None:
        check(self.num_classes >= 1, f"num_classes must be >= 1, got {self.num_classes}")
        check(self.in_channels >= 1, f"in_channels must be >= 1, got {self.in_channels}")
        check(self.width_divisor in (1, 2, 4, 8), f"width_divisor must be 1, 2, 4 or 8, got {self.width_divisor}")
        check(self.input_size >= 32 and self.input_size % 32 == 0, f"input_size must be a multiple of 32, got {self.input_size}")
        check(0 < self.bn_eps < 1, f"bn_eps must be in (0, 1), got {self.bn_eps}")
        check(len(self.input_range) == 2 and self.input_range[0] < self.input_range[1],
              f"input_range must be (low, high) with low < high, got {self.input_range}")

    @classmethod
    def from_state_dict(cls, state: Mapping[str, torch.Tensor]) -> "I3DConfig":
        """The config of a piergiaj-layout state dict (classes and input channels from its shapes)."""
        for key in ("Conv3d_1a_7x7.conv3d.weight", "logits.conv3d.weight"):
            if key not in state:
                raise ValueError(f"not an I3D state dict: key {key!r} is missing")
        first, logits = state["Conv3d_1a_7x7.conv3d.weight"], state["logits.conv3d.weight"]
        return cls(num_classes=logits.shape[0], in_channels=first.shape[1], width_divisor=64 // first.shape[0])


I3DConfig.register_preset("official")
I3DConfig.register_preset("tiny", width_divisor=8, input_size=64)


def same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TensorFlow 'SAME' padding of one axis: (front, back), the extra pixel at the back."""
    remainder = size % stride
    total = max(kernel - (stride if remainder == 0 else remainder), 0)
    return total // 2, total - total // 2


def pad_same(x: torch.Tensor, kernel: tuple[int, int, int], stride: tuple[int, int, int]) -> torch.Tensor:
    """Zero-pad (b, c, f, h, w) so that a valid conv / pool gives ceil(size / stride) outputs."""
    pads = [same_padding(size, k, s) for size, k, s in zip(x.shape[2:], kernel, stride)]
    (tf, tb), (hf, hb), (wf, wb) = pads
    return F.pad(x, (wf, wb, hf, hb, tf, tb))


class BatchNorm3d(nn.Module):
    """Batch norm (eps from the config) with the four tensors of the official checkpoints."""

    def __init__(self, channels: int, eps: float = BN_EPS) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.register_buffer("running_mean", torch.zeros(channels))
        self.register_buffer("running_var", torch.ones(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # in training mode (a detector trained by kvideo) batch statistics, which update the running ones
        return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias, self.training, 0.1, self.eps)


class Unit3D(nn.Module):
    """'SAME'-padded Conv3d -> BatchNorm -> ReLU (the logits unit: conv with bias only)."""

    def __init__(self, in_channels: int, out_channels: int, kernel: int = 1, stride: int = 1, *,
                 classifier: bool = False, eps: float = BN_EPS):
        super().__init__()
        self.kernel, self.stride = (kernel,) * 3, (stride,) * 3
        self.conv3d = nn.Conv3d(in_channels, out_channels, kernel, stride, padding=0, bias=classifier)
        self.bn = None if classifier else BatchNorm3d(out_channels, eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv3d(pad_same(x, self.kernel, self.stride))
        return x if self.bn is None else F.relu(self.bn(x))


class MaxPoolSame(nn.Module):
    """'SAME'-padded (with zeros, after a ReLU) max pooling."""

    def __init__(self, kernel: tuple[int, int, int], stride: tuple[int, int, int]) -> None:
        super().__init__()
        self.kernel, self.stride = kernel, stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.max_pool3d(pad_same(x, self.kernel, self.stride), self.kernel, self.stride)


class InceptionModule(nn.Module):
    """Four branches: 1x1 | 1x1 -> 3x3 | 1x1 -> 3x3 | max pool 3x3 -> 1x1, concatenated."""

    def __init__(self, in_channels: int, widths: tuple[int, ...]) -> None:
        super().__init__()
        c0, c1a, c1b, c2a, c2b, c3 = widths
        self.b0 = Unit3D(in_channels, c0)
        self.b1a, self.b1b = Unit3D(in_channels, c1a), Unit3D(c1a, c1b, 3)
        self.b2a, self.b2b = Unit3D(in_channels, c2a), Unit3D(c2a, c2b, 3)
        self.b3a, self.b3b = MaxPoolSame((3, 3, 3), (1, 1, 1)), Unit3D(in_channels, c3)
        self.out_channels = c0 + c1b + c2b + c3

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        branches = [self.b0(x), self.b1b(self.b1a(x)), self.b2b(self.b2a(x)), self.b3b(self.b3a(x))]
        return torch.cat(branches, dim=1)


class InceptionI3d(DetectorNetwork):
    """Inception-I3D as in piergiaj/pytorch-i3d (the RGB stream); trainable (`kvideo train detector`).

    Input: (b, c, f, input_size, input_size) in [-1, 1] (224 for the official network). `forward` gives logits per output time step
    (b, classes, f'), `logits_mean` their time average (the 400-d FVD feature) and
    `pooled` the 1024-d average-pooled feature.
    """

    model_type = "i3d"
    config_class = I3DConfig

    def __init__(self, config: I3DConfig) -> None:
        super().__init__(config)
        w = lambda c: c // config.width_divisor  # noqa: E731
        self.endpoints: list[str] = []
        self._add("Conv3d_1a_7x7", Unit3D(config.in_channels, w(64), 7, 2))
        self._add("MaxPool3d_2a_3x3", MaxPoolSame((1, 3, 3), (1, 2, 2)))
        self._add("Conv3d_2b_1x1", Unit3D(w(64), w(64)))
        self._add("Conv3d_2c_3x3", Unit3D(w(64), w(192), 3))
        self._add("MaxPool3d_3a_3x3", MaxPoolSame((1, 3, 3), (1, 2, 2)))
        channels = self._add_mixed(MIXED_3, w(192), w)
        self._add("MaxPool3d_4a_3x3", MaxPoolSame((3, 3, 3), (2, 2, 2)))
        channels = self._add_mixed(MIXED_4, channels, w)
        self._add("MaxPool3d_5a_2x2", MaxPoolSame((2, 2, 2), (2, 2, 2)))
        self.num_features = self._add_mixed(MIXED_5, channels, w)
        final = config.input_size // 32
        self.avg_pool = nn.AvgPool3d((2, final, final), stride=1)
        self.logits = Unit3D(self.num_features, config.num_classes, classifier=True)
        for module in self.modules():
            if isinstance(module, BatchNorm3d):
                module.eps = config.bn_eps

    def _add(self, name: str, module: nn.Module) -> None:
        self.add_module(name, module)
        self.endpoints.append(name)

    def _add_mixed(self, table, channels: int, w) -> int:
        for name, widths in table:
            module = InceptionModule(channels, tuple(w(c) for c in widths))
            self._add(name, module)
            channels = module.out_channels
        return channels

    # -- forward -------------------------------------------------------------------------------
    def features(self, x: torch.Tensor) -> torch.Tensor:
        """(b, c, f, s, s) -> average-pooled features (b, 1024, f', 1, 1)."""
        self._check_input(x)
        for name in self.endpoints:
            x = getattr(self, name)(x)
        return self.avg_pool(x)  # (b, 1024, f', 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(b, c, f, s, s) -> logits per output time step (b, classes, f')."""
        return self.logits(self.features(x))[:, :, :, 0, 0]  # (b, classes, f')

    def logits_mean(self, x: torch.Tensor) -> torch.Tensor:
        """Time-averaged logits (b, classes): the FVD feature."""
        return self(x).mean(dim=2)

    def pooled(self, x: torch.Tensor) -> torch.Tensor:
        """Features averaged over time and space (b, 1024)."""
        return reduce(self.features(x), "b c f h w -> b c", "mean")

    def _check_input(self, x: torch.Tensor) -> None:
        size, channels = self.config.input_size, self.config.in_channels
        if x.ndim != 5 or x.shape[1] != channels or tuple(x.shape[3:]) != (size, size):
            raise ValueError(
                f"I3D takes (b, {channels}, f, {size}, {size}) clips, got {tuple(x.shape)}; "
                "resize the frames first (kvideo.eval.detectors.i3d_input)"
            )
        if x.shape[2] < 9:
            raise ValueError(f"I3D needs at least 9 frames for its temporal pooling, got {x.shape[2]}")

    # -- loading -------------------------------------------------------------------------------
    @classmethod
    def split_official(cls, contents: Mapping[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """Accept the circulating files: drop BatchNorm step counters and a DataParallel `module.` prefix."""
        state = dict(contents.get("state_dict", contents))
        if state and all(k.startswith("module.") for k in state):
            state = {k[len("module."):]: v for k, v in state.items()}
        return {k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}, {}

    @classmethod
    def default_official_config(cls) -> I3DConfig:
        return I3DConfig.preset("official")
