"""Unit tests for core.profiles: revenue amounts that always fit ``profiles.revenue``."""

from __future__ import annotations

from decimal import Decimal

import pytest

from core.profiles import REVENUE_MAX, add_revenue, clamp_revenue, purchase_amount, revenue_of


@pytest.mark.parametrize(("value", "amount"), [
    (49.9, Decimal("49.9000")), ("12.5", Decimal("12.5000")), (" 3 ", Decimal("3.0000")), (-5, Decimal("-5.0000")),
    (99999999999999, Decimal("99999999999999.0000")), ("99999999999999.9999", REVENUE_MAX),
    ("0.00005", Decimal("0.0001")), ("1e-999999999", Decimal("0.0000")),
])
def test_amounts_that_fit_are_counted_rounded_to_the_column(value, amount):
    got = purchase_amount({"revenue": value})
    assert got.amount == amount and got.warning is None


@pytest.mark.parametrize("value", [
    "99999999999999.99999", "-99999999999999.99995", 10 ** 14, pytest.param(10 ** 5000, id="10**5000"), 1e300, "1e999999999", "-1e999999999",
    "NaN", "sNaN", "Infinity", float("inf"), float("nan"), True, False, "12,50", "0x10", "", [1], {"v": 1},
])
def test_amounts_that_cannot_be_stored_are_left_out_with_a_warning(value):
    got = purchase_amount({"revenue": value})
    assert got.amount == 0
    # one of three fixed messages: the value itself is never quoted
    assert got.warning in {f"properties.revenue left out of the revenue counter: {why}"
                           for why in ("not a number", "not a finite number", "beyond the counter's range")}


def test_total_is_the_fallback_and_absent_amounts_count_zero():
    assert purchase_amount({"revenue": "x", "total": 5}).amount == Decimal("5.0000")
    assert purchase_amount({"revenue": "x", "total": 5}).warning is not None
    assert purchase_amount({}) == purchase_amount({"revenue": None})
    assert revenue_of({}) == 0


def test_sums_never_leave_the_column():
    assert add_revenue(Decimal(10), Decimal(5)) == Decimal(15)
    assert add_revenue(REVENUE_MAX, Decimal("0.0001")) is None
    assert add_revenue(-REVENUE_MAX, Decimal("-0.0001")) is None
    assert clamp_revenue(REVENUE_MAX * 2) == REVENUE_MAX and clamp_revenue(-REVENUE_MAX * 2) == -REVENUE_MAX
