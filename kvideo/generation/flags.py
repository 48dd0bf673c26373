"""Command-line flags from `GenerationOptions`' field metadata: one builder for every command that generates.

A flag's default is "not given" (absent from the namespace), so the model card's or the release's default
applies; `given_options` returns only what the user typed.
"""
from __future__ import annotations

import argparse
from typing import Any, Iterable

from kvideo.flags import add_flag
from kvideo.generation.options import (
    FIELDS, KEYFRAMES, GenerationOptions, Option, check_memory, check_release, option_of, resolve_options,
)

PREFIX = "option:"  # the namespace attributes the generation flags fill


def generation_flags(exclude: Iterable[str] = ()) -> dict[str, Option]:
    """field -> its `Option`, for every field that has a flag (less `exclude`)."""
    skipped = set(exclude)
    return {name: option_of(name) for name in FIELDS if option_of(name).flag and name not in skipped}


def add_generation_flags(parser: argparse.ArgumentParser, exclude: Iterable[str] = (),
                         title: str = "generation options (default: the model card's, else the release's)",
                         aliases: bool = False) -> None:
    """One flag per options field that declares one, in a group of its own, built by kvideo's one flag builder
    (`aliases`: each --dashed-flag also answers to --dashed_flag, as `kvideo eval`'s flags do)."""
    group = parser.add_argument_group(title)
    for name, meta in generation_flags(exclude).items():
        common = dict(dest=PREFIX + name, default=argparse.SUPPRESS, help=meta.help, alias=aliases)
        if meta.parse is None and meta.choices is None:  # a switch (bool field)
            add_flag(group, meta.flag, action="store_const", const=True, **common)
        else:
            metavar = meta.metavar or (None if meta.choices else meta.flag[2:].upper().replace("-", "_"))
            add_flag(group, meta.flag, type=meta.parse, choices=meta.choices, metavar=metavar, **common)


def given_options(args: argparse.Namespace) -> dict[str, Any]:
    """The options fields the user gave on the command line (a flag that sets several fields, such as --size,
    gives a dict of them)."""
    given: dict[str, Any] = {}
    for key, value in vars(args).items():
        if key.startswith(PREFIX):
            given.update(value if isinstance(value, dict) else {key[len(PREFIX):]: value})
    return given


def options_for(release: str, card: dict[str, Any], given: dict[str, Any]) -> GenerationOptions:
    """The options a command line gives, checked before any model loads: each flag works for `release` or is
    refused naming the flag, the card's defaults under them, and a clip that fits in memory."""
    check_release(release, given, flag_names())
    opts = resolve_options(release, card.get("generation", {}), **given)
    check_memory(opts, KEYFRAMES[release])
    return opts


def flag_names() -> dict[str, str]:
    """field -> the flag that sets it, for messages (`height` is set by --size)."""
    names = {name: meta.flag for name, meta in generation_flags().items()}
    return {**names, "height": names["width"]}
