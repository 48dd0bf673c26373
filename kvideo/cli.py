"""The `kvideo` command line: parses arguments and calls the library (see each subcommand module)."""
from __future__ import annotations

import argparse
import sys
from importlib import metadata

from kvideo import __version__, generate_cli
from kvideo.argtypes import parse_int
from kvideo.convert import MODELS, convert, info
from kvideo.errors import DEBUG_ENV, DEBUG_FLAG, EXIT_ERROR, OneLineParser, dispatch
from kvideo.eval import cli as eval_cli
from kvideo.shapes import cli as shapes_cli
from kvideo.shapes import presets as shapes_presets  # noqa: F401  registers the shapes-* presets commands name
from kvideo.shapes import recipe_cli
from kvideo.train import cli as train_cli


def register(subparsers) -> None:
    """The core subcommands: convert and info (generate lives in kvideo.generate_cli)."""
    p = subparsers.add_parser("convert", help="official .pt checkpoint -> kvideo safetensors")
    p.add_argument("source", help="official checkpoint (kandinsky_video.pt, movq.pt, ...)")
    p.add_argument("-o", "--output", required=True, help="output .safetensors file")
    p.add_argument("--model", choices=sorted(MODELS), help="model kind (default: detected from the keys)")
    p.add_argument("--config", metavar="FILE", help="JSON config for non-official sizes (default: the official preset)")
    p.add_argument("--model-preset", metavar="NAME",
                   help="a named size instead of --config, e.g. tiny-interpolation; `kvideo info` names the one a "
                        "file's shapes fit (default: the official preset)")
    p.set_defaults(func=_convert)
    p = subparsers.add_parser("info", help="config and parameter counts of a checkpoint")
    p.add_argument("checkpoint", help="a kvideo .safetensors file or an official .pt checkpoint")
    p.set_defaults(func=_info)


def _convert(args) -> int:
    name = convert(args.source, args.output, model=args.model, config_path=args.config, preset=args.model_preset)
    print(f"wrote {args.output} ({name})")
    return 0


def _info(args) -> int:
    print(info(args.checkpoint).format())
    return 0


class Parser(OneLineParser):
    """kvideo's parser: it and every subcommand's parser (add_subparsers makes them of this class) take
    the global options, so `kvideo --threads 1 generate ...` and `kvideo generate ... --threads 1` both work."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.add_argument("--threads", type=_threads, metavar="N", default=argparse.SUPPRESS,
                          help="CPU threads torch uses; 1 on a busy shared machine "
                               "(default: OMP_NUM_THREADS if set, else the cores this process may use)")


def _threads(text: str) -> int:
    value = parse_int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer >= 1, got {text!r}")
    return value


def version() -> str:
    """The installed distribution's version, or the package's own when kvideo runs from a source tree."""
    try:
        return metadata.version("kvideo")
    except metadata.PackageNotFoundError:
        return __version__


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="kvideo", description="Kandinsky Video text-to-video toolkit",
                    epilog=f"Errors are one line and exit status {EXIT_ERROR}; {DEBUG_FLAG} (anywhere "
                           f"on the line) or {DEBUG_ENV}=1 shows the Python traceback.")
    parser.add_argument("--version", action="version", version=f"kvideo {version()}",
                        help="print kvideo's version and exit (default: off)")
    parser.add_argument(DEBUG_FLAG, action="store_true", help="show the traceback of any error (default: off)")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    register(subparsers)  # convert, info
    generate_cli.register(subparsers)
    shapes_cli.register_eval(eval_cli.register(subparsers))  # eval ..., then eval shapes
    train_cli.register(subparsers)
    shapes_cli.register(subparsers)  # data shapes
    recipe_cli.register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    return dispatch(build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
