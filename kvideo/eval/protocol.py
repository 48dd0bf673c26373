"""The metric protocols (FVD as StyleGAN-V, IS as TGAN, CLIPSIM), run sharded, with JSON reports."""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Hashable, Sequence

import numpy as np
import torch
from einops import rearrange

from kvideo.config import Config, check
from kvideo.eval.datasets import SkipVideo, VideoDataset, VideoItem, read_clip, read_video
from kvideo.eval.distributed import Shard
from kvideo.eval.frechet import frechet_distance
from kvideo.eval.stats import FeatureStats, inception_score


@dataclasses.dataclass(frozen=True)
class FVDProtocol(Config):
    """StyleGAN-V's FVD: `num_frames` consecutive frames (`stride` apart), real clips from a seeded
    random offset, generated clips from frame 0, `num_videos` videos on each side."""

    num_videos: int = 2048
    num_frames: int = 16
    stride: int = 1
    seed: int = 0

    def validate(self) -> None:
        check(self.num_videos >= 2, f"num_videos must be >= 2 (a covariance needs 2 samples), got {self.num_videos}")
        check(self.num_frames >= 9, f"num_frames must be >= 9 (the I3D temporal pooling), got {self.num_frames}")
        check(self.stride >= 1, f"stride must be >= 1, got {self.stride}")

    @property
    def name(self) -> str:
        return f"fvd{self.num_videos}_{self.num_frames}f" + (f"_stride{self.stride}" if self.stride > 1 else "")


@dataclasses.dataclass(frozen=True)
class ISProtocol(Config):
    """TGAN's IS: the first 16 frames of `num_videos` videos through the UCF-101 C3D, `splits` parts."""

    num_videos: int = 2048
    splits: int = 10
    num_frames: int = 16

    def validate(self) -> None:
        check(self.num_frames == 16, f"the UCF-101 C3D takes 16 frames, got num_frames={self.num_frames}")
        check(self.splits >= 1, f"splits must be >= 1, got {self.splits}")
        check(self.num_videos >= self.splits, f"num_videos ({self.num_videos}) must be >= splits ({self.splits})")

    @property
    def name(self) -> str:
        return f"is{self.num_videos}_c3d_ucf101"


@dataclasses.dataclass(frozen=True)
class CLIPSIMProtocol(Config):
    """CLIPSIM: per-frame CLIP cosine to the caption, averaged over frames, then over videos."""

    num_videos: int | None = None  # None: every video of the set
    max_frames: int | None = None  # None: every frame

    def validate(self) -> None:
        check(self.num_videos is None or self.num_videos >= 1, f"num_videos must be >= 1, got {self.num_videos}")
        check(self.max_frames is None or self.max_frames >= 1, f"max_frames must be >= 1, got {self.max_frames}")

    @property
    def name(self) -> str:
        return "clipsim" + (f"{self.num_videos}" if self.num_videos else "")


@dataclass
class RunOptions:
    """How (not what) to compute: batching, progress bars, sharding, and whether a smaller N is accepted."""

    batch_size: int = 8
    progress: bool = True
    allow_fewer: bool = False
    shard: Shard = field(default_factory=Shard)


@dataclass
class Extraction:
    """Which videos a side used: how many, of how many wanted, which were skipped and why."""

    used: int
    requested: int
    skipped: list[dict[str, str]]
    missing: list[str]

    def summary(self) -> dict[str, Any]:
        return {"used": self.used, "requested": self.requested, "skipped": self.skipped,
                "num_skipped": len(self.skipped), "missing": self.missing[:50], "num_missing": len(self.missing)}


# -- sharded extraction ------------------------------------------------------------------------
Load = Callable[[int, VideoItem], Any]
Infer = Callable[[list[Any]], Sequence[Any]]
Sink = Callable[[list[int], Sequence[Any]], None]


def extract(
    candidates: list[tuple[int, VideoItem]], wanted: int, load: Load, infer: Infer, sink: Sink,
    options: RunOptions, *, desc: str, batch_key: Callable[[Any], Hashable] = lambda payload: payload.shape,
) -> tuple[int, list[dict[str, str]]]:
    """Run candidates in rounds until `wanted` of them loaded (or none are left).

    Each round takes the next `wanted - used` candidates, split over the ranks; unusable ones are
    skipped and replaced in the next round, so the usable set does not depend on the world size.
    """
    from tqdm.auto import tqdm

    shard, used, start, skipped = options.shard, 0, 0, []
    bar = tqdm(total=wanted, desc=desc, unit="video", disable=not (options.progress and shard.is_main))
    while used < wanted and start < len(candidates):
        todo, start = candidates[start:start + wanted - used], start + wanted - used
        good = _run_round(shard.take(todo), load, infer, sink, options.batch_size, skipped, batch_key)
        used += int(shard.sum(np.array([good]))[0])
        bar.update(used - bar.n)
    bar.close()
    gathered = [entry for part in shard.gather(skipped) for entry in part]
    return used, [entry for _, entry in sorted(gathered, key=lambda pair: pair[0])]


def _run_round(mine, load, infer, sink, batch_size, skipped, batch_key) -> int:
    batch: list[tuple[int, Any]] = []
    good = 0
    for index, item in mine:
        try:
            payload = load(index, item)
        except SkipVideo as reason:
            skipped.append((index, {"video": item.key, "reason": str(reason)}))
            continue
        if batch and batch_key(batch[0][1]) != batch_key(payload):
            _flush(batch, infer, sink)
        batch.append((index, payload))
        good += 1
        if len(batch) == batch_size:
            _flush(batch, infer, sink)
    _flush(batch, infer, sink)
    return good


def _flush(batch: list[tuple[int, Any]], infer: Infer, sink: Sink) -> None:
    if batch:
        with torch.no_grad():
            outputs = infer([payload for _, payload in batch])
        sink([index for index, _ in batch], outputs)
        batch.clear()


def _check_count(extraction: Extraction, options: RunOptions, what: str) -> None:
    if extraction.used < extraction.requested and not options.allow_fewer:
        raise ValueError(
            f"{what}: only {extraction.used} usable videos of the {extraction.requested} requested "
            f"({len(extraction.skipped)} skipped, {len(extraction.missing)} missing); lower --num-videos, "
            "or pass --allow-fewer to compute with the smaller N (it is written into the report)"
        )


def _stack_clips(clips: list[torch.Tensor]) -> torch.Tensor:
    return torch.stack(clips)  # (b, c, f, h, w) uint8


def _clip_tensor(frames: np.ndarray) -> torch.Tensor:
    return rearrange(torch.from_numpy(np.ascontiguousarray(frames)), "f h w c -> c f h w")


# -- FVD ---------------------------------------------------------------------------------------
def fvd_candidates(dataset: VideoDataset, protocol: FVDProtocol, real: bool) -> list[tuple[int, VideoItem]]:
    """Real videos in a seeded random order; generated videos in their own order."""
    order = np.random.default_rng(protocol.seed).permutation(len(dataset.items)) if real else range(len(dataset.items))
    return [(int(i), dataset.items[int(i)]) for i in order]


def fvd_statistics(dataset: VideoDataset, detector, protocol: FVDProtocol, *, real: bool, options: RunOptions):
    """(FeatureStats over all ranks, Extraction) of one side of the FVD."""
    def load(index: int, item: VideoItem) -> torch.Tensor:
        rng = np.random.default_rng([protocol.seed, index]) if real else None
        return _clip_tensor(read_clip(item.path, protocol.num_frames, stride=protocol.stride, rng=rng))

    local: list[FeatureStats] = []

    def sink(indices: list[int], features: torch.Tensor) -> None:
        if not local:
            local.append(FeatureStats(features.shape[1]))
        local[0].update(features)

    infer = lambda clips: detector.run(_stack_clips(clips))  # noqa: E731
    used, skipped = extract(fvd_candidates(dataset, protocol, real), protocol.num_videos, load, infer, sink,
                            options, desc="real videos" if real else "generated videos")
    stats = _merge_stats(local, options.shard)
    return stats, Extraction(used, protocol.num_videos, skipped, dataset.missing)


def _merge_stats(local: list[FeatureStats], shard: Shard) -> FeatureStats:
    dims = [d for part in shard.gather([s.num_features for s in local]) for d in part]
    if not dims:
        raise ValueError("no video could be used: every one was skipped (see the report's skipped list)")
    mine = local[0] if local else FeatureStats(dims[0])
    count = int(shard.sum(np.array([mine.count]))[0])
    return FeatureStats(mine.num_features, count, shard.sum(mine.total), shard.sum(mine.outer))


def real_fvd_settings(dataset: VideoDataset, detector, protocol: FVDProtocol) -> dict[str, Any]:
    """Everything the real-set statistics depend on: a cache is only reused when these match."""
    return {"protocol": protocol.name, **protocol.to_dict(), "real": dataset.describe(), "detector_sha256": detector.sha256}


def real_fvd_statistics(dataset, detector, protocol, options: RunOptions, cache: str | Path | None = None):
    """Real-set statistics from `cache` when its settings match, else computed (and cached)."""
    settings = real_fvd_settings(dataset, detector, protocol)
    cache = Path(cache) if cache is not None else None
    if cache is not None and cache.is_file():
        stats, saved = FeatureStats.load(cache)
        _check_settings(cache, saved.get("settings", {}), settings)
        extraction = Extraction(**saved["extraction"])
        _check_count(extraction, options, f"real videos (cached in {str(cache)!r})")
        return stats, extraction, True
    stats, extraction = fvd_statistics(dataset, detector, protocol, real=True, options=options)
    _check_count(extraction, options, "real videos")
    if cache is not None and options.shard.is_main:
        stats.save(cache, {"settings": settings, "extraction": dataclasses.asdict(extraction)})
    return stats, extraction, False


def _check_settings(path: Path, saved: dict, expected: dict) -> None:
    keys = sorted(set(saved) | set(expected))
    diff = [f"{k}: cached {saved.get(k)!r} vs now {expected.get(k)!r}" for k in keys if saved.get(k) != expected.get(k)]
    if diff:
        raise ValueError(
            f"real statistics {str(path)!r} were computed with other settings ({'; '.join(diff)}); "
            "delete the file or pass another --real-stats path"
        )


def compute_fvd(real: VideoDataset, fake: VideoDataset, detector, protocol: FVDProtocol,
                options: RunOptions, real_cache: str | Path | None = None) -> dict[str, Any]:
    """The FVD report: value, protocol, N on each side, detector, skipped videos."""
    real_stats, real_ext, cached = real_fvd_statistics(real, detector, protocol, options, real_cache)
    fake_stats, fake_ext = fvd_statistics(fake, detector, protocol, real=False, options=options)
    _check_count(fake_ext, options, "generated videos")
    value = frechet_distance(*real_stats.mean_cov(), *fake_stats.mean_cov())
    return {
        "metric": "fvd", "value": value, "protocol": {"name": protocol.name, **protocol.to_dict()},
        "num_videos": {"real": real_stats.count, "fake": fake_stats.count}, "detector": detector.describe(),
        "real": {**real.describe(), **real_ext.summary(), "cached_statistics": cached},
        "fake": {**fake.describe(), **fake_ext.summary()}, "world_size": options.shard.world_size,
    }


# -- IS ----------------------------------------------------------------------------------------
def per_video_outputs(dataset: VideoDataset, wanted: int, load: Load, infer: Infer, options: RunOptions,
                      desc: str, **kwargs: Any) -> tuple[list[Any], Extraction]:
    """Per-video outputs of the first `wanted` usable videos (in dataset order), from every rank."""
    results: dict[int, Any] = {}
    sink = lambda indices, outputs: results.update(zip(indices, outputs))  # noqa: E731
    candidates = list(enumerate(dataset.items))
    used, skipped = extract(candidates, wanted, load, infer, sink, options, desc=desc, **kwargs)
    merged = {k: v for part in options.shard.gather(results) for k, v in part.items()}
    return [merged[k] for k in sorted(merged)], Extraction(used, wanted, skipped, dataset.missing)


def compute_is(fake: VideoDataset, detector, protocol: ISProtocol, options: RunOptions) -> dict[str, Any]:
    """The IS report: mean and std over splits of exp(E KL(p(y|x) ‖ p(y)))."""
    load = lambda index, item: _clip_tensor(read_clip(item.path, protocol.num_frames))  # noqa: E731
    infer = lambda clips: detector.run(_stack_clips(clips)).double().cpu()  # noqa: E731
    probs, extraction = per_video_outputs(fake, protocol.num_videos, load, infer, options, "IS videos")
    _check_count(extraction, options, "generated videos")
    mean, std = inception_score(torch.stack(probs), protocol.splits)
    return {
        "metric": "is", "value": mean, "std": std, "protocol": {"name": protocol.name, **protocol.to_dict()},
        "num_videos": {"fake": len(probs)}, "detector": detector.describe(),
        "fake": {**fake.describe(), **extraction.summary()}, "world_size": options.shard.world_size,
    }


# -- CLIPSIM -----------------------------------------------------------------------------------
def compute_clipsim(fake: VideoDataset, scorer, protocol: CLIPSIMProtocol, options: RunOptions) -> dict[str, Any]:
    """The CLIPSIM report: mean over videos of the frame-averaged CLIP cosine to the caption."""
    uncaptioned = [item.key for item in fake.items if not item.caption]
    if uncaptioned:
        raise ValueError(f"CLIPSIM needs a caption for every video; none for {uncaptioned[:5]} "
                         f"({len(uncaptioned)} in all): pass a captions file or a generated folder with its manifest")
    wanted = protocol.num_videos or len(fake.items)
    load = lambda index, item: (read_video(item.path, protocol.max_frames), item.caption)  # noqa: E731
    infer = lambda pairs: [scorer.score(frames, caption) for frames, caption in pairs]  # noqa: E731
    scores, extraction = per_video_outputs(fake, wanted, load, infer, options, "CLIPSIM videos",
                                           batch_key=lambda pair: None)
    _check_count(extraction, options, "captioned videos")
    return {
        "metric": "clipsim", "value": float(np.mean(scores)), "std_over_videos": float(np.std(scores)),
        "protocol": {"name": protocol.name, **protocol.to_dict(), "clip": scorer.name},
        "num_videos": {"fake": len(scores)}, "fake": {**fake.describe(), **extraction.summary()},
        "world_size": options.shard.world_size,
    }


# -- reports -----------------------------------------------------------------------------------
def write_report(path: str | Path, report: dict[str, Any]) -> None:
    """Write the JSON report atomically."""
    from kvideo.checkpoint import atomic_path

    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(report, indent=2, sort_keys=True) + "\n")


def format_table(report: dict[str, Any]) -> str:
    """A short human summary of a report."""
    sides = report["num_videos"]
    skipped = {side: report[side]["num_skipped"] for side in ("real", "fake") if side in report}
    value = f"{report['value']:.4f}" + (f" ± {report['std']:.4f}" if "std" in report else "")
    rows = [("metric", report["metric"]), ("protocol", report["protocol"]["name"]), ("value", value),
            ("videos", ", ".join(f"{k} {v}" for k, v in sides.items())),
            ("skipped", ", ".join(f"{k} {v}" for k, v in skipped.items()))]
    if "detector" in report:
        rows.append(("detector", f"{report['detector']['file']} (sha256 {report['detector']['sha256'][:12]})"))
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)
