"""Keyframe fine-tuning step: seconds per step, samples/s and peak memory, gradient checkpointing on and off.

One optimizer step = the training objective (eps-loss at a random timestep, text dropout) forward and
backward through the UNet with its spatial weights frozen, then AdamW on the temporal parameters,
exactly as `kvideo train keyframe` runs it (one process, no data loading: latents and text are
random tensors of the real shapes). Each setting runs in its own process so that peak memory is its own.

    python benchmarks/bench_train.py                 # CPU: tiny-keyframe, 4 frames, 64x64 pixels, fp32
    python benchmarks/bench_train.py --device cuda   # GPU: official-keyframe, 16 frames, 512x512, bf16

Peak memory: CUDA, the allocator's peak (weights, gradients, optimizer state and activations);
CPU, the process's peak resident set (Linux ru_maxrss).
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

import torch

from kvideo.diffusion import cosine_schedule
from kvideo.models.unet import UNet, UNetConfig
from kvideo.train.keyframe import keyframe_loss
from kvideo.train.seeding import seeded_generator
from kvideo.train.tracking import peak_memory_gb

TEXT_TOKENS = 32  # a typical caption: ~30 T5 tokens + 1 padding row


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    cuda = torch.cuda.is_available()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if cuda else "cpu")
    parser.add_argument("--preset", help="UNetConfig preset (default: official-keyframe on CUDA, tiny-keyframe on CPU)")
    parser.add_argument("--frames", type=int, help="keyframes per clip (default 16 on CUDA, 4 on CPU)")
    parser.add_argument("--size", type=int, help="pixel height and width (default 512 on CUDA, 64 on CPU)")
    parser.add_argument("--batch", type=int, default=1, help="clips per step")
    parser.add_argument("--precision", choices=("bf16", "fp32"), help="default bf16 on CUDA, fp32 on CPU")
    parser.add_argument("--train", choices=("temporal", "all"), default="temporal")
    parser.add_argument("--checkpointing", default="off,on", help="settings to measure: off, on or off,on")
    parser.add_argument("--steps", type=int, default=5, help="timed steps (after --warmup untimed ones)")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1, help="CPU threads (1: steadier on a shared machine)")
    parser.add_argument("--one", choices=("on", "off"), help=argparse.SUPPRESS)  # internal: one setting, JSON out
    args = parser.parse_args(argv)
    gpu = args.device.startswith("cuda")
    args.preset = args.preset or ("official-keyframe" if gpu else "tiny-keyframe")
    args.frames = args.frames or (16 if gpu else 4)
    args.size = args.size or (512 if gpu else 64)
    args.precision = args.precision or ("bf16" if gpu else "fp32")
    return args


def build(args: argparse.Namespace) -> tuple[UNet, torch.optim.Optimizer]:
    device = torch.device(args.device)
    torch.manual_seed(0)
    with device:
        unet = UNet(UNetConfig.preset(args.preset))  # random weights: timings do not depend on the values
    if args.train == "temporal":
        unet.freeze_spatial()
    unet.set_gradient_checkpointing(args.one == "on")
    unet.train()
    optimizer = torch.optim.AdamW([p for p in unet.parameters() if p.requires_grad], lr=1e-4)
    return unet, optimizer


def inputs(unet: UNet, args: argparse.Namespace) -> dict[str, torch.Tensor]:
    cfg, device, latent = unet.config, torch.device(args.device), args.size // 8
    return {
        "latents": torch.randn(args.batch, cfg.latent_channels, args.frames, latent, latent, device=device),
        "context": torch.randn(args.batch, TEXT_TOKENS, cfg.context_dim, device=device),
        "context_mask": torch.ones(args.batch, TEXT_TOKENS, dtype=torch.bool, device=device),
        "step": torch.full((args.batch,), cfg.frame_stride, device=device),
    }


def train_step(unet, optimizer, batch, schedule, null, args, step: int) -> float:
    with torch.autocast(torch.device(args.device).type, dtype=torch.bfloat16, enabled=args.precision == "bf16"):
        loss = keyframe_loss(unet, batch, seeded_generator(step), schedule=schedule, null_embedding=null,
                             uncond_prob=0.1)
    loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return float(loss)


def synchronize(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def measure(args: argparse.Namespace) -> dict:
    """One setting in this process: warm-up steps, then timed steps."""
    torch.set_num_threads(args.threads)
    unet, optimizer = build(args)
    batch, schedule = inputs(unet, args), cosine_schedule(1000)
    null = torch.randn(unet.config.context_dim, device=args.device)
    for step in range(args.warmup):
        train_step(unet, optimizer, batch, schedule, null, args, step)
    synchronize(args.device)
    started = time.perf_counter()
    for step in range(args.steps):
        train_step(unet, optimizer, batch, schedule, null, args, args.warmup + step)
    synchronize(args.device)
    seconds = (time.perf_counter() - started) / args.steps
    return {
        "checkpointing": args.one, "seconds_per_step": round(seconds, 4),
        "samples_per_s": round(args.batch / seconds, 3),
        "peak_memory_gb": round(peak_memory_gb(torch.device(args.device)), 3),
        "parameters": sum(p.numel() for p in unet.parameters()),
        "trained_parameters": sum(p.numel() for p in unet.parameters() if p.requires_grad),
    }


def run_setting(setting: str, argv: list[str]) -> dict:
    done = subprocess.run([sys.executable, __file__, *argv, "--one", setting], capture_output=True, text=True)
    if done.returncode:
        return {"checkpointing": setting, "error": done.stderr.strip().splitlines()[-1:]}
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    if args.one:
        print(json.dumps(measure(args)))
        return
    latent = args.size // 8
    print(f"# {args.preset}, {args.frames} frames at {args.size}x{args.size} (latents {latent}x{latent}), "
          f"batch {args.batch}, {args.precision}, train {args.train}, device {args.device}")
    print("| checkpointing | s / step | samples / s | peak GB |\n|---|---|---|---|")
    for setting in args.checkpointing.split(","):
        result = run_setting(setting, argv)
        if "error" in result:
            print(f"| {setting} | failed: {result['error']} | | |")
            continue
        print(f"| {setting} | {result['seconds_per_step']} | {result['samples_per_s']} | {result['peak_memory_gb']} |")
    print(f"# parameters: {result.get('parameters', 0):,}, trained: {result.get('trained_parameters', 0):,}")


if __name__ == "__main__":
    main()
