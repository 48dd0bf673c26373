"""The shapes benchmarks' FVD detector: kvideo's I3D trained from scratch as a classifier of shapes clips.

The classes come from the shapes grammar (`shape x direction`, 12 classes): a detector that has
to tell them apart sees both appearance and motion, which is what an FVD feature must see. The
trained network is an ordinary I3D file: `kvideo eval fvd --detector` takes it.
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from kvideo.eval.i3d import I3DConfig, InceptionI3d
from kvideo.shapes.grammar import DIRECTIONS, SHAPES, parse_caption
from kvideo.train.config import TrainConfig
from kvideo.train.data import VideoTextDataset, collate_clips
from kvideo.train.task import Task


def shape_motion_classes() -> list[str]:
    """The detector's classes: "<shape> <direction>" for every shape and direction of the grammar."""
    return [f"{shape} {direction}" for shape in SHAPES for direction in DIRECTIONS]


def caption_labels(captions: list[str]) -> torch.Tensor:
    """Class indices of shapes captions; a caption outside the grammar is an error naming it."""
    classes = {name: i for i, name in enumerate(shape_motion_classes())}
    labels = []
    for caption in captions:
        parsed = parse_caption(caption)
        if parsed is None:
            raise ValueError(f"caption {caption!r} is outside the shapes grammar; the detector task trains on "
                             "`kvideo data shapes` sets")
        labels.append(classes[f"{parsed.shape} {parsed.direction}"])
    return torch.tensor(labels)


def detector_loss(model: nn.Module, batch: dict[str, Any], generator: torch.Generator) -> torch.Tensor:
    """Cross-entropy of the time-averaged logits of (b, 3, f, H, W) clips in [-1, 1]."""
    frames = batch["frames"]
    logits = model(frames).mean(dim=2)  # (b, classes)
    return F.cross_entropy(logits.float(), caption_labels(batch["caption"]).to(logits.device))


def build(cfg: TrainConfig) -> Task:
    """The `detector` training task (`kvideo train detector`)."""
    if cfg.train != "all":
        raise ValueError(f"train={cfg.train!r}: the detector has no temporal layers of its own; use train=all")
    if not cfg.data or not cfg.captions:
        raise ValueError("the detector trains on videos: give data=<video folder> and captions=<captions.csv of "
                         "`kvideo data shapes`>")
    dataset = VideoTextDataset.from_captions(cfg.captions, cfg.data, cfg.clip, seed=cfg.seed, progress=cfg.progress)
    caption_labels([dataset.records[0].caption])  # a set outside the grammar fails here, not at step 1
    if cfg.clip.height != cfg.clip.width:
        raise ValueError(f"clip {cfg.clip.height}x{cfg.clip.width}: the I3D takes square frames")
    if cfg.model:
        model = InceptionI3d.from_pretrained(cfg.model)
    else:
        config = I3DConfig.preset(cfg.model_preset or "tiny", num_classes=len(shape_motion_classes()),
                                  input_size=cfg.clip.height)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(cfg.seed)
            model = InceptionI3d(config)
    model.requires_grad_(True)
    return Task("detector", model, model, detector_loss, dataset, collate_clips, "frames")
