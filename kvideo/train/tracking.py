"""Training logs: JSONL lines (loss, lr, samples/s, memory) on rank 0, TensorBoard when it is installed."""
from __future__ import annotations

import json
import resource
import sys
import time
from pathlib import Path
from typing import Any, Callable

import torch

from kvideo.checkpoint import atomic_path
from kvideo.errors import BadDataError

LOG_FILE = "log.jsonl"


def peak_memory_gb(device: torch.device) -> float:
    """Peak allocated GPU memory, or the process's peak resident memory on the CPU, in GiB."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30
    scale = 1 if sys.platform == "darwin" else 1024  # ru_maxrss: bytes on macOS, KiB on Linux
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale / 2**30


class TrainLog:
    """Appends one JSON object per logged step to `<output_dir>/log.jsonl` (only where `enabled`)."""

    def __init__(self, output_dir: str | Path, *, enabled: bool, tensorboard: bool) -> None:
        self.enabled = enabled
        self.path = Path(output_dir) / LOG_FILE
        self.writer = self._tensorboard(Path(output_dir)) if enabled and tensorboard else None
        self.started = time.time()

    @staticmethod
    def _tensorboard(output_dir: Path):
        try:  # tensorboard is an optional extra (kvideo[train]): the JSONL log is written without it
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            print("kvideo train: TensorBoard logs are off (pip install 'kvideo[train]' or tensorboard to get them); "
                  "the JSONL log is written either way", file=sys.stderr)
            return None
        return SummaryWriter(str(output_dir / "tensorboard"))

    def drop_after(self, step: int) -> None:
        """Forget lines of steps after `step` (a resumed run redoes them), and a torn last line (a killed write)."""
        if self.enabled and self.path.exists():
            records = parse_log(self.path, report=lambda m: print(f"kvideo train: {m}", file=sys.stderr))
            kept = [json.dumps(r) for r in records if r["step"] <= step]
            with atomic_path(self.path) as tmp:
                tmp.write_text("".join(line + "\n" for line in kept))

    def write(self, step: int, values: dict[str, Any]) -> None:
        if not self.enabled:
            return
        record = {"step": step, **values, "time": round(time.time() - self.started, 3)}
        with self.path.open("a") as handle:
            handle.write(json.dumps(record) + "\n")
        if self.writer is not None:
            for name, value in values.items():
                if isinstance(value, (int, float)):
                    self.writer.add_scalar(f"train/{name}", value, step)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def read_log(output_dir: str | Path) -> list[dict[str, Any]]:
    """The records of a run's log.jsonl ([] without one); a torn last line is left out."""
    path = Path(output_dir) / LOG_FILE
    return parse_log(path) if path.exists() else []


def parse_log(path: Path, report: Callable[[str], None] | None = None) -> list[dict[str, Any]]:
    """Each line of a JSONL log as a record with a whole-number "step". A last line that does not parse was
    torn by a killed write: left out (and `report`ed); any other bad line is an error naming the file and line."""
    lines = path.read_bytes().split(b"\n")
    while lines and not lines[-1].strip():
        lines.pop()
    records = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as error:
            if number == len(lines):
                if report is not None:
                    report(f"dropped the torn last line {number} of {str(path)!r} (a killed write: {error})")
                break
            raise BadDataError(f"{str(path)!r} line {number} is not a JSON log record ({error}); move the log "
                               "away to start it again") from None
        if not isinstance(record, dict) or isinstance(record.get("step"), bool) or \
                not isinstance(record.get("step"), int):
            raise BadDataError(f"{str(path)!r} line {number} is not a log record with a whole-number step")
        records.append(record)
    return records
