"""Whole-pipeline generation: time and peak memory per stage, kvideo's path vs the reference's, same random weights.

Builds the release 1.0 pipeline at official size with seeded random weights (nothing is downloaded):
keyframe UNet (official-keyframe, 4.1 B), interpolation UNet (official-interpolation, 3.9 B), video
MoVQ (official-video) and a random stand-in for the flan-ul2 text encoder (2 of its 32 layers, same
width: d_model 4096, d_ff 16384, 16 heads of 256, gated SiLU; byte-level tokenizer). It then times
each stage of one fps=medium clip (text, 15 keyframes x --steps, one interpolation pass x
--interpolation-steps, video decoding of the 57 frames) and the whole clip, in two modes run one after
the other in this process:

- kvideo: the default path. PyTorch SDPA attention, bf16 weights under bf16 autocast, text encoder
  in bf16, both guidance branches in one batched forward, all decoder windows batched.
- reference: the release's code path reproduced with kvideo's switches. "math" attention (einsum,
  masked entries at -finfo.max); fp16 *weights* under fp16 autocast (the release calls `unet.half()`
  / `movq.half()` and runs sampling inside `torch.cuda.amp.autocast`; its T5 stays fp32 under that
  autocast); one decoder call per window with every spatial layer run frame by frame
  (`bench_decode.decode_per_frame`). The release batches its two guidance branches
  (`BaseDiffusion.text_guidance` repeats x twice), so both modes batch them. Read from
  ai-forever/KandinskyVideo, video_kandinsky3/__init__.py, t2v_pipeline.py and model/diffusion.py.
  On the CPU fp16 is refused by the pipeline, so there the reference mode runs in fp32.

Both modes build the same weights: each model is initialised in fp32 on the device from its own seed,
its zero-initialised parts (temporal outputs and merges, conditional norms) are given random values
so that every layer contributes (--keep-zero-init leaves them at 0; timings do not depend on it),
then it is cast to the mode's dtype. The text stand-in's timing is that of 2 layers, not of the real
32-layer encoder (about 16x more); prompts are padded to 128 tokens as in the release, but the byte-level
tokenizer makes the context longer (71 tokens for the default prompt, ~20 with T5's own tokenizer).

Timings: torch.cuda.synchronize before and after each stage, a warm-up clip (--warmup-steps sampling
steps) first, then the median of --repeats clips. Peak memory (CUDA): torch.cuda.reset_peak_memory_stats
before each stage, max_memory_allocated after (weights included). --compile compiles both UNets of the
kvideo mode (`nn.Module.compile`, --compile-mode); the first one-step call of each sampling stage is
timed as its compile time. --parity compares final latents of fp32, the kvideo path (bf16) and the
reference path (fp16) on the same weights, noise and text context (relative L2 vs fp32; TF32 off for
fp32). Random weights are likely a harsh case for it (not verified against trained weights): the
round-off grows layer by layer through the GroupNorms (the tiny CPU net loses ~0.1-0.4 relative L2
to bf16 in one forward); compare the paths with each other rather than with a fixed threshold.
--flops counts the keyframe UNet's FLOPs for one guided step (both branches) with
torch.utils.flop_counter.FlopCounterMode (matmuls, convolutions and attention; norms and elementwise
ops not counted; counted with the math attention, which has the same FLOPs as SDPA), times that
forward in the kvideo mode and reports TFLOP/s and the share of --peak-tflops.

    # CPU (tiny presets, 64x64, 4 steps): a check that everything runs, not a measurement
    OMP_NUM_THREADS=1 PYTHONPATH=. python benchmarks/bench_generate.py --device cpu --parity --flops
    # GPU, official size, 512x512, 50 + 50 steps, both modes, median of 3. Estimated 3-6 minutes on an
    # H100 (kvideo ~10-20 s a clip, reference ~20-45 s, builds and warm-ups ~1 min); not yet measured.
    # If it runs long: --repeats 1, or --modes kvideo and --modes reference in two runs.
    PYTHONPATH=. python benchmarks/bench_generate.py --device cuda --flops --json-out bench_generate.json
    # GPU parity, fp32 vs bf16 vs fp16 on the same weights and noise (a few minutes)
    PYTHONPATH=. python benchmarks/bench_generate.py --device cuda --modes none --parity --json-out parity.json
    # GPU, the kvideo path compiled (compile time reported apart; dynamo traces both UNets without graph
    # breaks, but inductor's compile of two 4 B UNets may take minutes); with model offload
    PYTHONPATH=. python benchmarks/bench_generate.py --device cuda --modes kvideo --compile --compile-mode max-autotune
    PYTHONPATH=. python benchmarks/bench_generate.py --device cuda --modes kvideo --offload model
"""
from __future__ import annotations

import argparse
import contextlib
import functools
import gc
import json
import os
import platform
import statistics
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from kvideo import attention, diffusion
from kvideo.models.movq import MoVQ, MoVQConfig
from kvideo.models.unet import UNet, UNetConfig
from kvideo.generation import DTYPES, FPS_MODES, OFFLOAD, GenerationOptions, KVideoPipeline
from kvideo.generation.base import tiny_text_encoder

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_decode import decode_per_frame  # the reference's per-frame decoder loop

MODES = ("kvideo", "reference")
PROMPT = "a red car is drifting on the mountain road, close view, fast movement"  # the release README's
# flan-ul2's layer shape (google/flan-ul2 config.json), 2 layers of its 32; tiny: tiny_text_encoder's own
TEXT_STAND_IN = {"official": {"d_model": 4096, "d_ff": 16384, "d_kv": 256, "num_heads": 16, "num_layers": 2,
                              "feed_forward_proj": "gated-silu"},
                 "tiny": None}
PRESETS = {  # --preset -> (keyframe UNet, interpolation UNet, video MoVQ) config presets
    "official": ("official-keyframe", "official-interpolation", "official-video"),
    "tiny": ("tiny-keyframe", "tiny-interpolation", "tiny-video"),
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    cuda = torch.cuda.is_available()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if cuda else "cpu", help="default: cuda if available")
    parser.add_argument("--preset", choices=PRESETS, help="model sizes (default: official on CUDA, tiny on CPU)")
    parser.add_argument("--size", type=int, help="pixel height and width (default 512 on CUDA, 64 on CPU)")
    parser.add_argument("--frames", type=int, help="keyframes (default: the keyframe model's, 15)")
    parser.add_argument("--fps", choices=FPS_MODES, default="medium", help="interpolation passes (default medium)")
    parser.add_argument("--steps", type=int, help="keyframe sampling steps (default 50 on CUDA, 4 on CPU)")
    parser.add_argument("--interpolation-steps", type=int, help="default: as --steps")
    parser.add_argument("--warmup-steps", type=int, default=2, help="sampling steps of the untimed warm-up clip")
    parser.add_argument("--repeats", type=int, default=3, help="timed clips per mode; the median is reported")
    parser.add_argument("--modes", default="kvideo,reference", help="comma list of kvideo, reference; or none")
    parser.add_argument("--dtype", choices=DTYPES, help="kvideo mode dtype (default bf16 on CUDA, fp32 on CPU)")
    parser.add_argument("--reference-dtype", choices=DTYPES,
                        help="reference mode dtype (default fp16 on CUDA, as the release; fp32 on CPU)")
    parser.add_argument("--compile", action="store_true", help="torch.compile both UNets (kvideo mode)")
    parser.add_argument("--compile-mode", default="default",
                        help="torch.compile mode: default, reduce-overhead, max-autotune (default: default)")
    parser.add_argument("--offload", choices=OFFLOAD, default="none", help="model offload (default none)")
    parser.add_argument("--parity", action="store_true", help="relative L2 of final latents vs fp32")
    parser.add_argument("--flops", action="store_true", help="keyframe UNet FLOPs per step and TFLOP/s")
    parser.add_argument("--flops-iters", type=int, default=5, help="timed UNet forwards for --flops (default 5)")
    parser.add_argument("--peak-tflops", type=float, default=989.0,
                        help="the GPU's dense peak for --flops (default 989: H100 SXM bf16)")
    parser.add_argument("--keep-zero-init", action="store_true",
                        help="leave zero-initialised parts at zero (default: random values, all layers active)")
    parser.add_argument("--seed", type=int, default=0, help="weights seed (default 0)")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads (default 1)")
    parser.add_argument("--json-out", type=Path, help="write all results as JSON to this path (atomically)")
    args = parser.parse_args(argv)
    gpu = torch.device(args.device).type == "cuda"
    args.preset = args.preset or ("official" if gpu else "tiny")
    args.size = args.size or (512 if gpu else 64)
    args.steps = args.steps or (50 if gpu else 4)
    args.interpolation_steps = args.interpolation_steps or args.steps
    args.dtype = args.dtype or ("bf16" if gpu else "fp32")
    args.reference_dtype = args.reference_dtype or ("fp16" if gpu else "fp32")
    modes = [m for m in args.modes.split(",") if m and m != "none"]
    unknown = sorted(set(modes) - set(MODES))
    if unknown:
        parser.error(f"--modes: unknown {unknown}; choose from {MODES} or none")
    args.modes = modes
    for name in ("size", "steps", "interpolation_steps", "warmup_steps", "repeats", "flops_iters"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')}={getattr(args, name)}: must be >= 1")
    return args


# -- models -------------------------------------------------------------------------------------------------
def wake_zero_init(model: nn.Module) -> None:
    """Random values for the parts a fresh model starts at zero (temporal outputs, merges, norm modulation)."""
    for module in model.modules():
        weight = getattr(module, "weight", None)
        if isinstance(module, (nn.Linear, nn.Conv2d, nn.Conv3d)) and not bool(weight.any()):
            module.reset_parameters()
        for parameter in module.parameters(recurse=False):
            if parameter.numel() == 1 and not bool(parameter.any()):
                nn.init.constant_(parameter, 0.5)


def seeded_model(build: Callable[[], nn.Module], seed: int, args: argparse.Namespace, dtype: torch.dtype):
    """`build()` on the device in fp32 from `seed`, zero-init parts woken, cast to `dtype`."""
    torch.manual_seed(seed)
    with torch.device(args.device):
        model = build()
    if not args.keep_zero_init:
        wake_zero_init(model)
    return model.to(dtype=dtype).eval().requires_grad_(False)


def build_unet(args: argparse.Namespace, index: int, dtype: torch.dtype) -> UNet:
    """index 0: the keyframe UNet, 1: the interpolation UNet."""
    return seeded_model(lambda: UNet(UNetConfig.preset(PRESETS[args.preset][index])), args.seed + index, args, dtype)


def build_pipeline(args: argparse.Namespace, mode: str) -> KVideoPipeline:
    """The pipeline of one mode; every mode gets the same fp32 weights, cast to its dtype."""
    dtype = DTYPES[args.dtype if mode == "kvideo" else args.reference_dtype]
    unet, interpolation = build_unet(args, 0, dtype), build_unet(args, 1, dtype)
    decoder = seeded_model(lambda: MoVQ(MoVQConfig.preset(PRESETS[args.preset][2])), args.seed + 2, args, dtype)
    torch.manual_seed(args.seed + 3)
    with torch.device(args.device):
        text = tiny_text_encoder(unet.config.context_dim, device=args.device, t5=TEXT_STAND_IN[args.preset])
        null = torch.randn(unet.config.context_dim)
    gpu = torch.device(args.device).type == "cuda"
    text.encoder.to(torch.bfloat16 if gpu and mode == "kvideo" else torch.float32)  # the release: fp32 T5
    text.offload_encoder = args.offload == "model"
    if mode == "reference":
        decoder = PerFrameDecoder(decoder)
    pipe = KVideoPipeline(text, unet, interpolation, null, decoder, device=args.device, dtype=dtype,
                          offload=args.offload, progress=False)
    if args.offload == "model":
        text.offload()
    return pipe


class PerFrameDecoder(nn.Module):
    """A MoVQ whose `decode` is the reference's loop: one call per window, spatial layers frame by frame."""

    def __init__(self, movq: MoVQ) -> None:
        super().__init__()
        self.movq = movq

    @property
    def config(self):
        return self.movq.config

    def decode(self, latents: torch.Tensor, *, window: int | None = None, progress: bool = False) -> torch.Tensor:
        return decode_per_frame(self.movq, latents, window)  # the reference's loop shows no progress bar


# -- timing -------------------------------------------------------------------------------------------------
def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class StageTimer:
    """Times named stages with device synchronisation; records the allocator peak of each on CUDA."""

    def __init__(self, device: torch.device) -> None:
        self.device, self.seconds, self.peak_gb = device, {}, {}

    def __call__(self, name: str, work: Callable[[], object]):
        cuda = self.device.type == "cuda"
        synchronize(self.device)
        if cuda:
            torch.cuda.reset_peak_memory_stats(self.device)
        start = time.perf_counter()
        out = work()
        synchronize(self.device)
        self.seconds[name] = time.perf_counter() - start
        self.peak_gb[name] = torch.cuda.max_memory_allocated(self.device) / 2**30 if cuda else None
        return out


def text_autocast(pipe: KVideoPipeline, mode: str):
    """The reference encodes text inside its fp16 autocast (fp32 T5 weights); kvideo runs its bf16 T5 as is."""
    if mode == "reference" and pipe.dtype != torch.float32:
        return torch.autocast(pipe.device.type, dtype=pipe.dtype)
    return contextlib.nullcontext()


def run_clip(pipe: KVideoPipeline, mode: str, opts: GenerationOptions, timer: StageTimer) -> torch.Tensor:
    """One clip, stage by stage, through the pipeline's own stage methods (as `KVideoPipeline.__call__`)."""
    generator = torch.Generator().manual_seed(1)
    pipe.text_encoder.clear_cache()  # every clip encodes its prompt again

    def encode():
        with text_autocast(pipe, mode):
            return pipe.encode_prompt(PROMPT, None)

    context, mask, uncond, uncond_mask = timer("text", encode)
    latents = timer("keyframes", lambda: pipe.keyframes(context, mask, uncond, uncond_mask, opts, generator, None))
    for index, skip in enumerate(FPS_MODES[opts.fps]):
        stage = "interpolation" if index == 0 else f"interpolation{index + 1}"
        latents = timer(stage, functools.partial(pipe.interpolate, latents, skip, opts, generator, None))
    timer("decode", lambda: pipe.decode(latents, opts.decode_window))
    return latents


def options(args: argparse.Namespace, steps: int | None = None, interpolation_steps: int | None = None):
    return GenerationOptions(width=args.size, height=args.size, fps=args.fps, num_frames=args.frames,
                             steps=steps or args.steps,
                             interpolation_steps=interpolation_steps or steps or args.interpolation_steps)


def compile_unets(pipe: KVideoPipeline, args: argparse.Namespace) -> dict:
    """Compile both UNets in place; time the first one-step call of each sampling stage (compile + 1 step)."""
    for unet in (pipe.unet, pipe.interpolation_unet):
        unet.compile(mode=args.compile_mode)
    timer = StageTimer(pipe.device)
    with torch.no_grad():
        run_clip(pipe, "kvideo", options(args, 1, 1), timer)
    return {stage: round(timer.seconds[stage], 3) for stage in timer.seconds if stage.startswith(("key", "inter"))}


def median_row(samples: list[float]) -> dict:
    return {"seconds": statistics.median(samples), "all": [round(s, 4) for s in samples]}


def measure_mode(args: argparse.Namespace, mode: str) -> dict:
    """Build one mode's pipeline, warm up, time --repeats clips; the medians per stage and for the clip."""
    device = torch.device(args.device)
    result = {"dtype": args.dtype if mode == "kvideo" else args.reference_dtype,
              "attention": "sdpa" if mode == "kvideo" else "math",
              "decoder": "batched windows" if mode == "kvideo" else "per-frame loop", "guidance": "batched"}
    start = time.perf_counter()
    pipe = build_pipeline(args, mode)
    synchronize(device)
    result["build_s"] = round(time.perf_counter() - start, 2)
    result["parameters"] = {name: sum(p.numel() for p in model.parameters()) for name, model in (
        ("keyframe", pipe.unet), ("interpolation", pipe.interpolation_unet), ("decoder", pipe.decoder),
        ("text_stand_in", pipe.text_encoder.encoder))}
    with attention.backend(result["attention"]), torch.no_grad():
        if args.compile and mode == "kvideo":
            result["compile_s"] = compile_unets(pipe, args)
        run_clip(pipe, mode, options(args, args.warmup_steps), StageTimer(device))  # warm-up
        stages, clips = {}, []
        for _ in range(args.repeats):
            timer = StageTimer(device)
            start = time.perf_counter()
            latents = run_clip(pipe, mode, options(args), timer)
            clips.append(time.perf_counter() - start)
            for name, seconds in timer.seconds.items():
                stages.setdefault(name, {"samples": [], "peak_gb": 0.0})["samples"].append(seconds)
                if timer.peak_gb[name] is not None:
                    stages[name]["peak_gb"] = max(stages[name]["peak_gb"], timer.peak_gb[name])
    result["stages"] = {name: {**median_row(s["samples"]), "peak_gb": s["peak_gb"] if device.type == "cuda" else None}
                        for name, s in stages.items()}
    result["clip"] = {**median_row(clips), "frames": int(latents.shape[2]),
                      "peak_gb": max((s["peak_gb"] or 0.0) for s in result["stages"].values()) or None}
    result["keyframe_step_s"] = result["stages"]["keyframes"]["seconds"] / args.steps
    return result


def guarded(work: Callable[[], dict], device: torch.device) -> dict:
    """Run `work`; an error (an out-of-memory above all) is recorded instead of ending the benchmark."""
    try:
        return work()
    except Exception as error:  # noqa: BLE001 - recorded in the results, the run goes on
        traceback.print_exc()
        return {"error": f"{type(error).__name__}: {error}"}
    finally:
        release_memory(device)


def release_memory(device: torch.device) -> None:
    """Free the last mode's models before the next one is built (compiled code holds on to its modules)."""
    torch._dynamo.reset()
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


# -- parity -------------------------------------------------------------------------------------------------
@contextlib.contextmanager
def exact_fp32(device: torch.device):
    """TF32 off for the fp32 run (cuDNN convolutions use it by default)."""
    if device.type != "cuda":
        yield
        return
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


def relative_l2(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.double().cpu(), b.double().cpu()
    return float((a - b).norm() / b.norm())


class NoDecoder(nn.Identity):
    """Stands in for the video MoVQ where only latents are compared: the release's latent layout, no weights."""

    config = MoVQConfig.preset("official-video")


def parity_run(args: argparse.Namespace, dtype: torch.dtype, backend: str, text, contexts: tuple
               ) -> dict[str, torch.Tensor]:
    """Keyframes and interpolation latents of one precision, from the same weights, noise and text context."""
    unet, interpolation = build_unet(args, 0, dtype), build_unet(args, 1, dtype)
    pipe = KVideoPipeline(text, unet, interpolation, text.null_embedding.float(), NoDecoder(),
                          device=args.device, dtype=dtype, progress=False)
    opts, generator = options(args), torch.Generator().manual_seed(1)
    context, mask, uncond, uncond_mask = contexts
    out = {}
    fp32 = exact_fp32(pipe.device) if dtype == torch.float32 else contextlib.nullcontext()
    with attention.backend(backend), torch.no_grad(), fp32:
        out["keyframe_unet_step"] = first_step_output(pipe, context, mask, uncond, uncond_mask, opts)
        out["keyframes"] = pipe.keyframes(context, mask, uncond, uncond_mask, opts, generator, None).float().cpu()
        latents = out["keyframes"].to(args.device)
        for skip in FPS_MODES[opts.fps]:
            latents = pipe.interpolate(latents, skip, opts, generator, None)
        out["interpolation"] = latents.float().cpu()
    return out


def first_step_output(pipe, context, mask, uncond, uncond_mask, opts) -> torch.Tensor:
    """The guided keyframe UNet output at the first step (t = N-1) on fixed noise."""
    cfg = pipe.unet.config
    frames = opts.num_frames or cfg.num_frames
    x = torch.randn(1, cfg.out_channels, frames, *pipe.latent_size(opts),
                    generator=torch.Generator().manual_seed(2)).to(pipe.device)
    model = diffusion.TextGuidance(pipe.unet, context, mask, uncond, uncond_mask, opts.guidance_scale,
                                   frame_positions=torch.arange(frames, device=pipe.device) * cfg.frame_stride)
    time_ = torch.full((1,), diffusion.cosine_schedule(opts.steps).model_time(opts.steps - 1), device=pipe.device)
    with pipe._autocast():
        return model(x, time_).float().cpu()


def measure_parity(args: argparse.Namespace) -> dict:
    """fp32 (SDPA), kvideo (--dtype, SDPA) and reference (--reference-dtype, math) on the same inputs."""
    torch.manual_seed(args.seed + 3)
    with torch.device(args.device):
        text = tiny_text_encoder(UNetConfig.preset(PRESETS[args.preset][0]).context_dim, device=args.device,
                                 t5=TEXT_STAND_IN[args.preset])
    with torch.no_grad(), exact_fp32(torch.device(args.device)):
        cond, uncond = text.encode_pair(PROMPT)
    contexts = (*cond, *uncond)  # one fp32 text context for every precision
    runs = {"fp32": parity_run(args, torch.float32, "sdpa", text, contexts)}
    paths = {"kvideo": (DTYPES[args.dtype], "sdpa"), "reference": (DTYPES[args.reference_dtype], "math")}
    result = {"size": args.size, "steps": args.steps, "interpolation_steps": args.interpolation_steps,
              "paths": {mode: f"{dtype}, {backend} attention".replace("torch.", "")
                        for mode, (dtype, backend) in paths.items()}}
    for mode, (dtype, backend) in paths.items():
        release_memory(torch.device(args.device))
        run = parity_run(args, dtype, backend, text, contexts)
        result[mode] = {stage: relative_l2(run[stage], runs["fp32"][stage]) for stage in run}
        result[mode]["finite"] = all(bool(torch.isfinite(t).all()) for t in run.values())
    return result


# -- FLOPs ---------------------------------------------------------------------------------------------------
def measure_flops(args: argparse.Namespace) -> dict:
    """FLOPs of one guided keyframe step (both branches) by FlopCounterMode; TFLOP/s from its timed forward."""
    from torch.utils.flop_counter import FlopCounterMode

    device, dtype = torch.device(args.device), DTYPES[args.dtype]
    unet = build_unet(args, 0, dtype)
    cfg, frames, latent = unet.config, args.frames or unet.config.num_frames, args.size // 8
    x = torch.randn(2, cfg.num_channels, frames, latent, latent, device=device)  # cond + uncond branches
    tokens = 32
    context = torch.randn(2, tokens, cfg.context_dim, device=device)
    mask = torch.ones(2, tokens, dtype=torch.bool, device=device)
    time_ = torch.full((2,), 500, device=device)
    autocast = torch.autocast(device.type, dtype=dtype) if dtype != torch.float32 else contextlib.nullcontext()

    def step():
        return unet(x, time_, context, mask)

    with torch.no_grad(), autocast:
        with attention.backend("math"), FlopCounterMode(display=False) as counter:
            step()
        flops = counter.get_total_flops()
        if args.compile:
            unet.compile(mode=args.compile_mode)
        step()  # warm-up (and compilation)
        timer, times = StageTimer(device), []
        for _ in range(args.flops_iters):
            timer("step", step)
            times.append(timer.seconds["step"])
    seconds = statistics.median(times)
    tflops = flops / seconds / 1e12
    return {"method": "torch.utils.flop_counter.FlopCounterMode (matmul, conv, attention; math attention)",
            "shape": f"2 x {frames} frames x {latent}x{latent} latents, {tokens} text tokens",
            "flops_per_step": flops, "step_seconds": seconds, "tflops": tflops, "peak_tflops": args.peak_tflops,
            "percent_of_peak": 100 * tflops / args.peak_tflops, "dtype": args.dtype, "compiled": args.compile}


# -- report -----------------------------------------------------------------------------------------------
def environment(args: argparse.Namespace, argv: list[str]) -> dict:
    device = torch.device(args.device)
    return {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
            "torch": torch.__version__, "cuda": torch.version.cuda, "python": platform.python_version(),
            "preset": args.preset, "models": list(PRESETS[args.preset]), "size": args.size, "fps": args.fps,
            "frames": args.frames, "steps": args.steps, "interpolation_steps": args.interpolation_steps,
            "repeats": args.repeats, "warmup_steps": args.warmup_steps, "offload": args.offload,
            "compile": args.compile_mode if args.compile else None, "zero_init_woken": not args.keep_zero_init,
            "command": " ".join(["benchmarks/bench_generate.py", *argv]),
            "time_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}


def markdown(results: dict) -> str:
    env, modes = results["environment"], results["modes"]
    lines = [(f"# {env['preset']} pipeline, {env['size']}x{env['size']}, fps={env['fps']}, "
              f"{env['steps']}+{env['interpolation_steps']} steps, {env['device']}, torch {env['torch']}, "
              f"median of {env['repeats']}")]
    ok = {m: r for m, r in modes.items() if "error" not in r}
    for mode, r in modes.items():
        if "error" in r:
            lines.append(f"{mode}: failed: {r['error']}")
    if ok:
        lines.append("peak GB: the CUDA allocator's peak during the stage, weights included")
        names = list(dict.fromkeys(s for r in ok.values() for s in r["stages"]))
        header = "| stage | " + " | ".join(f"{m} ({r['dtype']}) s | {m} peak GB" for m, r in ok.items())
        lines += [header + (" | reference / kvideo |" if len(ok) == 2 else " |"),
                  "|---" * (1 + 2 * len(ok) + (len(ok) == 2)) + "|"]
        for name in [*names, "clip"]:
            rows = [r["clip"] if name == "clip" else r["stages"].get(name, {}) for r in ok.values()]
            cells = [f"{row.get('seconds', float('nan')):.3f} | {fmt_gb(row.get('peak_gb'))}" for row in rows]
            ratio = f" {rows[1]['seconds'] / rows[0]['seconds']:.2f}x |" if len(ok) == 2 else ""
            lines.append(f"| {name} | " + " | ".join(cells) + " |" + ratio)
        for mode, r in ok.items():
            if "compile_s" in r:
                lines.append(f"{mode}: compile (first 1-step call) s: {r['compile_s']}")
    if "flops" in results:
        f = results["flops"]
        lines.append(f"flops: failed: {f['error']}" if "error" in f else
                     f"keyframe UNet step ({f['shape']}): {f['flops_per_step'] / 1e9:.1f} GFLOP, "
                     f"{f['step_seconds']:.4f} s, {f['tflops']:.1f} TFLOP/s = {f['percent_of_peak']:.1f} % "
                     f"of {f['peak_tflops']:g}")
    if "parity" in results:
        p = results["parity"]
        if "error" in p:
            lines.append(f"parity: failed: {p['error']}")
        else:
            lines += [f"parity vs fp32 ({p['size']}x{p['size']}, {p['steps']} steps): relative L2",
                      "| path | keyframe UNet step | keyframes | interpolation |", "|---|---|---|---|"]
            lines += [f"| {m} ({p['paths'][m]}) | {p[m]['keyframe_unet_step']:.2e} | {p[m]['keyframes']:.2e} "
                      f"| {p[m]['interpolation']:.2e} |" for m in ("kvideo", "reference")]
    return "\n".join(lines)


def fmt_gb(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def write_json_atomic(results: dict, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    with os.fdopen(handle, "w") as out:
        json.dump(results, out, indent=2)
    os.replace(temporary, path)


def main(argv: list[str] | None = None) -> dict:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    results = {"environment": environment(args, argv), "modes": {}}
    for mode in args.modes:
        results["modes"][mode] = guarded(functools.partial(measure_mode, args, mode), device)
        print(f"{mode}: {json.dumps(results['modes'][mode])}", flush=True)  # partial results survive a kill
        if args.json_out:
            write_json_atomic(results, args.json_out)
    if len(args.modes) == 2 and not any("error" in r for r in results["modes"].values()):
        kvideo, reference = results["modes"]["kvideo"], results["modes"]["reference"]
        results["speedup"] = reference["clip"]["seconds"] / kvideo["clip"]["seconds"]
    if args.flops:
        results["flops"] = guarded(lambda: measure_flops(args), device)
    if args.parity:
        results["parity"] = guarded(lambda: measure_parity(args), device)
    print(markdown(results))
    if args.json_out:
        write_json_atomic(results, args.json_out)
    return results


if __name__ == "__main__":
    main()
