"""Compiled execution (`--compile`) on the CPU or a GPU: seconds per clip eager vs compiled, and the compile time.

Loads a weights folder or built-in model (default: the shapes model, `kvideo generate`'s default) and makes
one clip of its card's defaults several times, in one process:

1. eager: one untimed clip (allocator and kernel warm-up);
2. compiled: a second pipeline of the same weights, `pipe.compile()` (each UNet and video-decoder block
   compiles when it first runs), one clip whose time is compile + one clip; compile time = that first clip
   minus the median compiled clip.

Then eager and compiled clips alternate (--repeats of each), so that a change of load on a shared machine
hits both alike. The compiled clip must equal the eager one within round-off: the largest
pixel difference and the latents' relative L2 are reported. inductor's on-disk cache is a fresh folder
unless --warm-cache, so the compile time is that of a first run on a machine.

    OMP_NUM_THREADS=1 python benchmarks/bench_compile.py --json-out compile.json
    OMP_NUM_THREADS=1 python benchmarks/bench_compile.py --channels-last      # channels-last convolutions too
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time

import torch

from kvideo.generation import open_pipeline

PROMPT = "a red circle moving left on a black background"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", default="shapes", help="weights folder or built-in model (default: shapes)")
    parser.add_argument("--device", default="cpu", help="default: cpu")
    parser.add_argument("--dtype", default="fp32", choices=("fp32", "bf16", "fp16"), help="default: fp32")
    parser.add_argument("--prompt", default=PROMPT)
    parser.add_argument("--repeats", type=int, default=3, help="timed clips of each mode (default 3)")
    parser.add_argument("--mode", default="default", help="torch.compile mode (default: default)")
    parser.add_argument("--channels-last", action="store_true", help="channels-last 2D convolutions too")
    parser.add_argument("--warm-cache", action="store_true", help="keep inductor's on-disk cache (default: fresh)")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads (default 1)")
    parser.add_argument("--json-out", help="write the results as JSON here")
    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error(f"--repeats={args.repeats}: must be >= 1")
    return args


def timed_clip(pipe, prompt: str):
    """(seconds, output) of one clip with seed 0, the device synchronised around it."""
    if pipe.device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    out = pipe(prompt, seed=0)
    if pipe.device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start, out


def compare(eager, compiled) -> dict:
    """The largest pixel difference and the latents' relative L2 between an eager and a compiled clip."""
    pixels = int(abs(eager.frames.astype(int) - compiled.frames.astype(int)).max())
    latents = float((compiled.latents - eager.latents).norm() / eager.latents.norm())
    return {"max_pixel_difference": pixels, "latents_relative_l2": latents}


def measure(args: argparse.Namespace) -> dict:
    """Two pipelines of the same weights, one compiled; after the warm-up and the compile, their clips alternate."""
    eager_pipe, compiled_pipe = (open_pipeline(args.weights, device=args.device, dtype=args.dtype, progress=False)
                                 for _ in range(2))
    timed_clip(eager_pipe, args.prompt)  # warm-up
    compiled_pipe.compile(mode=args.mode, channels_last=args.channels_last)
    first, _ = timed_clip(compiled_pipe, args.prompt)
    eager, compiled = [], []
    for _ in range(args.repeats):
        eager.append(timed_clip(eager_pipe, args.prompt))
        compiled.append(timed_clip(compiled_pipe, args.prompt))
    seconds = {"eager": statistics.median(s for s, _ in eager), "compiled": statistics.median(s for s, _ in compiled)}
    return {"eager_s": [round(s, 3) for s, _ in eager], "compiled_s": [round(s, 3) for s, _ in compiled],
            "eager_median_s": seconds["eager"], "compiled_median_s": seconds["compiled"],
            "speedup": seconds["eager"] / seconds["compiled"], "first_compiled_clip_s": first,
            "compile_s": first - seconds["compiled"], "frames": int(eager[0][1].frames.shape[0]),
            **compare(eager[0][1], compiled[0][1])}


def main(argv: list[str] | None = None) -> dict:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as cache:
        if not args.warm_cache:
            os.environ["TORCHINDUCTOR_CACHE_DIR"] = cache
        result = measure(args)
    result["environment"] = {
        "device": torch.cuda.get_device_name() if args.device.startswith("cuda") else platform.processor() or "cpu",
        "torch": torch.__version__, "threads": args.threads, "weights": args.weights, "dtype": args.dtype,
        "mode": args.mode, "channels_last": args.channels_last, "warm_cache": args.warm_cache,
        "command": " ".join(["benchmarks/bench_compile.py", *argv]), "load_average": os.getloadavg()}
    print(f"eager {result['eager_median_s']:.2f} s/clip {result['eager_s']}, compiled {result['compiled_median_s']:.2f}"
          f" s/clip {result['compiled_s']} ({result['speedup']:.2f}x), compile {result['compile_s']:.1f} s; "
          f"max pixel difference {result['max_pixel_difference']}, latents rel. L2 {result['latents_relative_l2']:.1e}")
    if args.json_out:
        with open(args.json_out, "w") as out:
            json.dump(result, out, indent=2)
    return result


if __name__ == "__main__":
    main()
