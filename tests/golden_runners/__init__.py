"""Golden-file runners: one module per golden `kind`, each exposing `KIND` and `run(golden)`.

A runner builds the module from the file's metadata through kvideo's public API, loads the
weights the way an official checkpoint is loaded, performs the call the metadata describes
and returns `{name: tensor}` for the file's expected tensors (`out.<name>` or a plain key).
"""
from __future__ import annotations

import importlib
import json
import pkgutil
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch


@dataclass
class GoldenFile:
    path: Path
    metadata: dict[str, str]
    tensors: dict[str, torch.Tensor] = field(repr=False)

    @classmethod
    def load(cls, path: Path) -> "GoldenFile":
        from safetensors import safe_open
        from safetensors.torch import load_file

        with safe_open(str(path), "pt") as handle:
            metadata = dict(handle.metadata() or {})
        return cls(Path(path), metadata, load_file(str(path)))

    @property
    def kind(self) -> str:
        return self.metadata.get("kind", "<missing kind>")

    @property
    def config(self) -> dict:
        return json.loads(self.metadata["config"])

    def _prefixed(self, prefix: str) -> dict[str, torch.Tensor]:
        return {k[len(prefix):]: v for k, v in self.tensors.items() if k.startswith(prefix)}

    @property
    def inputs(self) -> dict[str, torch.Tensor]:
        return self._prefixed("in.")

    @property
    def outputs(self) -> dict[str, torch.Tensor]:
        return self._prefixed("out.")

    @property
    def checkpoint(self) -> dict[str, torch.Tensor]:
        """The file as the official checkpoint would hold it: `state.` keys plus the rest."""
        return {
            k.removeprefix("state."): v
            for k, v in self.tensors.items()
            if not k.startswith(("in.", "out."))
        }

    def official_contents(self) -> dict:
        """The checkpoint nested as the official file holds it, read from the `checkpoint`
        metadata (e.g. "state.* = checkpoint['unet']; projections.* = checkpoint['projections']")."""
        flat = self.checkpoint
        nests = dict(re.findall(r"(\w+)\.\* = checkpoint\['(\w+)'\]", self.metadata.get("checkpoint", "")))
        contents: dict = {}
        for key, value in flat.items():
            head, _, rest = key.partition(".")
            original = "state" if ("state." + key) in self.tensors else head
            target = nests.get(original)
            if target is None:
                contents[key] = value
            else:
                contents.setdefault(target, {})[key if original == "state" else rest] = value
        return contents

    def write_official(self, directory: Path, name: str = "checkpoint.pt") -> Path:
        """Save `official_contents()` as a pickle, to be loaded like the real file."""
        path = Path(directory) / name
        torch.save(self.official_contents(), path)
        return path

    def expected(self, name: str) -> torch.Tensor:
        return self.tensors.get(f"out.{name}", self.tensors.get(name))


def load_runners() -> dict[str, Callable[[GoldenFile], dict[str, torch.Tensor]]]:
    runners = {}
    for info in pkgutil.iter_modules([str(Path(__file__).parent)]):
        module = importlib.import_module(f"{__name__}.{info.name}")
        if hasattr(module, "KIND"):
            runners[module.KIND] = module.run
    return runners
