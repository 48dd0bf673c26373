"""`kvideo eval generate | stats | fvd | is | clipsim | shapes`: argument parsing only; the work is in kvideo.eval."""
from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any

import torch

from kvideo.argtypes import MAX_SEED, parse_float, parse_int, parse_seed
from kvideo.checkpoint import check_writable_folder
from kvideo.eval.datasets import load_dataset
from kvideo.eval.distributed import init_shard
from kvideo.eval.generate import benchmark_prompts, check_own_folder, generate_videos, manifest_for, write_manifest
from kvideo.eval.metrics import BY_NAME
from kvideo.eval import protocol as eval_protocol  # its functions looked up at call time (tests replace them)
from kvideo.eval.protocol import RunOptions, check_output_file, format_table, write_report
from kvideo.flags import add_flag
from kvideo.generation import model_card, open_pipeline, release_of
from kvideo.generation.flags import PREFIX as OPTION_PREFIX
from kvideo.generation.flags import add_generation_flags, given_options, options_for
from kvideo.generation.options import release_options
from kvideo.generation.weights import TINY

REAL_FORMATS = ("ucf101", "msrvtt", "folder")
FAKE_FORMATS = ("auto", "generated", "folder", "ucf101", "msrvtt")


def register(subparsers) -> argparse._SubParsersAction:
    parser = subparsers.add_parser("eval", help="benchmark generation and FVD / IS / CLIPSIM metrics")
    commands = parser.add_subparsers(dest="eval_command", metavar="EVAL_COMMAND", required=True)
    _generate_parser(commands)
    _stats_parser(commands)
    _fvd_parser(commands)
    _is_parser(commands)
    _clipsim_parser(commands)
    return commands  # kvideo.cli adds `eval shapes` to them


# -- shared arguments --------------------------------------------------------------------------
def _dataset_args(p: argparse.ArgumentParser, prefix: str | None = None) -> None:
    group = p.add_argument_group("dataset layout")
    add_flag(group, "--split", help="ucf101: all (default) / train / test; msrvtt: test (default) / train / validate")
    add_flag(group, "--fold", type=int, help="ucf101 split-list fold 1-3 (default 1)")
    add_flag(group, "--splits-dir", help="ucf101: folder with classInd.txt and the split lists")
    add_flag(group, "--template", help="ucf101: prompt template file ('{name}' line, 'ClassName: prompt' lines)")
    add_flag(group, "--annotations", help="msrvtt: annotation JSON (default: test_videodatainfo.json under the root)")
    add_flag(group, "--msrvtt-captions", choices=("first", "all"), help="msrvtt: one caption per video (first) or all")
    if prefix is not None:
        add_flag(group, f"--{prefix}captions", help="folder: captions CSV (video, caption) or JSONL")


def _dataset_options(kind: str, args: argparse.Namespace, captions: str | None) -> dict[str, Any]:
    if kind == "ucf101":
        return {"split": args.split, "fold": args.fold, "splits_dir": args.splits_dir, "template": args.template}
    if kind == "msrvtt":
        return {"split": args.split, "annotations": args.annotations, "captions": args.msrvtt_captions}
    if kind == "folder":
        return {"captions": captions}
    return {}


def _real_args(p: argparse.ArgumentParser) -> None:
    add_flag(p, "--real", required=True, help="folder of the real videos")
    add_flag(p, "--real-format", choices=REAL_FORMATS, default="ucf101", help="layout of --real (default ucf101)")
    _dataset_args(p, prefix="real-")


def _fake_args(p: argparse.ArgumentParser) -> None:
    add_flag(p, "--fake", required=True, help="folder of generated videos (from `kvideo eval generate`)")
    add_flag(p, "--fake-format", choices=FAKE_FORMATS, default="auto",
                help="generated: needs manifest.json; folder: any videos; auto: generated if a manifest exists; "
                     "ucf101 / msrvtt: score a real dataset (a reference value)")
    add_flag(p, "--fake-captions", help="captions CSV/JSONL for a --fake folder without manifest")


def _protocol_arg(p: argparse.ArgumentParser, metric: str) -> None:
    cls = BY_NAME[metric].protocol
    default = cls().name
    add_flag(p, "--protocol", choices=cls.presets(), default=default,
                help=f"named frozen protocol, written whole into the report (default {default}); "
                     "docs/evaluation.md says which papers used which")


def _protocol(metric: str, args, **overrides):
    """The named preset with the flags the user gave on top (reported as changed_from_preset)."""
    return BY_NAME[metric].protocol.preset(args.protocol, **{k: v for k, v in overrides.items() if v is not None})


def _detector_args(p: argparse.ArgumentParser) -> None:
    add_flag(p, "--trust-detector", action="store_true",
                help="load a TorchScript detector whose hash is not a published one (it runs code from the file)")


def _i3d_convention_args(p: argparse.ArgumentParser) -> None:
    add_flag(p, "--detector-range", type=_value_range, metavar="LOW,HIGH",
                help="input range of an I3D file kvideo does not know, e.g. --detector-range=-1,1 (with =, as it "
                     "starts with -); default: the file's own")
    add_flag(p, "--detector-bn-eps", type=_positive_float, metavar="EPS",
                help="BatchNorm eps of an I3D file kvideo does not know (e.g. 1e-3); default: the file's own")


def _positive_float(text: str) -> float:
    value = parse_float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {text!r}")
    return value


def _positive_int(text: str) -> int:
    value = parse_int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text!r}")
    return value


def _device(text: str) -> str:
    """A torch device name that exists here (checked before any work)."""
    try:
        device = torch.device(text)
    except RuntimeError:
        raise argparse.ArgumentTypeError(f"expected a torch device such as cpu, cuda or cuda:1, got {text!r}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise argparse.ArgumentTypeError(f"{text!r}: no CUDA device is available here")
    return text


def _value_range(text: str) -> tuple[float, float]:
    try:
        low, high = (float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected LOW,HIGH (e.g. -1,1), got {text!r}") from None
    if not (math.isfinite(low) and math.isfinite(high)):
        raise argparse.ArgumentTypeError(f"LOW and HIGH must be finite numbers, got {text!r}")
    if not low < high:
        raise argparse.ArgumentTypeError(f"LOW must be below HIGH, got {text!r}")
    return low, high


def _check_outputs(*paths: tuple[str | None, str]) -> None:
    """Every output file checked (type, folder, writability) before any detector or video is loaded."""
    for path, what in paths:
        if path is not None:
            check_output_file(path, what=what)


def _report_path(args, protocol_name: str) -> Path:
    return Path(args.report) if args.report else Path(args.fake) / f"{protocol_name}.json"


def _run_args(p: argparse.ArgumentParser, report: bool = True) -> None:
    add_flag(p, "--batch-size", type=_positive_int, default=8, help="clips per detector call (default 8)")
    add_flag(p, "--device", type=_device,
                help="torch device: cpu, cuda, cuda:N (default: this rank's GPU if any, else cpu)")
    add_flag(p, "--allow-fewer", action="store_true", help="compute with fewer videos than requested (reported)")
    add_flag(p, "--quiet", action="store_true", help="no progress bars")
    if report:
        add_flag(p, "--report", help="JSON report path (default: <fake>/<protocol name>.json)")


def _load_real(args):
    return load_dataset(args.real_format, args.real, **_dataset_options(args.real_format, args, args.real_captions))


def _load_fake(args):
    return load_dataset(args.fake_format, args.fake, **_dataset_options(args.fake_format, args, args.fake_captions))


def _options(args, shard):
    if args.batch_size < 1:
        raise ValueError(f"--batch-size must be >= 1, got {args.batch_size}")
    return RunOptions(args.batch_size, not args.quiet, args.allow_fewer, shard)


def _finish(report: dict, args, shard) -> int:
    if shard.is_main:
        path = _report_path(args, report["protocol"]["name"])
        write_report(path, report)
        print(format_table(report))
        print(f"report: {path}")
        comparable = report.get("comparability", {"comparable": True})
        if not comparable["comparable"]:
            print(f"kvideo eval {args.eval_command}: warning: not comparable to the published "
                  f"{report['protocol']['name']} numbers: {'; '.join(comparable['reasons'])}", file=sys.stderr)
    return 0


# -- generate ----------------------------------------------------------------------------------
def _generate_parser(commands) -> None:
    p = commands.add_parser("generate", help="generate one mp4 per benchmark prompt (sharded under torchrun)")
    add_flag(p, "--benchmark", choices=("ucf101", "msrvtt"), required=True, help="whose prompts to use (required)")
    add_flag(p, "--data", required=True, metavar="PATH", help="the benchmark's dataset folder (for its prompts)")
    add_flag(p, "--out", required=True, metavar="PATH", help="output folder (videos + manifest.json); reruns resume")
    add_flag(p, "--num-videos", type=_positive_int,
                help="videos to generate (default: 2048 for ucf101, all for msrvtt)")
    add_flag(p, "--seed", type=parse_seed, default=0, help="base seed: video i uses seed + i (default 0)")
    source = p.add_mutually_exclusive_group(required=True)
    add_flag(source, "--weights", metavar="PATH", help="Kandinsky Video weights folder, or a built-in model: shapes")
    add_flag(source, "--preset", choices=("tiny",), help="random tiny weights (a smoke test, not a model)")
    add_generation_flags(p, exclude=("upscale_image",), aliases=True)  # kvideo generate's (no --image here)
    for name in ("width", "height"):  # the flags of earlier versions; --size sets both
        p.add_argument(f"--{name}", dest=f"{OPTION_PREFIX}{name}", type=_positive_int, default=argparse.SUPPRESS,
                       help=argparse.SUPPRESS)
    add_flag(p, "--dtype", choices=("fp32", "bf16", "fp16"), default="fp32", help="fp32 / bf16 / fp16 (GPU)")
    add_flag(p, "--device", type=_device,
                help="torch device: cpu, cuda, cuda:N (default: this rank's GPU if any, else cpu)")
    add_flag(p, "--quiet", action="store_true", help="no progress bars")
    _dataset_args(p)
    p.set_defaults(func=_generate)


def _generate(args) -> int:
    options = generation_settings(args)  # bad sizes, steps and flags: refused before anything is written
    check_writable_folder(args.out, what="--out")  # before the dataset, the model and any video
    check_own_folder(args.out)  # a folder of other videos is not adopted
    shard = init_shard()
    dataset = load_dataset(args.benchmark, args.data, **_dataset_options(args.benchmark, args, None))
    num = args.num_videos if args.num_videos is not None else (2048 if args.benchmark == "ucf101" else None)
    jobs = benchmark_prompts(dataset, num, args.seed)
    if jobs and jobs[-1].seed > MAX_SEED:
        raise ValueError(f"--seed {args.seed}: video {len(jobs) - 1} would use seed {jobs[-1].seed}, past 2**63 - 1; "
                         "use a smaller --seed")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    settings = {"benchmark": args.benchmark, "dataset": dataset.describe(), "seed": args.seed, **options,
                "model": args.preset or Path(args.weights).name}
    settings = json.loads(json.dumps(settings))  # as the manifest file holds them (lists, not tuples)
    write_manifest(out, manifest_for(jobs, settings), shard)
    pipe = _pipeline(args, shard)
    counts = generate_videos(pipe, jobs, out, shard=shard, options=options, progress=not args.quiet)
    print(f"rank {shard.rank}: {counts['generated']} generated, {counts['existing']} already there, in {out}")
    return 0


def generation_settings(args) -> dict:
    """The options every video of the run gets: the flags given, on the model card's defaults (the shapes model:
    64x64, ...), else the release's, or the tiny preset's; checked for the release before anything loads."""
    weights = args.weights or TINY
    release = "1.0" if weights == TINY else release_of(weights)
    return release_options(options_for(release, model_card(weights), given_options(args)), release)


def _pipeline(args, shard):
    return open_pipeline(args.weights or TINY, device=shard.device(args.device), dtype=args.dtype, progress=False)


# -- metrics -----------------------------------------------------------------------------------
def _fvd_protocol_args(p: argparse.ArgumentParser) -> None:
    add_flag(p, "--detector", required=True,
             help="I3D file: i3d_torchscript.pt, i3d_pretrained_400.pt, rgb_imagenet.pt; fvd-videomae: "
                  "vit_g_hybrid_pt_1200e_ssv2_ft.pth")
    _protocol_arg(p, "fvd")
    add_flag(p, "--num-videos", type=_positive_int, help="N on each side (default: the protocol's, 2048)")
    add_flag(p, "--num-frames", type=_positive_int, help="frames per clip (default: the protocol's, 16)")
    add_flag(p, "--stride", type=_positive_int, help="take every stride-th frame (default: the protocol's, 1)")
    add_flag(p, "--seed", type=int, help="seed of the real clips' offsets (and order) (default: the protocol's, 0)")
    _detector_args(p)
    _i3d_convention_args(p)


def _fvd_protocol(args):
    return _protocol("fvd", args, num_videos=args.num_videos, num_frames=args.num_frames, stride=args.stride,
                     seed=args.seed)


def _i3d(args, shard, protocol):
    """The protocol's feature network: I3D, or VideoMAE-v2 for fvd-videomae."""
    return BY_NAME["fvd"].extractor(args.detector, shard.device(args.device), protocol, trust=args.trust_detector,
                                    input_range=args.detector_range, bn_eps=args.detector_bn_eps)


def _stats_parser(commands) -> None:
    p = commands.add_parser("stats", help="compute and cache the real-set FVD statistics")
    _real_args(p)
    _fvd_protocol_args(p)
    add_flag(p, "--out", required=True, help="statistics file to write (.safetensors)")
    _run_args(p, report=False)
    p.set_defaults(func=_stats)


def _stats(args) -> int:
    protocol = _fvd_protocol(args)
    _check_outputs((args.out, "--out"))
    shard = init_shard()
    detector = _i3d(args, shard, protocol)
    stats, extraction, cached = eval_protocol.real_fvd_statistics(_load_real(args), detector, protocol,
                                                                  _options(args, shard), args.out)
    if shard.is_main:
        state = "already cached" if cached else "written"
        print(f"{stats.count} real videos ({len(extraction.skipped)} skipped): {args.out} {state}")
    return 0


def _fvd_parser(commands) -> None:
    p = commands.add_parser("fvd", help="Fréchet Video Distance (I3D: fvd-styleganv, fvd-videogpt, fvd-tf; VideoMAE-v2: fvd-videomae)")
    _real_args(p)
    _fake_args(p)
    _fvd_protocol_args(p)
    add_flag(p, "--real-stats", help="cache of the real statistics: reused when the settings match, else written")
    _run_args(p)
    p.set_defaults(func=_fvd)


def _fvd(args) -> int:
    protocol = _fvd_protocol(args)
    _check_outputs((str(_report_path(args, protocol.name)), "--report"), (args.real_stats, "--real-stats"))
    shard = init_shard()
    detector = _i3d(args, shard, protocol)
    report = BY_NAME["fvd"].statistic(_load_real(args), _load_fake(args), detector, protocol,
                                      _options(args, shard), args.real_stats)
    return _finish(report, args, shard)


def _is_parser(commands) -> None:
    p = commands.add_parser("is", help="Inception Score with the UCF-101 C3D (protocols is-styleganv, is-tganv2, is-tganv1)")
    _fake_args(p)
    add_flag(p, "--detector", required=True, help="C3D file: c3d_ucf101.pt or a kvideo C3D safetensors")
    _protocol_arg(p, "is")
    add_flag(p, "--num-videos", type=_positive_int, help="videos per run (default: the protocol's)")
    add_flag(p, "--splits", type=_positive_int, help="splits of each run (default: the protocol's)")
    add_flag(p, "--runs", type=_positive_int,
                help="runs of --num-videos further videos each (default: the protocol's)")
    _detector_args(p)
    _dataset_args(p)
    _run_args(p)
    p.set_defaults(func=_is)


def _is(args) -> int:
    protocol = _protocol("is", args, num_videos=args.num_videos, splits=args.splits, runs=args.runs)
    _check_outputs((str(_report_path(args, protocol.name)), "--report"))
    shard = init_shard()
    metric = BY_NAME["is"]
    detector = metric.extractor(args.detector, shard.device(args.device), protocol, trust=args.trust_detector)
    return _finish(metric.statistic(_load_fake(args), detector, protocol, _options(args, shard)), args, shard)


def _clipsim_parser(commands) -> None:
    p = commands.add_parser("clipsim", help="CLIPSIM: CLIP ViT-B/32 frame-caption cosine (protocol clipsim)")
    _fake_args(p)
    add_flag(p, "--clip", required=True, help="local CLIP folder (transformers format)")
    _protocol_arg(p, "clipsim")
    add_flag(p, "--num-videos", type=_positive_int, help="videos (default: all)")
    add_flag(p, "--max-frames", type=_positive_int, help="frames per video (default: all)")
    _dataset_args(p)
    _run_args(p)
    p.set_defaults(func=_clipsim)


def _clipsim(args) -> int:
    protocol = _protocol("clipsim", args, num_videos=args.num_videos, max_frames=args.max_frames)
    _check_outputs((str(_report_path(args, protocol.name)), "--report"))
    shard = init_shard()
    metric = BY_NAME["clipsim"]
    scorer = metric.extractor(args.clip, shard.device(args.device), protocol)
    return _finish(metric.statistic(_load_fake(args), scorer, protocol, _options(args, shard)), args, shard)
