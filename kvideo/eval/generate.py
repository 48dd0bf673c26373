"""Benchmark generation: prompts from a dataset, one mp4 per prompt, a manifest, sharded and resumable."""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
from tqdm.auto import tqdm

from kvideo.checkpoint import atomic_path
from kvideo.eval.datasets import MANIFEST, VideoDataset
from kvideo.eval.distributed import Shard
from kvideo.export import write_video
from kvideo.generation.output import is_finished, remove_leftovers


@dataclass(frozen=True)
class PromptJob:
    """One video to generate: its prompt, the dataset entry it came from, and its own seed."""

    index: int
    prompt: str
    key: str
    seed: int

    @property
    def file(self) -> str:
        return f"{self.index:05d}.mp4"


def benchmark_prompts(dataset: VideoDataset, num_videos: int | None, seed: int = 0) -> list[PromptJob]:
    """UCF-101: class prompts of a seeded random draw of the split's videos (so classes follow the
    split's distribution), cycling when N exceeds it. Captioned sets: the first N captions in order."""
    items = dataset.items
    if any(not item.caption for item in items):
        raise ValueError(f"every video of the {dataset.name} set needs a caption to be used as a prompt")
    if dataset.name == "ucf101":
        n = num_videos or len(items)
        order = np.concatenate([np.random.default_rng([seed, r]).permutation(len(items)) for r in range(-(-n // len(items)))])
        chosen = [items[int(i)] for i in order[:n]]
    else:
        if num_videos is not None and num_videos > len(items):
            raise ValueError(f"num_videos={num_videos} but the {dataset.name} set has only {len(items)} captions")
        chosen = items[:num_videos] if num_videos else items
    return [PromptJob(i, item.caption, item.key, seed + i) for i, item in enumerate(chosen)]


def manifest_for(jobs: list[PromptJob], settings: dict[str, Any]) -> dict[str, Any]:
    videos = [{**asdict(job), "file": job.file} for job in jobs]
    return {"benchmark": settings.get("benchmark"), "settings": settings, "videos": videos}


def write_manifest(out_dir: Path, manifest: dict[str, Any], shard: Shard) -> None:
    """Rank 0 writes the manifest atomically; an existing one must describe the same run (resume). A folder
    without one must be empty: its videos would be counted as generated (every rank checks before any writes)."""
    path = out_dir / MANIFEST
    if path.exists():
        existing = read_own_manifest(path)
        if existing != manifest:
            raise ValueError(f"{str(path)!r} describes another run (other prompts or settings); "
                             "use a new --out folder, or delete it to start over")
        shard.barrier()
        return
    check_own_folder(out_dir)
    shard.barrier()  # every rank has looked before rank 0 writes
    if shard.is_main:
        with atomic_path(path) as tmp:
            tmp.write_text(json.dumps(manifest, indent=2) + "\n")
    shard.barrier()


def check_own_folder(out_dir: str | Path) -> None:
    """A folder without a manifest must be empty: its videos would be counted as generated (checked before any
    work; `write_manifest` checks an existing manifest against the run)."""
    out_dir = Path(out_dir)
    if (out_dir / MANIFEST).exists() or not out_dir.is_dir():
        return
    foreign = sorted(p for p in out_dir.iterdir() if not _is_temporary(p))
    if foreign:
        raise ValueError(f"{str(foreign[0])!r} was not written by kvideo eval generate ({str(out_dir)!r} has no "
                         f"{MANIFEST}); use a new or empty --out folder, nothing was changed")


def _is_temporary(path: Path) -> bool:
    """A temp file of a killed atomic write (`.NAME.<random>.tmp...`): removed or replaced, never adopted."""
    return path.name.startswith(".") and ".tmp" in path.name


def read_own_manifest(path: Path) -> Any:
    """The JSON of an existing manifest, or a one-line error naming it."""
    try:
        return json.loads(path.read_bytes().decode("utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"{str(path)!r} is not a manifest kvideo eval generate can read ({error}); "
                         "use a new --out folder") from None


def generate_videos(
    generator: Callable[..., Any], jobs: list[PromptJob], out_dir: str | Path, *, shard: Shard = Shard(),
    options: dict[str, Any] | None = None, progress: bool = True,
) -> dict[str, int]:
    """Generate this rank's share of `jobs` with `generator(prompt, seed=..., **options)` (an object
    with `.frames` uint8 (f, h, w, 3) and `.fps`); files that exist already are kept (resume)."""
    out_dir = Path(out_dir)
    counts = {"generated": 0, "existing": 0}
    mine = shard.take(jobs)
    for job in tqdm(mine, desc=f"generating (rank {shard.rank})", unit="video", disable=not progress):
        path = out_dir / job.file
        remove_leftovers(path)  # hidden temp files of a killed run
        if is_finished(path):  # a 0-byte or unreadable file is made again
            counts["existing"] += 1
            continue
        video = generator(job.prompt, seed=job.seed, **(options or {}))
        # atomic (no half-written file), and the same frames give the same bytes
        write_video(path, video.frames, video.fps, progress=False, reproducible=True)
        counts["generated"] += 1
    shard.barrier()
    return counts
