"""Argument types shared by every kvideo command: strict booleans, finite floats, integers."""
from __future__ import annotations

import argparse
import math


def parse_bool(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def parse_float(text: str) -> float:
    """A finite number (nan and inf are refused before any work)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    return value


def parse_int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None



MAX_SEED = 2**63 - 1  # torch and numpy take seeds as signed 64-bit integers


def parse_seed(text: str) -> int:
    """A whole number in [0, 2**63 - 1] (larger ones overflow torch's generators after the model has loaded)."""
    value = parse_int(text)
    if not 0 <= value <= MAX_SEED:
        raise argparse.ArgumentTypeError(f"expected a seed in [0, 2**63 - 1], got {text!r}")
    return value
