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
from tqdm.auto import tqdm

from kvideo.checkpoint import atomic_path, check_replaceable, check_writable_folder
from kvideo.config import Config, check
from kvideo.errors import OutputError
from kvideo.eval.datasets import SkipVideo, VideoDataset, VideoItem, read_clip, read_video
from kvideo.eval.distributed import Shard
from kvideo.eval.frechet import frechet_distance
from kvideo.eval.preprocess import GEOMETRIES, prepare_clip
from kvideo.eval.stats import FeatureStats, split_scores


@dataclasses.dataclass(frozen=True)
class FVDProtocol(Config):
    """One FVD protocol, every choice named: which clips, which frame geometry, how the detector is called,
    and the covariance normalisation. Use the presets (`FVDProtocol.preset("fvd-styleganv")`)."""

    name: str = "fvd-styleganv"
    num_videos: int = 2048
    num_frames: int = 16
    stride: int = 1
    seed: int = 0
    real_selection: str = "first-sorted"  # the first N of the sorted real videos, or "random" (seeded)
    real_offset: str = "random"  # real clips start at a seeded random frame, or "first"; generated: frame 0
    geometry: str = "lanczos-crop"  # see kvideo.eval.preprocess.GEOMETRIES
    size: int = 256
    detector_call: str = "own"  # "own": the detector rescales and resizes; "prepared": the frames are its input
    covariance_ddof: int = 0  # 0: covariance / N; 1: / (N - 1)
    reference_detector: str = "styleganv-i3d"  # the detector convention the published numbers used
    features: str = "i3d-logits"  # "i3d-logits" (400-d) or "videomae-v2" (fc_norm of the mean token)

    def validate(self) -> None:
        check(self.num_videos >= 2, f"num_videos must be >= 2 (a covariance needs 2 samples), got {self.num_videos}")
        least = 9 if self.features == "i3d-logits" else 2  # the I3D temporal pooling; a VideoMAE tubelet
        check(self.num_frames >= least, f"num_frames must be >= {least} for {self.features} features, got {self.num_frames}")
        check(self.stride >= 1, f"stride must be >= 1, got {self.stride}")
        check(self.real_selection in ("first-sorted", "random"), f"real_selection: first-sorted or random, got {self.real_selection!r}")
        check(self.real_offset in ("random", "first"), f"real_offset: random or first, got {self.real_offset!r}")
        check(self.geometry in GEOMETRIES, f"geometry must be one of {sorted(GEOMETRIES)}, got {self.geometry!r}")
        check(self.size >= 32, f"size must be >= 32, got {self.size}")
        check(self.detector_call in ("own", "prepared"), f"detector_call: own or prepared, got {self.detector_call!r}")
        check(self.covariance_ddof in (0, 1), f"covariance_ddof must be 0 or 1, got {self.covariance_ddof}")
        check(self.features in ("i3d-logits", "videomae-v2"), f"features: i3d-logits or videomae-v2, got {self.features!r}")


def _register(cls: type[Config], **values: Any) -> None:
    """A preset keyed by its own `name` field (Config.register_preset's first argument is also called name)."""
    cls._presets[values["name"]] = values


_register(FVDProtocol, name="fvd-styleganv")
_register(
    FVDProtocol, name="fvd-videogpt", real_selection="random", geometry="bilinear-crop", size=224,
    detector_call="prepared", covariance_ddof=1, reference_detector="videogpt-i3d",
)
_register(
    FVDProtocol, name="fvd-tf", real_selection="random", geometry="tf1-bilinear", size=224,
    detector_call="prepared", covariance_ddof=1, reference_detector="styleganv-i3d",
)

_register(  # content-debiased FVD (Ge et al., CVPR 2024): cdfvd's preprocess_videomae and FeatureStats (/N)
    FVDProtocol, name="fvd-videomae", real_selection="random", geometry="bilinear-squash", size=224,
    detector_call="prepared", covariance_ddof=0, reference_detector="videomae-v2-vitg-ssv2", features="videomae-v2",
)


@dataclasses.dataclass(frozen=True)
class ISProtocol(Config):
    """One IS protocol: `runs` sets of `num_videos` consecutive videos (first 16 frames each) through the
    UCF-101 C3D; each set is cut into `splits` parts (after a seeded shuffle where the protocol has one);
    mean and std over the runs (runs > 1) or over the splits (runs = 1)."""

    name: str = "is-styleganv"
    num_videos: int = 2048
    splits: int = 10
    runs: int = 1
    shuffle_seed: int | None = 42
    num_frames: int = 16

    def validate(self) -> None:
        check(self.num_frames == 16, f"the UCF-101 C3D takes 16 frames, got num_frames={self.num_frames}")
        check(self.splits >= 1 and self.runs >= 1, f"splits and runs must be >= 1, got {self.splits}, {self.runs}")
        check(self.runs == 1 or self.splits == 1, f"either runs or splits must be 1, got runs={self.runs} splits={self.splits}")
        check(self.num_videos >= self.splits, f"num_videos ({self.num_videos}) must be >= splits ({self.splits})")

    @property
    def total_videos(self) -> int:
        return self.num_videos * self.runs


_register(ISProtocol, name="is-styleganv")
_register(ISProtocol, name="is-tganv2", num_videos=2048, splits=1, runs=10, shuffle_seed=None)
_register(ISProtocol, name="is-tganv1", num_videos=10000, splits=1, runs=1, shuffle_seed=None)


@dataclasses.dataclass(frozen=True)
class CLIPSIMProtocol(Config):
    """CLIPSIM: per-frame CLIP cosine to the caption (OpenAI CLIP preprocessing, captions cut to
    `context_length` tokens as clip.tokenize(truncate=True)), averaged over frames, then over videos."""

    name: str = "clipsim"
    num_videos: int | None = None  # None: every video of the set
    max_frames: int | None = None  # None: every frame
    context_length: int = 77
    image_preprocessing: str = "openai-clip"  # bicubic shorter side (floored), center crop (rounded), normalize

    def validate(self) -> None:
        check(self.num_videos is None or self.num_videos >= 1, f"num_videos must be >= 1, got {self.num_videos}")
        check(self.max_frames is None or self.max_frames >= 1, f"max_frames must be >= 1, got {self.max_frames}")
        check(self.context_length >= 2, f"context_length must be >= 2, got {self.context_length}")


_register(CLIPSIMProtocol, name="clipsim")


def protocol_report(protocol: Config, **overrides: Any) -> dict[str, Any]:
    """The protocol as written into a report: every setting, and those changed from the named preset."""
    preset = type(protocol).preset(protocol.name).to_dict()
    changed = {k: v for k, v in protocol.to_dict().items() if preset.get(k) != v}
    return {**protocol.to_dict(), "changed_from_preset": changed, **overrides}


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
    """Real videos: the sorted set in order (first-sorted) or a seeded random order; generated: their order."""
    if real and protocol.real_selection == "random":
        order = [int(i) for i in np.random.default_rng(protocol.seed).permutation(len(dataset.items))]
    elif real:
        order = sorted(range(len(dataset.items)), key=lambda i: dataset.items[i].key)
    else:
        order = list(range(len(dataset.items)))
    return [(i, dataset.items[i]) for i in order]


def fvd_clip_loader(protocol: FVDProtocol, *, real: bool) -> Load:
    """index, item -> prepared clip (3, f, size, size): the same geometry for real and generated clips."""
    def load(index: int, item: VideoItem) -> torch.Tensor:
        random_offset = real and protocol.real_offset == "random"
        rng = np.random.default_rng([protocol.seed, index]) if random_offset else None
        frames = read_clip(item.path, protocol.num_frames, stride=protocol.stride, rng=rng)
        return prepare_clip(frames, protocol.geometry, protocol.size)

    return load


def detector_runner(detector, protocol: FVDProtocol) -> Callable[[torch.Tensor], torch.Tensor]:
    """The detector call the protocol prescribes (its own rescale/resize, or the prepared frames as input)."""
    if protocol.detector_call == "own":
        return detector.run
    if detector.run_prepared is None:
        raise ValueError(f"protocol {protocol.name} feeds the detector prepared frames, and the input range of "
                         f"{detector.path.name} is unknown: state it with --detector-range=LOW,HIGH")
    return detector.run_prepared


def comparability(detector, protocol: FVDProtocol) -> dict[str, Any]:
    """Whether numbers from this detector and settings can be set beside the protocol's published ones."""
    reasons = []
    used = detector.convention.name if detector.convention else "unknown"
    if used != protocol.reference_detector:
        reasons.append(f"detector {detector.path.name} ({used}) is not the protocol's {protocol.reference_detector}")
    changed = protocol_report(protocol)["changed_from_preset"]
    if changed:
        reasons.append("settings changed from the preset: " + ", ".join(f"{k}={v}" for k, v in changed.items()))
    return {"comparable": not reasons, "reasons": reasons}


def fvd_statistics(dataset: VideoDataset, detector, protocol: FVDProtocol, *, real: bool, options: RunOptions):
    """(FeatureStats over all ranks, Extraction) of one side of the FVD."""
    local: list[FeatureStats] = []

    def sink(indices: list[int], features: torch.Tensor) -> None:
        if not local:
            local.append(FeatureStats(features.shape[1]))
        local[0].update(features)

    run = detector_runner(detector, protocol)
    infer = lambda clips: run(_stack_clips(clips))  # noqa: E731
    used, skipped = extract(fvd_candidates(dataset, protocol, real), protocol.num_videos,
                            fvd_clip_loader(protocol, real=real), infer, sink, options,
                            desc="real videos" if real else "generated videos")
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
    convention = detector.convention.describe() if detector.convention else None
    settings = {"protocol": protocol.name, **protocol.to_dict(), "real": dataset.describe(),
                "detector_sha256": detector.sha256, "detector_convention": convention}
    return json.loads(json.dumps(settings))  # as a cache file gives them back (tuples become lists)


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
    ddof = protocol.covariance_ddof
    value = frechet_distance(*real_stats.mean_cov(ddof), *fake_stats.mean_cov(ddof))
    return {
        "metric": "fvd", "value": value, "protocol": protocol_report(protocol, geometry_description=_geometry(protocol)),
        "comparability": comparability(detector, protocol),
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


def _geometry(protocol: FVDProtocol) -> str:
    return GEOMETRIES[protocol.geometry]


C3D_INPUT = ("the first num_frames frames, RGB -> BGR, 128·x + 128 with x in [-1, 1], corner-aligned bilinear "
             "resize to 112 x 112, minus the C3D pixel mean (TGAN); a TorchScript C3D gets the uint8 clips")


def protocol_inception_score(probs: np.ndarray | torch.Tensor, protocol: ISProtocol) -> tuple[float, float, list[float]]:
    """(mean, std, scores): the protocol's runs of `num_videos` consecutive rows, each cut into its splits."""
    p = np.asarray(probs.double().cpu().numpy() if isinstance(probs, torch.Tensor) else probs, np.float64)
    n = p.shape[0] // protocol.runs
    scores = []
    for run in range(protocol.runs):
        part = split_scores(p[run * n:(run + 1) * n], protocol.splits, shuffle_seed=protocol.shuffle_seed)
        scores.extend(part if protocol.runs == 1 else [float(np.mean(part))])
    return float(np.mean(scores)), float(np.std(scores)), scores


def compute_is(fake: VideoDataset, detector, protocol: ISProtocol, options: RunOptions) -> dict[str, Any]:
    """The IS report: exp(E KL(p(y|x) ‖ p(y))), mean and std over the protocol's runs or splits."""
    load = lambda index, item: _clip_tensor(read_clip(item.path, protocol.num_frames))  # noqa: E731
    infer = lambda clips: detector.run(_stack_clips(clips)).double().cpu()  # noqa: E731
    probs, extraction = per_video_outputs(fake, protocol.total_videos, load, infer, options, "IS videos")
    _check_count(extraction, options, "generated videos")
    per_run = len(probs) // protocol.runs  # smaller than num_videos only with --allow-fewer
    if per_run < protocol.splits:
        raise ValueError(f"{len(probs)} videos cannot make {protocol.runs} run(s) of {protocol.splits} split(s)")
    mean, std, scores = protocol_inception_score(torch.stack(probs[:per_run * protocol.runs]), protocol)
    changed = protocol_report(protocol)["changed_from_preset"]
    return {
        "metric": "is", "value": mean, "std": std, "scores": scores,
        "protocol": protocol_report(protocol, detector_input=C3D_INPUT),
        "comparability": {"comparable": not changed, "reasons": [f"settings changed from the preset: {changed}"] if changed else []},
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
        "protocol": protocol_report(protocol, clip=scorer.name), "captions_truncated": scorer.truncated,
        "num_videos": {"fake": len(scores)}, "fake": {**fake.describe(), **extraction.summary()},
        "world_size": options.shard.world_size,
    }


# -- reports -----------------------------------------------------------------------------------
def check_output_file(path: str | Path, *, what: str) -> Path:
    """Raise OutputError, before any work, unless `path` can be written as a file (atomically, beside itself)."""
    path = Path(path)
    if path.is_dir():
        raise OutputError(f"{what} {str(path)!r} is a folder; give a file path")
    if not path.parent.is_dir():
        raise OutputError(f"{what} {str(path)!r} cannot be written: folder {str(path.parent)!r} does not exist")
    check_writable_folder(path.parent, what=f"the folder of {what}")
    check_replaceable(path, what=what)
    return path


def write_report(path: str | Path, report: dict[str, Any]) -> None:
    """Write the JSON report atomically."""
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
        known = report["detector"].get("known_file")
        rows.append(("detector", f"{report['detector']['file']} (sha256 {report['detector']['sha256'][:12]}"
                                 + (f", the published {known})" if known else ")")))
    if "comparability" in report:
        comparable = report["comparability"]
        rows.append(("comparable", "yes" if comparable["comparable"] else "NO: " + "; ".join(comparable["reasons"])))
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)
