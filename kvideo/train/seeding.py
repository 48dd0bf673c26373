"""Reproducible randomness: a generator per (seed, step, rank, ...) so resumed runs draw the same numbers."""
from __future__ import annotations

import hashlib
import random

import torch


def mix_seed(*keys: int) -> int:
    """A 63-bit seed from integer keys, stable across processes and Python versions."""
    digest = hashlib.sha256(",".join(str(int(k)) for k in keys).encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def seeded_generator(*keys: int, device: str | torch.device = "cpu") -> torch.Generator:
    return torch.Generator(device=device).manual_seed(mix_seed(*keys))


def rng_state() -> dict:
    """Global RNG states (torch CPU, CUDA when present, Python), for training checkpoints."""
    state = {"torch": torch.get_rng_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
