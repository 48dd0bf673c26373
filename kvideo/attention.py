"""Attention kernels behind one function: PyTorch SDPA (default), xformers, or the reference math."""
from __future__ import annotations

import contextlib
import threading
from typing import Iterator

import torch
import torch.nn.functional as F

BACKENDS = ("sdpa", "xformers", "math")
_state = threading.local()


def get_backend() -> str:
    return getattr(_state, "backend", "sdpa")


def set_backend(name: str) -> None:
    """Choose the attention kernel for this thread: 'sdpa' (default), 'xformers' or 'math'."""
    if name not in BACKENDS:
        raise ValueError(f"unknown attention backend {name!r}; choose one of {BACKENDS}")
    if name == "xformers":
        _import_xformers()
    _state.backend = name


@contextlib.contextmanager
def backend(name: str) -> Iterator[None]:
    """`with kvideo.attention.backend('math'): ...` switches the kernel inside the block."""
    previous = get_backend()
    set_backend(name)
    try:
        yield
    finally:
        _state.backend = previous


def _import_xformers():
    try:  # xformers is an optional extra (kvideo[xformers])
        import xformers.ops as xops
    except ImportError as error:  # pragma: no cover - depends on the environment
        raise ImportError(
            "the 'xformers' attention backend needs xformers: pip install 'kvideo[xformers]'"
        ) from error
    return xops


def attention(
    query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, key_mask: torch.Tensor | None = None
) -> torch.Tensor:
    """Scaled dot-product attention with scale head_dim^-0.5.

    query (b, h, n, d), key/value (b, h, m, d), key_mask (b, m) bool: True = attend.
    Returns (b, h, n, d).
    """
    name = get_backend()
    if name == "math":
        return _math_attention(query, key, value, key_mask)
    mask = None if key_mask is None else key_mask[:, None, None, :]
    if name == "xformers" and query.is_cuda:
        return _xformers_attention(query, key, value, mask)
    return F.scaled_dot_product_attention(query, key, value, attn_mask=mask)


def _math_attention(query, key, value, key_mask):
    """The reference formulation: masked entries filled with -finfo.max before softmax."""
    scores = torch.einsum("bhid,bhjd->bhij", query, key) * query.shape[-1] ** -0.5
    if key_mask is not None:
        scores = scores.masked_fill(~key_mask[:, None, None, :], -torch.finfo(scores.dtype).max)
    return torch.einsum("bhij,bhjd->bhid", scores.softmax(dim=-1), value)


def _xformers_attention(query, key, value, mask):  # pragma: no cover - needs CUDA + xformers
    xops = _import_xformers()
    bias = None
    if mask is not None:
        bias = torch.zeros(mask.shape, dtype=query.dtype, device=query.device)
        bias = bias.masked_fill(~mask, float("-inf")).expand(-1, query.shape[1], query.shape[2], -1)
    out = xops.memory_efficient_attention(
        query.transpose(1, 2), key.transpose(1, 2), value.transpose(1, 2), attn_bias=bias
    )
    return out.transpose(1, 2)
