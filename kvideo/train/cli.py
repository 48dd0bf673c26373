"""`kvideo train STEP`: parse a config (file, preset, flags) for one training task and call the library.

Steps: cache, movq, image, keyframe, interpolation, decoder, detector, distill (a few-step student of a
keyframe or interpolation UNet).
"""
from __future__ import annotations

import argparse
import os
import sys

from kvideo.checkpoint import check_writable_folder
from kvideo.errors import OneLineParser, dispatch
from kvideo.flags import CONFIG_PREFIX, add_flag
from kvideo.shapes import presets as shapes_presets  # noqa: F401  registers the shapes-* presets --preset names
from kvideo.train.cache import run_cache
from kvideo.train.config import (
    TASKS, CacheConfig, TrainConfig, add_config_arguments, config_from_args, read_config_file,
)
from kvideo.train.trainer import train

EPILOG = ("Every config field is also a flag (nested ones dotted: --clip.height 256; --output_dir spellings work "
          "too); flags override the --config file, which overrides the --preset. Launch several processes with "
          "torchrun, e.g. "
          "torchrun --nproc_per_node 8 -m kvideo train keyframe --preset keyframe")

TASK_HELP = {"distill": "distill a keyframe or interpolation UNet (--teacher) into a student that samples in "
                        "--student-steps DDIM steps, unguided"}


def add_step_arguments(parser: argparse.ArgumentParser, cls, task: str | None = None) -> None:
    """The config flags of one step (those only other steps read stay out of --help) and --quiet."""
    if task is None:  # cache
        add_config_arguments(parser, cls)
    else:
        add_config_arguments(parser, cls, stage=task, skip=("task", "clip.task"), preset=default_preset(task))
    add_flag(parser, "--quiet", dest=CONFIG_PREFIX + "progress", action="store_const", const=False, default=None,
             help="no progress bars")


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("train", help="train or fine-tune a model (cache, movq, image, keyframe, "
                                                 "interpolation, decoder, detector, distill)", description=__doc__)
    commands = parser.add_subparsers(dest="train_command", metavar="STEP", required=True)
    cache = commands.add_parser("cache", help="encode videos and captions once: MoVQ latents + text embeddings",
                                epilog=EPILOG)
    add_step_arguments(cache, CacheConfig)
    cache.set_defaults(func=run_cache_command)
    for task in TASKS:
        sub = commands.add_parser(task, help=TASK_HELP.get(task, f"train the {task} model"), epilog=EPILOG)
        add_flag(sub, "--overwrite", action="store_true",
                 help="move a previous run in --output-dir aside (to OUTPUT_DIR.old-N) and start again; nothing is "
                      "deleted (default: refuse a folder that holds a run)")
        add_step_arguments(sub, TrainConfig, task)
        sub.set_defaults(func=run_train_command, task=task)


def default_preset(task: str) -> str | None:
    """The preset a task starts from without --config / --preset: the one named after it, if any."""
    return task if task in TrainConfig.presets() else None


def _check_file_task(args: argparse.Namespace) -> None:
    if args.config:
        found = read_config_file(args.config).get("task")
        if found not in (None, args.task):
            raise ValueError(f"{args.config!r} is a {found} config; run `kvideo train {found}` with it")


def train_config(args: argparse.Namespace) -> TrainConfig:
    """The run's config: the task's preset (unless --config / --preset), the file, then the flags."""
    _check_file_task(args)
    if not args.config and not args.preset:
        args.preset = default_preset(args.task)
    return config_from_args(TrainConfig, args, task=args.task, **{"clip.task": args.task})


def run_train_command(args: argparse.Namespace) -> int:
    result = train(train_config(args), overwrite=args.overwrite)
    if int(os.environ.get("RANK", "0")) == 0:
        print(f"trained {result.step} steps (last loss {result.last_loss:.4f}); weights: {result.weights}")
    return 0


def run_cache_command(args: argparse.Namespace) -> int:
    config = config_from_args(CacheConfig, args)
    if config.output:
        check_writable_folder(config.output, what="--output")
    folder = run_cache(config)
    print(f"cache written to {folder}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """`python -m kvideo.train.cli STEP ...`: the same as `kvideo train STEP ...` (handy under torchrun)."""
    parser = OneLineParser(prog="kvideo")
    register(parser.add_subparsers(dest="command"))
    return dispatch(parser, ["train", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
