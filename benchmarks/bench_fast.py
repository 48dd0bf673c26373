"""Fast sampling on the shapes model: each technique alone and together, speed and quality in one run.

    python benchmarks/bench_fast.py OUT [--weights shapes] [--rows today cache-2 ...] [--prompts 96 --seeds 2]
    python benchmarks/bench_fast.py OUT --rows today default --speed-only 12   # interleaved timing alone
    python benchmarks/bench_fast.py OUT --rows today default --interpolation-check 8   # real keyframes
    python benchmarks/bench_fast.py OUT --rows today default --latent-texture CACHE --prompts 8  # latent texture

For every row (a set of generation options, `ROWS`): seconds per clip (one clip at a time, generation only,
after a warm-up, the same process for every row), UNet evaluations per clip (a guided step counts two;
cached calls, which run only the outermost levels, are counted apart), and the quality of the set
(`kvideo eval shapes` on the mp4s: attributes, frame shares, roughness, keyframe flicker, motion evenness).
Each row's clips go to OUT/<row>/; OUT/fast.json holds the table and is rewritten after every row.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

# today: the shapes card's settings before the fast default (25 DDIM keyframe steps, guidance 5 on every step,
# 10 interpolation steps at keyframe guidance 0.25, no clipping). Each other row changes one thing; "default"
# is the model card's own settings.
TODAY = dict(steps=25, interpolation_steps=10, sampler="ddim", interpolation_sampler="ddim",
             timestep_spacing="trailing", guidance_scale=5.0, interpolation_guidance_scale=0.25,
             guidance_interval=None, guidance_rescale=0.0, cache_interval=1, threshold=None, latent_range=None)
ROWS = {
    "today": {},
    "latent-range": {"latent_range": "card"},
    "guidance-2": dict(guidance_scale=2.0),
    "cache-2": dict(cache_interval=2),
    "cache-3": dict(cache_interval=3),
    "guidance-interval": dict(guidance_interval=(300, 1000)),
    "dpm-8-steps": dict(steps=8, sampler="dpmpp_2m", interpolation_steps=4),
    "interp-unguided": dict(interpolation_guidance_scale=0.0),
    "default": {},
}
# rows that change one thing of the card's own settings (the default)
FROM_DEFAULT = {
    "default-leading": dict(timestep_spacing="leading"),
    "default-rescale": dict(guidance_rescale=1.0),
    "default-g1": dict(guidance_scale=1.0),
    "default-g1.5": dict(guidance_scale=1.5),
    "default-direct": dict(timestep_spacing="direct"),
    "default-interval": dict(guidance_interval=(300, 1000)),
    "default-fps-low": dict(fps="low"),  # the keyframes alone (15 frames at 2 fps)
}


def options_of(pipe, row: str) -> dict:
    card = pipe.card.get("generation", {})
    if row == "default":
        return dict(card)
    if row in FROM_DEFAULT:
        return {**card, **FROM_DEFAULT[row]}
    options = {**card, **TODAY, **ROWS[row]}
    if options["latent_range"] == "card":
        options["latent_range"] = card["latent_range"]
    return options


def evaluations(pipe, prompt: str, options: dict) -> dict[str, float]:
    """UNet evaluations of one clip (a forward's batch is clips x guidance branches), and how many of them
    reused cached deep levels (`cache_interval` > 1: only the outermost levels ran)."""
    counts = {"keyframe": 0, "interpolation": 0, "full": 0}
    batch = {}
    hooks = []
    for name, unet in (("keyframe", pipe.unet), ("interpolation", pipe.interpolation_unet)):
        def on_call(module, args, kwargs, name=name):
            batch["rows"] = args[0].shape[0]
            counts[name] += args[0].shape[0]

        def on_deep(module, args):  # runs once per full call
            counts["full"] += batch["rows"]

        first_deep_block = unet.down_samples[1].resnet_attn_blocks[0][0]  # runs on every full call only
        hooks += [unet.register_forward_pre_hook(on_call, with_kwargs=True),
                  first_deep_block.register_forward_pre_hook(on_deep)]
    try:
        pipe(prompt, seed=0, **options)
    finally:
        for hook in hooks:
            hook.remove()
    total = counts["keyframe"] + counts["interpolation"]
    return {"unet_evals": total, "keyframe_evals": counts["keyframe"],
            "interpolation_evals": counts["interpolation"], "cached_evals": total - counts["full"]}


def seconds_per_clip(pipe, prompts: list[str], options: dict) -> float:
    pipe(prompts[0], seed=0, **options)  # warm-up
    started = time.perf_counter()
    for i, prompt in enumerate(prompts):
        pipe(prompt, seed=i, **options)
    return (time.perf_counter() - started) / len(prompts)


def interleaved_speed(pipe, rows: list[str], prompts: list[str]) -> dict[str, float]:
    """Median seconds per clip of each row, the rows timed in turn clip by clip (a load that comes and goes
    then weighs on every row alike), after one warm-up clip each."""
    options = {row: options_of(pipe, row) for row in rows}
    for row in rows:
        pipe(prompts[0], seed=0, **options[row])
    times: dict[str, list[float]] = {row: [] for row in rows}
    for i, prompt in enumerate(prompts):
        for row in rows:
            started = time.perf_counter()
            pipe(prompt, seed=i, **options[row])
            times[row].append(time.perf_counter() - started)
    return {row: round(float(sorted(values)[len(values) // 2]), 3) for row, values in times.items()}


def interpolation_check(pipe, clips: int, options: dict) -> dict:
    """The interpolation model alone on REAL keyframes: rendered 3 s clips (frames 3 apart, 21 frames) through
    the MoVQ encoder, every 4th latent kept, the frames between drawn again (skip 3) and decoded. Returns where
    the frames between sit along each keyframe pair (mean fraction of the way, k = 1..3) and the evenness,
    for the rendered clips, their MoVQ round trip and the interpolated ones."""
    import numpy as np

    from kvideo.generation import GenerationOptions
    from kvideo.shapes.render import RenderSettings, clip_params, render_clip
    from kvideo.shapes.score import border_color, object_mask, score_clip

    settings = RenderSettings(64, 64, 24.0, 3.0)
    params = [clip_params(7, i, settings) for i in range(clips)]
    frames = np.stack([render_clip(p, settings)[0:61:3] for p in params])  # (n, 21, 64, 64, 3)
    video = torch.from_numpy(frames).float().div(127.5).sub(1).permute(0, 4, 1, 2, 3)
    opts = GenerationOptions(**{**pipe.card.get("generation", {}), **options})
    with torch.no_grad():
        latents = pipe.decoder.encode(video)
        generators = [torch.Generator().manual_seed(i) for i in range(clips)]
        between = pipe.interpolate(latents[:, :, ::4], 3, opts, generators, None)
        sets = {"rendered": frames, "round trip": pipe.decode(latents, None), "interpolated": pipe.decode(between, None)}

    def fractions(clip):
        background, centers, out = border_color(clip), {}, {1: [], 2: [], 3: []}
        for t, frame in enumerate(clip):
            mask = object_mask(frame, background)
            if mask is not None:
                ys, xs = np.nonzero(mask)
                centers[t] = np.array([ys.mean(), xs.mean()])
        for start in range(0, len(clip) - 4, 4):
            if start in centers and start + 4 in centers:
                travel = centers[start + 4] - centers[start]
                axis = int(np.argmax(abs(travel)))
                if abs(travel[axis]) >= 0.05 * clip.shape[1 + axis]:
                    for k in (1, 2, 3):
                        if start + k in centers:
                            out[k].append((centers[start + k][axis] - centers[start][axis]) / travel[axis])
        return out

    report = {}
    for name, clips_ in sets.items():
        merged = {1: [], 2: [], 3: []}
        for clip in clips_:
            for k, values in fractions(clip).items():
                merged[k] += values
        evenness = [score_clip(clip, p.caption.text).frames.evenness for clip, p in zip(clips_, params)]
        report[name] = {"fractions": [round(float(np.mean(merged[k])), 3) for k in (1, 2, 3)],
                        "evenness": round(float(np.median([e for e in evenness if e is not None])), 3)}
    return report


def latent_roughness(latents) -> float:
    """Mean |discrete Laplacian| of (c, f, h, w) latents over their spatial axes: their fine-scale texture."""
    x = torch.as_tensor(latents, dtype=torch.float32)
    lap = (4 * x[..., 1:-1, 1:-1] - x[..., :-2, 1:-1] - x[..., 2:, 1:-1] - x[..., 1:-1, :-2] - x[..., 1:-1, 2:])
    return float(lap.abs().mean())


def latent_texture(pipe, rows: list[str], prompts: list[str], cache: Path) -> dict:
    """Fine-scale texture of the latents (`latent_roughness`): the training latents of a keyframe cache, and
    for each row the keyframes and the frames between of whole clips. The MoVQ draws latent texture that the
    training latents lack as 4x4-pixel blocks."""
    from safetensors import safe_open

    real = []
    for shard in sorted(cache.glob("shard-*.safetensors"))[:2]:
        with safe_open(str(shard), "pt") as f:
            real += [latent_roughness(f.get_tensor(k)) for k in f.keys() if k.endswith("latents")]
    report = {"training latents": round(sum(real) / len(real), 4)}
    for row in rows:
        keys, between = [], []
        for i, prompt in enumerate(prompts):
            latents = pipe(prompt, seed=i, **options_of(pipe, row)).latents[0]  # (c, f, h, w)
            keys.append(latent_roughness(latents[:, ::4]))
            between.append(latent_roughness(latents[:, [t for t in range(latents.shape[1]) if t % 4]]))
        report[row] = {"keyframes": round(sum(keys) / len(keys), 4), "between": round(sum(between) / len(between), 4)}
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--weights", default="shapes")
    parser.add_argument("--rows", nargs="+", default=list(ROWS), choices=[*ROWS, *FROM_DEFAULT])
    parser.add_argument("--prompts", type=int, default=96)
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--timing-clips", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--interpolation-check", type=int, metavar="CLIPS",
                        help="only test the interpolation model on real keyframes of CLIPS rendered clips")
    parser.add_argument("--speed-only", type=int, metavar="CLIPS",
                        help="only time the rows, interleaved, CLIPS clips each (median); no quality set")
    parser.add_argument("--latent-texture", type=Path, metavar="CACHE",
                        help="only measure the latents' fine-scale texture against a keyframe cache's latents")
    args = parser.parse_args()

    from kvideo import KVideoPipeline
    from kvideo.shapes.quality import measure_quality, quality_prompts

    pipe = KVideoPipeline.from_pretrained(args.weights, progress=False)
    summary = args.out / "fast.json"
    args.out.mkdir(parents=True, exist_ok=True)
    if args.interpolation_check:
        report = {row: interpolation_check(pipe, args.interpolation_check, options_of(pipe, row)) for row in args.rows}
        (args.out / "interpolation.json").write_text(json.dumps(report, indent=1))
        print(json.dumps(report))
        return
    if args.latent_texture:
        report = latent_texture(pipe, args.rows, quality_prompts(args.prompts, seed=1), args.latent_texture)
        (args.out / "texture.json").write_text(json.dumps(report, indent=1))
        print(json.dumps(report))
        return
    if args.speed_only:
        prompts = quality_prompts(args.speed_only, seed=1)
        speeds = interleaved_speed(pipe, args.rows, prompts)
        table = {row: {"s_per_clip": speeds[row], **evaluations(pipe, prompts[0], options_of(pipe, row))}
                 for row in args.rows}
        (args.out / "speed.json").write_text(json.dumps({"threads": torch.get_num_threads(), **table}, indent=1))
        print(json.dumps(table))
        return
    timing_prompts = quality_prompts(args.timing_clips, seed=1)
    for row in args.rows:
        options = options_of(pipe, row)
        record = {"options": {k: v for k, v in options.items() if k not in ("width", "height")},
                  "threads": torch.get_num_threads(),
                  "s_per_clip": round(seconds_per_clip(pipe, timing_prompts, options), 3),
                  **evaluations(pipe, timing_prompts[0], options)}
        report = measure_quality(pipe, args.out / row, prompts=args.prompts, seeds=args.seeds,
                                 batch_size=args.batch_size, progress=False, **options)
        record.update({"prompts": args.prompts, "seeds": args.seeds, **report["totals"]})
        table = {**(json.loads(summary.read_text()) if summary.is_file() else {}), row: record}
        summary.write_text(json.dumps(table, indent=1) + "\n")
        print(row, json.dumps(record), flush=True)


if __name__ == "__main__":
    main()
