"""`kvideo recipe shapes OUT`: argument parsing only; the stages are in kvideo.shapes.recipe."""
from __future__ import annotations

from kvideo.argtypes import parse_seed
from kvideo.shapes.presets import STAGES as STAGE_NAMES
from kvideo.shapes.recipe import Recipe


def register(subparsers) -> None:
    parser = subparsers.add_parser("recipe", help="train a whole model from an empty folder (shapes)")
    recipes = parser.add_subparsers(dest="recipe_command", metavar="RECIPE", required=True)
    p = recipes.add_parser("shapes", help="render shapes clips, then train MoVQ, text-to-image, keyframe, "
                                          "interpolation and decoder models; resumable")
    p.add_argument("out", metavar="OUT", help="working folder; a rerun skips finished stages and resumes the rest")
    p.add_argument("--videos", type=int, default=864, help="training clips to render (default 864: 4 per caption)")
    p.add_argument("--seed", type=parse_seed, default=0, help="seed of the data and of every stage (default 0)")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda (default auto)")
    p.add_argument("--steps-scale", type=float, default=1.0,
                   help="multiply every stage's training steps (default 1.0; e.g. 0.01 for a quick trial)")
    p.add_argument("--batch-scale", type=int, default=1,
                   help="multiply every stage's batch size (default 1; a GPU takes 4-8 at about the same step time)")
    p.add_argument("--stages", nargs="+", choices=STAGE_NAMES, default=list(STAGE_NAMES), metavar="STAGE",
                   help=f"stages to run, in order (default: all: {' '.join(STAGE_NAMES)})")
    p.add_argument("--quiet", action="store_true", help="no progress bars (default: show them)")
    p.set_defaults(func=_shapes)


def _shapes(args) -> int:
    recipe = Recipe(args.out, videos=args.videos, seed=args.seed, device=args.device, steps_scale=args.steps_scale,
                    batch_scale=args.batch_scale, progress=not args.quiet)
    folder = recipe.run(tuple(args.stages))
    left = [stage for stage in STAGE_NAMES if stage not in recipe.records()]
    if left:
        print(f"stages still to run: {' '.join(left)} (kvideo recipe shapes {args.out} runs them)")
    else:
        print(f"model folder: {folder} (kvideo generate PROMPT --weights {folder} -o clip.mp4)")
    return 0
