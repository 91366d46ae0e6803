"""Typed, located reading of loaded YAML/JSON data.

Every value read through a `Field` knows where it came from, so a bad value ends in one
message that names the file, the path inside it, what was expected and what was found:
``smoke.yaml: clusters[1].nodes: must not be empty``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator, Mapping
from typing import Any, NoReturn

from corral.errors import ConfigError

_MISSING: Any = object()
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


def _describe(value: object) -> str:
    """A short description of a found value for error messages (never more than ~60 chars)."""
    if value is None:
        return "nothing"
    text = repr(value)
    if len(text) > 60:
        text = text[:57] + "..."
    return f"{type(value).__name__} {text}"


class Field:
    """A value at a path inside a document, with checked accessors."""

    __slots__ = ("path", "source", "value")

    def __init__(self, value: Any, *, source: str, path: str = "") -> None:
        self.value = value
        self.source = source
        self.path = path

    # -- errors ---------------------------------------------------------------------------------

    @property
    def where(self) -> str:
        return f"{self.source}: {self.path}" if self.path else self.source

    def fail(self, message: str) -> NoReturn:
        raise ConfigError(f"{self.where}: {message}")

    # -- structure ------------------------------------------------------------------------------

    def _child_path(self, key: str) -> str:
        return f"{self.path}.{key}" if self.path else key

    def mapping(self) -> Mapping[str, Any]:
        if not isinstance(self.value, Mapping):
            self.fail(f"must be a mapping, got {_describe(self.value)}")
        return self.value

    def has(self, key: str) -> bool:
        return key in self.mapping()

    def get(self, key: str, default: Any = _MISSING) -> Field:
        """The field `key` of this mapping; missing is an error unless a default is given."""
        data = self.mapping()
        if key in data:
            return Field(data[key], source=self.source, path=self._child_path(key))
        if default is _MISSING:
            self.fail(f"{key}: is required")
        return Field(default, source=self.source, path=self._child_path(key))

    def only(self, *allowed: str) -> None:
        """Reject keys other than `allowed`, so a typo does not pass silently."""
        unknown = sorted(set(self.mapping()) - set(allowed))
        if unknown:
            names = ", ".join(sorted(allowed))
            Field(None, source=self.source, path=self._child_path(str(unknown[0]))).fail(
                f"unknown field (allowed: {names})"
            )

    def items(self) -> Iterator[tuple[str, Field]]:
        for key in self.mapping():
            if not isinstance(key, str):
                self.fail(f"keys must be strings, got {_describe(key)}")
            yield key, self.get(key)

    def sequence(self, *, nonempty: bool = False) -> list[Field]:
        if self.value is None and not nonempty:
            return []
        if not isinstance(self.value, list):
            self.fail(f"must be a list, got {_describe(self.value)}")
        if nonempty and not self.value:
            self.fail("must not be empty")
        return [
            Field(item, source=self.source, path=f"{self.path}[{index}]")
            for index, item in enumerate(self.value)
        ]

    # -- scalars --------------------------------------------------------------------------------

    def string(self, *, choices: tuple[str, ...] = (), dns_label: bool = False) -> str:
        if not isinstance(self.value, str) or not self.value:
            self.fail(f"must be a non-empty string, got {_describe(self.value)}")
        if choices and self.value not in choices:
            self.fail(f"must be one of {', '.join(choices)}, got {self.value!r}")
        if dns_label and (len(self.value) > 63 or not _DNS_LABEL.match(self.value)):
            self.fail(f"must be a DNS label (lower-case letters, digits, '-'), got {self.value!r}")
        return self.value

    def boolean(self) -> bool:
        if not isinstance(self.value, bool):
            self.fail(f"must be true or false, got {_describe(self.value)}")
        return self.value

    def integer(self, *, min: int | None = None, max: int | None = None) -> int:
        if isinstance(self.value, bool) or not isinstance(self.value, int):
            self.fail(f"must be an integer, got {_describe(self.value)}")
        if min is not None and self.value < min:
            self.fail(f"must be >= {min}, got {self.value}")
        if max is not None and self.value > max:
            self.fail(f"must be <= {max}, got {self.value}")
        return self.value

    def number(
        self,
        *,
        gt: float | None = None,
        ge: float | None = None,
        le: float | None = None,
    ) -> float:
        if isinstance(self.value, bool) or not isinstance(self.value, int | float):
            self.fail(f"must be a number, got {_describe(self.value)}")
        number = float(self.value)
        if not math.isfinite(number):
            self.fail(f"must be a finite number, got {self.value}")
        if gt is not None and not number > gt:
            self.fail(f"must be > {gt:g}, got {self.value}")
        if ge is not None and not number >= ge:
            self.fail(f"must be >= {ge:g}, got {self.value}")
        if le is not None and not number <= le:
            self.fail(f"must be <= {le:g}, got {self.value}")
        return number

    def strings(self, *, nonempty: bool = False, choices: tuple[str, ...] = ()) -> tuple[str, ...]:
        return tuple(item.string(choices=choices) for item in self.sequence(nonempty=nonempty))


def unique(fields: list[Field], key: str, what: str) -> None:
    """Fail on the second item whose `key` repeats an earlier one."""
    seen: dict[str, str] = {}
    for field in fields:
        value = field.get(key).string()
        if value in seen:
            field.get(key).fail(f"duplicate {what} {value!r} (first at {seen[value]})")
        seen[value] = field.path
