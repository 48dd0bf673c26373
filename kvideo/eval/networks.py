"""The detector networks' shared base: a file without a config gets the one its weights' shapes show."""
from __future__ import annotations

from typing import Any

from kvideo.config import Config
from kvideo.models.base import Checkpoint, PretrainedModel


class DetectorNetwork(PretrainedModel):
    """I3D, C3D and VideoMAE-v2: circulating files carry weights only, so `config_class.from_state_dict`
    reads the architecture from their shapes."""

    @classmethod
    def from_checkpoint(cls, checkpoint: Checkpoint, config: Config | None = None, **kwargs: Any):
        config = config or checkpoint.config or cls.config_class.from_state_dict(checkpoint.state)
        return super().from_checkpoint(checkpoint, config, **kwargs)
