"""The shapes model measured: quality table (kvideo eval shapes), FVD with a trained I3D, quick-start speed.

    python benchmarks/bench_shapes.py quality RECIPE_DIR OUT [--variants shipped temporal-off keyframe-all]
    python benchmarks/bench_shapes.py fvd RECIPE_DIR OUT
    python benchmarks/bench_shapes.py speed [--weights shapes]
    python benchmarks/bench_shapes.py denoise CACHE WEIGHTS [--clips 64]

RECIPE_DIR is the folder of `kvideo recipe shapes` (its `model/` is the shipped model; `image/` and
`keyframe-all/` give the comparison variants). Everything is resumable: finished clips are kept.
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

VARIANTS = ("shipped", "temporal-off", "keyframe-all")


def variant_pipeline(recipe: Path, variant: str):
    """The shipped pipeline, with its keyframe UNet's temporal layers off, or with the keyframe UNet
    trained `--train all` instead of `--train temporal`."""
    from kvideo.pipeline import KVideoPipeline
    from kvideo.shapes.quality import temporal_off
    from kvideo.shapes.recipe import full_keyframe_unet

    pipe = KVideoPipeline.from_pretrained(recipe / "model", progress=False)
    if variant == "temporal-off":
        pipe.unet = temporal_off(pipe.unet)
    elif variant == "keyframe-all":
        unet = full_keyframe_unet(recipe / "image/image-all.safetensors",
                                  recipe / "keyframe-all/keyframe-all.safetensors")
        pipe.unet = unet.to(pipe.dtype).eval().requires_grad_(False)
    return pipe


def quality(args) -> None:
    from kvideo.shapes.quality import measure_quality, passes_bar

    table = {}
    for variant in args.variants:
        report = measure_quality(variant_pipeline(args.recipe, variant), args.out / variant, prompts=args.prompts,
                                 seeds=args.seeds, batch_size=args.batch_size)
        totals = report["totals"]
        table[variant] = {k: totals[k] for k in ("object_color", "background", "direction", "shape", "all", "found")}
        table[variant]["meets_bar"] = all(passes_bar(totals).values())
        print(variant, json.dumps(table[variant]), flush=True)
    (args.out / "quality.json").write_text(json.dumps(table, indent=1))


def fvd(args) -> None:
    """I3D detector trained on the training set; FVD of held-out rendered clips vs generated ones."""
    import torch

    from kvideo.eval.i3d import InceptionI3d
    from kvideo.shapes.quality import clip_features, fvd as frechet
    from kvideo.shapes.render import render_dataset
    from kvideo.train.config import TrainConfig
    from kvideo.train.trainer import train

    data = args.recipe / "data"
    detector_dir = args.out / "detector"
    weights = detector_dir / "detector-all.safetensors"
    if not weights.is_file():
        train(TrainConfig.preset("shapes-detector", data=str(data), captions=str(data / "captions.csv"),
                                 output_dir=str(detector_dir), resume="latest", progress=False))
    detector = InceptionI3d.from_pretrained(weights).eval()
    torch.set_grad_enabled(False)
    # held-out real clips at the generated clips' rate and size (8 fps, 64x64), two disjoint seeds
    n = args.prompts * args.seeds
    reals = {}
    for name, seed in (("real-a", 101), ("real-b", 102)):
        render_dataset(args.out / name, n, seed=seed, size=64, fps=8, seconds=57 / 8, progress=False)
        reals[name] = clip_features(detector, args.out / name)
    results = {"real-a vs real-b": frechet(reals["real-a"], reals["real-b"])}
    for variant in args.variants:
        folder = args.quality_dir / variant
        results[f"real-a vs {variant}"] = frechet(reals["real-a"], clip_features(detector, folder))
    for name, value in results.items():
        print(f"FVD {name}: {value:.2f}", flush=True)
    (args.out / "fvd.json").write_text(json.dumps({"clips": n, "fvd": results}, indent=1))


def denoise(args) -> None:
    """How well an interpolation UNet (exported weights or a checkpoint's) estimates the middle frames
    x0 of cached clips at a few noise levels, as MSE relative to |x0|^2, next to the baseline of
    interpolating the two clean keyframes linearly; keyframes given clean, as at sampling."""
    import torch

    from kvideo.diffusion import cosine_schedule, q_sample
    from kvideo.models.unet import UNet, UNetConfig
    from kvideo.text import null_context
    from kvideo.train.cache import LatentCache
    from kvideo.train.checkpointing import read_weights
    from kvideo.train.interpolation import CONTEXT_TOKENS, interpolation_inputs, split_clip

    state, extras, info = read_weights(args.weights)
    unet = UNet(UNetConfig.from_json(info.model_config))
    unet.load_state_dict(state)
    unet.eval().requires_grad_(False)
    between = unet.config.interpolated_frames
    cache = LatentCache(args.cache)
    schedule = cosine_schedule(1000)
    generator = torch.Generator().manual_seed(0)
    items = [cache[i] for i in range(min(args.clips, len(cache)))]
    latents = torch.stack([item["latents"].float() for item in items])
    steps = torch.tensor([item["step"] for item in items])
    keyframes, x0 = split_clip(latents, between)
    weights = torch.arange(1, between + 1, dtype=torch.float32) / (between + 1)
    linear = torch.cat([(1 - w) * keyframes[:, :, :-1] + w * keyframes[:, :, 1:] for w in weights], dim=1)
    norm = float((x0 ** 2).mean())
    result = {"weights": str(args.weights), "step": info.step, "clips": len(items),
              "linear_keyframes": round(float(((linear - x0) ** 2).mean()) / norm, 5)}
    context, mask = null_context(extras["null_embedding"].float(), len(items), CONTEXT_TOKENS)
    for t in args.timesteps:
        tt = torch.full((len(items),), t)
        noisy = q_sample(x0, tt, schedule, torch.randn(x0.shape, generator=generator))
        with torch.no_grad():
            v = unet(interpolation_inputs(keyframes, noisy), tt * schedule.time_scale, context, mask,
                     skip_frames=steps, perturbation_time=torch.zeros_like(tt))
        alpha_bar = float(schedule.alphas_cumprod[t])
        estimate = alpha_bar ** 0.5 * noisy - (1 - alpha_bar) ** 0.5 * v
        result[f"t{t}"] = round(float(((estimate - x0) ** 2).mean()) / norm, 5)
    print(json.dumps(result), flush=True)


def speed(args) -> None:
    """Wall time and peak memory (max RSS) of the README quick start's generation, in a fresh process."""
    out = Path(args.output)
    out.unlink(missing_ok=True)
    command = [sys.executable, "-m", "kvideo", "generate", args.prompt, "-o", str(out), "--quiet"]
    if args.weights:
        command += ["--weights", args.weights]
    started = time.perf_counter()
    subprocess.run(command, check=True)
    wall = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 2**20  # KiB -> GiB
    print(json.dumps({"command": " ".join(command[2:]), "wall_s": round(wall, 2), "peak_rss_gb": round(peak, 3)}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    for name in ("quality", "fvd"):
        p = commands.add_parser(name)
        p.add_argument("recipe", type=Path, help="the folder of `kvideo recipe shapes`")
        p.add_argument("out", type=Path, help="output folder")
        p.add_argument("--variants", nargs="+", choices=VARIANTS, default=list(VARIANTS))
        p.add_argument("--prompts", type=int, default=96, help="captions of the grammar (default 96)")
        p.add_argument("--seeds", type=int, default=2, help="seeds per caption (default 2)")
        p.add_argument("--batch-size", type=int, default=8, help="prompts per batched call (default 8)")
        p.set_defaults(func=globals()[name])
    commands.choices["fvd"].add_argument("--quality-dir", type=Path, required=True,
                                         help="the OUT of the quality command (its generated clips)")
    p = commands.add_parser("denoise")
    p.add_argument("cache", type=Path, help="an interpolation training cache (kvideo train cache)")
    p.add_argument("weights", type=Path, help="interpolation weights: exported, or a checkpoint's ema/weights file")
    p.add_argument("--clips", type=int, default=64)
    p.add_argument("--timesteps", type=int, nargs="+", default=[100, 400, 700])
    p.set_defaults(func=denoise)
    p = commands.add_parser("speed")
    p.add_argument("--prompt", default="a red circle moving right on a black background")
    p.add_argument("--weights", help="default: kvideo generate's default")
    p.add_argument("--output", default="speed-check.mp4")
    p.set_defaults(func=speed)
    args = parser.parse_args()
    args.func(args)


if __name__ == "__main__":
    main()
