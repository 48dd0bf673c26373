"""The metrics of `kvideo eval`, registered from one list: each is its protocol, its extractor and its statistic."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch

from kvideo.config import Config
from kvideo.eval.clipsim import ClipScorer
from kvideo.eval.detectors import Detector, load_c3d_detector, load_i3d_detector, load_videomae_detector
from kvideo.eval.protocol import (
    CLIPSIMProtocol, FVDProtocol, ISProtocol, compute_clipsim, compute_fvd, compute_is,
)


@dataclass(frozen=True)
class Metric:
    """One metric. protocol: the Config class of its frozen named presets (`--protocol`).
    extractor(path, device, protocol, **options): the network that maps clips (or frames and a caption)
    to what the statistic reads. statistic(...): the report from the extracted outputs (FVD's also reads
    a real set, `compares_real`)."""

    name: str
    protocol: type[Config]
    extractor: Callable[..., Any]
    statistic: Callable[..., dict[str, Any]]
    compares_real: bool = False


def fvd_extractor(path: str | Path, device: str | torch.device, protocol: FVDProtocol, *, trust: bool = False,
                  input_range: tuple[float, float] | None = None, bn_eps: float | None = None) -> Detector:
    """The protocol's feature network: I3D, or VideoMAE-v2 for fvd-videomae."""
    if protocol.features == "videomae-v2":
        return load_videomae_detector(path, device)
    return load_i3d_detector(path, device, trust=trust, input_range=input_range, bn_eps=bn_eps)


def is_extractor(path: str | Path, device: str | torch.device, protocol: ISProtocol, *,
                 trust: bool = False) -> Detector:
    """The UCF-101 C3D classifier."""
    return load_c3d_detector(path, device, trust=trust)


def clipsim_extractor(path: str | Path, device: str | torch.device, protocol: CLIPSIMProtocol) -> ClipScorer:
    """CLIP ViT-B/32 from a local folder, its text cut at the protocol's context length."""
    return ClipScorer(path, device, context_length=protocol.context_length)


METRICS = (
    Metric("fvd", FVDProtocol, fvd_extractor, compute_fvd, compares_real=True),
    Metric("is", ISProtocol, is_extractor, compute_is),
    Metric("clipsim", CLIPSIMProtocol, clipsim_extractor, compute_clipsim),
)
BY_NAME = {metric.name: metric for metric in METRICS}
