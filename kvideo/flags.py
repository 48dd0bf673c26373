"""Command-line flags in one voice, built from dataclass field metadata: the builder every kvideo command uses.

A flag's help ends with its default, "(default: X)", or "(required)"; a --dashed-flag also answers to
--dashed_flag (hidden), the spelling of config files and earlier versions. Config fields declare their help once,
next to their default, with `setting(default, help)`; `add_config_flags` makes one flag per field of them.
"""
from __future__ import annotations

import argparse
import dataclasses
import typing
from typing import Any, Callable, Iterator

from kvideo.argtypes import parse_bool, parse_float, parse_int

CONFIG_PREFIX = "cfg:"  # the namespace attributes the config flags fill (`cfg:clip.height`)
PARSERS = {bool: parse_bool, float: parse_float, int: parse_int}
METAVARS = {parse_bool: "BOOL", parse_float: "X", parse_int: "N", str: "TEXT"}  # others: comma-separated tuples
_ARGPARSE_DEFAULT = object()  # "show the default argparse holds"


@dataclasses.dataclass(frozen=True)
class Flag:
    """How a config field meets the command line: its one-line help, the name of its value in --help (PATH) and
    its parser where its type's own do not fit, and the stages that read it (empty: every stage; the others parse
    it but leave it out of --help). A hidden field parses but is never in --help."""

    help: str
    metavar: str | None = None
    parse: Callable[[str], Any] | None = None
    stages: tuple[str, ...] = ()
    hidden: bool = False


def setting(default: Any, help: str, **flag: Any) -> Any:
    """A config field with its `Flag` metadata, declared next to its default."""
    return dataclasses.field(default=default, metadata={"flag": Flag(help, **flag)})


# -- one flag in kvideo's voice -------------------------------------------------------------------
def shown(value: Any, switch: bool = False) -> str:
    """A default as a user types it: true / false, comma-separated tuples, none for nothing, off for a switch."""
    if switch and not value:
        return "off"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, tuple):
        return ",".join(str(v) for v in value)
    return "none" if value is None or value == "" else str(value)


def voiced(help: str, default: Any, *, required: bool = False, switch: bool = False) -> str:
    """A flag's help ending with "(required)" or its default; a help that states its default already (or whose
    default is "not given", argparse.SUPPRESS) stays as written."""
    if required:
        return help if "required" in help else f"{help} (required)"
    if "default" in help or default is argparse.SUPPRESS:
        return help
    return f"{help} (default: {shown(default, switch)})"


def add_flag(parser: Any, flag: str, *, help: str, alias: bool = True, hidden: bool = False,
             show: Any = _ARGPARSE_DEFAULT, **argument: Any) -> argparse.Action:
    """`parser.add_argument(flag, ...)` in kvideo's voice (`voiced` help; `show`: the default to state when it is
    not argparse's, e.g. a preset's); `hidden` flags parse but stay out of --help; with `alias` a --dashed-flag
    also answers to --dashed_flag (hidden)."""
    switch = argument.get("action") in ("store_true", "store_const")
    default = argument.get("default") if show is _ARGPARSE_DEFAULT else show
    text = argparse.SUPPRESS if hidden else voiced(help, default, required=argument.get("required", False),
                                                   switch=switch)
    action = parser.add_argument(flag, help=text, **argument)
    underscored = "--" + flag[2:].replace("-", "_")
    if alias and flag.startswith("--") and underscored != flag:
        extra = {k: v for k, v in argument.items() if k not in ("required", "default", "dest")}
        parser.add_argument(underscored, dest=action.dest, default=argparse.SUPPRESS, help=argparse.SUPPRESS,
                            **extra)
    return action


# -- one flag per config field ------------------------------------------------------------------------
def parser_for(annotation: Any) -> Callable[[str], Any]:
    """The parser of a field's type: strict booleans, finite floats, integers, comma-separated tuples, text."""
    if typing.get_origin(annotation) is tuple:
        item = PARSERS.get(typing.get_args(annotation)[0], typing.get_args(annotation)[0])

        def parse_tuple(text: str) -> tuple:
            return tuple(item(v) for v in text.split(","))
        return parse_tuple
    return PARSERS.get(annotation, annotation)


def config_flags(cls: type, prefix: str = "", stages: tuple[str, ...] = ()) -> Iterator[tuple[str, Flag, Any]]:
    """(dotted name, `Flag`, type) of every field of a config dataclass, nested configs' fields included
    (`clip.height`); a nested config's stages pass to its fields."""
    hints = typing.get_type_hints(cls)
    for field in dataclasses.fields(cls):
        meta, annotation = field.metadata.get("flag"), hints[field.name]
        if dataclasses.is_dataclass(annotation):
            yield from config_flags(annotation, f"{prefix}{field.name}.", meta.stages if meta else stages)
            continue
        if meta is None:
            raise TypeError(f"{cls.__name__}.{field.name} declares no help: declare it with setting(default, help)")
        yield prefix + field.name, dataclasses.replace(meta, stages=meta.stages or stages), annotation


def flag_name(dotted: str) -> str:
    """`clip.reference_fps` -> `--clip.reference-fps` (the spelling shown; the underscore one works too)."""
    return "--" + dotted.replace("_", "-")


def add_config_flags(group: Any, config: Any, stage: str | None = None, skip: tuple[str, ...] = ()) -> None:
    """One flag per field of a config dataclass (`--clip.height 256`), each with its help and the value it has
    in `config` (the defaults: a preset's, or the class's); with `stage`, the fields other stages read stay out
    of --help (they still parse)."""
    for name, meta, annotation in config_flags(type(config)):
        if name in skip:
            continue
        parse = meta.parse or parser_for(annotation)
        hidden = meta.hidden or bool(stage and meta.stages and stage not in meta.stages)
        add_flag(group, flag_name(name), dest=CONFIG_PREFIX + name, type=parse, default=None,
                 metavar=meta.metavar or METAVARS.get(parse, "X,X"), help=meta.help, hidden=hidden,
                 show=_lookup(config, name))


def _lookup(config: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        config = getattr(config, part)
    return config


def given_settings(args: argparse.Namespace) -> dict[str, Any]:
    """The config fields given on the command line, by dotted name (`clip.height`)."""
    return {key[len(CONFIG_PREFIX):]: value for key, value in vars(args).items()
            if key.startswith(CONFIG_PREFIX) and value is not None}
