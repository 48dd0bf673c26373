"""Write every named config preset to `configs/<family>-<preset>.json` (run: python -m kvideo.presets)."""
from __future__ import annotations

import argparse
import importlib
from pathlib import Path

# family prefix -> "module:ConfigClass"
FAMILIES = {
    "unet": "kvideo.models.unet:UNetConfig",
    "movq": "kvideo.models.movq:MoVQConfig",
}


def config_classes():
    for family, target in FAMILIES.items():
        module, _, name = target.partition(":")
        yield family, getattr(importlib.import_module(module), name)


def write_presets(folder: Path) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for family, cls in config_classes():
        for preset in cls.presets():
            path = folder / f"{family}-{preset}.json"
            path.write_text(cls.preset(preset).to_json(indent=2) + "\n")
            written.append(path)
    return written


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("folder", nargs="?", default="configs", type=Path)
    for path in write_presets(parser.parse_args().folder):
        print(path)


if __name__ == "__main__":
    main()
