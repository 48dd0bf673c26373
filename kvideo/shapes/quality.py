"""Quality of a shapes model, measured: prompts from the grammar -> generated clips -> the shapes scorer.

`measure_quality` generates `prompts` captions x `seeds` seeds (fps medium by default) into a folder
with a `captions.csv`, resumably, and returns the scorer's report. `temporal_off` gives the variant of a
keyframe UNet whose temporal layers are switched off (each keyframe then drawn on its own).
"""
from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import numpy as np

from kvideo.checkpoint import atomic_path
from kvideo.eval.generate import PromptJob, generate_videos
from kvideo.shapes.grammar import all_captions

QUALITY_BAR = {"object_color": 0.90, "background": 0.95, "direction": 0.80, "shape": 0.70, "found": 0.95}


def quality_prompts(num_prompts: int = 96, seed: int = 0) -> list[str]:
    """`num_prompts` distinct captions of the grammar, a seeded draw (the first ones of one permutation)."""
    captions = [c.text for c in all_captions()]
    if not 1 <= num_prompts <= len(captions):
        raise ValueError(f"num_prompts={num_prompts}: choose 1..{len(captions)} (the grammar has {len(captions)})")
    order = np.random.default_rng(seed).permutation(len(captions))
    return [captions[i] for i in order[:num_prompts]]


def quality_jobs(prompts: list[str], seeds: int = 2, first_seed: int = 0) -> list[PromptJob]:
    """Every prompt with `seeds` seeds: job i has seed first_seed + i."""
    if seeds < 1:
        raise ValueError(f"seeds={seeds} must be >= 1")
    pairs = [(p, s) for s in range(seeds) for p in prompts]
    return [PromptJob(i, prompt, f"seed{s}", first_seed + i) for i, (prompt, s) in enumerate(pairs)]


def write_captions(folder: Path, jobs: list[PromptJob]) -> Path:
    path = folder / "captions.csv"
    with atomic_path(path) as tmp:
        with tmp.open("w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["path", "caption", "seed"])
            writer.writerows([job.file, job.prompt, job.seed] for job in jobs)
    return path


def measure_quality(pipe, out: str | Path, *, prompts: int = 96, seeds: int = 2, progress: bool = True,
                    **options: Any) -> dict[str, Any]:
    """Generate the quality set with `pipe` into `out` (existing clips are kept) and score it."""
    from kvideo.shapes.score import score_folder

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    jobs = quality_jobs(quality_prompts(prompts), seeds)
    captions = write_captions(out, jobs)
    generate_videos(pipe, jobs, out, options={"fps": "medium", **options}, progress=progress)
    report = score_folder(out, captions)
    report["settings"] = {"prompts": prompts, "seeds": seeds, **options}
    with atomic_path(out / "report.json") as tmp:
        tmp.write_text(json.dumps(report, indent=1))
    return report


def passes_bar(totals: dict[str, float]) -> dict[str, bool]:
    """Which of the issue's quality thresholds `totals` (fractions) meet."""
    return {name: totals[name] >= bar for name, bar in QUALITY_BAR.items()}


def temporal_off(unet):
    """A copy of a keyframe UNet with its temporal layers back at their identity initialisation:
    every keyframe is denoised as an independent image by the spatial weights."""
    from kvideo.models.unet import UNet

    temporal_keys = set(unet.temporal_state_dict())
    spatial = {k: v for k, v in unet.state_dict().items() if k not in temporal_keys}
    return UNet.inflate(spatial, unet.config).to(next(unet.parameters()).dtype).eval().requires_grad_(False)
