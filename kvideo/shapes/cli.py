"""`kvideo data shapes` and `kvideo eval shapes`: argument parsing only; the work is in kvideo.shapes."""
from __future__ import annotations

import argparse
from pathlib import Path

from kvideo.argtypes import parse_int
from kvideo.shapes.render import render_dataset
from kvideo.shapes.score import format_failures, format_table, score_folder, write_report

REPORT_NAME = "shapes_score.json"


def register(subparsers) -> None:
    """`kvideo data shapes OUT --videos N`: render a captioned set of moving shapes."""
    parser = subparsers.add_parser("data", help="make training data (synthetic captioned videos)")
    commands = parser.add_subparsers(dest="data_command", metavar="DATA_COMMAND", required=True)
    p = commands.add_parser("shapes", help="render clips of one shape moving on a plain background + captions.csv")
    p.add_argument("out", metavar="OUT", help="output folder (videos/*.mp4, captions.csv); reruns resume")
    p.add_argument("--videos", type=int, required=True, help="number of clips to render (required)")
    p.add_argument("--seed", type=int, default=0, help="seed of the set: same seed, same clips (default 0)")
    p.add_argument("--size", type=int, default=128, help="frame height and width, a multiple of 8 (default 128)")
    p.add_argument("--fps", type=float, default=24.0, help="frames per second (default 24)")
    p.add_argument("--seconds", type=float, default=10.0, help="length of each clip in seconds (default 10)")
    p.add_argument("--quiet", action="store_true", help="no progress bar (default: show it)")
    p.set_defaults(func=_data_shapes)


def _data_shapes(args) -> int:
    captions = render_dataset(args.out, args.videos, args.seed, args.size, args.fps, args.seconds,
                              progress=not args.quiet)
    print(f"{args.videos} clips and their captions: {captions}")
    return 0


def register_eval(commands) -> None:
    """`kvideo eval shapes`: score clips against their shapes captions (kvideo.cli adds it to the eval commands)."""
    p = commands.add_parser("shapes", help="check clips against shapes captions: background, color, shape, direction")
    p.add_argument("--videos", required=True, help="folder of the clips (required)")
    p.add_argument("--captions", help="captions CSV/JSONL (path, caption); paths relative to its folder or to "
                                      "--videos (default: VIDEOS/captions.csv)")
    p.add_argument("--report", help=f"JSON report with every clip's result (default: VIDEOS/{REPORT_NAME})")
    p.add_argument("--keyframe-stride", type=_stride, default=4,
                   help="every how many frames a keyframe stands, for the frame-level measures: 4 at fps medium, "
                        "16 at fps high, 1 at fps low (default 4)")
    p.add_argument("--quiet", action="store_true", help="no progress bar (default: show it)")
    p.set_defaults(func=_eval_shapes)


def _stride(text: str) -> int:
    value = parse_int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text!r}")
    return value


def _eval_shapes(args) -> int:
    report = score_folder(args.videos, args.captions, progress=not args.quiet, keyframe_stride=args.keyframe_stride)
    path = write_report(args.report or Path(args.videos) / REPORT_NAME, report)
    print(format_table(report))
    failures = format_failures(report)
    if failures:
        print(failures)
    print(f"report: {path}")
    return 0
