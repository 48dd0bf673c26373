"""Temporal parts as a module type: select, freeze and save them by structure, not by name."""
from __future__ import annotations

from typing import Iterator

import torch
from torch import nn

from kvideo.checkpoint import CheckpointError


class TemporalModule(nn.Module):
    """Marker base class: every module that an inflated (video) model adds to its 2D parent.

    A temporal module starts as the identity of the 2D computation, so a freshly inflated
    model equals its 2D parent frame by frame.
    """


def temporal_modules(model: nn.Module) -> Iterator[tuple[str, TemporalModule]]:
    """The outermost temporal submodules of `model` with their qualified names."""
    for name, child in model.named_children():
        if isinstance(child, TemporalModule):
            yield name, child
        else:
            for sub_name, sub in temporal_modules(child):
                yield f"{name}.{sub_name}", sub


def temporal_parameters(model: nn.Module) -> Iterator[nn.Parameter]:
    for _, module in temporal_modules(model):
        yield from module.parameters()


def freeze_spatial(model: nn.Module) -> nn.Module:
    """Freeze everything but the temporal parts (which are made trainable)."""
    for p in model.parameters():
        p.requires_grad_(False)
    for p in temporal_parameters(model):
        p.requires_grad_(True)
    return model


def temporal_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """State of the temporal parts only, keyed by their names in `model.state_dict()`."""
    return {
        f"{prefix}.{key}": value
        for prefix, module in temporal_modules(model)
        for key, value in module.state_dict().items()
    }


def load_temporal_state_dict(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Load temporal weights strictly: exactly the model's temporal keys, with their shapes."""
    own = temporal_state_dict(model)
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    bad_shapes = sorted(k for k in set(own) & set(state) if own[k].shape != state[k].shape)
    if missing or unexpected or bad_shapes:
        raise CheckpointError(
            "temporal weights do not fit this model: "
            f"missing {missing[:8]}{'...' if len(missing) > 8 else ''}, "
            f"unexpected {unexpected[:8]}{'...' if len(unexpected) > 8 else ''}, "
            f"shape mismatches {bad_shapes[:8]}"
        )
    model.load_state_dict(state, strict=False)
