"""Profile upkeep rules: lifecycle, purchases and revenue, trait merging. Pure."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Any

LIFECYCLE_RANK = {"anonymous": 0, "known": 1, "customer": 2}
_PURCHASE_NAMES = frozenset({"purchase", "ordercompleted", "checkoutcompleted", "orderplaced"})


def is_purchase(event_name: str) -> bool:
    """``Purchase``, ``Order Completed``, ``order_completed``... (case, spaces, _ and - ignored)."""
    key = event_name.lower().replace(" ", "").replace("_", "").replace("-", "")
    return key in _PURCHASE_NAMES


# profiles.revenue is numeric(18, 4): at most 14 digits before the point, 4 after.
REVENUE_QUANTUM = Decimal("0.0001")
REVENUE_MAX = Decimal("99999999999999.9999")
_REVENUE_KEYS = ("revenue", "total")


@dataclass(frozen=True)
class PurchaseAmount:
    """What a purchase adds to the revenue counter, and why part of it was left out.

    ``warning`` never contains the submitted value (CONTRACT 6)."""

    amount: Decimal
    warning: str | None = None


def _parse_amount(value: Any) -> Decimal | str:
    """The amount a JSON value stands for, rounded to the counter's scale, or the reason
    it cannot be counted."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        return "not a number"
    try:
        # ints directly: str() of a very long int raises (Python's digit limit)
        amount = Decimal(value) if isinstance(value, int) else Decimal(str(value).strip())
    except (InvalidOperation, ValueError):
        return "not a number"
    if not amount.is_finite():
        return "not a finite number"
    # Range first, by exponent alone: arithmetic on a huge exponent would itself overflow.
    if amount and amount.adjusted() >= 14:
        return "beyond the counter's range"
    amount = amount.quantize(REVENUE_QUANTUM, rounding=ROUND_HALF_UP)  # as numeric(18, 4) rounds
    if amount.copy_abs() > REVENUE_MAX:
        return "beyond the counter's range"
    return amount


def purchase_amount(properties: dict[str, Any]) -> PurchaseAmount:
    """Revenue of a purchase: ``revenue``, else ``total``; 0 when both are absent.

    A value that cannot be stored or summed (not a number, NaN or infinite, beyond the
    counter's range once rounded to 4 decimals) is left out with a warning, and the next
    key is tried."""
    warning = None
    for key in _REVENUE_KEYS:
        value = properties.get(key)
        if value is None:
            continue
        parsed = _parse_amount(value)
        if isinstance(parsed, Decimal):
            return PurchaseAmount(parsed, warning)
        warning = warning or f"properties.{key} left out of the revenue counter: {parsed}"
    return PurchaseAmount(Decimal(0), warning)


def revenue_of(properties: dict[str, Any]) -> Decimal:
    """The amount of ``purchase_amount`` alone."""
    return purchase_amount(properties).amount


def add_revenue(total: Decimal, amount: Decimal) -> Decimal | None:
    """``total + amount``, or None when the sum would not fit the counter (the caller keeps
    the total unchanged and records a warning)."""
    result = total + amount
    return result if abs(result) <= REVENUE_MAX else None


def clamp_revenue(total: Decimal) -> Decimal:
    """``total`` capped to the counter's range (merging two profiles near the limit)."""
    return max(-REVENUE_MAX, min(REVENUE_MAX, total))


def next_lifecycle(current: str, *, known: bool, purchases: int) -> str:
    """Lifecycle only moves forward (anonymous -> known -> customer); a churned profile
    that comes back is re-derived from what it holds."""
    derived = "customer" if purchases > 0 else "known" if known else "anonymous"
    if current == "churned":
        return derived
    return derived if LIFECYCLE_RANK[derived] > LIFECYCLE_RANK.get(current, 0) else current


def merge_traits(
    traits: dict[str, Any], times: dict[str, str], new: dict[str, Any], at: datetime
) -> None:
    """Per key, the value with the newest event time wins (ties: the later write)."""
    stamp = at.isoformat()
    for key, value in new.items():
        if key not in times or times[key] <= stamp:
            traits[key] = value
            times[key] = stamp


def merge_trait_sets(
    traits: dict[str, Any], times: dict[str, str], other: dict[str, Any], other_times: dict[str, str]
) -> None:
    """Fold another profile's traits in, key by key, newest event time winning."""
    for key, value in other.items():
        stamp = other_times.get(key, "")
        if key not in traits or times.get(key, "") < stamp:
            traits[key] = value
            times[key] = stamp
