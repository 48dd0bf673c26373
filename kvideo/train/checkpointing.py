"""Training checkpoints: trained weights (small safetensors, config in metadata), optimizer / RNG / data state."""
from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import nn

from kvideo.checkpoint import CheckpointError, atomic_path, load_file, load_state_dict_strict, save_safetensors
from kvideo.models.base import EXTRA_PREFIX
from kvideo.models.temporal import load_temporal_state_dict

WEIGHTS_FILE = "trained.safetensors"
EMA_FILE = "ema.safetensors"
STATE_FILE = "state.pt"
LATEST = "latest"
CHECKPOINTS = "checkpoints"
PIPELINE_MODELS = {"keyframe": "unet", "interpolation": "interpolation_unet", "decoder": "decoder"}


@dataclass(frozen=True)
class WeightsInfo:
    """What a trained-weights file holds, from its metadata."""

    model_type: str
    model_config: str  # the model's config as JSON
    task: str
    weights: str  # "temporal" (the temporal modules only) or "all"
    step: int

    def describe(self) -> str:
        return f"{self.weights} weights of a {self.task} {self.model_type} (step {self.step})"


# -- trained weights -------------------------------------------------------------------------------
def save_weights(path: str | Path, state: Mapping[str, torch.Tensor], info: WeightsInfo,
                 extras: Mapping[str, torch.Tensor] | None = None, train_config: str | None = None) -> None:
    """Atomically write trained weights; `weights="all"` files are also `from_pretrained` checkpoints."""
    tensors = {**state, **{EXTRA_PREFIX + k: v for k, v in (extras or {}).items()}}
    metadata = {"model_type": info.model_type, "config": info.model_config, "task": info.task,
                "kvideo_weights": info.weights, "step": str(info.step)}
    if train_config:
        metadata["train_config"] = train_config
    save_safetensors(path, tensors, metadata)


def read_weights(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor], WeightsInfo]:
    """(state, extras, info) of a trained-weights file."""
    contents, metadata = load_file(path)
    if "kvideo_weights" not in metadata:
        raise CheckpointError(f"{str(path)!r} is not a kvideo training output (no 'kvideo_weights' metadata); "
                              "load full model checkpoints with from_pretrained")
    info = WeightsInfo(metadata["model_type"], metadata["config"], metadata["task"], metadata["kvideo_weights"],
                       int(metadata.get("step", 0)))
    extras = {k[len(EXTRA_PREFIX):]: v for k, v in contents.items() if k.startswith(EXTRA_PREFIX)}
    state = {k: v for k, v in contents.items() if not k.startswith(EXTRA_PREFIX)}
    return state, extras, info


def check_compatible(info: WeightsInfo, model: nn.Module, *, what: str) -> None:
    """Raise CheckpointError unless `info` was trained for this very model architecture."""
    model_type = getattr(model, "model_type", None)
    if info.model_type != model_type:
        raise CheckpointError(f"{what} holds {info.describe()}, but the model is a {model_type}")
    ours = model.config.to_dict()
    theirs = json.loads(info.model_config)
    if theirs != ours:
        changed = sorted(k for k in set(ours) | set(theirs) if ours.get(k) != theirs.get(k))
        raise CheckpointError(f"{what} holds {info.describe()} for another architecture: config fields {changed} "
                              f"differ ({ {k: theirs.get(k) for k in changed} } vs the model's "
                              f"{ {k: ours.get(k) for k in changed} })")


def load_trained_weights(model: nn.Module, path: str | Path) -> WeightsInfo:
    """Load a training output into a full model (UNet or MoVQ) of the same config: the temporal
    modules only (the rest of the model stays as it is), or every weight."""
    state, _, info = read_weights(path)
    check_compatible(info, model, what=repr(str(path)))
    target = next(model.parameters())
    state = {k: v.to(device=target.device, dtype=target.dtype if v.is_floating_point() else v.dtype)
             for k, v in state.items()}
    if info.weights == "temporal":
        load_temporal_state_dict(model, state)
    else:
        load_state_dict_strict(model, state, what=f"{type(model).__name__} ({info.describe()})")
    return info


def load_into_pipeline(pipeline: Any, path: str | Path) -> WeightsInfo:
    """Put trained weights into the matching model of a `KVideoPipeline` (keyframe / interpolation UNet,
    or video decoder), chosen by the task stored in the file."""
    _, _, info = read_weights(path)
    attribute = PIPELINE_MODELS.get(info.task)
    if attribute is None or not hasattr(pipeline, attribute):
        raise ValueError(f"{str(path)!r} holds {info.describe()}; the pipeline has no model for task {info.task!r}")
    return load_trained_weights(getattr(pipeline, attribute), path)


# -- checkpoint folders ---------------------------------------------------------------------------
def checkpoint_root(output_dir: str | Path) -> Path:
    return Path(output_dir) / CHECKPOINTS


def step_folder_name(step: int) -> str:
    return f"step-{step:08d}"


def save_state(path: Path, state: dict[str, Any]) -> None:
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def load_state(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"training state {str(path)!r} does not exist")
    return torch.load(path, map_location="cpu", weights_only=True)


def begin_checkpoint(output_dir: str | Path, step: int) -> Path:
    """A fresh temporary folder for the files of checkpoint `step` (see `commit_checkpoint`)."""
    root = checkpoint_root(output_dir)
    root.mkdir(parents=True, exist_ok=True)
    tmp = root / f".{step_folder_name(step)}.tmp"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    return tmp


def commit_checkpoint(output_dir: str | Path, tmp: Path, step: int, keep: int) -> Path:
    """Move the finished folder into place, point `latest` at it, and drop the oldest beyond `keep`."""
    root = checkpoint_root(output_dir)
    final = root / step_folder_name(step)
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    with atomic_path(root / LATEST) as pointer:
        pointer.write_text(final.name + "\n")
    for old in sorted(root.glob("step-*"))[:-keep]:
        shutil.rmtree(old)
    return final


def find_resume(output_dir: str | Path, resume: str) -> Path | None:
    """The checkpoint folder to resume from: `latest` (None when the run has none yet) or a folder."""
    if not resume:
        return None
    if resume == LATEST:
        pointer = checkpoint_root(output_dir) / LATEST
        return checkpoint_root(output_dir) / pointer.read_text().strip() if pointer.is_file() else None
    folder = Path(resume)
    if not (folder / WEIGHTS_FILE).is_file() or not (folder / STATE_FILE).is_file():
        raise FileNotFoundError(f"resume={resume!r} is not a training checkpoint folder (needs {WEIGHTS_FILE} and "
                                f"{STATE_FILE}); use resume=latest or a {CHECKPOINTS}/step-* folder")
    return folder
