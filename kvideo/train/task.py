"""What a training task provides to the trainer: the model, its loss, its data, and how to save it."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
from torch import nn

from kvideo.models import layers
from kvideo.models.base import PretrainedModel
from kvideo.models.unet import UNet, UNetConfig
from kvideo.train.config import TrainConfig
from kvideo.train.seeding import seeded_generator

Loss = Callable[[nn.Module, dict[str, Any], torch.Generator], torch.Tensor]


@dataclass
class Task:
    """One fine-tuning task.

    model: the full model whose weights are trained and saved (UNet or MoVQ), with its frozen
        parts frozen. module: what the trainer wraps (DDP / FSDP) and hands to `loss` (the model
        itself, or a wrapper around it). loss(module, batch, generator) -> scalar, drawing every
        random number from `generator`. dataset / collate: what the data loader reads.
        batch_key: the tensor a usable batch holds (batches of unreadable clips lack it).
        extras: tensors saved beside the weights (the null embedding). shard_types: FSDP units.
    """

    name: str
    model: PretrainedModel
    module: nn.Module
    loss: Loss
    dataset: torch.utils.data.Dataset
    collate: Callable[[list[Any]], dict[str, Any]]
    batch_key: str
    extras: dict[str, torch.Tensor] = field(default_factory=dict)
    shard_types: tuple[type, ...] = ()


def select_trainable(model: nn.Module, train: str) -> list[str]:
    """Freeze what is not trained; return the state-dict keys that a trained-weights file holds."""
    if train == "temporal":
        model.freeze_spatial()
        keys = list(model.temporal_state_dict())
        if not keys:
            raise ValueError(f"{type(model).__name__} has no temporal modules to train (an image model?); "
                             "use a video config or train=all")
        return keys
    model.requires_grad_(True)
    return list(model.state_dict())


def random_null_embedding(dim: int, seed: int) -> torch.Tensor:
    """A stand-in null embedding for models built from a preset (no checkpoint)."""
    return torch.randn(dim, generator=seeded_generator(seed, 0x5EED)) * 0.1


def load_unet(cfg: TrainConfig, kind: str):
    """(UNet, extras) from `cfg.model` (official .pt or kvideo .safetensors) or, without one, a randomly
    initialised `cfg.model_preset` (same weights on every rank). extras holds the null embedding and
    whatever else the checkpoint carries (the text projection), so the trained model keeps them.

    A keyframe task given a text-to-image (kind "image") checkpoint inflates it: the temporal layers
    start as the identity (the paper's recipe). Their layout comes from `cfg.model_preset` when that
    names a keyframe UNet of the same spatial architecture, else from the image UNet's config."""
    if cfg.model:
        checkpoint = UNet.read_checkpoint(cfg.model)
        config = checkpoint.config or UNetConfig.preset(cfg.model_preset or f"official-{kind}")
        unet, extras = unet_from_checkpoint(cfg.model, checkpoint, config, kind, cfg.model_preset)
    else:
        if not cfg.model_preset:
            raise ValueError("give model=<checkpoint> (or model_preset=<UNet preset> to start from random weights)")
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(cfg.seed)
            unet = UNet(UNetConfig.preset(cfg.model_preset))
        extras = {"null_embedding": random_null_embedding(unet.config.context_dim, cfg.seed)}
    if unet.config.kind != kind:
        hint = " (train it from a text-to-image UNet: model=<image UNet from `kvideo train image`>)" \
            if kind == "keyframe" else ""
        raise ValueError(f"the model is {_a(unet.config.kind)} UNet; task={kind!r} needs {_a(kind)} UNet{hint}")
    return unet, extras


def unet_from_checkpoint(path: str, checkpoint, config, kind: str, preset: str = ""):
    """(UNet, extras) of `checkpoint` (read from `path` by `UNet.read_checkpoint`) built with `config`; a
    text-to-image config for a keyframe `kind` is inflated (see `load_unet`). The null embedding must be there."""
    if kind == "keyframe" and config.kind == "image":
        unet = UNet.inflate(checkpoint.state, inflated_config(config, preset))
    else:
        unet = UNet.from_checkpoint(checkpoint, config)
    if "null_embedding" not in checkpoint.extras:
        raise ValueError(f"{path!r} has no null_embedding (official kandinsky_video*.pt files and kvideo "
                         "conversions carry it); the text dropout / interpolation context needs it")
    return unet, {k: v.float() for k, v in checkpoint.extras.items()}


# Fields of a keyframe UNet config that its text-to-image UNet does not decide.
_TEMPORAL_FIELDS = ("num_frames", "frame_stride", "frame_conditioning")


def inflated_config(image, preset: str = ""):
    """The keyframe UNetConfig that inflates the text-to-image config `image`: `image` with kind
    'keyframe' and, when `preset` names a keyframe UNet preset, that preset's temporal fields (the
    spatial fields must agree, or the error names the ones that differ)."""
    if not preset:
        return dataclasses.replace(image, kind="keyframe")
    target = UNetConfig.preset(preset)
    if target.kind != "keyframe":
        return dataclasses.replace(image, kind="keyframe")
    spatial = dataclasses.replace(target, kind="image", **{f: getattr(image, f) for f in _TEMPORAL_FIELDS})
    differ = [f.name for f in dataclasses.fields(image) if getattr(spatial, f.name) != getattr(image, f.name)]
    if differ:
        raise ValueError(f"model_preset={preset!r} cannot inflate this text-to-image UNet: {', '.join(differ)} differ "
                         f"(e.g. {differ[0]}={getattr(target, differ[0])!r} vs {getattr(image, differ[0])!r}); "
                         f"leave model_preset empty to inflate with the image UNet's own settings")
    return target


def _a(word: str) -> str:
    return f"{'an' if word[0] in 'aeiou' else 'a'} {word}"


def unet_shard_types() -> tuple[type, ...]:
    """FSDP units of a UNet: the blocks its levels call one by one (frozen spatial weights are sharded
    with them; the levels themselves are containers whose forward never runs)."""
    return (layers.ResNetBlock, layers.AttentionBlock, layers.TemporalResNetBlock, layers.TemporalAttentionBlock)

