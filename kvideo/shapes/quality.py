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
import torch
from tqdm.auto import tqdm

from kvideo.checkpoint import atomic_path
from kvideo.eval.detectors import i3d_input
from kvideo.eval.frechet import frechet_distance
from kvideo.eval.generate import PromptJob
from kvideo.eval.stats import FeatureStats
from kvideo.export import write_video
from kvideo.models.unet import UNet
from kvideo.shapes.detector import caption_labels
from kvideo.shapes.grammar import all_captions
from kvideo.shapes.score import score_folder, write_report
from kvideo.train.data import read_captions
from kvideo.video_io import read_frames, video_info

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


def check_kept_clips(folder: Path, jobs: list[PromptJob], options: dict[str, Any]) -> None:
    """The clips already in `folder` are kept only if they are the same jobs (file, prompt, seed) generated
    with the same options: a 48 x 1 set is the start of the 96 x 2 one, a set of other prompts or settings is not."""
    if (folder / "captions.csv").is_file():
        with (folder / "captions.csv").open(newline="") as handle:
            before = {row["path"]: (row["caption"], int(row["seed"])) for row in csv.DictReader(handle)}
        wanted = {job.file: (job.prompt, job.seed) for job in jobs}
        clash = sorted(f for f, job in before.items() if (folder / f).is_file() and wanted.get(f, job) != job)
        if clash:
            raise ValueError(f"{str(folder)!r} holds clips of another prompt or seed ({clash[0]}: "
                             f"{before[clash[0]]} here, {wanted[clash[0]]} wanted); use an empty folder")
    if (folder / "report.json").is_file():
        kept = {k: v for k, v in json.loads((folder / "report.json").read_text()).get("settings", {}).items()
                if k not in ("prompts", "seeds")}
        if kept and kept != json.loads(json.dumps(options)):
            raise ValueError(f"{str(folder)!r} holds clips generated with {kept}, not {options}; use an empty folder")


def write_captions(folder: Path, jobs: list[PromptJob]) -> Path:
    path = folder / "captions.csv"
    with atomic_path(path) as tmp:
        with tmp.open("w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["path", "caption", "seed"])
            writer.writerows([job.file, job.prompt, job.seed] for job in jobs)
    return path


def generate_set(pipe, jobs: list[PromptJob], out: Path, *, batch_size: int = 8, progress: bool = True,
                 **options: Any) -> int:
    """Generate the clips of `jobs` that `out` lacks, `batch_size` prompts per batched pipeline call
    (each clip with its own seed, as alone); returns how many were made."""
    todo = [job for job in jobs if not (out / job.file).is_file()]
    bar = tqdm(total=len(todo), desc="generating", unit="clip", disable=not progress)
    for start in range(0, len(todo), batch_size):
        chunk = todo[start:start + batch_size]
        videos = pipe([job.prompt for job in chunk], seed=[job.seed for job in chunk], **options)
        for job, video in zip(chunk, videos):
            write_video(out / job.file, video.frames, video.fps, progress=False)  # atomic
        bar.update(len(chunk))
    bar.close()
    return len(todo)


def measure_quality(pipe, out: str | Path, *, prompts: int = 96, seeds: int = 2, batch_size: int = 8,
                    progress: bool = True, **options: Any) -> dict[str, Any]:
    """Generate the quality set with `pipe` into `out` (existing clips are kept) and score it."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    jobs = quality_jobs(quality_prompts(prompts), seeds)
    options = {"fps": "medium", **options}
    check_kept_clips(out, jobs, options)
    captions = write_captions(out, jobs)
    generate_set(pipe, jobs, out, batch_size=batch_size, progress=progress, **options)
    report = score_folder(out, captions, progress=progress)
    report["settings"] = {"prompts": prompts, "seeds": seeds, **options}
    write_report(out / "report.json", report)
    return report


def clip_features(detector, folder: str | Path, frames: int = 16, batch_size: int = 16) -> np.ndarray:
    """Time-averaged I3D logits of every mp4 in `folder` (sorted by name), each read as `frames` frames spread
    evenly over the whole clip (`spread_frames`), as the `shapes-detector` preset trains on them."""
    paths = clip_paths(folder)
    features = []
    for start in range(0, len(paths), batch_size):
        clips = np.stack([read_frames(p, spread_frames(video_info(p).num_frames, frames))
                          for p in paths[start:start + batch_size]])
        clips = torch.from_numpy(clips).permute(0, 4, 1, 2, 3)  # (b, 3, f, h, w) uint8
        with torch.no_grad():
            features.append(detector.logits_mean(i3d_input(clips, detector.config.input_size)).double().numpy())
    return np.concatenate(features)


def spread_frames(total: int, frames: int) -> list[int]:
    """`frames` indices spread evenly over a clip of `total` frames, first and last included."""
    if frames < 1 or total < frames:
        raise ValueError(f"cannot take {frames} distinct frames of a {total}-frame clip")
    return np.linspace(0, total - 1, frames).round().astype(int).tolist()


def clip_paths(folder: str | Path) -> list[Path]:
    """The mp4 clips of a quality set (`folder/*.mp4`) or a rendered set (`folder/videos/*.mp4`), by name."""
    paths = sorted(Path(folder).glob("*.mp4")) or sorted(Path(folder).glob("videos/*.mp4"))
    if not paths:
        raise FileNotFoundError(f"no mp4 clips in {str(folder)!r}")
    return paths


def detector_accuracy(features: np.ndarray, folder: str | Path) -> float:
    """Share of the clips of `folder` (`clip_features` order) whose largest detector logit is their caption's
    shape x direction class, the captions read from `folder/captions.csv`: how much an FVD feature sees."""
    folder = Path(folder)
    captions = {path.resolve(): caption for path, caption in read_captions(folder / "captions.csv")}
    paths = clip_paths(folder)
    missing = [p.name for p in paths if p.resolve() not in captions]
    if missing:
        raise ValueError(f"{str(folder / 'captions.csv')!r} has no caption for {missing[:3]}")
    labels = caption_labels([captions[p.resolve()] for p in paths]).numpy()
    if len(labels) != len(features):
        raise ValueError(f"{len(features)} feature rows for the {len(labels)} clips of {str(folder)!r}")
    return float((features.argmax(axis=1) == labels).mean())


def fvd(features_a: np.ndarray, features_b: np.ndarray) -> float:
    """Fréchet distance of the Gaussians of two feature sets (covariance / N, as StyleGAN-V)."""
    stats = [FeatureStats(f.shape[1]).update(f).mean_cov() for f in (features_a, features_b)]
    return frechet_distance(stats[0][0], stats[0][1], stats[1][0], stats[1][1])


def passes_bar(totals: dict[str, float]) -> dict[str, bool]:
    """Which of the issue's quality thresholds `totals` (fractions) meet."""
    return {name: totals[name] >= bar for name, bar in QUALITY_BAR.items()}


def temporal_off(unet):
    """A copy of a keyframe UNet with its temporal layers back at their identity initialisation:
    every keyframe is denoised as an independent image by the spatial weights."""
    temporal_keys = set(unet.temporal_state_dict())
    spatial = {k: v for k, v in unet.state_dict().items() if k not in temporal_keys}
    return UNet.inflate(spatial, unet.config).to(next(unet.parameters()).dtype).eval().requires_grad_(False)
