"""Weights folders: which release a folder holds, its files, the built-in models and the model card (model.json)."""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import torch

from kvideo.checkpoint import load_file
from kvideo.generation.options import FIELDS, KEYFRAMES, check_memory, check_release, resolve_options
from kvideo.models.movq import MoVQConfig
from kvideo.models.unet import UNetConfig

BUILTIN_MODELS = ("shapes",)  # models shipped in the package, loadable by name
TINY = "tiny"  # not a folder: the random tiny preset (`open_pipeline("tiny")`)
MODEL_CARD = "model.json"
# The tiny preset's card: small and quick, it only shows that every stage runs.
TINY_CARD = {"name": TINY, "generation": {"width": 64, "height": 64, "steps": 10}}

# Files of each release's weights folder: official names first, kvideo conversions second.
WEIGHT_FILES = {
    "1.0": {
        "keyframe": ("kandinsky_video.pt", "keyframe_unet.safetensors"),
        "interpolation": ("kandinsky_video_interpolation.pt", "interpolation_unet.safetensors"),
        "decoder": ("video_movq.pt", "video_movq.safetensors"),
        "text_encoder": ("text_encoder",),
    },
    "1.1": {
        "keyframe": ("t2v.pt", "t2v.safetensors"),
        "interpolation": ("interpolation.pt", "interpolation.safetensors"),
        "projections": ("t5_projections.pt",),
        "movq": ("movq.pt", "movq.safetensors"),
        "decoder": ("video_movq.pt", "video_movq.safetensors"),
        "text_encoder": ("text_encoder",),
    },
}
CONFIGS_FILE = "configs.json"  # the 1.1 release's model configs
# configs.json entry -> (its model, the kind a 1.1 UNet entry builds)
CONFIG_ENTRIES = {"keyframe": ("t2v", "keyframe"), "interpolation": ("interpolation", "interpolation"),
                  "movq": ("image_movq", None), "decoder": ("video_movq", None)}


def builtin_model_dir(name: str) -> Path:
    """The folder of a model shipped inside the package (`kvideo/weights/<name>`)."""
    return Path(__file__).resolve().parent.parent / "weights" / name


def resolve_weights(weights: str | Path) -> Path:
    """A weights folder, or the folder of the built-in model `weights` names ("shapes")."""
    if str(weights) in BUILTIN_MODELS and not Path(weights).exists():
        folder = builtin_model_dir(str(weights))
        if not (folder / MODEL_CARD).is_file():
            raise FileNotFoundError(f"the built-in {weights!r} model is missing from this installation "
                                    f"({str(folder)!r}); reinstall kvideo or train it: kvideo recipe {weights} OUT")
        return folder
    return Path(weights)


def is_kv11_folder(folder: str | Path) -> bool:
    """Whether a weights folder holds release 1.1 files (`t2v.pt` or its conversion)."""
    folder = Path(folder)
    return any((folder / name).exists() for name in WEIGHT_FILES["1.1"]["keyframe"])


def release_of(weights: str | Path) -> str:
    """The release whose pipeline runs a weights folder (or a built-in model): "1.1" or "1.0"."""
    return "1.1" if is_kv11_folder(resolve_weights(weights)) else "1.0"


def find_weights(weights_dir: str | Path, release: str = "1.0") -> dict[str, Path]:
    """The path of each part of a weights folder: the first of its accepted file names that exists."""
    folder = Path(weights_dir)
    what = "weights folder" if release == "1.0" else f"{release} weights folder"
    if not folder.is_dir():
        raise FileNotFoundError(f"{what} {str(folder)!r} does not exist")
    found, missing = {}, []
    for part, names in WEIGHT_FILES[release].items():
        hit = next((folder / n for n in names if (folder / n).exists()), None)
        if hit is None:
            missing.append(" or ".join(names))
        else:
            found[part] = hit
    if missing:
        raise FileNotFoundError(f"{what} {str(folder)!r} lacks: {'; '.join(missing)}")
    return found


# -- the model card --------------------------------------------------------------------------------
def model_card(weights: str | Path) -> dict:
    """The card of a weights folder, a built-in model or the tiny preset; {} for folders without one."""
    if str(weights) == TINY:
        return TINY_CARD
    return read_model_card(resolve_weights(weights))


def read_model_card(folder: str | Path, release: str | None = None) -> dict:
    """The folder's `model.json` (name, description, prompt grammar, generation defaults), or {}."""
    path = Path(folder) / MODEL_CARD
    if not path.is_file():
        return {}
    try:
        card = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"{str(path)!r} is not valid JSON: {error}") from error
    if not isinstance(card, dict) or not isinstance(card.get("generation", {}), dict):
        raise ValueError(f"{str(path)!r} must hold an object whose 'generation' entry is an object")
    check_card(card, path, release or ("1.1" if is_kv11_folder(folder) else "1.0"))
    return card


def check_card(card: dict, path: Path, release: str = "1.0") -> None:
    """A model card's generation defaults and prompt grammar, checked when it is read (not mid-generation)."""
    generation = card.get("generation", {})
    known = set(FIELDS) - {"seed"}
    unknown = sorted(set(generation) - known)
    if unknown:
        raise ValueError(f"{str(path)!r}: unknown generation key(s) {unknown}; known: {sorted(known)}")
    try:
        check_release(release, generation)
        check_memory(resolve_options(release, generation), KEYFRAMES[release])
    except (TypeError, ValueError) as error:
        raise ValueError(f"{str(path)!r}: a bad generation default: {error}") from None
    pattern, words = card.get("prompt_pattern"), card.get("prompt_words", {})
    try:
        re.compile(pattern) if pattern is not None else None
    except (re.error, TypeError) as error:
        raise ValueError(f"{str(path)!r}: prompt_pattern {pattern!r} is not a regular expression ({error})") from None
    if not isinstance(words, dict) or not all(isinstance(v, list) and all(isinstance(w, str) for w in v)
                                              for v in words.values()):
        raise ValueError(f"{str(path)!r}: prompt_words must map each slot to a list of words, e.g. "
                         '{"color": ["red", "green"]}')


# -- release 1.1 files ------------------------------------------------------------------------------
def read_configs(weights_dir: str | Path, paths: dict[str, Path]) -> dict[str, Any]:
    """Model configs from the 1.1 release's configs.json, for the official (pickle) files among `paths`."""
    official = [part for part in CONFIG_ENTRIES if paths[part].suffix != ".safetensors"]
    if not official:
        return {}
    path = Path(weights_dir) / CONFIGS_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{str(path)!r} does not exist: the official 1.1 files need the release's "
                                f"{CONFIGS_FILE} for their model configs")
    try:
        entries = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise ValueError(f"{str(path)!r} is not valid JSON: {error}") from None
    configs = {}
    for part in official:
        entry, kind = CONFIG_ENTRIES[part]
        if entry not in entries:
            raise ValueError(f"{str(path)!r} has no {entry!r} entry (found {sorted(entries)})")
        kwargs = entries[entry].get("configs", entries[entry])  # the release nests them under "configs"
        configs[part] = (UNetConfig.from_reference(kwargs, release="1.1", kind=kind) if kind
                         else MoVQConfig.from_reference(kwargs))
    return configs


def read_projection(path: Path) -> dict[str, torch.Tensor]:
    """The text projection of `t5_projections.pt` that the release uses for every stage ('projection_base')."""
    contents, _ = load_file(path)
    if "projection_base" not in contents:
        raise ValueError(f"{str(path)!r} has no 'projection_base' entry (found {sorted(contents)[:6]}); "
                         "is it the release's t5_projections.pt?")
    return {f"t5.{k}": v for k, v in contents["projection_base"].items()}
