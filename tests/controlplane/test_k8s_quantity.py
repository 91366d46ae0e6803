"""Kubernetes quantities: parsing, sums and apimachinery's canonical form."""

from __future__ import annotations

from fractions import Fraction

import pytest
from hypothesis import given
from hypothesis import strategies as st

from corral.k8s.quantity import Quantity, QuantityError, add_lists, max_lists, parse_quantity


@pytest.mark.parametrize(
    ("text", "value", "canonical"),
    [
        ("500m", Fraction(1, 2), "500m"),
        ("0.5", Fraction(1, 2), "500m"),
        ("2", Fraction(2), "2"),
        ("16Gi", Fraction(16 * 1024**3), "16Gi"),
        ("1024Ki", Fraction(1024**2), "1Mi"),
        ("1.5Gi", Fraction(3 * 1024**3, 2), "1536Mi"),
        ("1e3", Fraction(1000), "1k"),
        ("100M", Fraction(10**8), "100M"),
        ("-250m", Fraction(-1, 4), "-250m"),
        ("1n", Fraction(1, 10**9), "1n"),
        ("0", Fraction(0), "0"),
        ("512", Fraction(512), "512"),
    ],
)
def test_parse_and_write_back(text: str, value: Fraction, canonical: str) -> None:
    quantity = parse_quantity(text)
    assert quantity.value == value
    assert str(quantity) == canonical


@pytest.mark.parametrize("text", ["", "abc", "1.2.3", "5Xi", "1e", "--1", "m", "1 Gi", "9" * 80])
def test_not_a_quantity(text: str) -> None:
    with pytest.raises(QuantityError, match="not a quantity"):
        parse_quantity(text)


def test_sums_keep_the_first_operands_format() -> None:
    assert str(parse_quantity("100m") + parse_quantity("250m")) == "350m"
    assert str(parse_quantity("1Gi") + parse_quantity("512Mi")) == "1536Mi"
    # A byte count that no longer divides by 1024 is written in full, as apimachinery does.
    assert str(parse_quantity("1Gi") + parse_quantity("1")) == "1073741825"
    assert str(Quantity(Fraction(0)) + parse_quantity("2Gi")) == "2Gi"


def test_lists_add_by_name_and_max_keeps_the_larger() -> None:
    total = add_lists([{"cpu": "100m", "memory": "64Mi"}, {"cpu": "1", "pods": "2"}])
    assert {k: str(v) for k, v in total.items()} == {"cpu": "1100m", "memory": "64Mi", "pods": "2"}
    max_lists(total, {"cpu": "2", "memory": "1Mi"})
    assert {k: str(v) for k, v in total.items()} == {"cpu": "2", "memory": "64Mi", "pods": "2"}


@given(st.integers(min_value=-(10**15), max_value=10**15), st.sampled_from(["m", "", "k", "Ki", "Mi", "n"]))
def test_canonical_form_parses_back_to_the_same_value(number: int, suffix: str) -> None:
    quantity = parse_quantity(f"{number}{suffix}")
    again = parse_quantity(str(quantity))
    assert again.value == quantity.value
