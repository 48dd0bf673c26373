"""How many CPU threads torch uses in a kvideo command: --threads, else OMP_NUM_THREADS, else the usable cores."""
from __future__ import annotations

import os

THREADS_ENV = "OMP_NUM_THREADS"


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity, which containers and `taskset` narrow)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def choose_threads(requested: int | None = None) -> int | None:
    """`requested` if given; None when OMP_NUM_THREADS is set (torch already follows it); else the usable cores."""
    if requested is not None:
        if requested < 1:
            raise ValueError(f"threads={requested}: must be an integer >= 1")
        return requested
    if os.environ.get(THREADS_ENV, "").strip():
        return None
    return usable_cores()


def set_threads(requested: int | None = None) -> int:
    """Set torch's intra-op thread count as `choose_threads` says; returns the count torch now uses."""
    import torch  # seconds to import: kvideo.errors imports this module; parsing configs and flags needs no torch

    count = choose_threads(requested)
    if count is not None:
        torch.set_num_threads(count)
    return torch.get_num_threads()
