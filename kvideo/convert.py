"""Official checkpoints -> kvideo safetensors (config in metadata), and a summary of any checkpoint."""
from __future__ import annotations

import importlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from kvideo.checkpoint import (
    CheckpointError, OutputError, check_writable_folder, guess_checkpoint_kind, load_file, read_metadata,
)
from kvideo.models.base import Checkpoint, PretrainedModel

# model name -> ("module:Class", official preset of that class)
MODELS = {
    "image": ("kvideo.models.unet:UNet", "official-image"),
    "keyframe": ("kvideo.models.unet:UNet", "official-keyframe"),
    "interpolation": ("kvideo.models.unet:UNet", "official-interpolation"),
    "movq": ("kvideo.models.movq:MoVQ", "official"),
    "video-movq": ("kvideo.models.movq:MoVQ", "official-video"),
    "kv11-keyframe": ("kvideo.models.unet:UNet", "official-kv11-keyframe"),  # release 1.1 t2v.pt
    "kv11-interpolation": ("kvideo.models.unet:UNet", "official-kv11-interpolation"),  # release 1.1 interpolation.pt
}


def model_class(name: str) -> type[PretrainedModel]:
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; choose one of {sorted(MODELS)}")
    module, _, cls = MODELS[name][0].partition(":")
    return getattr(importlib.import_module(module), cls)


def detect_model(contents: dict[str, Any]) -> str:
    """Which official checkpoint this is, from its keys."""
    if "unet" in contents and isinstance(contents["unet"], dict):
        keys = contents["unet"].keys()
        if "image_in_layer.weight" in keys:
            return "kv11-keyframe"
        if any("temporal_projection_new" in k for k in keys):
            return "kv11-interpolation"
        if any("skip_embeddings" in k for k in keys):
            return "interpolation"
        return "keyframe" if any("temporal_resnet_blocks" in k for k in keys) else "image"
    keys = contents.keys()
    if "projection_base" in keys:
        raise CheckpointError("this is release 1.1's t5_projections.pt (text projections, not a model): "
                              "keep it beside t2v.pt in the weights folder; it needs no conversion")
    if any(k.startswith("encoder.") for k in keys) and any(k.startswith("decoder.") for k in keys):
        return "video-movq" if any("temporal" in k for k in keys) else "movq"
    guess = guess_checkpoint_kind(contents)
    raise CheckpointError(
        f"cannot tell which Kandinsky Video model this is (first keys: {sorted(keys)[:5]}"
        + (f"; they look like {guess}" if guess else "") + "); pass --model if it is one"
    )


def convert(source: str | Path, output: str | Path, *, model: str | None = None,
            config_path: str | Path | None = None) -> str:
    """Convert an official pickle to a kvideo safetensors file; returns the model name used."""
    output = Path(output)
    if output.suffix != ".safetensors":
        raise ValueError(f"output {str(output)!r} must end in .safetensors")
    if not output.parent.is_dir():
        raise FileNotFoundError(f"output folder {str(output.parent)!r} does not exist")
    if output.is_dir():
        raise OutputError(f"output {str(output)!r} is a folder; name the .safetensors file to write")
    check_writable_folder(output.parent, what="output folder")
    contents, metadata = load_file(source)
    if metadata.get("model_type"):
        raise ValueError(f"{str(source)!r} is already a kvideo checkpoint ({metadata['model_type']})")
    name = model or detect_model(contents)
    cls = model_class(name)
    config = cls.config_class.from_file(config_path) if config_path else cls.config_class.preset(MODELS[name][1])
    state, extras = cls.split_official(contents)
    loaded = cls.from_checkpoint(Checkpoint(cls.renames.state_to_kvideo(state), extras), config, dtype=None)
    loaded.save_pretrained(output, extras=extras, metadata={"source": Path(source).name, "model": name})
    return name


@dataclass
class CheckpointInfo:
    path: str
    model_type: str
    config: dict[str, Any] | None
    parameters: int
    temporal_parameters: int | None
    dtypes: list[str]
    extras: list[str]

    def format(self) -> str:
        lines = [f"{self.path}: {self.model_type}", f"  parameters: {self.parameters:,}"]
        if self.temporal_parameters is not None:
            lines.append(f"  temporal parameters: {self.temporal_parameters:,} "
                         f"(spatial {self.parameters - self.temporal_parameters:,})")
        lines.append(f"  dtypes: {', '.join(self.dtypes)}")
        if self.extras:
            lines.append(f"  extras: {', '.join(self.extras)}")
        if self.config:
            lines.append("  config: " + json.dumps(self.config))
        return "\n".join(lines)


def info(path: str | Path) -> CheckpointInfo:
    """Config and parameter counts of a kvideo or official checkpoint."""
    metadata = read_metadata(path)
    name = metadata.get("model") if metadata else None
    if metadata.get("model_type"):
        cls = model_class(name) if name in MODELS else _class_for_type(metadata["model_type"])
        checkpoint = cls.read_checkpoint(path)
    else:
        contents, _ = load_file(path)
        name = detect_model(contents)
        cls = model_class(name)
        checkpoint = cls.read_checkpoint(path)
        checkpoint.config = cls.config_class.preset(MODELS[name][1])
    return _summarise(str(path), cls, checkpoint)


def _class_for_type(model_type: str) -> type[PretrainedModel]:
    for name in MODELS:
        cls = model_class(name)
        if cls.model_type == model_type:
            return cls
    raise CheckpointError(f"unknown kvideo model_type {model_type!r}")


def _summarise(path: str, cls: type[PretrainedModel], checkpoint) -> CheckpointInfo:
    temporal_count = None
    if checkpoint.config is not None:
        with torch.device("meta"):
            model = cls(checkpoint.config)
        from kvideo.models.temporal import temporal_state_dict

        temporal_count = sum(v.numel() for v in temporal_state_dict(model).values())
    return CheckpointInfo(
        path=path,
        model_type=cls.model_type,
        config=checkpoint.config.to_dict() if checkpoint.config else None,
        parameters=sum(v.numel() for v in checkpoint.state.values()),
        temporal_parameters=temporal_count,
        dtypes=sorted({str(v.dtype).replace("torch.", "") for v in checkpoint.state.values()}),
        extras=sorted(checkpoint.extras),
    )
