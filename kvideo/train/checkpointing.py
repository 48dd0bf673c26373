"""Training checkpoints: trained weights (small safetensors, config in metadata), optimizer / RNG / data state."""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Callable, Mapping

import torch
from torch import nn

from kvideo.checkpoint import (
    CheckpointError, UnreadableCheckpointError, atomic_path, check_replaceable, check_writable_folder, load_file,
    load_pickle, load_state_dict_strict, read_metadata, save_safetensors,
)
from kvideo.config import check_types
from kvideo.errors import BadInputError
from kvideo.models.base import EXTRA_PREFIX
from kvideo.models.movq import MoVQConfig
from kvideo.models.temporal import load_temporal_state_dict
from kvideo.models.unet import UNetConfig

WEIGHTS_FILE = "trained.safetensors"
EMA_FILE = "ema.safetensors"
STATE_FILE = "state.pt"
LATEST = "latest"
CHECKPOINTS = "checkpoints"
STATE_KEYS = ("step", "optimizer", "scheduler", "rng")
CHECKSUM_KEY = "kvideo_sha256"  # metadata: sha256 of the tensor data (`tensor_checksum`)
STATE_CHECKSUM_KEY = "state_sha256"  # a checkpoint's trained.safetensors: sha256 of its state.pt
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
                 extras: Mapping[str, torch.Tensor] | None = None, train_config: str | None = None,
                 more_metadata: Mapping[str, str] | None = None) -> None:
    """Atomically write trained weights; `weights="all"` files are also `from_pretrained` checkpoints.
    The metadata holds a checksum of the tensor data, which `read_weights` verifies."""
    tensors = {**state, **{EXTRA_PREFIX + k: v for k, v in (extras or {}).items()}}
    tensors = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    metadata = {"model_type": info.model_type, "config": info.model_config, "task": info.task,
                "kvideo_weights": info.weights, "step": str(info.step), CHECKSUM_KEY: tensor_checksum(tensors),
                **(more_metadata or {})}
    if train_config:
        metadata["train_config"] = train_config
    save_safetensors(path, tensors, metadata)


def tensor_checksum(tensors: Mapping[str, torch.Tensor]) -> str:
    """sha256 of every tensor's name, dtype, shape and bytes, in name order (independent of the file layout)."""
    digest = hashlib.sha256()
    for name in sorted(tensors):
        tensor = tensors[name].detach().contiguous().cpu()
        digest.update(f"{name}\0{tensor.dtype}\0{tuple(tensor.shape)}\0".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    return digest.hexdigest()


def file_checksum(path: str | Path) -> str:
    """sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_weights(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor], WeightsInfo]:
    """(state, extras, info) of a trained-weights file; its tensor data checked against the checksum in its
    metadata (files written before kvideo stored one are read unchecked)."""
    contents, metadata = load_file(path)
    if "kvideo_weights" not in metadata:
        raise CheckpointError(f"{str(path)!r} is not a kvideo training output (no 'kvideo_weights' metadata); "
                              "load full model checkpoints with from_pretrained")
    info = _weights_info(path, metadata)
    expected = metadata.get(CHECKSUM_KEY)
    if expected is not None and tensor_checksum(contents) != expected:
        raise UnreadableCheckpointError(f"{str(path)!r} is damaged: its tensor data does not match the checksum "
                                        "written when it was saved; copy it again or use another checkpoint")
    extras = {k[len(EXTRA_PREFIX):]: v for k, v in contents.items() if k.startswith(EXTRA_PREFIX)}
    state = {k: v for k, v in contents.items() if not k.startswith(EXTRA_PREFIX)}
    return state, extras, info


def _weights_info(path: str | Path, metadata: Mapping[str, str]) -> WeightsInfo:
    """The WeightsInfo of a file's metadata, or a one-line error naming the file and the missing or bad key."""
    missing = [key for key in ("model_type", "config", "task") if key not in metadata]
    if missing:
        raise UnreadableCheckpointError(f"{str(path)!r} has kvideo_weights metadata but no {', '.join(missing)}; "
                                        "it was not written by kvideo train (or was edited)")
    try:
        step = int(metadata.get("step", 0))
    except ValueError:
        raise UnreadableCheckpointError(f"{str(path)!r}: its metadata step={metadata['step']!r} is not a whole "
                                        "number") from None
    try:
        config = json.loads(metadata["config"])
    except json.JSONDecodeError as error:
        raise UnreadableCheckpointError(f"{str(path)!r}: its metadata config is not JSON ({error})") from None
    if not isinstance(config, dict):
        raise UnreadableCheckpointError(f"{str(path)!r}: its metadata config is a {type(config).__name__}, "
                                        "not a mapping of config fields")
    _check_config_types(path, metadata["model_type"], config)
    if metadata["kvideo_weights"] not in ("temporal", "all"):
        raise UnreadableCheckpointError(f"{str(path)!r}: its metadata kvideo_weights="
                                        f"{metadata['kvideo_weights']!r} is neither 'temporal' nor 'all'")
    return WeightsInfo(metadata["model_type"], metadata["config"], metadata["task"], metadata["kvideo_weights"], step)


def _check_config_types(path: str | Path, model_type: str, values: dict[str, Any]) -> None:
    """The stored config's fields that this version knows have their types (a model_channels of "x" is one line
    here, not a traceback where the model is built); fields of newer versions are compared as stored."""
    cls = {"unet": UNetConfig, "movq": MoVQConfig}.get(model_type)
    if cls is None:
        return  # check_compatible says the model type does not match
    known = {field.name for field in fields(cls)}
    try:
        check_types(cls, {key: value for key, value in values.items() if key in known})
    except ValueError as error:
        raise UnreadableCheckpointError(f"{str(path)!r}: the config in its metadata cannot be used: {error}") \
            from None


def check_compatible(info: WeightsInfo, model: nn.Module, *, what: str) -> None:
    """Raise CheckpointError unless `info` was trained for this very model architecture."""
    model_type = getattr(model, "model_type", None)
    if info.model_type != model_type:
        raise CheckpointError(f"{what} holds {info.describe()}, but the model is a {model_type}")
    ours = model.config.to_dict()
    theirs = json.loads(info.model_config)
    try:  # fields added to the config after the file was written read as their defaults
        theirs = type(model.config).from_dict(theirs).to_dict()
    except (ValueError, TypeError):  # fields this version does not know, or of another type: compared as stored
        pass
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
    attribute = PIPELINE_MODELS.get(pipeline_task(info))
    if attribute is None or not hasattr(pipeline, attribute):
        raise ValueError(f"{str(path)!r} holds {info.describe()}; the pipeline has no model for task {info.task!r}")
    return load_trained_weights(getattr(pipeline, attribute), path)


def pipeline_task(info: WeightsInfo) -> str:
    """The task whose pipeline model a weights file fits: its own, or for a distilled student (task "distill")
    the kind of its UNet (keyframe or interpolation), read from the config it was saved with."""
    if info.task != "distill":
        return info.task
    return str(json.loads(info.model_config).get("kind", "distill"))


# -- checkpoint folders ---------------------------------------------------------------------------
def checkpoint_root(output_dir: str | Path) -> Path:
    return Path(output_dir) / CHECKPOINTS


def step_folder_name(step: int) -> str:
    return f"step-{step:08d}"


def folder_step(folder: Path) -> int | None:
    """The step of a `step-N` checkpoint folder (None for other names)."""
    head, _, number = folder.name.partition("-")
    return int(number) if head == "step" and number.isdigit() else None


def step_folders(output_dir: str | Path) -> list[Path]:
    """The run's checkpoint folders, oldest step first (by step number, not by name)."""
    root = checkpoint_root(output_dir)
    found = [p for p in root.glob("step-*") if p.is_dir() and folder_step(p) is not None] if root.is_dir() else []
    return sorted(found, key=folder_step)


def latest_folder(output_dir: str | Path) -> Path | None:
    """The folder the `latest` pointer names (None without a pointer, or when it names no step folder)."""
    return read_pointer(output_dir)[0]


def read_pointer(output_dir: str | Path) -> tuple[Path | None, str | None]:
    """(folder the `latest` pointer names, None) or (None, why the pointer is ignored: not text, or not a
    step folder's name); (None, None) without a pointer."""
    pointer = checkpoint_root(output_dir) / LATEST
    if not pointer.is_file():
        return None, None
    raw = pointer.read_bytes()
    try:
        name = raw.decode("utf-8").strip()
    except UnicodeDecodeError:
        return None, f"{str(pointer)!r} is not text ({raw[:16]!r}...)"
    if folder_step(Path(name)) is None or name != Path(name).name:
        return None, f"{str(pointer)!r} does not name a step-N folder ({name[:40]!r})"
    return checkpoint_root(output_dir) / name, None


def save_state(path: Path, state: dict[str, Any]) -> None:
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def load_state(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"training state {str(path)!r} does not exist")
    state = load_pickle(path)
    missing = [k for k in STATE_KEYS if not isinstance(state, dict) or k not in state]
    if missing:
        raise UnreadableCheckpointError(f"{str(path)!r} is not a kvideo training state (no {missing})")
    step = state["step"]
    if isinstance(step, bool) or not isinstance(step, int) or step < 0:
        raise UnreadableCheckpointError(f"{str(path)!r} is not a kvideo training state (step={step!r})")
    wrong = [k for k in ("scheduler", "rng") if not isinstance(state[k], dict)]
    wrong += [] if state["optimizer"] is None or isinstance(state["optimizer"], dict) else ["optimizer"]
    if wrong:
        raise UnreadableCheckpointError(f"{str(path)!r} is not a kvideo training state ({', '.join(wrong)} "
                                        f"{'is' if len(wrong) == 1 else 'are'} not a mapping)")
    return state


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
    """Move the finished folder into place, point `latest` at it, and drop the lowest steps beyond `keep`
    (never the folder `latest` names)."""
    root = checkpoint_root(output_dir)
    final = root / step_folder_name(step)
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    with atomic_path(root / LATEST) as pointer:
        pointer.write_text(final.name + "\n")
    for old in step_folders(output_dir)[:-keep]:
        if old != final:
            shutil.rmtree(old)
    return final


def remove_temporary_files(output_dir: str | Path) -> list[Path]:
    """Delete what a killed run left half-written: `.step-N.tmp` folders and atomic-write temp files
    (`.NAME.<random>.tmp...`) in the run folder and its checkpoints; returns what was removed."""
    removed = []
    for folder in (Path(output_dir), checkpoint_root(output_dir)):
        for path in folder.glob(".*.tmp*") if folder.is_dir() else ():
            shutil.rmtree(path) if path.is_dir() else path.unlink()
            removed.append(path)
    return removed


# -- resuming ------------------------------------------------------------------------------------
@dataclass
class Restored:
    """Everything a checkpoint gives back to a resumed run (checked against the model and task)."""

    folder: Path
    weights: dict[str, torch.Tensor]  # the trained weights (temporal only, or all)
    ema: dict[str, torch.Tensor] | None  # the EMA shadow weights, when the run keeps an EMA
    state: dict[str, Any]  # optimizer, scheduler, rng, step, data position
    temporal: bool = True  # `weights` are the temporal modules only (else every weight)

    @property
    def step(self) -> int:
        return int(self.state["step"])

    def load_weights(self, model: nn.Module) -> None:
        if self.temporal:
            load_temporal_state_dict(model, self.weights)
        else:
            load_state_dict_strict(model, self.weights, what=f"resume checkpoint {str(self.folder)!r}")


def restore(output_dir: str | Path, resume: str, *, model: nn.Module, task: str, weights: str, ema: bool,
            report: Callable[[str], None] | None = None) -> Restored | None:
    """The checkpoint to resume from, read and checked: None for a fresh run (no `resume`, or
    `resume="latest"` before the first checkpoint). `latest` falls back to the newest checkpoint
    that loads, reporting the ones skipped and why; a checkpoint of another model or task is an error."""
    if not resume:
        return None
    candidates = _resume_candidates(output_dir, resume)
    skipped = []
    if resume == LATEST and (problem := read_pointer(output_dir)[1]) is not None:
        (report or _print)(f"kvideo train: ignored the latest pointer: {problem}; trying the step folders")
    for folder in candidates:
        try:
            restored = _read_checkpoint(folder, model=model, task=task, weights=weights, ema=ema)
        except (UnreadableCheckpointError, FileNotFoundError) as error:
            if resume != LATEST:
                raise
            skipped.append(f"{folder.name}: {error}")
            (report or _print)(f"kvideo train: skipped checkpoint {str(folder)!r}, it does not load: {error}")
            continue
        if skipped:
            (report or _print)(f"kvideo train: resuming from {str(folder)!r} (step {restored.step})")
        return restored
    if skipped:
        raise UnreadableCheckpointError(f"no checkpoint in {str(checkpoint_root(output_dir))!r} loads: "
                                        + "; ".join(skipped))
    return None


def _resume_candidates(output_dir: str | Path, resume: str) -> list[Path]:
    """`latest`: the folder the pointer names, then every step folder, newest step first."""
    if resume != LATEST:
        folder = Path(resume)
        if not (folder / WEIGHTS_FILE).is_file() or not (folder / STATE_FILE).is_file():
            raise FileNotFoundError(f"resume={resume!r} is not a training checkpoint folder (needs {WEIGHTS_FILE} "
                                    f"and {STATE_FILE}); use resume=latest or a {CHECKPOINTS}/step-* folder")
        return [folder]
    pointed = latest_folder(output_dir)
    folders = list(reversed(step_folders(output_dir)))
    return ([pointed] if pointed is not None else []) + [f for f in folders if f != pointed]


def _read_checkpoint(folder: Path, *, model: nn.Module, task: str, weights: str, ema: bool) -> Restored:
    what = f"resume checkpoint {str(folder)!r}"
    state, _, info = read_weights(folder / WEIGHTS_FILE)
    if (info.task, info.weights) != (task, weights):
        raise CheckpointError(f"{what} holds {info.describe()}; this run trains {weights} weights of a {task} "
                              "model: resume with the same task and train settings")
    check_compatible(info, model, what=what)
    ema_state = None
    if ema:
        if not (folder / EMA_FILE).is_file():
            raise CheckpointError(f"{what} has no EMA weights; set ema_decay=0 or resume from a run that kept an EMA")
        ema_state = read_weights(folder / EMA_FILE)[0]
    check_state_checksum(folder)
    return Restored(folder, state, ema_state, load_state(folder / STATE_FILE), temporal=weights == "temporal")


def check_state_checksum(folder: Path) -> None:
    """A checkpoint's state.pt against the sha256 its trained.safetensors records (older checkpoints: none)."""
    expected = read_metadata(folder / WEIGHTS_FILE).get(STATE_CHECKSUM_KEY)
    path = folder / STATE_FILE
    if expected is not None and path.is_file() and file_checksum(path) != expected:
        raise UnreadableCheckpointError(f"{str(path)!r} is damaged: its bytes do not match the checksum written "
                                        "when the checkpoint was saved")


def _print(message: str) -> None:
    print(message, file=sys.stderr)


# -- the run folder ------------------------------------------------------------------------------
RUN_FILES = ("config.json", "log.jsonl", CHECKPOINTS, "tensorboard")


def holds_run(output_dir: str | Path) -> bool:
    """Whether `output_dir` holds (part of) a training run: its config, log, checkpoints or exported weights."""
    folder = Path(output_dir)
    return folder.is_dir() and (any((folder / name).exists() for name in RUN_FILES)
                                or any(folder.glob("*.safetensors")))


def check_output_dir(output_dir: str | Path, *, resume: str, overwrite: bool) -> None:
    """Refuse, before any work, an output folder that cannot be written or that holds another run
    (unless the run resumes it or `overwrite` moves it aside)."""
    folder = Path(output_dir)
    if resume and overwrite:
        raise BadInputError("--resume and --overwrite contradict each other: resume continues the run in "
                            f"{str(folder)!r}, overwrite moves it aside; pick one")
    check_writable_folder(folder, what="--output-dir")
    if overwrite and holds_run(folder) and Path.cwd().resolve().is_relative_to(folder.resolve()):
        raise BadInputError(f"--overwrite cannot move {str(folder)!r} aside while it holds the current folder; "
                            "run the command from outside it")
    if holds_run(folder) and not resume and not overwrite:
        raise BadInputError(f"{str(folder)!r} already holds a training run; pass --resume latest to continue it, "
                            "--overwrite to move it aside and start again, or choose another --output-dir")
    if resume:  # the files a resumed run writes again, or beside
        for path in [folder / "config.json", folder / "log.jsonl", *sorted(folder.glob("*.safetensors"))]:
            check_replaceable(path, what="the run's file")
        check_writable_folder(folder / CHECKPOINTS, what="the run's checkpoints folder")


def move_aside(output_dir: str | Path) -> Path | None:
    """Rename a folder holding a run to the first free `<name>.old-N` beside it (nothing is deleted)."""
    folder = Path(output_dir).absolute()
    if not holds_run(folder):
        return None
    number = 1
    while folder.with_name(f"{folder.name}.old-{number}").exists():
        number += 1
    target = folder.with_name(f"{folder.name}.old-{number}")
    os.rename(folder, target)
    return target
