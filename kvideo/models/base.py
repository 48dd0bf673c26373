"""Shared save / load behaviour of kvideo models: official pickles in, safetensors with config out."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Mapping

import torch
from torch import nn

from kvideo.checkpoint import (
    CheckpointError,
    KeyRenames,
    check_state_dict,
    check_tensor_tree,
    load_file,
    load_state_dict_strict,
    save_safetensors,
)
from kvideo.config import Config

EXTRA_PREFIX = "extra."


@dataclass
class Checkpoint:
    """A checkpoint as read from disk: model state (kvideo key names), extras, config."""

    state: dict[str, torch.Tensor]
    extras: dict[str, torch.Tensor] = field(default_factory=dict)
    config: Config | None = None
    metadata: dict[str, str] = field(default_factory=dict)


class PretrainedModel(nn.Module):
    """Base of kvideo models that have official checkpoints.

    Subclasses set `model_type`, `config_class`, optionally `renames` (official <-> kvideo
    key names) and override `split_official` when the official file nests the state.
    """

    model_type: ClassVar[str]
    config_class: ClassVar[type[Config]]
    renames: ClassVar[KeyRenames] = KeyRenames()

    def __init__(self, config: Config) -> None:
        super().__init__()
        if not isinstance(config, self.config_class):
            raise TypeError(f"{type(self).__name__} needs a {self.config_class.__name__}, got {type(config).__name__}")
        self.config = config

    # -- official layout ---------------------------------------------------------------------
    @classmethod
    def split_official(cls, contents: Mapping[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """Official checkpoint contents -> (model state in official names, extra tensors)."""
        return dict(contents), {}

    def official_state_dict(self) -> dict[str, torch.Tensor]:
        return self.renames.state_to_official(self.state_dict())

    def load_official_state_dict(self, state: Mapping[str, torch.Tensor]) -> None:
        load_state_dict_strict(self, self.renames.state_to_kvideo(state), what=self.describe())

    def describe(self) -> str:
        return f"{type(self).__name__}({self.config.to_json()})"

    # -- kvideo files ------------------------------------------------------------------------
    def save_pretrained(
        self, path: str | Path, extras: Mapping[str, torch.Tensor] | None = None, metadata: Mapping[str, Any] | None = None
    ) -> None:
        """Write weights + config (+ extras under `extra.`) as one safetensors file, atomically."""
        tensors = dict(self.state_dict())
        tensors.update({EXTRA_PREFIX + k: v for k, v in (extras or {}).items()})
        meta = {"model_type": self.model_type, "config": self.config.to_json(), **(metadata or {})}
        save_safetensors(path, tensors, meta)

    @classmethod
    def read_checkpoint(cls, path: str | Path) -> Checkpoint:
        """Read an official pickle or a kvideo safetensors file written by `save_pretrained`."""
        contents, metadata = load_file(path)
        if metadata:
            found = metadata.get("model_type")
            if found != cls.model_type:
                raise CheckpointError(
                    f"{str(path)!r} holds a {found or 'non-kvideo'} checkpoint, not a {cls.model_type}"
                )
            config = cls.metadata_config(path, metadata)
            extras = {k[len(EXTRA_PREFIX):]: v for k, v in contents.items() if k.startswith(EXTRA_PREFIX)}
            state = {k: v for k, v in contents.items() if not k.startswith(EXTRA_PREFIX)}
            return Checkpoint(state, extras, config, metadata)
        state, extras = cls.split_official_file(contents, path)
        return Checkpoint(cls.renames.state_to_kvideo(state), extras, None, {})

    @classmethod
    def split_official_file(cls, contents: Mapping[str, Any], path: str | Path):
        """`split_official` of file `path`'s contents; one that is not a state dict, or not of this model, is a
        CheckpointError naming the file."""
        check_tensor_tree(contents, what=repr(str(path)), values=False)
        try:
            state, extras = cls.split_official(contents)
        except CheckpointError as error:
            raise CheckpointError(f"{str(path)!r}: {error}") from None
        check_tensor_tree(state, what=repr(str(path)))
        check_tensor_tree(extras, what=repr(str(path)))
        return state, extras

    @classmethod
    def metadata_config(cls, path: str | Path, metadata: Mapping[str, str]) -> Config:
        """The config a kvideo file stores in its metadata; missing, not JSON or not fitting the config class
        is a one-line CheckpointError naming the file."""
        if "config" not in metadata:
            raise CheckpointError(f"{str(path)!r} is a kvideo {cls.model_type} file without its config in the "
                                  "metadata; it was not written by kvideo (or was edited): convert or save it again")
        try:
            return cls.config_class.from_json(metadata["config"])
        except ValueError as error:
            raise CheckpointError(f"{str(path)!r}: the config in its metadata cannot be used: {error}") from None

    @classmethod
    def from_pretrained(
        cls, path: str | Path, config: Config | None = None, *, device: str | torch.device = "cpu",
        dtype: torch.dtype | None = torch.float32,
    ):
        """Build the model and load weights strictly (float tensors cast to `dtype`). Official pickles need `config`
        unless the class provides `default_official_config()`."""
        checkpoint = cls.read_checkpoint(path)
        return cls.from_checkpoint(checkpoint, config, device=device, dtype=dtype)

    @classmethod
    def from_checkpoint(
        cls, checkpoint: Checkpoint, config: Config | None = None, *, device: str | torch.device = "cpu",
        dtype: torch.dtype | None = torch.float32,
    ):
        """Build on the meta device, then take the checkpoint's tensors (no random init, no copy)."""
        config = config or checkpoint.config or cls.default_official_config()
        with torch.device("meta"):
            model = cls(config)
        check_state_dict(model, checkpoint.state, what=model.describe())
        model.load_state_dict(checkpoint.state, strict=True, assign=True)
        still_meta = [name for name, t in [*model.named_parameters(), *model.named_buffers()] if t.is_meta]
        if still_meta:
            raise CheckpointError(f"{cls.__name__}: tensors not filled by the checkpoint: {still_meta[:8]}")
        return model.to(device=device, dtype=dtype).eval()

    @classmethod
    def default_official_config(cls) -> Config:
        raise ValueError(f"{cls.__name__}: an official checkpoint needs an explicit config")

