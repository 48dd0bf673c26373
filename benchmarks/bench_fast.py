"""Fast sampling on the shapes model: each technique alone and together, speed and quality in one run.

    python benchmarks/bench_fast.py OUT [--weights shapes] [--rows today cache-2 ...] [--prompts 96 --seeds 2]
    python benchmarks/bench_fast.py OUT --rows today default --speed-only 12   # interleaved timing alone

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


def options_of(pipe, row: str) -> dict:
    card = pipe.card.get("generation", {})
    if row == "default":
        return dict(card)
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--weights", default="shapes")
    parser.add_argument("--rows", nargs="+", default=list(ROWS), choices=list(ROWS))
    parser.add_argument("--prompts", type=int, default=96)
    parser.add_argument("--seeds", type=int, default=2)
    parser.add_argument("--timing-clips", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--speed-only", type=int, metavar="CLIPS",
                        help="only time the rows, interleaved, CLIPS clips each (median); no quality set")
    args = parser.parse_args()

    from kvideo.pipeline import KVideoPipeline
    from kvideo.shapes.quality import measure_quality, quality_prompts

    pipe = KVideoPipeline.from_pretrained(args.weights, progress=False)
    summary = args.out / "fast.json"
    args.out.mkdir(parents=True, exist_ok=True)
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
