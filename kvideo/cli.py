"""The `kvideo` command line: parses arguments and calls the library (see each subcommand module)."""
from __future__ import annotations

import argparse
import importlib
import sys

# Each module provides `register(subparsers)`, adding its subcommand(s) with `set_defaults(func=...)`.
SUBCOMMAND_MODULES = ()


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kvideo", description="Kandinsky Video text-to-video toolkit")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in SUBCOMMAND_MODULES:
        importlib.import_module(name).register(subparsers)
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
