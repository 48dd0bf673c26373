"""Prompts files (one prompt a line): read strictly, every problem named by file and line number."""
from __future__ import annotations

import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

from kvideo.errors import BadDataError

MAX_LINE_CHARS = 4000  # far beyond any text encoder's window: a longer line is a wrong file, not a prompt


@dataclass(frozen=True)
class Prompt:
    """One prompt and where it came from (`line` 0 for a prompt given on the command line)."""

    text: str
    source: str = ""
    line: int = 0

    @property
    def where(self) -> str:
        return f"{self.source}:{self.line}" if self.line else "the prompt"


def read_prompts_file(path: str | Path, report: Callable[[str], None] = print) -> list[Prompt]:
    """The non-blank lines of a UTF-8 text file; blank lines are skipped (reported once). Invalid UTF-8,
    control characters or a line over MAX_LINE_CHARS are errors naming the file and the line."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"prompts file {str(path)!r} does not exist (or is not a file)")
    prompts, blank = [], 0
    for number, raw in enumerate(path.read_bytes().splitlines(), start=1):
        text = _decode(raw, path, number).strip()
        if not text:
            blank += 1
            continue
        _check_line(text, path, number)
        prompts.append(Prompt(text, str(path), number))
    if not prompts:
        raise BadDataError(f"prompts file {str(path)!r} holds no prompt (one prompt a line)")
    if blank:
        report(f"{str(path)}: skipped {blank} blank line{'s' if blank > 1 else ''}")
    return prompts


def _decode(raw: bytes, path: Path, number: int) -> str:
    try:
        return raw.decode("utf-8-sig" if number == 1 else "utf-8")
    except UnicodeDecodeError as error:
        raise BadDataError(f"{str(path)}:{number}: not valid UTF-8 (byte 0x{raw[error.start]:02x} at column "
                           f"{error.start + 1}); save the prompts file as UTF-8") from None


def _check_line(text: str, path: Path, number: int) -> None:
    if len(text) > MAX_LINE_CHARS:
        raise BadDataError(f"{str(path)}:{number}: a line of {len(text)} characters (over {MAX_LINE_CHARS}); "
                           "is this a prompts file (one prompt a line)?")
    control = next((c for c in text if unicodedata.category(c) == "Cc" and c != "\t"), None)
    if control is not None:
        raise BadDataError(f"{str(path)}:{number}: control character {control!r} in the prompt; "
                           "is this a text file (one prompt a line)?")


def report_truncated(prompts: Sequence[Prompt], count_tokens: Callable[[str], int], limit: int,
                     report: Callable[[str], None] = print) -> None:
    """Say which prompts are longer than the text encoder reads (they are cut to `limit` tokens)."""
    for prompt in prompts:
        tokens = count_tokens(prompt.text)
        if tokens > limit:
            report(f"{prompt.where}: the prompt is {tokens} tokens, more than the {limit} the text encoder "
                   "reads; it will be truncated")
