"""Video MoVQ decoding: time and peak memory per frame, kvideo's batched windows vs a per-frame loop.

Both paths use the same weights (a seeded random init, or --checkpoint) and the same windows. The
per-frame path is the reference's way: one decoder call per window, and inside it every spatial
layer (norms, 2D convs, spatial attention, upsampling) run frame by frame; only the temporal layers
see the window at once. Each path runs in its own process so that peak memory is its own.

    python benchmarks/bench_decode.py                        # CPU: tiny-video, 64x64, 57 frames, float32
    python benchmarks/bench_decode.py --device cuda          # GPU: official-video, 512x512, 57 frames, bf16

Peak memory: CUDA, the allocator's peak above the loaded weights and inputs; CPU, the process's
peak resident set above its size before decoding (Linux ru_maxrss), which includes allocator slack.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Iterator

import torch
from torch import nn

from kvideo.models.movq import AttentionBlock, MoVQ, MoVQConfig, SpatialNorm, Upsample, split_windows
from kvideo.models.temporal import TemporalModule

PATHS = ("batched", "per-frame")
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    cuda = torch.cuda.is_available()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if cuda else "cpu")
    parser.add_argument("--preset", help="MoVQConfig preset (default: official-video on CUDA, tiny-video on CPU)")
    parser.add_argument("--checkpoint", type=Path, help="video_movq.pt or a kvideo file (default: random weights)")
    parser.add_argument("--size", type=int, help="frame height and width in pixels (default 512 on CUDA, 64 on CPU)")
    parser.add_argument("--frames", type=int, default=57)
    parser.add_argument("--window", type=int, help="frames per window (default: the reference's windows)")
    parser.add_argument("--windows-per-batch", type=int, help="batched path: at most this many windows per pass")
    parser.add_argument("--dtype", choices=DTYPES, help="default bfloat16 on CUDA, float32 on CPU")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1,
                        help="CPU threads (1 by default: steadier on a shared machine, where idle OpenMP threads spin)")
    parser.add_argument("--path", choices=PATHS, help=argparse.SUPPRESS)  # internal: run one path, print JSON
    parser.add_argument("--save-output", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    gpu = args.device.startswith("cuda")
    args.preset = args.preset or ("official-video" if gpu else "tiny-video")
    args.size = args.size or (512 if gpu else 64)
    args.dtype = args.dtype or ("bfloat16" if gpu else "float32")
    return args


# -- the reference's per-frame loop -----------------------------------------------------------------------
class PerFrame(nn.Module):
    """Runs the wrapped module on one row (frame) at a time; tensor arguments are split by row."""

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.module = module

    def forward(self, *args):
        rows = args[0].shape[0]
        outs = [self.module(*(a[i:i + 1] if torch.is_tensor(a) else a for a in args)) for i in range(rows)]
        return torch.cat(outs)


@contextlib.contextmanager
def per_frame_layers(model: MoVQ) -> Iterator[None]:
    """Temporarily wrap the decoder's spatial layers in PerFrame; temporal modules stay batched."""
    swapped = []

    def wrap(parent: nn.Module) -> None:
        for name, child in parent.named_children():
            if isinstance(child, TemporalModule):
                continue
            if isinstance(child, (SpatialNorm, AttentionBlock, Upsample, nn.Conv2d)):
                swapped.append((parent, name, child))
                setattr(parent, name, PerFrame(child))
            else:
                wrap(child)

    wrap(model.decoder)
    try:
        yield
    finally:
        for parent, name, child in swapped:
            setattr(parent, name, child)


def decode_per_frame(model: MoVQ, clip: torch.Tensor, window: int | None) -> torch.Tensor:
    """One decoder call per window, spatial layers frame by frame (the reference's decode_video)."""
    outs, start = [], 0
    with per_frame_layers(model):
        for length in split_windows(clip.shape[2], window):
            outs.append(model.decode(clip[:, :, start:start + length], window=length))
            start += length
    return torch.cat(outs, dim=2)


# -- one path in this process -----------------------------------------------------------------------------
def build_model(args: argparse.Namespace) -> MoVQ:
    dtype, device = DTYPES[args.dtype], torch.device(args.device)
    if args.checkpoint:
        return MoVQ.from_pretrained(args.checkpoint, device=device, dtype=dtype)
    torch.manual_seed(0)
    with device:  # initialise on the device: fast at official size, seeded so that both paths match
        model = MoVQ(MoVQConfig.preset(args.preset))
    for module in model.modules():  # wake the zero-initialised temporal parts up
        if isinstance(module, nn.Conv3d) or (isinstance(module, TemporalModule) and hasattr(module, "proj_out")):
            (module if isinstance(module, nn.Conv3d) else module.proj_out).reset_parameters()
        if hasattr(module, "merge"):
            nn.init.constant_(module.merge, 0.5)
    return model.to(device=device, dtype=dtype).eval()


def resident_mb() -> float:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * resource.getpagesize() / 2**20


def run_path(args: argparse.Namespace) -> dict:
    torch.set_num_threads(args.threads)
    model = build_model(args)
    device = torch.device(args.device)
    latent = args.size // model.config.downsample_factor
    clip = torch.randn(1, model.config.latent_channels, args.frames, latent, latent,
                       generator=torch.Generator().manual_seed(1)).to(device)

    def decode() -> torch.Tensor:
        if args.path == "batched":
            return model.decode(clip, window=args.window, windows_per_batch=args.windows_per_batch)
        return decode_per_frame(model, clip, args.window)

    gpu = device.type == "cuda"
    sync = torch.cuda.synchronize if gpu else (lambda: None)
    before = torch.cuda.memory_allocated() / 2**20 if gpu else resident_mb()
    if gpu:
        torch.cuda.reset_peak_memory_stats()
    times = []
    with torch.inference_mode():
        out = decode()  # warm-up (kernel selection, allocator growth); also its memory peak
        for _ in range(args.repeats):
            sync()
            start = time.perf_counter()
            out = decode()
            sync()
            times.append(time.perf_counter() - start)
    if gpu:
        peak = torch.cuda.max_memory_allocated() / 2**20
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    if args.save_output:
        torch.save(out.cpu(), args.save_output)
    seconds = min(times)  # best of the repeats: the least disturbed by other processes
    return {
        "path": args.path, "device": torch.cuda.get_device_name() if gpu else "cpu", "dtype": args.dtype,
        "preset": args.preset, "size": args.size, "frames": args.frames,
        "windows": split_windows(args.frames, args.window), "seconds": seconds,
        "ms_per_frame": 1000 * seconds / args.frames, "peak_mb": peak - before,
        "peak_mb_per_frame": (peak - before) / args.frames,
    }


# -- driver: both paths in their own processes ------------------------------------------------------------
def run_in_subprocess(argv: list[str], path: str, output: Path) -> dict:
    command = [sys.executable, str(Path(__file__).resolve()), *argv, "--path", path, "--save-output", str(output)]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"{path} run failed:\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def report(rows: list[dict], max_difference: float) -> None:
    first = rows[0]
    print(f"{first['preset']}, {first['size']}x{first['size']}, {first['frames']} frames, {first['dtype']}, "
          f"{first['device']}, windows {first['windows']}")
    print("| path | s / clip (best of repeats) | ms / frame | peak MB | peak MB / frame |")
    print("|---|---|---|---|---|")
    for row in rows:
        print(f"| {row['path']} | {row['seconds']:.3f} | {row['ms_per_frame']:.1f} | {row['peak_mb']:.0f} "
              f"| {row['peak_mb_per_frame']:.2f} |")
    speedup = rows[1]["seconds"] / rows[0]["seconds"]
    print(f"batched is {speedup:.2f}x faster; max |batched - per-frame| = {max_difference:.2e}")


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    if args.path:
        print(json.dumps(run_path(args)))
        return
    with tempfile.TemporaryDirectory() as tmp:
        outputs = [Path(tmp) / f"{path}.pt" for path in PATHS]
        rows = [run_in_subprocess(argv, path, output) for path, output in zip(PATHS, outputs)]
        batched, per_frame = (torch.load(o, weights_only=True) for o in outputs)
    report(rows, float((batched - per_frame).abs().max()))


if __name__ == "__main__":
    main()
