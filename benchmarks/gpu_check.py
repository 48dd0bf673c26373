"""Issue 26's one GPU run: official-size random weights built on the GPU, the reference path vs kvideo (eager,
compiled, the fast sampling options), per stage seconds and peak GB, the keyframe step's TFLOP/s and share of
peak, bf16 parity vs fp32 on one step, decoding batched vs per frame, the 24 GB path (offload + int8 text).

Built to fit about 7 minutes on one H100 / H200 (`benchmarks/gpu_check.sh` runs it under `timeout`): every part
runs under a time budget (--budget-s) and is skipped, with the reason recorded, when too little is left; the JSON
and the markdown table are rewritten after every part, so a killed run keeps what it measured. The models are
seeded random weights at the release's sizes (bench_generate.py: keyframe UNet 4.1 B, interpolation UNet 3.9 B,
video MoVQ 0.67 B, a 2-layer stand-in of flan-ul2's encoder at its width), each initialised directly on the
device (`with torch.device(...)`), never on the CPU. The parts, in order of priority:

  kvideo       one fps=medium clip, kvideo's path (bf16, SDPA, batched decoding): seconds and peak GB per stage
  flops        one guided keyframe UNet step: GFLOP (FlopCounterMode), seconds, TFLOP/s, % of the card's peak
  decode       the video decoder on the clip's 57 frames: batched windows vs the reference's per-frame loop
  fast         one kvideo clip with the fast sampling options (FAST: DPM++ 2M, fewer steps, step caching,
               guidance interval), reported apart from the release's step counts
  parity       one guided keyframe step in bf16 (kvideo) and fp16 weights (the reference's) vs fp32 (TF32 off)
  reference    one clip on the reference's path (fp16 weights, math attention, per-frame decoding)
  compiled     `pipe.compile()` (the UNets' and decoder's blocks): compile time, one clip, the step's TFLOP/s
  compiled_fast  the fast options, compiled
  low_memory   offload="model" and the int8 text encoder: per stage peak GB (the 24 GB target)
  text_int8    the flan-width stand-in alone: context relative error int8 vs bf16, and its weight bytes

    benchmarks/gpu_check.sh out                                   # GPU: official size, writes out/gpu_check.*
    python benchmarks/gpu_check.py --preset tiny --device cpu     # the same parts on tiny models, seconds
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import platform
import statistics
import sys
import time
import traceback
from pathlib import Path
from typing import Callable

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_generate  # noqa: E402  (the pipelines, the stage timer and the options of the whole-clip benchmark)
from bench_decode import decode_per_frame  # noqa: E402

from kvideo import attention, compilation  # noqa: E402
from kvideo.generation.base import tiny_text_encoder  # noqa: E402
from kvideo.models.unet import UNetConfig  # noqa: E402
from kvideo.quantize import weight_bytes  # noqa: E402

PARTS = ("kvideo", "flops", "decode", "fast", "parity", "reference", "compiled", "compiled_fast", "low_memory",
         "text_int8")
# seconds each part needs at official size on an H100 (estimated; the tiny preset's are taken as 1)
ESTIMATES = {"kvideo": 60, "flops": 15, "decode": 30, "parity": 40, "reference": 60, "fast": 15, "compiled": 200,
             "compiled_fast": 15, "low_memory": 60, "text_int8": 15}
FAST = dict(sampler="dpmpp_2m", interpolation_sampler="ddim", timestep_spacing="trailing", cache_interval=2,
            guidance_interval=(300.0, 1000.0))
# dense bf16 TFLOP/s by the card's name, the first name it contains (PCIe and NVL H100s before the SXM one)
PEAK_TFLOPS = {"H100 PCIe": 756.0, "H100 NVL": 835.0, "H100": 989.0, "H200": 989.0, "A100": 312.0, "L40S": 362.0}
SIZES = {"official": dict(size=512, steps=50, fast_steps=20, fast_interpolation_steps=10),
         "tiny": dict(size=64, steps=2, fast_steps=2, fast_interpolation_steps=1)}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda", help="default: cuda")
    parser.add_argument("--preset", choices=SIZES, default="official", help="model sizes (default: official)")
    parser.add_argument("--parts", default=",".join(PARTS), help=f"comma list of {', '.join(PARTS)} (default: all)")
    parser.add_argument("--budget-s", type=float, default=420.0, help="stop starting parts after this (default 420)")
    parser.add_argument("--compile-mode", default="default", choices=compilation.MODES, help="(default: default)")
    parser.add_argument("--channels-last", action="store_true", help="compiled part: channels-last convolutions too")
    parser.add_argument("--peak-tflops", type=float, help="the card's dense bf16 peak (default: by its name)")
    parser.add_argument("--json-out", type=Path, default=Path("gpu_check.json"), help="(default: gpu_check.json)")
    parser.add_argument("--markdown-out", type=Path, default=Path("gpu_check.md"), help="(default: gpu_check.md)")
    args = parser.parse_args(argv)
    args.parts = [p for p in args.parts.split(",") if p]
    unknown = sorted(set(args.parts) - set(PARTS))
    if unknown:
        parser.error(f"--parts: unknown {unknown}; choose from {', '.join(PARTS)}")
    return args


def bench_args(args: argparse.Namespace, **changes) -> argparse.Namespace:
    """bench_generate's arguments for this run: its defaults, the preset's sizes, one repeat."""
    sizes = SIZES[args.preset]
    argv = ["--device", args.device, "--preset", args.preset, "--size", str(sizes["size"]), "--steps",
            str(sizes["steps"]), "--repeats", "1", "--warmup-steps", "1"]
    if torch.device(args.device).type != "cuda":
        argv += ["--dtype", "bf16"]  # the CPU's default is fp32; bf16 exercises the same casts as the GPU run
    values = bench_generate.parse_args(argv)
    for name, value in changes.items():
        setattr(values, name, value)
    return values


# -- the parts ---------------------------------------------------------------------------------------------
class Run:
    """The results, the time budget and the models the parts share (built once, freed when no longer needed)."""

    def __init__(self, args: argparse.Namespace, argv: list[str]) -> None:
        self.args, self.start = args, time.perf_counter()
        self.device = torch.device(args.device)
        self.bench = bench_args(args)
        self.results: dict = {"environment": environment(args, argv), "parts": {}}
        self.pipe = None
        self.latents: torch.Tensor | None = None

    def left(self) -> float:
        return self.args.budget_s - (time.perf_counter() - self.start)

    def kvideo_pipe(self):
        if self.pipe is None:
            self.pipe = bench_generate.build_pipeline(self.bench, "kvideo")
        return self.pipe

    def free(self) -> None:
        self.pipe = None
        bench_generate.release_memory(self.device)

    def clip(self, pipe, mode: str, **options) -> dict:
        """One clip of the release's step counts (or `options`), after a one-step warm-up: stages and peaks."""
        opts = dataclasses.replace(bench_generate.options(self.bench), **options)
        warm = dataclasses.replace(opts, steps=1, interpolation_steps=1)
        with attention.backend("sdpa" if mode != "reference" else "math"), torch.no_grad():
            bench_generate.run_clip(pipe, mode, warm, bench_generate.StageTimer(self.device))
            timer = bench_generate.StageTimer(self.device)
            start = time.perf_counter()
            self.latents = bench_generate.run_clip(pipe, mode, opts, timer)
            seconds = time.perf_counter() - start
        return {"clip_s": seconds, "stages": stage_rows(timer), "frames": int(self.latents.shape[2]),
                "steps": opts.steps, "interpolation_steps": opts.interpolation_steps, "sampler": opts.sampler,
                "cache_interval": opts.cache_interval}


def stage_rows(timer) -> dict:
    return {name: {"s": round(timer.seconds[name], 4), "peak_gb": timer.peak_gb[name]} for name in timer.seconds}


def part_kvideo(run: Run) -> dict:
    return {"path": "bf16 weights + autocast, SDPA, batched decoding", **run.clip(run.kvideo_pipe(), "kvideo")}


def part_fast(run: Run) -> dict:
    sizes = SIZES[run.args.preset]
    options = {**FAST, "steps": sizes["fast_steps"], "interpolation_steps": sizes["fast_interpolation_steps"]}
    return {"options": {k: list(v) if isinstance(v, tuple) else v for k, v in options.items()},
            **run.clip(run.kvideo_pipe(), "kvideo", **options)}


def keyframe_step(unet, device: torch.device, size: int, dtype: torch.dtype):
    """A function running one guided keyframe step (both branches as one batch of 2) on fixed inputs."""
    cfg = unet.config
    generator = torch.Generator().manual_seed(2)
    x = torch.randn(2, cfg.num_channels, cfg.num_frames, size // 8, size // 8, generator=generator).to(device)
    context = torch.randn(2, 32, cfg.context_dim, generator=generator).to(device)
    mask, time_ = torch.ones(2, 32, dtype=torch.bool, device=device), torch.full((2,), 500, device=device)
    autocast = torch.autocast(device.type, dtype=dtype) if dtype != torch.float32 else contextlib.nullcontext()

    def step() -> torch.Tensor:  # a compiled UNet may compile one graph per block and shape, as in its stages
        with torch.no_grad(), autocast, compilation.compile_limits():
            return unet(x, time_, context, mask)
    return step


def timed(step: Callable[[], torch.Tensor], device: torch.device, iters: int = 5) -> float:
    """Median seconds of `iters` synchronised calls, after one untimed call."""
    step()
    times = []
    for _ in range(iters):
        bench_generate.synchronize(device)
        start = time.perf_counter()
        step()
        bench_generate.synchronize(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def step_flops(run: Run) -> dict:
    """FLOPs and speed of one guided keyframe step of the kvideo pipeline's UNet (eager, or compiled: then the
    FLOPs are the eager part's count, so that the compiled UNet is not traced under the counter)."""
    from torch.utils.flop_counter import FlopCounterMode

    pipe = run.kvideo_pipe()
    step = keyframe_step(pipe.unet, run.device, run.bench.size, pipe.dtype)
    counted = run.results["parts"].get("flops", {}).get("gflop")
    if counted is None or not pipe.compiled:
        with attention.backend("math"), FlopCounterMode(display=False) as counter:
            step()
        counted = counter.get_total_flops() / 1e9
    flops, seconds = counted * 1e9, timed(step, run.device)
    peak = run.results["environment"]["peak_tflops"]
    return {"gflop": flops / 1e9, "step_s": seconds, "tflops": flops / seconds / 1e12,
            "percent_of_peak": None if not peak else 100 * flops / seconds / 1e12 / peak,
            "shape": f"2 x {pipe.unet.config.num_frames} frames x {run.bench.size // 8}^2 latents, 32 tokens"}


def part_decode(run: Run) -> dict:
    """The kvideo pipeline's decoder on the last clip's latents: batched windows vs the per-frame loop."""
    pipe = run.kvideo_pipe()
    latents = run.latents if run.latents is not None else torch.randn(1, 4, 57, run.bench.size // 8,
                                                                          run.bench.size // 8)
    latents = latents.to(run.device, pipe.dtype)
    out = {}
    for name, decode in (("batched", lambda: pipe.decoder.decode(latents)),
                         ("per_frame", lambda: decode_per_frame(pipe.decoder, latents, None))):
        timer = bench_generate.StageTimer(run.device)
        with torch.no_grad(), pipe._autocast():
            decode()  # warm-up
            timer(name, decode)
        out[name] = {"s": timer.seconds[name], "peak_gb": timer.peak_gb[name]}
    out["speedup"] = out["per_frame"]["s"] / out["batched"]["s"]
    out["frames"] = int(latents.shape[2])
    return out


def part_parity(run: Run) -> dict:
    """One guided keyframe step in fp32 (TF32 off), bf16 (kvideo) and fp16 (reference): relative L2 vs fp32."""
    pipe = run.kvideo_pipe()
    low = {"bf16": keyframe_step(pipe.unet, run.device, run.bench.size, torch.bfloat16)()}
    fp32_unet = bench_generate.build_unet(run.bench, 0, torch.float32)
    with bench_generate.exact_fp32(run.device):
        reference = keyframe_step(fp32_unet, run.device, run.bench.size, torch.float32)()
    half = torch.float16 if run.device.type == "cuda" else torch.bfloat16
    fp32_unet.to(half)
    low["fp16" if run.device.type == "cuda" else "bf16_weights"] = keyframe_step(
        fp32_unet, run.device, run.bench.size, half)()
    del fp32_unet
    bench_generate.release_memory(run.device)
    return {name: {"relative_l2": bench_generate.relative_l2(out.float(), reference.float()),
                   "finite": bool(torch.isfinite(out).all())} for name, out in low.items()}


def part_reference(run: Run) -> dict:
    run.free()
    pipe = bench_generate.build_pipeline(run.bench, "reference")
    try:
        return {"path": f"{run.bench.reference_dtype} weights + autocast, math attention, per-frame decoding",
                **run.clip(pipe, "reference")}
    finally:
        del pipe
        bench_generate.release_memory(run.device)


def part_compiled(run: Run) -> dict:
    """Compile the kvideo pipeline's blocks; compile time = the first one-step clip minus the second."""
    pipe = run.kvideo_pipe()
    pipe.compile(mode=run.args.compile_mode, channels_last=run.args.channels_last)
    one_step = dataclasses.replace(bench_generate.options(run.bench), steps=1, interpolation_steps=1)
    seconds = []
    for _ in range(2):
        start = time.perf_counter()
        with attention.backend("sdpa"), torch.no_grad():
            bench_generate.run_clip(pipe, "kvideo", one_step, bench_generate.StageTimer(run.device))
        seconds.append(time.perf_counter() - start)
    return {"mode": run.args.compile_mode, "channels_last": run.args.channels_last,
            "compile_s": seconds[0] - seconds[1], "one_step_clip_s": seconds, **run.clip(pipe, "kvideo"),
            "keyframe_step": step_flops(run)}


def part_compiled_fast(run: Run) -> dict:
    if not run.kvideo_pipe().compiled:
        return {"skipped": "the compiled part did not run"}
    return part_fast(run)


def part_low_memory(run: Run) -> dict:
    """offload="model" with the text stand-in in int8: what each stage needs on the GPU (the 24 GB target)."""
    run.free()
    bench = bench_args(run.args, offload="model")
    pipe = bench_generate.build_pipeline(bench, "kvideo")
    pipe.text_encoder.quantize_int8()
    try:
        return {"offload": "model", "text_encoder": "int8", **run.clip(pipe, "kvideo")}
    finally:
        del pipe
        bench_generate.release_memory(run.device)


def part_text_int8(run: Run) -> dict:
    """The flan-width text stand-in alone, in bf16 then int8 (the same weights): context relative L2, bytes."""
    torch.manual_seed(run.bench.seed + 3)
    context_dim = UNetConfig.preset(bench_generate.PRESETS[run.args.preset][0]).context_dim
    with torch.device(run.device):
        text = tiny_text_encoder(context_dim, device=run.device, t5=bench_generate.TEXT_STAND_IN[run.args.preset])
    text.encoder.to(torch.bfloat16)
    with torch.no_grad():
        bf16 = text.encode(bench_generate.PROMPT).context.float()
        before = weight_bytes(text.encoder)
        text.quantize_int8()
        int8 = text.encode(bench_generate.PROMPT).context.float()
    return {"relative_l2_vs_bf16": bench_generate.relative_l2(int8, bf16), "bf16_bytes": before,
            "int8_bytes": weight_bytes(text.encoder), "layers": text.encoder.config.num_layers}


PART_FUNCTIONS = {"kvideo": part_kvideo, "flops": step_flops, "decode": part_decode, "parity": part_parity,
                  "reference": part_reference, "fast": part_fast, "compiled": part_compiled,
                  "compiled_fast": part_compiled_fast, "low_memory": part_low_memory, "text_int8": part_text_int8}


# -- the report ---------------------------------------------------------------------------------------------
def environment(args: argparse.Namespace, argv: list[str]) -> dict:
    device = torch.device(args.device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu"
    peak = args.peak_tflops or next((v for k, v in PEAK_TFLOPS.items() if k in name), None)
    return {"device": name, "torch": torch.__version__, "cuda": torch.version.cuda,
            "cudnn": torch.backends.cudnn.version() if device.type == "cuda" else None,
            "python": platform.python_version(), "preset": args.preset, **SIZES[args.preset], "peak_tflops": peak,
            "budget_s": args.budget_s, "command": " ".join(["benchmarks/gpu_check.py", *argv]),
            "time_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}


def run_part(run: Run, name: str) -> dict:
    """One part under the budget: its result, or why it was skipped or failed (the run goes on)."""
    estimate = ESTIMATES[name] if run.args.preset == "official" else 1
    if run.left() < estimate:
        return {"skipped": f"budget: {run.left():.0f} s left, the part needs about {estimate} s"}
    start = time.perf_counter()
    try:
        result = PART_FUNCTIONS[name](run)
    except Exception as error:  # noqa: BLE001 - recorded (an out-of-memory error above all), the run goes on
        traceback.print_exc()
        result = {"error": f"{type(error).__name__}: {' '.join(str(error).split())[:300]}"}
    result["part_s"] = round(time.perf_counter() - start, 2)
    return result


def fmt(value, digits: int = 2) -> str:
    if value is None:
        return "-"
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def clip_table(parts: dict) -> list[str]:
    """Stage seconds and peak GB of every clip part side by side."""
    clips = {name: r for name, r in parts.items() if "stages" in r}
    if not clips:
        return []
    names = list(dict.fromkeys(s for r in clips.values() for s in r["stages"]))
    lines = ["| stage | " + " | ".join(f"{n} s | {n} peak GB" for n in clips) + " |",
             "|---" * (1 + 2 * len(clips)) + "|"]
    for stage in names:
        cells = [f"{fmt(r['stages'].get(stage, {}).get('s'))} | {fmt(r['stages'].get(stage, {}).get('peak_gb'), 1)}"
                 for r in clips.values()]
        lines.append(f"| {stage} | " + " | ".join(cells) + " |")
    lines.append("| whole clip | " + " | ".join(f"{fmt(r['clip_s'])} | " for r in clips.values()) + " |")
    return lines


def markdown(results: dict) -> str:
    env, parts = results["environment"], results["parts"]
    lines = [f"# gpu_check: {env['preset']} size, {env['device']}, torch {env['torch']}, CUDA {env['cuda']}", ""]
    lines += clip_table(parts)
    if "reference" in parts and "kvideo" in parts and "clip_s" in parts["reference"] and "clip_s" in parts["kvideo"]:
        lines.append(f"\nreference / kvideo (whole clip): {parts['reference']['clip_s'] / parts['kvideo']['clip_s']:.2f}x")
    for name in ("flops",):
        if "gflop" in parts.get(name, {}):
            f = parts[name]
            lines.append(f"keyframe step ({f['shape']}): {f['gflop']:.0f} GFLOP, {f['step_s']:.4f} s, "
                         f"{f['tflops']:.1f} TFLOP/s = {fmt(f['percent_of_peak'], 1)} % of peak")
    compiled = parts.get("compiled", {})
    if "compile_s" in compiled:
        f = compiled["keyframe_step"]
        lines.append(f"compiled ({compiled['mode']}): compile {compiled['compile_s']:.1f} s; keyframe step "
                     f"{fmt(f.get('step_s'), 4)} s, {fmt(f.get('tflops'), 1)} TFLOP/s = "
                     f"{fmt(f.get('percent_of_peak'), 1)} % of peak")
    if "speedup" in parts.get("decode", {}):
        d = parts["decode"]
        lines.append(f"decode {d['frames']} frames: batched {d['batched']['s']:.2f} s, per-frame "
                     f"{d['per_frame']['s']:.2f} s ({d['speedup']:.2f}x)")
    if "bf16" in parts.get("parity", {}):
        lines.append("one keyframe step vs fp32, relative L2: " + ", ".join(
            f"{k} {v['relative_l2']:.3g}" for k, v in parts["parity"].items() if isinstance(v, dict)))
    if "relative_l2_vs_bf16" in parts.get("text_int8", {}):
        t = parts["text_int8"]
        lines.append(f"text stand-in ({t['layers']} layers) int8 vs bf16: relative L2 {t['relative_l2_vs_bf16']:.4f}, "
                     f"{t['bf16_bytes'] / 2**30:.2f} -> {t['int8_bytes'] / 2**30:.2f} GiB")
    lines += [f"{name}: {r.get('skipped') or r.get('error')}" for name, r in parts.items()
              if "skipped" in r or "error" in r]
    return "\n".join(lines) + "\n"


def write(results: dict, args: argparse.Namespace) -> None:
    bench_generate.write_json_atomic(results, args.json_out)
    args.markdown_out.parent.mkdir(parents=True, exist_ok=True)
    args.markdown_out.write_text(markdown(results))


def main(argv: list[str] | None = None) -> dict:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    if torch.device(args.device).type == "cpu":
        torch.set_num_threads(1)
    run = Run(args, argv)
    for name in args.parts:
        run.results["parts"][name] = run_part(run, name)
        print(f"{name}: {json.dumps(run.results['parts'][name])}", flush=True)
        write(run.results, args)
    run.results["total_s"] = time.perf_counter() - run.start
    write(run.results, args)
    print(markdown(run.results))
    return run.results


if __name__ == "__main__":
    main()
