"""`kvideo generate`: prompt(s) -> video file(s); argument parsing only, the work is in kvideo.pipeline."""
from __future__ import annotations

import re
import sys
from pathlib import Path

from kvideo.pipeline import DTYPES, FPS_MODES, OFFLOAD, SAMPLERS, GenerationOptions, check_prompt

TINY_DEFAULTS = dict(size=(64, 64), steps=10)  # random weights: small and quick, it only shows the stages run
TINY_NOTICE = (
    "kvideo: no --weights given, so the built-in tiny preset with RANDOM weights is used: the video is "
    "noise and only shows that every stage runs. Pass --weights DIR (official files) for real videos."
)


def register(subparsers) -> None:
    p = subparsers.add_parser("generate", help="text -> video file")
    p.add_argument("prompt", nargs="?", help="what the video shows")
    p.add_argument("-o", "--output", required=True,
                   help="output file (.mp4 .webm .gif, or a folder for PNG frames); a folder with --prompts-file")
    p.add_argument("--prompts-file", help="one prompt per line; one video each; existing outputs are skipped")
    p.add_argument("--weights", help="folder with the official (or converted) weights; default: tiny random preset")
    p.add_argument("--fps", default="medium", choices=sorted(FPS_MODES), help="low 15 / medium 57 / high 225 frames")
    p.add_argument("--size", help="WIDTHxHEIGHT, multiples of 64 (default 512x512; 64x64 for the tiny preset)")
    p.add_argument("--frames", type=int, help="number of keyframes (default: the model's, 15)")
    p.add_argument("--steps", type=int, help="keyframe sampling steps (default 50; 10 for the tiny preset)")
    p.add_argument("--interpolation-steps", type=int, help="default: as --steps")
    p.add_argument("--sampler", default="ddpm", choices=SAMPLERS)
    p.add_argument("--interpolation-sampler", default="ddpm", choices=SAMPLERS)
    p.add_argument("--guidance", type=float, default=5.0, help="text guidance scale w: (w+1)·cond - w·uncond")
    p.add_argument("--interpolation-guidance", type=float, default=0.25)
    p.add_argument("--negative", help="negative prompt")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cuda" if _cuda() else "cpu")
    p.add_argument("--dtype", default=None, choices=sorted(DTYPES), help="default bf16 on GPU, fp32 on CPU")
    p.add_argument("--offload", default="none", choices=OFFLOAD, help="'model': each model on the GPU only while it runs")
    p.add_argument("--decode-window", type=int, help="frames decoded together by the video decoder")
    p.add_argument("--temporal-weights", action="append", default=[], metavar="FILE",
                   help="fine-tuned weights from `kvideo train` (trained.safetensors); repeatable")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=run)


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def parse_size(text: str | None, default: tuple[int, int]) -> tuple[int, int]:
    if text is None:
        return default
    match = re.fullmatch(r"(\d+)[xX](\d+)", text)
    if not match:
        raise ValueError(f"--size {text!r}: expected WIDTHxHEIGHT, e.g. 512x512")
    return int(match[1]), int(match[2])


def jobs(args) -> list[tuple[str, Path]]:
    """(prompt, output path) pairs, validated before any model is loaded."""
    from kvideo.export import check_output_path

    if args.prompts_file:
        if args.prompt:
            raise ValueError("give either a PROMPT or --prompts-file, not both")
        source = Path(args.prompts_file)
        if not source.is_file():
            raise FileNotFoundError(f"--prompts-file {str(source)!r} does not exist")
        prompts = [line.strip() for line in source.read_text().splitlines() if line.strip()]
        if not prompts:
            raise ValueError(f"--prompts-file {str(source)!r} holds no prompt")
        folder = Path(args.output)
        folder.mkdir(parents=True, exist_ok=True)
        pairs = [(p, folder / f"{i:04d}-{slug(p)}.mp4") for i, p in enumerate(prompts)]
    else:
        if args.prompt is None:
            raise ValueError("no prompt: give a PROMPT or --prompts-file")
        pairs = [(args.prompt, Path(args.output))]
    for prompt, path in pairs:
        check_prompt(prompt)
        check_output_path(path)
    return pairs


def slug(text: str, length: int = 40) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:length] or "video"


def run(args) -> int:
    pairs = jobs(args)
    tiny = args.weights is None
    width, height = parse_size(args.size, TINY_DEFAULTS["size"] if tiny else (512, 512))
    steps = args.steps if args.steps is not None else (TINY_DEFAULTS["steps"] if tiny else 50)
    options = dict(width=width, height=height, fps=args.fps, num_frames=args.frames, steps=steps,
                   interpolation_steps=steps if args.interpolation_steps is None else args.interpolation_steps, sampler=args.sampler,
                   interpolation_sampler=args.interpolation_sampler, guidance_scale=args.guidance,
                   interpolation_guidance_scale=args.interpolation_guidance, decode_window=args.decode_window)
    GenerationOptions(**options)  # fail on bad options before loading anything
    for path in args.temporal_weights:
        if not Path(path).is_file():
            raise FileNotFoundError(f"--temporal-weights {path!r} does not exist")
    todo = [(i, p, path) for i, (p, path) in enumerate(pairs) if not path.exists()]
    for _, path in pairs:
        if path.exists():
            print(f"kvideo: {path} exists, skipped", file=sys.stderr)
    if not todo:
        return 0
    pipe = load_pipeline(args, tiny)
    if args.temporal_weights:
        from kvideo.train.checkpointing import load_into_pipeline

        for path in args.temporal_weights:
            print(f"kvideo: loaded {load_into_pipeline(pipe, path).describe()} from {path}", file=sys.stderr)
    for index, prompt, path in todo:  # the seed follows the prompt's line, so a resumed run matches
        video = pipe(prompt, args.negative, seed=args.seed + index, **options)
        video.save(path)
        print(f"wrote {path} ({len(video.frames)} frames, {video.fps} fps)")
    return 0


def load_pipeline(args, tiny: bool):
    from kvideo.pipeline import KVideoPipeline

    dtype = args.dtype or ("bf16" if args.device.startswith("cuda") else "fp32")
    common = dict(device=args.device, dtype=dtype, offload=args.offload, progress=not args.quiet)
    if tiny:
        print(TINY_NOTICE, file=sys.stderr)
        return KVideoPipeline.from_preset("tiny", **common)
    return KVideoPipeline.from_pretrained(args.weights, **common)
