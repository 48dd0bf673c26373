"""Frozen dataclass configs: JSON round trip, validation helpers and a preset registry."""
from __future__ import annotations

import dataclasses
import functools
import json
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
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ValueError(
                f"{cls.__name__}: unknown field(s) {unknown}; valid fields are {sorted(names)}"
            )
        return cls(**data)

    @classmethod
    def from_json(cls: type[C], text: str) -> C:
        return cls.from_dict(json.loads(text))

    @classmethod
    def from_file(cls: type[C], path: str | Path) -> C:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"{cls.__name__}: config file {str(path)!r} does not exist")
        return cls.from_json(path.read_text())

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


def check(condition: bool, message: str) -> None:
    """Config validation helper: raise ValueError(message) unless condition holds."""
    if not condition:
        raise ValueError(message)
