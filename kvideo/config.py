"""Frozen dataclass configs: JSON round trip, validation helpers and a preset registry."""
from __future__ import annotations

import dataclasses
import functools
import json
import numbers
import types
import typing
from pathlib import Path
from typing import Any, ClassVar, TypeVar

C = TypeVar("C", bound="Config")


def _to_jsonable(value: Any) -> Any:
    if isinstance(value, tuple):
        return [_to_jsonable(v) for v in value]
    return value


def _freeze(value: Any) -> Any:
    """Lists become tuples so that configs stay hashable and immutable."""
    if isinstance(value, list):
        return tuple(_freeze(v) for v in value)
    return value


@dataclasses.dataclass(frozen=True)
class Config:
    """Base class of every kvideo config: frozen, validated, JSON-serialisable.

    Subclasses register named presets with `register_preset` and validate in `validate()`,
    which `__post_init__` calls after lists have been turned into tuples.
    """

    _presets: ClassVar[dict[str, dict[str, Any]]]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls._presets = {}

    def __post_init__(self) -> None:
        nested = _nested_config_fields(type(self))
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if field.name in nested and isinstance(value, dict):
                value = nested[field.name].from_dict(value)  # a nested config given as JSON
            object.__setattr__(self, field.name, _freeze(value))
        self.validate()

    def validate(self) -> None:
        """Raise ValueError naming the bad field; subclasses override."""

    # -- serialisation -------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {f.name: _to_jsonable(getattr(self, f.name)) for f in dataclasses.fields(self)}

    def to_json(self, **kwargs: Any) -> str:
        return json.dumps(self.to_dict(), **kwargs)

    @classmethod
    def from_dict(cls: type[C], data: dict[str, Any]) -> C:
        """Build from parsed JSON: unknown fields and values of the wrong type are a ValueError naming them."""
        if not isinstance(data, dict):
            raise ValueError(f"{cls.__name__}: expected a JSON object of its fields, got {described(data)}")
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(map(str, set(data) - names))
        if unknown:
            raise ValueError(
                f"{cls.__name__}: unknown field(s) {unknown}; valid fields are {sorted(names)}"
            )
        check_types(cls, data)
        return cls(**data)

    @classmethod
    def from_json(cls: type[C], text: str) -> C:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as error:
            raise ValueError(f"{cls.__name__}: not JSON ({error})") from None
        return cls.from_dict(data)

    @classmethod
    def from_file(cls: type[C], path: str | Path) -> C:
        """Read a JSON config file; any problem is one ValueError naming the file."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"{cls.__name__}: config file {str(path)!r} does not exist")
        try:
            data = json.loads(path.read_bytes().decode())
        except UnicodeDecodeError as error:
            raise ValueError(f"config file {str(path)!r} is not UTF-8 text ({error.reason} at byte "
                             f"{error.start})") from None
        except json.JSONDecodeError as error:
            raise ValueError(f"config file {str(path)!r} is not JSON ({error})") from None
        try:
            return cls.from_dict(data)
        except ValueError as error:
            raise ValueError(f"config file {str(path)!r}: {error}") from None

    def replace(self: C, **changes: Any) -> C:
        return dataclasses.replace(self, **changes)

    # -- presets ---------------------------------------------------------------------------
    @classmethod
    def register_preset(cls, name: str, **values: Any) -> None:
        cls._presets[name] = values

    @classmethod
    def presets(cls) -> list[str]:
        return sorted(cls._presets)

    @classmethod
    def preset(cls: type[C], name: str, **overrides: Any) -> C:
        if name not in cls._presets:
            raise ValueError(
                f"{cls.__name__}: unknown preset {name!r}; available presets: {cls.presets()}"
            )
        return cls(**{**cls._presets[name], **overrides})


@functools.lru_cache(maxsize=None)
def _nested_config_fields(cls: type) -> dict[str, type]:
    """Fields of `cls` whose declared type is itself a Config subclass."""
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)
            if isinstance(hints.get(f.name), type) and issubclass(hints[f.name], Config)}


@functools.lru_cache(maxsize=None)
def _field_types(cls: type) -> dict[str, Any]:
    return {f.name: typing.get_type_hints(cls)[f.name] for f in dataclasses.fields(cls)}


def check_types(cls: type[Config], data: dict[str, Any]) -> None:
    """Each value in `data` has its field's declared type (a whole number for an int field, a list for a tuple,
    ...), else a ValueError showing the field, the value and the type expected."""
    hints = _field_types(cls)
    for name, value in data.items():
        if not has_type(value, hints[name]):
            raise ValueError(f"{cls.__name__}.{name}={value!r} is {described(value)}; "
                             f"expected {expected_type(hints[name])}")


def has_type(value: Any, annotation: Any) -> bool:
    """Whether a JSON value fits a field annotation: bool, int, float, str, X | None, tuple[...] or a Config
    (given as a mapping); other annotations are not checked."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        return any(has_type(value, arg) for arg in args)
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            return False
        items = args[:1] * len(value) if len(args) == 2 and args[1] is Ellipsis else args
        return len(items) == len(value) and all(has_type(v, item) for v, item in zip(value, items))
    if annotation in (int, float):
        kind = numbers.Integral if annotation is int else numbers.Real
        return isinstance(value, kind) and not isinstance(value, bool)
    if isinstance(annotation, type) and issubclass(annotation, Config):
        return isinstance(value, (dict, annotation))
    return isinstance(value, annotation) if isinstance(annotation, type) else True


def described(value: Any) -> str:
    """'a string', 'a whole number', 'empty (null)', ...: what a JSON value is, in words."""
    names = {str: "a string", bool: "a boolean", int: "a whole number", float: "a number", list: "a list",
             tuple: "a list", dict: "a mapping", type(None): "empty (null)"}
    return names.get(type(value), f"a {type(value).__name__}")


def expected_type(annotation: Any) -> str:
    """The words for what a field of `annotation` takes."""
    words = {bool: "true or false", int: "a whole number", float: "a number", str: "a string",
             type(None): "null"}
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(expected_type(arg) for arg in args)
    if origin is tuple:
        plural = {bool: "booleans", int: "whole numbers", float: "numbers", str: "strings"}
        if len(args) == 2 and args[1] is Ellipsis:
            return f"a list of {plural.get(args[0], 'values')}"
        if len(set(args)) == 1 and args[0] in plural:
            return f"a list of {len(args)} {plural[args[0]]}"
        return f"a list of {len(args)} values ({', '.join(expected_type(arg) for arg in args)})"
    if isinstance(annotation, type) and issubclass(annotation, Config):
        return "a mapping of its fields"
    return words.get(annotation, str(annotation))


MAX_SIZE = 1 << 20  # a bound on layer widths and counts: far past any real model, short of overflowing tensor sizes


def check_sizes(config: Config, names: tuple[str, ...]) -> None:
    """Each named field (a whole number, a list of them, or None) is within 1..MAX_SIZE, else a ValueError naming
    it: a zero or negative width otherwise fails deep inside torch (modulo by zero, empty layers)."""
    for name in names:
        value = getattr(config, name)
        items = value if isinstance(value, tuple) else (value,)
        check(all(item is None or 1 <= item <= MAX_SIZE for item in items),
              f"{type(config).__name__}.{name}={value} must be {'sizes' if isinstance(value, tuple) else 'a size'} "
              f"from 1 to {MAX_SIZE}")


def check(condition: bool, message: str) -> None:
    """Config validation helper: raise ValueError(message) unless condition holds."""
    if not condition:
        raise ValueError(message)
