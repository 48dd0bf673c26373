"""kvideo's own exceptions, and the one way the command line reports them (one line, exit status 2)."""
from __future__ import annotations

import argparse
import os
import sys
import traceback
from typing import Callable

from kvideo.threads import set_threads

EXIT_ERROR = 2  # a user-facing error (bad input, file, checkpoint), as argparse uses
EXIT_INTERRUPTED = 130  # Ctrl-C, as shells report SIGINT
DEBUG_FLAG = "--debug"
DEBUG_ENV = "KVIDEO_DEBUG"


class KVideoError(Exception):
    """Base of the errors kvideo raises on purpose: the message says what is wrong and how to fix it."""


class BadInputError(KVideoError, ValueError):
    """An argument, option, prompt or config value that cannot be used."""


class CheckpointError(KVideoError, ValueError):
    """A checkpoint that cannot be read, or does not fit the model it is loaded into."""


class UnreadableCheckpointError(CheckpointError):
    """A file that is not a checkpoint kvideo can read (not safetensors / a weights-only pickle, or damaged)."""


class BadDataError(KVideoError, ValueError):
    """Training or evaluation data that cannot be used (a prompts file, a cache, videos)."""


class OutputError(KVideoError, OSError):
    """An output location that cannot be written (read-only, a folder where a file goes, ...)."""


class SamplingDivergedError(KVideoError, RuntimeError):
    """Sampling produced non-finite latents; nothing was decoded or written."""


class TrainingDivergedError(KVideoError, RuntimeError):
    """Training produced a non-finite loss or weights; the run stopped and nothing non-finite was saved."""


class MissingDependencyError(KVideoError, RuntimeError):
    """A feature that was asked for needs a package or tool that is not installed; the message names it."""


# The exceptions a command reports as one line: kvideo's own and the expected bad-input / file errors.
EXPECTED = (KVideoError, ValueError, OSError)


class OneLineParser(argparse.ArgumentParser):
    """A parser whose usage errors are one line, `PROG: error: ...`, exit status 2 (the usage only with --help);
    the parsers add_subparsers makes are of the same class."""

    def error(self, message: str):
        self.exit(EXIT_ERROR, f"{self.prog}: error: {message}\n")


def debug_requested(argv: list[str]) -> bool:
    """`--debug` anywhere before a `--`, or KVIDEO_DEBUG=1 in the environment."""
    head = argv[: argv.index("--")] if "--" in argv else argv
    return DEBUG_FLAG in head or os.environ.get(DEBUG_ENV, "") not in ("", "0")


def without_debug_flag(argv: list[str]) -> list[str]:
    """`argv` with the `--debug` flags (before any `--`) taken out."""
    cut = argv.index("--") if "--" in argv else len(argv)
    return [a for a in argv[:cut] if a != DEBUG_FLAG] + argv[cut:]


def is_expected(error: BaseException) -> bool:
    """An error the user can fix from its message (no traceback needed); ImportErrors only with a pip hint."""
    if isinstance(error, ImportError):
        return "pip install" in str(error)
    return isinstance(error, EXPECTED)


def one_line(error: BaseException) -> str:
    """The message of `error` as one line (multi-line messages joined with '; ')."""
    text = str(error) if str(error) else type(error).__name__
    if isinstance(error, OSError) and error.filename is not None and not isinstance(error, KVideoError):
        text = f"{error.filename}: {error.strerror or text}"
    parts = [part.strip() for part in text.splitlines() if part.strip()]
    return "; ".join(parts).replace(":;", ":")


def run_command(prog: str, func: Callable[[], int], *, debug: bool) -> int:
    """Call `func`; report expected errors as `PROG: error: ...` (exit 2), re-raise the rest (bugs)."""
    try:
        return int(func() or 0)
    except KeyboardInterrupt:
        if debug:
            traceback.print_exc()
        print(f"{prog}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as error:  # noqa: BLE001 (sorted into expected / bug below)
        if debug or not is_expected(error):
            raise
        print(f"{prog}: error: {one_line(error)}", file=sys.stderr)
        return EXIT_ERROR


def dispatch(parser: argparse.ArgumentParser, argv: list[str]) -> int:
    """Parse `argv` and run the command; errors the user can fix are one line `kvideo <command>: error: ...`
    with exit status 2, other exceptions (bugs) keep their traceback; `--debug` shows it for all."""
    debug = debug_requested(argv)
    args = parser.parse_args(without_debug_flag(argv))
    if not getattr(args, "func", None):
        parser.print_help()
        return EXIT_ERROR
    return run_command(command_name(args), lambda: _run(args), debug=debug)


def _run(args: argparse.Namespace) -> int:
    set_threads(getattr(args, "threads", None))
    return args.func(args)


def command_name(args: argparse.Namespace) -> str:
    """`kvideo generate`, `kvideo train keyframe`, `kvideo eval fvd`: the words that name the command."""
    words = [args.command] + [getattr(args, f"{args.command}_command", None) or ""]
    return " ".join(["kvideo", *filter(None, words)])
