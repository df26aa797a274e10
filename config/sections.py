"""How settings sections are declared: frozen dataclasses whose fields carry a default, a
description and constraints (annotated_types), validated by pydantic only when they are loaded.

Declaring them as plain dataclasses keeps importing the settings cheap: pydantic is imported by
`validate` alone, which a command that finds its settings in the snapshot never calls
(config/snapshot.py)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import MISSING, dataclass, field, fields, is_dataclass
from functools import cache
from typing import Any, TypeVar

T = TypeVar("T")
FORBID_EXTRA = {"extra": "forbid"}  # pydantic's config of a stdlib dataclass: unknown keys are errors


def section(cls: type[T]) -> type[T]:
    """A settings section: immutable (change one with dataclasses.replace), keyword-only, unknown keys refused."""
    made = dataclass(frozen=True, kw_only=True)(cls)
    made.__pydantic_config__ = FORBID_EXTRA
    return made


def setting(default: Any = MISSING, *, factory: Callable[[], Any] | Any = MISSING, doc: str) -> Any:
    """A field with its description (shown by `config show`)."""
    return field(default=default, default_factory=factory, metadata={"doc": doc})


def doc_of(cls: type, name: str) -> str:
    """The description of field `name` of section `cls`."""
    return next(f.metadata.get("doc", "") for f in fields(cls) if f.name == name)


def setting_names(cls: type) -> list[str]:
    """The fields a user sets (not those the loader fills in, like Settings.warnings)."""
    return [f.name for f in fields(cls) if f.init]


def is_section(value: Any) -> bool:
    return is_dataclass(value) and not isinstance(value, type)


class Check:
    """Annotated metadata: `func` checks (and may convert) a field's value after its type is
    validated, or before with `before=True`; its ValueError is reported at the field's key.
    Uses pydantic's documented hook for custom metadata, so declaring a check imports nothing."""

    def __init__(self, func: Callable[[Any], Any], before: bool = False) -> None:
        self.func, self.before = func, before

    def __get_pydantic_core_schema__(self, source: Any, handler: Callable[[Any], Any]) -> Any:
        from pydantic_core import core_schema

        make = core_schema.no_info_before_validator_function if self.before else core_schema.no_info_after_validator_function
        return make(self.func, handler(source))


@cache
def _adapter(cls: type) -> Any:
    from pydantic import TypeAdapter

    return TypeAdapter(cls)


def validate(cls: type[T], data: Any) -> T:
    """`data` (from YAML, the environment, flags) as a `cls`; raises pydantic's ValidationError."""
    return _adapter(cls).validate_python(data)
