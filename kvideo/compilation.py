"""torch.compile of a model's repeated blocks: one compiled graph per block class and input shape, static shapes.

Compiling block by block (not the whole model) keeps the compile time to the distinct blocks: the levels of a
UNet repeat the same block at the same shapes, and each of those reuses one graph. Shapes are static
(`dynamic=False`): a new size or frame count compiles once more, which CUDA graphs and inductor's fixed-size
kernels need.
"""
from __future__ import annotations

import contextlib
import importlib.util
import os
import shutil
import sys
from typing import Iterator

import torch
from torch import nn

from kvideo.errors import MissingDependencyError

BACKEND = "inductor"  # torch.compile's backend for compile_blocks (tests trace with "eager", which compiles nothing)
MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")
RECOMPILE_LIMIT = 128  # graphs per block class: one per distinct shape (torch's default of 8 is too few for a UNet)


def check_compiler(device: str | torch.device) -> None:
    """torch.compile and the compiler its inductor backend needs on `device`, or one line naming what to install."""
    device = torch.device(device)
    dynamo = getattr(torch, "_dynamo", None)
    if not hasattr(torch, "compile") or dynamo is None or not dynamo.is_dynamo_supported():
        raise MissingDependencyError(
            f"--compile needs torch.compile, which torch {torch.__version__} does not support on Python "
            f"{sys.version_info.major}.{sys.version_info.minor}: install a torch release that does (pip install -U "
            "torch), or run without --compile")
    if BACKEND != "inductor":
        return
    if device.type == "cuda" and importlib.util.find_spec("triton") is None:
        raise MissingDependencyError("--compile on the GPU needs triton (inductor writes its kernels in it): "
                                     "pip install triton, or run without --compile")
    if device.type == "cpu" and cpp_compiler() is None:
        raise MissingDependencyError(
            f"--compile on the CPU needs a C++ compiler ({default_cxx()}; inductor builds its kernels with it): "
            "install one (e.g. apt-get install g++) or set CXX, or run without --compile")


def default_cxx() -> str:
    """The C++ compiler inductor calls on the CPU: $CXX, else g++ (clang++ on macOS)."""
    return os.environ.get("CXX") or ("clang++" if sys.platform == "darwin" else "g++")


def cpp_compiler() -> str | None:
    """The path of the C++ compiler inductor would call, or None when it is not installed."""
    return shutil.which(default_cxx())


def compile_blocks(model: nn.Module, classes: tuple[type[nn.Module], ...], *, mode: str = "default") -> int:
    """Compile, in place, every submodule of `model` that is an instance of `classes` (not those inside an
    already compiled one); the number compiled. The modules keep their names and weights (no `_orig_mod.`)."""
    if mode not in MODES:
        raise ValueError(f"compile mode {mode!r}: choose one of {MODES}")
    count = 0
    for module in blocks(model, classes):
        module.compile(backend=BACKEND, dynamic=False, **({} if BACKEND != "inductor" else {"mode": mode}))
        count += 1
    return count


def blocks(model: nn.Module, classes: tuple[type[nn.Module], ...]) -> Iterator[nn.Module]:
    """The outermost submodules of `model` that are instances of `classes`, in module order."""
    for child in model.children():
        if isinstance(child, classes):
            yield child
        else:
            yield from blocks(child, classes)


def is_compiled(module: nn.Module) -> bool:
    """Whether `nn.Module.compile` was called on `module`."""
    return getattr(module, "_compiled_call_impl", None) is not None


def to_channels_last(model: nn.Module) -> int:
    """Put the weights of every 2D convolution of `model` in channels-last memory order (their outputs follow);
    the number converted. The values and the results do not change, only the layout the kernels read."""
    convs = [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))]
    for conv in convs:
        conv.to(memory_format=torch.channels_last)
    return len(convs)


@contextlib.contextmanager
def compile_limits(enabled: bool = True) -> Iterator[None]:
    """Within the block, dynamo may compile up to RECOMPILE_LIMIT graphs per block class (one per shape)
    instead of torch's default 8, after which it would silently fall back to eager for new shapes."""
    if not enabled:
        yield
        return
    with torch._dynamo.config.patch(recompile_limit=RECOMPILE_LIMIT,
                                    accumulated_recompile_limit=16 * RECOMPILE_LIMIT):
        yield
