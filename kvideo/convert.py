"""Official checkpoints -> kvideo safetensors (config in metadata), and a summary of any checkpoint."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from kvideo.checkpoint import (
    CheckpointError, OutputError, check_replaceable, check_tensor_tree, check_writable_folder, guess_checkpoint_kind,
    load_file, read_metadata,
)
from kvideo.models.base import Checkpoint, PretrainedModel
from kvideo.models.movq import MoVQ
from kvideo.models.temporal import temporal_state_dict
from kvideo.models.unet import UNet

# model name -> (class, official preset of that class)
MODELS: dict[str, tuple[type[PretrainedModel], str]] = {
    "image": (UNet, "official-image"),
    "keyframe": (UNet, "official-keyframe"),
    "interpolation": (UNet, "official-interpolation"),
    "movq": (MoVQ, "official"),
    "video-movq": (MoVQ, "official-video"),
    "kv11-keyframe": (UNet, "official-kv11-keyframe"),  # release 1.1 t2v.pt
    "kv11-interpolation": (UNet, "official-kv11-interpolation"),  # release 1.1 interpolation.pt
}


def model_class(name: str) -> type[PretrainedModel]:
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; choose one of {sorted(MODELS)}")
    return MODELS[name][0]


def detect_model(contents: dict[str, Any], source: str | Path) -> str:
    """Which official checkpoint `source` is, from its keys."""
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
        raise CheckpointError(f"{str(source)!r} is release 1.1's t5_projections.pt (text projections, not a model): "
                              "keep it beside t2v.pt in the weights folder; it needs no conversion")
    if any(k.startswith("encoder.") for k in keys) and any(k.startswith("decoder.") for k in keys):
        return "video-movq" if any("temporal" in k for k in keys) else "movq"
    guess = guess_checkpoint_kind(contents)
    raise CheckpointError(
        f"cannot tell which Kandinsky Video model {str(source)!r} is (first keys: {sorted(keys)[:5]}"
        + (f"; they look like {guess}" if guess else "") + "); pass --model if it is one"
    )


def convert(source: str | Path, output: str | Path, *, model: str | None = None,
            config_path: str | Path | None = None, preset: str | None = None) -> str:
    """Convert an official pickle to a kvideo safetensors file; returns the model name used.

    The model's size is the official preset's unless `config_path` (a JSON config) or `preset` names another."""
    output = _checked_output(output)
    require_checkpoint_file(source, "converts one official checkpoint file (kandinsky_video.pt, movq.pt, ...)")
    if config_path and preset:
        raise ValueError("give either --config or --model-preset, not both")
    contents, metadata = load_file(source)
    if metadata.get("model_type"):
        raise ValueError(f"{str(source)!r} is already a kvideo checkpoint ({metadata['model_type']})")
    check_tensor_tree(contents, what=repr(str(source)), values=False)  # names: the values are split_official's
    name = model or detect_model(contents, source)
    cls = model_class(name)
    state, extras = cls.split_official_file(contents, source)
    state = cls.renames.state_to_kvideo(state)
    config = _fitting_config(source, cls, name, state, config_path, preset)
    loaded = cls.from_checkpoint(Checkpoint(state, extras), config, dtype=None)
    loaded.save_pretrained(output, extras=extras, metadata={"source": Path(source).name, "model": name})
    return name


def _checked_output(output: str | Path) -> Path:
    output = Path(output)
    if output.suffix != ".safetensors":
        raise ValueError(f"output {str(output)!r} must end in .safetensors")
    if not output.parent.is_dir():
        raise FileNotFoundError(f"output folder {str(output.parent)!r} does not exist")
    if output.is_dir():
        raise OutputError(f"output {str(output)!r} is a folder; name the .safetensors file to write")
    check_writable_folder(output.parent, what="output folder")
    check_replaceable(output, what="output")
    return output


def _fitting_config(source, cls: type[PretrainedModel], name: str, state, config_path, preset: str | None):
    """The config asked for (the official preset by default) if `state` fits it; else a short error with the fix."""
    config = _chosen_config(cls, name, config_path, preset)
    problems = fit_problems(_expected_state(cls, config), state)
    if not problems:
        return config
    given = (f"the config in {str(config_path)!r}" if config_path else
             f"preset {preset!r}" if preset else f"preset {MODELS[name][1]!r} (the default)")
    implied = implied_preset(cls, name, state)
    fix = (f"its shapes are preset {implied!r}: add --model-preset {implied} (or --config FILE)" if implied else
           f"its shapes fit no {name} preset: add --config FILE with its size (or --model-preset NAME)")
    raise CheckpointError(f"{str(source)!r} does not fit {given}: {problems}\n{fix}")


def require_checkpoint_file(path: str | Path, expects: str) -> None:
    """A folder where one checkpoint file is expected is an error that says so and names its checkpoints."""
    path = Path(path)
    if not path.is_dir():
        return  # a missing or unreadable file is load_file's to report
    found = sorted(p.name for p in path.iterdir() if p.suffix in (".pt", ".pth", ".ckpt", ".safetensors"))
    listed = f"; it holds {', '.join(found[:6])}{', ...' if len(found) > 6 else ''}" if found else ""
    raise IsADirectoryError(f"{str(path)!r} is a folder: this command {expects}{listed}")


def presets_of(cls: type[PretrainedModel], name: str) -> list[str]:
    """The presets of model `name` in every size: 'tiny-interpolation', 'shapes-interpolation', ..."""
    family = MODELS[name][1].partition("-")[2]  # 'official-interpolation' -> 'interpolation', 'official' -> ''
    return [p for p in cls.config_class.presets() if p.partition("-")[2] == family]


def implied_preset(cls: type[PretrainedModel], name: str, state: dict[str, torch.Tensor]) -> str | None:
    """The preset of model `name` whose tensors have exactly the shapes of `state` (kvideo key names), or None."""
    for preset in sorted(presets_of(cls, name), key=lambda p: p.startswith("official")):  # small ones first
        if not fit_problems(_expected_state(cls, cls.config_class.preset(preset)), state):
            return preset
    return None


def fit_problems(expected: dict[str, torch.Tensor], state: dict[str, torch.Tensor]) -> str:
    """'' if `state` has exactly the keys and shapes of `expected`; else a short summary with one example each."""
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    mismatched = sorted(k for k in set(expected) & set(state) if tuple(state[k].shape) != tuple(expected[k].shape))
    parts = []
    if mismatched:
        k = min(mismatched, key=len)  # the shortest name makes the shortest example
        parts.append(f"{len(mismatched)} of {len(expected)} tensors differ in shape "
                     f"(e.g. {k} is {tuple(state[k].shape)}, not {tuple(expected[k].shape)})")
    if missing:
        parts.append(f"{len(missing)} missing")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected")
    return ", ".join(parts)


def _expected_state(cls: type[PretrainedModel], config) -> dict[str, torch.Tensor]:
    with torch.device("meta"):
        return cls(config).state_dict()


def _chosen_config(cls: type[PretrainedModel], name: str, config_path, preset: str | None):
    if config_path:
        return cls.config_class.from_file(config_path)
    if preset is None:
        return cls.config_class.preset(MODELS[name][1])
    if preset not in presets_of(cls, name):
        raise ValueError(f"--model-preset {preset!r} is not one of the {name} presets {presets_of(cls, name)}")
    return cls.config_class.preset(preset)


@dataclass
class CheckpointInfo:
    path: str
    model_type: str
    config: dict[str, Any] | None
    parameters: int
    temporal_parameters: int | None
    dtypes: list[str]
    extras: list[str]
    model: str | None = None  # the model name ('interpolation', 'video-movq', ...) where known
    config_source: str = ""  # where the config comes from (the file's metadata, a preset), or why there is none
    warning: str = ""  # the file's tensors do not fit its own config

    def format(self) -> str:
        lines = [f"{self.path}: {self.model_type}" + (f" ({self.model})" if self.model else ""),
                 f"  parameters: {self.parameters:,}"]
        if self.temporal_parameters is not None:
            lines.append(f"  temporal parameters: {self.temporal_parameters:,} "
                         f"(spatial {self.parameters - self.temporal_parameters:,})")
        lines.append(f"  dtypes: {', '.join(self.dtypes)}")
        if self.extras:
            lines.append(f"  extras: {', '.join(self.extras)}")
        if self.config:
            lines.append(f"  config ({self.config_source}): " + json.dumps(self.config))
        else:
            lines.append(f"  config: {self.config_source}")
        if self.warning:
            lines.append(f"  warning: {self.warning}")
        return "\n".join(lines)


def info(path: str | Path) -> CheckpointInfo:
    """Config and parameter counts of a kvideo or official checkpoint.

    An official file holds no config: the one reported is the preset its tensor shapes are, if any."""
    require_checkpoint_file(path, "reads one checkpoint file (a kvideo .safetensors or an official .pt)")
    metadata = read_metadata(path)
    name = metadata.get("model") if metadata else None
    if metadata.get("model_type"):
        cls = model_class(name) if name in MODELS else _class_for_type(metadata["model_type"], path)
        checkpoint = cls.read_checkpoint(path)
        summary = _summarise(str(path), cls, checkpoint, name, "from the file's metadata")
        problems = fit_problems(_expected_state(cls, checkpoint.config), checkpoint.state)
        summary.warning = f"the file's tensors do not fit this config: {problems}" if problems else ""
        return summary
    contents, _ = load_file(path)
    check_tensor_tree(contents, what=repr(str(path)), values=False)
    name = detect_model(contents, path)
    cls = model_class(name)
    state, extras = cls.split_official_file(contents, path)
    checkpoint = Checkpoint(cls.renames.state_to_kvideo(state), extras)
    preset = implied_preset(cls, name, checkpoint.state)
    if preset is None:
        return _summarise(str(path), cls, checkpoint, name,
                          f"cannot tell: the tensor shapes fit no {name} preset ({', '.join(presets_of(cls, name))})")
    checkpoint.config = cls.config_class.preset(preset)
    return _summarise(str(path), cls, checkpoint, name, f"preset {preset!r}, the one its tensor shapes fit")


def _class_for_type(model_type: str, path: str | Path) -> type[PretrainedModel]:
    classes = {model_class(name).model_type: model_class(name) for name in MODELS}
    if model_type not in classes:
        raise CheckpointError(f"{str(path)!r} holds a kvideo model_type {model_type!r}, not one of the models info "
                              f"describes ({', '.join(sorted(classes))})")
    return classes[model_type]


def _summarise(path: str, cls: type[PretrainedModel], checkpoint, name: str | None, source: str) -> CheckpointInfo:
    """Counts from the file's own tensors: the temporal ones are those the config's model calls temporal."""
    temporal_count = None
    if checkpoint.config is not None:
        with torch.device("meta"):
            model = cls(checkpoint.config)
        temporal_count = sum(checkpoint.state[k].numel() for k in temporal_state_dict(model) if k in checkpoint.state)
    return CheckpointInfo(
        path=path,
        model_type=cls.model_type,
        config=checkpoint.config.to_dict() if checkpoint.config else None,
        parameters=sum(v.numel() for v in checkpoint.state.values()),
        temporal_parameters=temporal_count,
        dtypes=sorted({str(v.dtype).replace("torch.", "") for v in checkpoint.state.values()}),
        extras=sorted(checkpoint.extras),
        model=name,
        config_source=source,
    )
