"""The training tasks by name, and the one place a config becomes its Task."""
from __future__ import annotations

from typing import Callable

from kvideo.train import decoder, distill, image, interpolation, keyframe, movq
from kvideo.train.checkpointing import load_trained_weights
from kvideo.train.config import TrainConfig
from kvideo.train.data import CaptionSubset
from kvideo.train.task import Task

# task name -> its builder; the shapes package adds `detector` (kvideo.shapes.presets)
BUILDERS: dict[str, Callable[[TrainConfig], Task]] = {
    "movq": movq.build, "image": image.build, "keyframe": keyframe.build, "interpolation": interpolation.build,
    "decoder": decoder.build, "distill": distill.build,
}


def register_task(name: str, build: Callable[[TrainConfig], Task]) -> None:
    """Add a training task that a package above `kvideo.train` provides."""
    BUILDERS[name] = build


def build_task(cfg: TrainConfig) -> Task:
    """The task `cfg.task` (keyframe / interpolation / decoder ...), checked against its data; with
    `cfg.init_weights`, an earlier run's trained weights loaded onto its model; with `cfg.caption_pattern`,
    its data cut to the samples whose caption matches."""
    if cfg.task not in BUILDERS:
        raise ValueError(f"task={cfg.task!r} has no builder here; the detector task is the shapes package's "
                         "(import kvideo.shapes.presets, as `kvideo train detector` does)")
    task = BUILDERS[cfg.task](cfg)
    if cfg.init_weights:
        load_trained_weights(task.model, cfg.init_weights)
    if cfg.caption_pattern:
        task.dataset = CaptionSubset(task.dataset, cfg.caption_pattern)
    return task
