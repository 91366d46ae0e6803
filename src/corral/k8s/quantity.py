"""Kubernetes resource quantities (``500m``, ``16Gi``, ``110``): parse, add, write back canonically.

Node stats travel as quantities: the cluster agent sums its pods' requests into them and the server
adds nodes' capacities into a cluster's. Values are exact fractions; the written form follows
apimachinery's canonical one (binary suffixes for byte counts that divide evenly, otherwise the
largest decimal suffix that keeps an integer mantissa, rounded up to nano units).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from fractions import Fraction
from typing import Final, Literal

from corral.errors import CorralError

__all__ = ["Quantity", "QuantityError", "add_lists", "max_lists", "parse_quantity"]

Format = Literal["DecimalSI", "BinarySI"]

_BINARY: Final = {"Ki": 1, "Mi": 2, "Gi": 3, "Ti": 4, "Pi": 5, "Ei": 6}
_DECIMAL: Final = {"n": -9, "u": -6, "m": -3, "": 0, "k": 3, "M": 6, "G": 9, "T": 12, "P": 15, "E": 18}
_PATTERN: Final = re.compile(r"^([+-]?)(\d+(?:\.\d*)?|\.\d+)(Ki|Mi|Gi|Ti|Pi|Ei|[numkMGTPE]|[eE][+-]?\d+)?$")


class QuantityError(CorralError):
    """A string that is not a Kubernetes quantity."""


@dataclass(frozen=True, slots=True)
class Quantity:
    """An exact amount and the format it is written back in."""

    value: Fraction
    format: Format = "DecimalSI"

    def __add__(self, other: Quantity) -> Quantity:
        # As apimachinery's Add: a zero takes the other operand's format.
        fmt = other.format if self.value == 0 else self.format
        return Quantity(self.value + other.value, fmt)

    def __str__(self) -> str:
        return _canonical(self.value, self.format)


def parse_quantity(text: str) -> Quantity:
    """Parse ``text``; raises `QuantityError` naming it when it is not a quantity."""
    match = _PATTERN.match(text.strip()) if isinstance(text, str) else None
    if match is None or len(text) > 64:
        raise QuantityError(f"not a quantity: {str(text)[:64]!r}")
    sign, number, suffix = match.group(1), match.group(2), match.group(3) or ""
    value = Fraction(number)
    fmt: Format = "DecimalSI"
    if suffix in _BINARY:
        value *= 1024 ** _BINARY[suffix]
        fmt = "BinarySI"
    elif len(suffix) > 1 and suffix[0] in ("e", "E"):
        value *= Fraction(10) ** int(suffix[1:])
    else:
        value *= Fraction(10) ** _DECIMAL[suffix]
    return Quantity(-value if sign == "-" else value, fmt)


def _canonical(value: Fraction, fmt: Format) -> str:
    nanos = math.ceil(value * 10**9)
    if nanos == 0:
        return "0"
    sign = "-" if nanos < 0 else ""
    nanos = abs(nanos)
    if fmt == "BinarySI" and nanos % 10**9 == 0 and nanos >= 1024 * 10**9:
        whole = nanos // 10**9
        for suffix, power in reversed(_BINARY.items()):
            if whole % 1024**power == 0:
                return f"{sign}{whole // 1024**power}{suffix}"
        return f"{sign}{whole}"
    for suffix, exponent in sorted(_DECIMAL.items(), key=lambda item: -item[1]):
        unit = 10 ** (exponent + 9)
        if nanos % unit == 0:
            return f"{sign}{nanos // unit}{suffix}"
    raise AssertionError("unreachable: every nano count divides by one")


def add_lists(lists: Iterable[Mapping[str, str]]) -> dict[str, Quantity]:
    """Sum resource lists (``{"cpu": "500m", ...}``) name by name."""
    total: dict[str, Quantity] = {}
    for resources in lists:
        for name, text in resources.items():
            total[name] = total.get(name, Quantity(Fraction(0))) + parse_quantity(text)
    return total


def max_lists(into: dict[str, Quantity], resources: Mapping[str, str]) -> None:
    """Raise each of ``into``'s entries to ``resources``' where that is larger (init containers)."""
    for name, text in resources.items():
        quantity = parse_quantity(text)
        if name not in into or quantity.value > into[name].value:
            into[name] = quantity
