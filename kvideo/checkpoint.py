"""One loading path for weights: official pickles (weights_only) and safetensors, strict, atomic writes."""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Mapping

import torch
from safetensors import safe_open
from safetensors.torch import load_file as load_safetensors
from safetensors.torch import save_file
from torch import nn

from kvideo.errors import CheckpointError, OutputError, UnreadableCheckpointError  # noqa: F401 (re-exported)

FORMAT_VERSION = "1"
PICKLE_SUFFIXES = (".pt", ".pth", ".ckpt", ".bin")
TRUSTED_SOURCE_HINT = ("if it comes from a source you trust, open it with torch.load(path, weights_only=False) and "
                       "save its tensors again (torch.save(state_dict, 'clean.pt') or safetensors)")


# -- reading -----------------------------------------------------------------------------------
def _require_file(path: str | Path) -> Path:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {str(path)!r} does not exist (or is not a file)")
    return path


def read_metadata(path: str | Path) -> dict[str, str]:
    """The string metadata of a safetensors file ({} for pickles)."""
    path = _require_file(path)
    if path.suffix != ".safetensors":
        return {}
    try:
        with safe_open(str(path), "pt") as handle:
            return dict(handle.metadata() or {})
    except Exception as error:  # noqa: BLE001 (safetensors raises its own SafetensorError)
        raise unreadable(path, error) from error


def load_file(path: str | Path, *, finite: bool = True) -> tuple[dict[str, Any], dict[str, str]]:
    """Read a checkpoint: `(contents, metadata)`.

    `.safetensors` files give a flat tensor dict and their metadata; official pickles
    (`.pt`, ...) are opened with `torch.load(weights_only=True)` and may nest dicts. With `finite`
    (the default) a floating tensor holding nan or inf is an error naming it: such weights only
    ever give black videos or nan losses.
    """
    path = _require_file(path)
    if path.suffix == ".safetensors":
        metadata = read_metadata(path)
        try:
            contents = load_safetensors(str(path))
        except Exception as error:  # noqa: BLE001
            raise unreadable(path, error) from error
    elif path.suffix in PICKLE_SUFFIXES:
        contents = load_pickle(path)
        if not isinstance(contents, Mapping):
            raise CheckpointError(f"{str(path)!r} holds a {type(contents).__name__}, not a state dict")
        contents, metadata = dict(contents), {}
    else:
        raise UnreadableCheckpointError(
            f"cannot read {str(path)!r}: unknown extension {path.suffix!r}; "
            f"expected .safetensors or one of {PICKLE_SUFFIXES}"
        )
    if finite:
        check_finite_tensors(contents, what=repr(str(path)))
    return contents, metadata


def check_finite_tensors(contents: Mapping[str, Any], *, what: str, prefix: str = "") -> None:
    """Raise UnreadableCheckpointError naming the first floating tensor (nested dicts walked) holding nan or
    inf; one `torch.isfinite(t).all()` per tensor."""
    for key, value in contents.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            check_finite_tensors(value, what=what, prefix=f"{name}.")
        elif torch.is_tensor(value) and value.is_floating_point() and not bool(torch.isfinite(value).all()):
            kind = "nan" if bool(torch.isnan(value).any()) else "inf"
            raise UnreadableCheckpointError(f"{what} holds {kind} values in tensor {name!r}; the weights are "
                                            "damaged or come from a diverged training run: use another checkpoint")


def check_tensor_tree(contents: Mapping[Any, Any], *, what: str, prefix: str = "", values: bool = True) -> None:
    """Raise CheckpointError unless every key (nested mappings walked) is a name and, with `values`, every value a
    tensor or a mapping of them: the shape of a state dict. Official files may hold other values beside their
    tensors (an epoch count): check their names first, and the values of the state taken out of them."""
    for key, value in contents.items():
        if not isinstance(key, str):
            inside = f" inside {prefix[:-1]!r}" if prefix else ""
            raise CheckpointError(f"{what} is not a state dict: it holds the key {key!r} (an {type(key).__name__})"
                                  f"{inside}, where a state dict names its tensors with strings")
        if isinstance(value, Mapping):
            check_tensor_tree(value, what=what, prefix=f"{prefix}{key}.", values=values)
        elif values and not torch.is_tensor(value):
            raise CheckpointError(f"{what} is not a state dict: its entry {prefix + key!r} holds "
                                  f"{_short(value)} ({type(value).__name__}), not a tensor")


def _short(value: Any, limit: int = 40) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit - 3] + "..."


def load_pickle(path: str | Path) -> Any:
    """`torch.load(weights_only=True)` on the CPU (memory-mapped when the file allows); any file it
    refuses or cannot parse raises UnreadableCheckpointError naming the file."""
    try:
        return torch.load(str(path), map_location="cpu", weights_only=True, mmap=True)
    except Exception:  # noqa: BLE001 (mmap needs the zip format; old-format files load without it)
        pass
    try:
        return torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 (torch raises many types for a bad file)
        raise unreadable(path, error) from error


def unreadable(path: str | Path, error: BaseException) -> UnreadableCheckpointError:
    """The one message for a file kvideo cannot read as a checkpoint, with the reason and the way out."""
    lines = [line.strip() for line in str(error).strip().splitlines() if line.strip()]
    found = next((line for line in lines if "unsupported global" in line.lower()), None)
    if found is not None:  # a real pickle that holds Python objects: loading it would run code
        reason = f"torch.load(weights_only=True) refuses it: {found}"
        return UnreadableCheckpointError(f"{str(path)!r} is not a checkpoint kvideo can read ({reason}); "
                                         f"{TRUSTED_SOURCE_HINT}")
    detail = next((line for line in lines if "Unsupported operand" in line), lines[0] if lines else "")
    detail = "not a pickle torch can read" if detail.startswith("Weights only load failed") else detail
    detail = (detail or type(error).__name__)[:160]
    if Path(path).suffix == ".safetensors":
        reason, way_out = f"a damaged or truncated safetensors file: {detail}", "download or copy it again"
    else:
        reason = f"neither safetensors nor a PyTorch pickle that torch.load(weights_only=True) accepts: {detail}"
        way_out = f"download or copy it again; {TRUSTED_SOURCE_HINT}"
    return UnreadableCheckpointError(f"{str(path)!r} is not a checkpoint kvideo can read ({reason}); {way_out}")


def sub_state_dict(state: Mapping[str, Any], prefix: str) -> dict[str, Any]:
    """Entries under `prefix.` with the prefix removed (`prefix` may be nested dicts too)."""
    if prefix in state and isinstance(state[prefix], Mapping):
        return dict(state[prefix])
    dotted = prefix + "."
    return {k[len(dotted):]: v for k, v in state.items() if k.startswith(dotted)}


# -- writing -----------------------------------------------------------------------------------
def check_writable_folder(folder: str | Path, *, what: str) -> None:
    """Raise OutputError, before any work, unless files can be created in `folder` (or, when it does not
    exist yet, in the nearest folder above it, where it will be made)."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise OutputError(f"{what} {str(folder)!r} is a file, not a folder")
    existing = next(p for p in (folder.absolute(), *folder.absolute().parents) if p.exists())
    if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        raise OutputError(f"{what} {str(folder)!r} cannot be written ({str(existing)!r} is not a writable folder)")


def check_replaceable(path: str | Path, *, what: str) -> None:
    """Raise OutputError, before any work, when a file already at `path` is read-only or immutable (`chattr +i`):
    the finished output could not take its place at the end."""
    path = Path(path)
    if path.is_file() and not os.access(path, os.W_OK):
        raise OutputError(f"{what} {str(path)!r} exists and cannot be replaced (it is read-only or immutable); "
                          "remove it or make it writable, or write elsewhere")


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside `path`; it replaces `path` only if the block succeeds."""
    path = Path(path)
    if not path.parent.is_dir():
        raise FileNotFoundError(f"output folder {str(path.parent)!r} does not exist")
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=temp_prefix(path, ".tmp" + path.suffix),
                               suffix=".tmp" + path.suffix)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.chmod(tmp_path, 0o666 & ~current_umask())  # mkstemp makes 0600 files; outputs get the usual mode
        try:
            os.replace(tmp_path, path)
        except OSError as error:  # named by the output, not by the temporary file that is removed below
            raise OutputError(f"{str(path)!r} cannot be replaced ({error.strerror or error}); the finished output "
                              "was discarded: remove the file there or choose another name") from None
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


NAME_MAX = 255  # bytes of one file name on the usual file systems (ext4, xfs, btrfs, APFS, NTFS)


def temp_prefix(path: Path, suffix: str) -> str:
    """`.NAME.`, the prefix of `path`'s temporary files, NAME cut so that prefix + 8 random characters +
    `suffix` stay within NAME_MAX bytes (a legal 250-byte output name must not fail after the work)."""
    budget = NAME_MAX - len(suffix.encode()) - 8 - 2
    name = path.name.encode()[:budget].decode(errors="ignore")
    return f".{name}."


def current_umask() -> int:
    """The process umask (read without changing it)."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


def save_safetensors(path: str | Path, tensors: Mapping[str, torch.Tensor], metadata: Mapping[str, Any]) -> None:
    """Write tensors atomically; metadata values that are not strings are stored as JSON."""
    meta = {"kvideo_format": FORMAT_VERSION}
    meta.update({k: v if isinstance(v, str) else json.dumps(v) for k, v in metadata.items()})
    flat = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    with atomic_path(path) as tmp:
        try:
            save_file(flat, str(tmp), metadata=meta)
        except Exception as error:  # noqa: BLE001 (safetensors wraps the OSError in its own SafetensorError)
            if not isinstance(error, OSError) and "I/O error" not in str(error):
                raise
            raise write_failed(path, error) from None


def write_failed(path: str | Path, error: BaseException) -> OutputError:
    """The one message for an output the disk would not take (full, a file-size limit): the final name (not the
    temporary one, which is removed), the reason and the space left there."""
    reason = next((line.strip() for line in str(error).splitlines() if line.strip()), type(error).__name__)
    free = shutil.disk_usage(Path(path).absolute().parent).free / 2**20
    return OutputError(f"writing {str(path)!r} failed ({reason[:160]}; {free:.0f} MiB free there); nothing was "
                       "written at that name")


# -- key renames -------------------------------------------------------------------------------
@dataclass(frozen=True)
class KeyRenames:
    """Renames between an official checkpoint's key names and kvideo's, in one table.

    Each rule `(official, kvideo)` swaps a run of whole dotted segments, e.g.
    `("temporal_projection", "temporal.conv")` maps `a.3.temporal_projection.weight` to
    `a.3.temporal.conv.weight` and back; the first matching rule wins.
    """

    rules: tuple[tuple[str, str], ...] = ()

    def to_kvideo(self, key: str) -> str:
        return self._apply(key, 0, 1)

    def to_official(self, key: str) -> str:
        return self._apply(key, 1, 0)

    def _apply(self, key: str, src: int, dst: int) -> str:
        dotted = f".{key}."
        for rule in self.rules:
            if f".{rule[src]}." in dotted:
                return dotted.replace(f".{rule[src]}.", f".{rule[dst]}.", 1)[1:-1]
        return key

    def state_to_kvideo(self, state: Mapping[str, Any]) -> dict[str, Any]:
        return {self.to_kvideo(k): v for k, v in state.items()}

    def state_to_official(self, state: Mapping[str, Any]) -> dict[str, Any]:
        return {self.to_official(k): v for k, v in state.items()}


# -- strict loading ----------------------------------------------------------------------------
def _shorten(items: list[str], limit: int = 12) -> str:
    shown = ", ".join(items[:limit])
    return shown + (f", ... ({len(items) - limit} more)" if len(items) > limit else "")


def check_state_dict(module: nn.Module, state: Mapping[str, torch.Tensor], *, what: str) -> None:
    """Raise CheckpointError listing missing / unexpected keys and shape mismatches."""
    check_keys(module.state_dict(), state, what=what)


def check_keys(expected: Mapping[str, torch.Tensor], state: Mapping[str, torch.Tensor], *, what: str) -> None:
    """Like `check_state_dict`, against an explicit `{key: tensor}` of what is expected."""
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    mismatched = sorted(
        f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(expected[k].shape)}"
        for k in set(expected) & set(state)
        if tuple(state[k].shape) != tuple(expected[k].shape)
    )
    if not (missing or unexpected or mismatched):
        return
    lines = [f"the checkpoint does not fit {what}:"]
    if missing:
        lines.append(f"  missing keys ({len(missing)}): {_shorten(missing)}")
    if unexpected:
        lines.append(f"  unexpected keys ({len(unexpected)}): {_shorten(unexpected)}")
    if mismatched:
        lines.append(f"  shape mismatches ({len(mismatched)}): {_shorten(mismatched, 6)}")
    hint = guess_checkpoint_kind(state)
    if hint:
        lines.append(f"  (the keys look like {hint})")
    raise CheckpointError("\n".join(lines))


def load_state_dict_strict(module: nn.Module, state: Mapping[str, torch.Tensor], *, what: str) -> None:
    check_state_dict(module, state, what=what)
    module.load_state_dict(state, strict=True)


def guess_checkpoint_kind(state: Mapping[str, Any]) -> str | None:
    """A human hint of what a state dict holds, for error messages."""
    keys = set(state)
    if any(k.startswith("encoder.") for k in keys) and any(k.startswith("decoder.") for k in keys):
        temporal = any("temporal" in k for k in keys)
        return "a video MoVQ checkpoint" if temporal else "an image MoVQ checkpoint"
    if any("skip_embeddings" in k or ".temporal.conv." in k or "temporal_projection" in k for k in keys):
        return "an interpolation UNet checkpoint"
    if any("temporal_resnet_blocks" in k for k in keys):
        return "a keyframe UNet checkpoint"
    if any(k.startswith("down_samples.") for k in keys):
        return "a 2D Kandinsky 3.0 UNet checkpoint"
    if any(k.startswith("Conv3d_1a") or k.startswith("Mixed_") for k in keys):
        return "an I3D checkpoint"
    return None
