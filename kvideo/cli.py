"""The `kvideo` command line: parses arguments and calls the library (see each subcommand module)."""
from __future__ import annotations

import argparse
import importlib
import sys

# Each module provides `register(subparsers)`, adding its subcommand(s) with `set_defaults(func=...)`.
SUBCOMMAND_MODULES = ("kvideo.cli", "kvideo.generate_cli", "kvideo.eval.cli", "kvideo.train.cli")


def register(subparsers) -> None:
    """The core subcommands: convert and info (generate lives in kvideo.generate_cli)."""
    p = subparsers.add_parser("convert", help="official .pt checkpoint -> kvideo safetensors")
    p.add_argument("source", help="official checkpoint (kandinsky_video.pt, movq.pt, ...)")
    p.add_argument("-o", "--output", required=True, help="output .safetensors file")
    p.add_argument("--model", choices=sorted(_models()), help="model kind (default: detected from the keys)")
    p.add_argument("--config", help="JSON config for non-official sizes (default: the official preset)")
    p.set_defaults(func=_convert)
    p = subparsers.add_parser("info", help="config and parameter counts of a checkpoint")
    p.add_argument("checkpoint")
    p.set_defaults(func=_info)


def _models():
    from kvideo.convert import MODELS

    return MODELS


def _convert(args) -> int:
    from kvideo.convert import convert

    name = convert(args.source, args.output, model=args.model, config_path=args.config)
    print(f"wrote {args.output} ({name})")
    return 0


def _info(args) -> int:
    from kvideo.convert import info

    print(info(args.checkpoint).format())
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kvideo", description="Kandinsky Video text-to-video toolkit")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in SUBCOMMAND_MODULES:
        module = sys.modules[__name__] if name == __name__ or name == "kvideo.cli" else importlib.import_module(name)
        module.register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except (ValueError, FileNotFoundError) as error:
        print(f"kvideo {args.command}: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
