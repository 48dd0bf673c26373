"""Text-to-image objective: the 2D UNet (spatial weights) trained with eps-prediction on single frames.

It reads the keyframe cache and treats every cached frame as an image of its own (the image UNet
folds frames into the batch), with the same text dropout as the keyframe model; the result is
the starting point of `kvideo train keyframe` (inflated, temporal layers as the identity).
"""
from __future__ import annotations

from kvideo.train import keyframe
from kvideo.train.config import TrainConfig
from kvideo.train.task import Task


def build(cfg: TrainConfig) -> Task:
    if cfg.train != "all":
        raise ValueError(f"train={cfg.train!r}: the text-to-image UNet has no temporal layers; use train=all")
    return keyframe.build(cfg, kind="image")
