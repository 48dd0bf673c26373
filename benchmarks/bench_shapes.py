"""The shapes model measured: quality table (kvideo eval shapes), FVD with a trained I3D, quick-start speed.

    python benchmarks/bench_shapes.py quality RECIPE_DIR OUT [--variants shipped temporal-off keyframe-temporal]
    python benchmarks/bench_shapes.py fvd RECIPE_DIR OUT
    python benchmarks/bench_shapes.py speed [--weights shapes]
    python benchmarks/bench_shapes.py denoise CACHE WEIGHTS [--clips 64]
    python benchmarks/bench_shapes.py keyframes RECIPE_DIR IMAGE_WEIGHTS [KEYFRAME_WEIGHTS] [--prompts 24]
    python benchmarks/bench_shapes.py movq MOVQ_WEIGHTS DATA_DIR [--clips 48]
    python benchmarks/bench_shapes.py words RECIPE_DIR IMAGE_WEIGHTS [KEYFRAME_WEIGHTS] [--clips 16]

RECIPE_DIR is the folder of `kvideo recipe shapes` (its `model/` is the shipped model; `image/` and
`keyframe/` give the comparison variants). Everything is resumable: finished clips are kept.
"""
from __future__ import annotations

import argparse
import json
import re
import resource
import subprocess
import sys
import time
from pathlib import Path

from kvideo.generation.options import parse_threshold
from kvideo.shapes import presets as shapes_presets  # noqa: F401  registers the shapes-* presets

VARIANTS = ("shipped", "temporal-off", "keyframe-temporal")


def variant_pipeline(recipe: Path, variant: str):
    """The shipped pipeline (its keyframe UNet trained `--train all`), with that UNet's temporal layers off,
    or with the keyframe UNet trained `--train temporal` (the paper's recipe) instead."""
    from kvideo import KVideoPipeline
    from kvideo.shapes.quality import temporal_off
    from kvideo.shapes.recipe import full_keyframe_unet

    pipe = KVideoPipeline.from_pretrained(recipe / "model", progress=False)
    if variant == "temporal-off":
        pipe.unet = temporal_off(pipe.unet)
    elif variant == "keyframe-temporal":
        unet = full_keyframe_unet(recipe / "image/image-all.safetensors",
                                  recipe / "keyframe/keyframe-temporal.safetensors")
        pipe.unet = unet.to(pipe.dtype).eval().requires_grad_(False)
    return pipe


def quality(args) -> None:
    from kvideo.checkpoint import atomic_path
    from kvideo.shapes.quality import measure_quality, passes_bar

    summary = args.out / "quality.json"  # every variant measured into OUT so far, rewritten after each one
    for variant in args.variants:
        report = measure_quality(variant_pipeline(args.recipe, variant), args.out / variant, prompts=args.prompts,
                                 seeds=args.seeds, batch_size=args.batch_size)
        totals = report["totals"]
        row = {k: totals[k] for k in ("object_color", "background", "direction", "shape", "all", "found")}
        row["meets_bar"] = all(passes_bar(totals).values())
        row["prompts"], row["seeds"] = args.prompts, args.seeds
        # read just before writing: runs of other variants into the same OUT may have added theirs meanwhile
        table = {**(json.loads(summary.read_text()) if summary.is_file() else {}), variant: row}
        print(variant, json.dumps(row), flush=True)
        with atomic_path(summary) as tmp:
            tmp.write_text(json.dumps(table, indent=1))


def fvd(args) -> None:
    """I3D detector trained on the training set; FVD of held-out rendered clips vs generated ones."""
    import torch

    from kvideo.checkpoint import atomic_path
    from kvideo.eval.i3d import InceptionI3d
    from kvideo.shapes.quality import clip_features, detector_accuracy, fvd as frechet
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
    accuracy = {name: detector_accuracy(features, args.out / name) for name, features in reals.items()}
    print(f"detector accuracy (shape x direction, 12 classes) on the held-out real clips: {accuracy}", flush=True)
    results = {"real-a vs real-b": frechet(reals["real-a"], reals["real-b"])}
    for variant in args.variants:
        folder = args.quality_dir / variant
        results[f"real-a vs {variant}"] = frechet(reals["real-a"], clip_features(detector, folder))
    for name, value in results.items():
        print(f"FVD {name}: {value:.2f}", flush=True)
    with atomic_path(args.out / "fvd.json") as tmp:
        tmp.write_text(json.dumps({"clips": n, "detector_accuracy": accuracy, "fvd": results}, indent=1))


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


def keyframe_unet_and_text(recipe: Path, image: Path, keyframe: Path | None):
    """The image UNet inflated (+ a keyframe run's weights) and the recipe's text encoder with the
    image UNet's projection and null embedding."""
    import dataclasses

    from kvideo.checkpoint import sub_state_dict
    from kvideo.models.unet import UNet, UNetConfig
    from kvideo.shapes.recipe import full_keyframe_unet
    from kvideo.text import TextEncoder, TextProjection
    from kvideo.train.checkpointing import read_weights

    state, extras, info = read_weights(image)
    if keyframe:  # the keyframe run's own config: its temporal layout may differ from a plain inflation
        unet = full_keyframe_unet(image, keyframe)
    else:
        unet = UNet.inflate(state, dataclasses.replace(UNetConfig.from_json(info.model_config), kind="keyframe"))
    encoder = TextEncoder.from_pretrained(recipe / "text/text_encoder",
                                          TextProjection.from_state_dict(sub_state_dict(extras, "projections")),
                                          extras["null_embedding"].float(), progress=False)
    return unet.eval().requires_grad_(False), encoder


# One word of a caption replaced: (index of the word, what replaces it).
WORD_SWAPS = {"direction": (4, {"left": "right", "right": "left", "up": "down", "down": "up"}),
              "color": (1, {"red": "blue", "blue": "red", "green": "orange", "orange": "green", "yellow": "purple",
                            "purple": "yellow"}),
              "shape": (2, {"circle": "square", "square": "triangle", "triangle": "circle"})}


def words(args) -> None:
    """Does a keyframe UNet read each word of the caption? On cached training clips at a few noise
    levels, in x0 terms (the clean clip its eps or v implies): how much the estimate changes (relative L2)
    when the direction, colour or shape word is swapped, and its error (MSE relative to |x0|^2) with
    the true caption against the caption with the opposite direction; and the share of clips whose
    estimate moves the way the caption says (for the true caption and for the opposite one: a model
    that reads the direction scores high on both) and its mean motion per captioned direction (latent
    pixels; the clean clips' own is printed last); and how much x0 changes when every frame position
    is given as 0 (how much the keyframe UNet uses them)."""
    import torch

    from kvideo.diffusion import cosine_schedule, predict_x0, q_sample
    from kvideo.shapes.grammar import DIRECTION_VECTORS
    from kvideo.train.cache import LatentCache

    unet, encoder = keyframe_unet_and_text(args.recipe, args.image, args.keyframe)
    cache = LatentCache(args.recipe / "cache-keyframe")
    generator = torch.Generator().manual_seed(0)
    items = [cache[i] for i in torch.randperm(len(cache), generator=generator)[:args.clips].tolist()]
    x0 = torch.stack([item["latents"].float() for item in items])
    captions = [item["caption"] for item in items]
    positions = torch.arange(x0.shape[2])[None] * torch.tensor([item["step"] for item in items])[:, None]
    schedule = cosine_schedule(1000)

    def estimate(x_t, t, texts, frame_positions=positions):
        context, mask = encoder.encode(texts)
        with torch.no_grad():
            output = unet(x_t, torch.full((len(texts),), t * schedule.time_scale), context, mask,
                          frame_positions=frame_positions)
        return predict_x0(output, x_t, t, schedule, unet.config.predicts)

    def swapped(name):
        index, table = WORD_SWAPS[name]
        return [" ".join(w[:index] + [table[w[index]]] + w[index + 1:]) for w in (c.split() for c in captions)]

    def error(x):
        return round(float(((x - x0) ** 2).mean() / (x0 ** 2).mean()), 5)

    def motion(x):
        """(b, 2) net (dy, dx) in latent pixels of each clip's latent object (the weight of |x - its median|)."""
        weight = (x - x.flatten(3).median(dim=3).values[..., None, None]).abs().sum(1)  # (b, f, h, w)
        weight = weight / weight.sum(dim=(2, 3), keepdim=True)
        ys, xs = torch.arange(x.shape[3], dtype=x.dtype), torch.arange(x.shape[4], dtype=x.dtype)
        centre_y, centre_x = (weight.sum(3) * ys).sum(2), (weight.sum(2) * xs).sum(2)  # (b, f)
        return torch.stack([centre_y[:, -1] - centre_y[:, 0], centre_x[:, -1] - centre_x[:, 0]], dim=1)

    def follows(x, texts):
        """Share of clips whose latent object moves the way the caption says."""
        wanted = torch.tensor([DIRECTION_VECTORS[text.split()[4]] for text in texts], dtype=x.dtype)
        return round(float(((motion(x) * wanted).sum(1) > 0).float().mean()), 3)

    def motion_by_direction(x):
        """Mean (dy, dx) of the clips of each captioned direction (the data's: about 2 latent pixels)."""
        moves, names = motion(x), [text.split()[4] for text in captions]
        return {d: [round(float(v), 3) for v in moves[[n == d for n in names]].mean(0)]
                for d in DIRECTION_VECTORS if d in names}

    result = {"image": str(args.image), "keyframe": str(args.keyframe), "clips": len(items)}
    for t in args.timesteps:
        x_t = q_sample(x0, t, schedule, torch.randn(x0.shape, generator=generator))
        base = estimate(x_t, t, captions)
        reading = {"x0_error": error(base), "moves_as_captioned": follows(base, captions),
                   "mean_motion_by_direction": motion_by_direction(base)}
        unplaced = estimate(x_t, t, captions, torch.zeros_like(positions))
        reading["frame_positions_zeroed_change"] = round(float((unplaced - base).norm() / base.norm()), 5)
        for name in WORD_SWAPS:
            other = estimate(x_t, t, swapped(name))
            reading[f"{name}_swapped_change"] = round(float((other - base).norm() / base.norm()), 4)
            if name == "direction":
                reading["x0_error_opposite_direction"] = error(other)
                reading["moves_as_opposite_caption"] = follows(other, swapped(name))
        result[f"t{t}"] = reading
        print(json.dumps({f"t{t}": reading}), flush=True)
    result["data_motion_by_direction"] = motion_by_direction(x0)
    print(json.dumps(result), flush=True)


def keyframes(args) -> None:
    """One stage at a time: keyframes only (fps low) from an image UNet (a training checkpoint's
    ema/trained file or the export; temporal layers at identity, so frames are drawn independently),
    or with a keyframe run's weights loaded, optionally interpolated (--interpolation, --fps medium);
    decoded by the image MoVQ frame by frame (no video decoder needed); scored."""
    import dataclasses
    from collections import Counter

    import torch

    from kvideo.models.movq import MoVQ, MoVQConfig
    from kvideo.models.unet import UNet, UNetConfig
    from kvideo import KVideoPipeline
    from kvideo.shapes.grammar import all_captions
    from kvideo.shapes.quality import quality_prompts
    from kvideo.shapes.score import score_clip
    from kvideo.train.checkpointing import read_weights

    if args.fps != "low" and not args.interpolation:
        raise SystemExit(f"--fps {args.fps} needs --interpolation WEIGHTS")
    unet, encoder = keyframe_unet_and_text(args.recipe, args.image, args.keyframe)
    movq_state, _, movq_info = read_weights(args.recipe / "movq/movq-all.safetensors")
    scale = MoVQConfig.from_json(movq_info.model_config).latent_scale
    decoder = MoVQ.inflate(movq_state, dataclasses.replace(MoVQConfig.preset("shapes-video"), latent_scale=scale,
                                                           attention_latent="frame"))
    if args.interpolation:
        interp_state, interp_extras, interp_info = read_weights(args.interpolation)
        interpolation = UNet(UNetConfig.from_json(interp_info.model_config))
        interpolation.load_state_dict(interp_state)
        interp_null = interp_extras["null_embedding"].float()
    else:  # fps low runs no interpolation
        interpolation = UNet(UNetConfig.preset("shapes-interpolation"))
        interp_null = torch.zeros(interpolation.config.context_dim)
    pipe = KVideoPipeline(encoder, unet, interpolation, interp_null, decoder, progress=False)
    prompts = quality_prompts(args.prompts)
    if args.caption_pattern:  # the grammar's captions that match, instead
        prompts = [c.text for c in all_captions() if re.search(args.caption_pattern, c.text)][:args.prompts]
        if not prompts:
            raise SystemExit(f"no caption of the grammar matches {args.caption_pattern!r}")
    matches, predicted = Counter(), Counter()
    for start in range(0, len(prompts), 8):
        chunk = prompts[start:start + 8]
        videos = pipe(chunk, seed=list(range(start, start + len(chunk))), fps=args.fps, width=64, height=64,
                      steps=args.steps, sampler=args.sampler, guidance_scale=args.guidance, interpolation_steps=10,
                      interpolation_sampler="ddim", timestep_spacing=args.timestep_spacing,
                      threshold=None if args.threshold == "off" else args.threshold)
        for prompt, video in zip(chunk, videos):
            score = score_clip(video.frames, prompt)
            matches.update({k: int(v) for k, v in score.matches.items()})
            predicted[f"{score.object_color} {score.shape} {score.direction}"] += 1
            if args.verbose:
                print(prompt, "->", score.object_color, score.shape, score.direction,
                      [round(m, 2) for m in score.motion], "fill", score.fill_ratio and round(score.fill_ratio, 2),
                      flush=True)
    print(json.dumps({"image": str(args.image), "keyframe": str(args.keyframe), "fps": args.fps,
                      "sampler": args.sampler, "timestep_spacing": args.timestep_spacing, "threshold": args.threshold,
                      "interpolation": str(args.interpolation), "prompts": len(prompts),
                      **{k: round(v / len(prompts), 3) for k, v in matches.items()},
                      "most_predicted": predicted.most_common(3)}), flush=True)


def movq(args) -> None:
    """The image MoVQ alone: rendered clips at 8 fps, 64x64, encoded and decoded, scored (vs the input)."""
    from collections import Counter, defaultdict

    import numpy as np
    import torch

    from kvideo.models.movq import MoVQ
    from kvideo.shapes.score import score_clip
    from kvideo.train.data import cover_crop_frames, read_captions
    from kvideo.video_io import read_frames

    model = MoVQ.from_pretrained(args.weights).eval()
    pairs = read_captions(args.data / "captions.csv")[:args.clips]
    counts = {"input": Counter(), "reconstructed": Counter()}
    fills = {name: defaultdict(list) for name in counts}  # the scorer's fill ratio, by the caption's shape
    for path, caption in pairs:
        frames = cover_crop_frames(read_frames(path, list(range(0, 171, 3))), 64, 64).transpose(0, 1)
        with torch.no_grad():
            decoded = model.decode(model.encode(frames))
        for name, clip in (("input", frames), ("reconstructed", decoded)):
            clip = ((clip.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
            score = score_clip(clip, caption)
            counts[name].update({k: int(v) for k, v in score.matches.items()})
            fills[name][score.expected.shape].append(score.fill_ratio)
    print(json.dumps({name: {k: round(v / len(pairs), 3) for k, v in c.items()} for name, c in counts.items()}))
    print(json.dumps({f"median fill ratio, {name}": {shape: round(float(np.median(v)), 3) for shape, v in f.items()}
                      for name, f in fills.items()}))


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


def keyframe_model_parser(commands, name: str, reads: str):
    """A subcommand that takes a recipe folder, image UNet weights and optional keyframe run weights."""
    p = commands.add_parser(name)
    p.add_argument("recipe", type=Path, help=f"the folder of `kvideo recipe shapes` ({reads})")
    p.add_argument("image", type=Path, help="image UNet weights: exported, or a checkpoint's ema/trained file")
    p.add_argument("keyframe", type=Path, nargs="?", help="keyframe run weights to load on top (default: none)")
    return p


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    for name in ("quality", "fvd"):
        p = commands.add_parser(name)
        p.add_argument("recipe", type=Path, help="the folder of `kvideo recipe shapes`")
        p.add_argument("out", type=Path, help="output folder")
        # fvd scores any subfolder of --quality-dir (the quality command's variants, bench_fast.py's rows)
        p.add_argument("--variants", nargs="+", choices=VARIANTS if name == "quality" else None,
                       default=list(VARIANTS))
        p.add_argument("--prompts", type=int, default=96, help="captions of the grammar (default 96)")
        p.add_argument("--seeds", type=int, default=2, help="seeds per caption (default 2)")
        p.add_argument("--batch-size", type=int, default=8, help="prompts per batched call (default 8)")
        p.set_defaults(func=globals()[name])
    commands.choices["fvd"].add_argument("--quality-dir", type=Path, required=True,
                                         help="the OUT of the quality command (its generated clips), or any folder "
                                              "whose subfolders named by --variants hold mp4s")
    p = commands.add_parser("denoise")
    p.add_argument("cache", type=Path, help="an interpolation training cache (kvideo train cache)")
    p.add_argument("weights", type=Path, help="interpolation weights: exported, or a checkpoint's ema/weights file")
    p.add_argument("--clips", type=int, default=64)
    p.add_argument("--timesteps", type=int, nargs="+", default=[100, 400, 700])
    p.set_defaults(func=denoise)
    p = keyframe_model_parser(commands, "keyframes", "its movq/ and text/")
    p.add_argument("--prompts", type=int, default=24)
    p.add_argument("--steps", type=int, default=25)
    p.add_argument("--guidance", type=float, default=5.0)
    p.add_argument("--timestep-spacing", default="direct", choices=["direct", "trailing", "leading"])
    p.add_argument("--threshold", default="off", type=lambda text: "off" if text == "off" else parse_threshold(text),
                   help="dynamic thresholding quantile of the x0 estimates, or off (default: off, the shapes model's)")
    p.add_argument("--sampler", default="ddim", choices=["ddim", "ddpm", "dpmpp_2m"], help="keyframe sampler")
    p.add_argument("--interpolation", type=Path, help="interpolation UNet weights (for --fps medium or high)")
    p.add_argument("--fps", default="low", choices=["low", "medium", "high"])
    p.add_argument("--verbose", action="store_true", help="print each clip's reading")
    p.add_argument("--caption-pattern", default="", help="score the grammar's captions matching this regular "
                                                          "expression (at most --prompts) instead")
    p.set_defaults(func=keyframes)
    p = keyframe_model_parser(commands, "words", "its text/ and cache-keyframe/")
    p.add_argument("--clips", type=int, default=16)
    p.add_argument("--timesteps", type=int, nargs="+", default=[200, 500, 800, 950])
    p.set_defaults(func=words)
    p = commands.add_parser("movq")
    p.add_argument("weights", type=Path, help="image MoVQ weights (movq-all.safetensors)")
    p.add_argument("data", type=Path, help="a rendered set (kvideo data shapes)")
    p.add_argument("--clips", type=int, default=48)
    p.set_defaults(func=movq)
    p = commands.add_parser("speed")
    p.add_argument("--prompt", default="a red circle moving right on a white background")  # the README's
    p.add_argument("--weights", help="default: kvideo generate's default")
    p.add_argument("--output", default="speed-check.mp4")
    p.set_defaults(func=speed)
    args = parser.parse_args()
    args.func(args)


if __name__ == "__main__":
    main()
