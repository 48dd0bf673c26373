"""UNet evaluations and FLOPs of one medium clip at official size: the release's settings vs the fast ones.

    OMP_NUM_THREADS=1 PYTHONPATH=. python benchmarks/bench_flops.py [--size 512] [--json-out flops.json]

Every model is built on the meta device (official configs, no weights, no arithmetic), and the pipeline's own
keyframe, interpolation and decoding code runs on meta tensors under torch.utils.flop_counter.FlopCounterMode,
so the count follows exactly what a clip does: both guidance branches where guidance applies, the cached UNet
calls of a step cache (only the outer levels), the sampler's step count. Counted: matmuls, convolutions and
attention (math attention, the same FLOPs as SDPA); norms and elementwise ops are not. The text encoder is
left out (it is the same in every row). Rows: the release's defaults ("release"), the fast options of the
shapes model's card applied at official size ("fast"), and each fast option alone.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from kvideo import attention
from kvideo.generation.base import tiny_text_encoder
from kvideo.generation.options import FPS_MODES, resolve_options
from kvideo.generation.release10 import KVideoPipeline
from kvideo.models.movq import MoVQ, MoVQConfig
from kvideo.models.unet import UNet, UNetConfig

FAST = dict(steps=8, sampler="dpmpp_2m", guidance_scale=1.5, interpolation_steps=4, interpolation_sampler="ddim",
            interpolation_guidance_scale=0.0, cache_interval=2)
ROWS = {
    "release": {},
    "dpm-8-steps": dict(steps=8, sampler="dpmpp_2m", interpolation_steps=4),
    "cache-2": dict(cache_interval=2),
    "interp-unguided": dict(interpolation_guidance_scale=0.0),
    "fast": FAST,
}


class MetaPipeline(KVideoPipeline):
    """The 1.0 pipeline on meta tensors: no finiteness checks (a meta tensor has no values)."""

    def _step_report(self, stage, steps, callback):
        return None


PRESETS = {"official": ("official-keyframe", "official-interpolation", "official-video"),
           "tiny": ("tiny-keyframe", "tiny-interpolation", "tiny-video")}  # tiny: the test's size


def meta_pipeline(preset: str = "official", device: str = "meta") -> MetaPipeline:
    """The pipeline on the meta device (or, for the test's tiny size, real tensors on the CPU: the meta
    device's shape functions cost about 2 ms an op, the tiny models' arithmetic less)."""
    keyframe, interpolation, movq = PRESETS[preset]
    with torch.device(device):
        unet = UNet(UNetConfig.preset(keyframe))
        interp = UNet(UNetConfig.preset(interpolation))
        decoder = MoVQ(MoVQConfig.preset(movq))
        null = torch.zeros(unet.config.context_dim)
    encoder = tiny_text_encoder(unet.config.context_dim)
    return MetaPipeline(encoder, unet, interp, null, decoder, device=device, progress=False)


class Evaluations:
    """Counts a UNet's forward calls (a guided step with both branches in one batch counts its batch rows)."""

    def __init__(self, unet: UNet) -> None:
        self.full = self.rows = 0
        self.handle = unet.register_forward_pre_hook(self.hook)

    def hook(self, module, args):
        self.full += 1
        self.rows += args[0].shape[0]


_DECODE_TFLOP: dict[tuple, float] = {}  # (pipeline, latent shape) -> TFLOP: decoding is the same in every row


def decode_flops(pipe: MetaPipeline, latents: torch.Tensor, window: int | None) -> float:
    """TFLOP of decoding `latents`, counted once per latent shape."""
    key = (id(pipe), tuple(latents.shape))
    if key not in _DECODE_TFLOP:
        with FlopCounterMode(display=False) as counter:
            pipe.decoder.decode(latents, window=window, progress=False)
        _DECODE_TFLOP[key] = counter.get_total_flops() / 1e12
    return _DECODE_TFLOP[key]


def count(pipe: MetaPipeline, options: dict, size: int, tokens: int) -> dict:
    opts = resolve_options("1.0", None, width=size, height=size, fps="medium", **options)
    dim, device = pipe.unet.config.context_dim, pipe.device
    context = torch.zeros(1, tokens, dim, device=device)
    mask = torch.ones(1, tokens, dtype=torch.bool, device=device)
    uncond, uncond_mask = torch.zeros(1, 1, dim, device=device), torch.ones(1, 1, dtype=torch.bool, device=device)
    generator = torch.Generator().manual_seed(0)
    row, calls = {}, {"keyframe": Evaluations(pipe.unet), "interpolation": Evaluations(pipe.interpolation_unet)}
    with torch.no_grad(), attention.backend("math"):
        with FlopCounterMode(display=False) as counter:
            latents = pipe.keyframes(context, mask, uncond, uncond_mask, opts, generator, None)
        row["keyframe_tflop"] = counter.get_total_flops() / 1e12
        with FlopCounterMode(display=False) as counter:
            for skip in FPS_MODES[opts.fps]:
                latents = pipe.interpolate(latents, skip, opts, generator, None)
        row["interpolation_tflop"] = counter.get_total_flops() / 1e12
        row["decode_tflop"] = decode_flops(pipe, latents, opts.decode_window)
    for stage, evaluations in calls.items():
        row[f"{stage}_calls"], row[f"{stage}_rows"] = evaluations.full, evaluations.rows
        evaluations.handle.remove()
    row["frames"] = latents.shape[2]
    row["total_tflop"] = row["keyframe_tflop"] + row["interpolation_tflop"] + row["decode_tflop"]
    row["options"] = {k: getattr(opts, k) for k in ("steps", "sampler", "guidance_scale", "interpolation_steps",
                                                     "interpolation_sampler", "interpolation_guidance_scale",
                                                     "cache_interval")}
    return row


def markdown(result: dict) -> str:
    rows = result["rows"]
    base = rows["release"]["total_tflop"]
    lines = [f"# FLOPs per medium clip, {result['preset']} size, {result['size']}x{result['size']}, {rows['release']['frames']} "
             f"frames (FlopCounterMode on the meta device; text encoder not counted)", "",
             "| row | keyframe UNet calls (batch rows) | interpolation UNet calls (rows) | keyframe TFLOP | "
             "interpolation TFLOP | decode TFLOP | total TFLOP | vs release |", "|---|---|---|---|---|---|---|---|"]
    for name, r in rows.items():
        lines.append(f"| {name} | {r['keyframe_calls']} ({r['keyframe_rows']}) | {r['interpolation_calls']} "
                     f"({r['interpolation_rows']}) | {r['keyframe_tflop']:.1f} | {r['interpolation_tflop']:.1f} | "
                     f"{r['decode_tflop']:.1f} | {r['total_tflop']:.1f} | {base / r['total_tflop']:.2f}x fewer |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", choices=list(PRESETS), default="official", help="model sizes (default official)")
    parser.add_argument("--device", default="meta", help="meta (no arithmetic; default) or cpu (tiny only)")
    parser.add_argument("--size", type=int, default=512, help="frame width and height (default 512)")
    parser.add_argument("--tokens", type=int, default=32, help="text tokens of the prompt (default 32)")
    parser.add_argument("--rows", nargs="+", choices=list(ROWS), default=list(ROWS), help="rows to count")
    parser.add_argument("--json-out", type=Path, help="write the table as JSON here too")
    args = parser.parse_args(argv)
    pipe = meta_pipeline(args.preset, args.device)
    started = time.time()
    result = {"preset": args.preset, "size": args.size, "tokens": args.tokens, "torch": torch.__version__,
              "command": " ".join(["benchmarks/bench_flops.py", *(argv if argv is not None else sys.argv[1:])]),
              "rows": {name: count(pipe, ROWS[name], args.size, args.tokens) for name in args.rows}}
    result["seconds"] = time.time() - started
    print(markdown(result))
    if args.json_out:
        args.json_out.write_text(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
