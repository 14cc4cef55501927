"""Profile upkeep rules: lifecycle, purchases and revenue, trait merging. Pure."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Any

LIFECYCLE_RANK = {"anonymous": 0, "known": 1, "customer": 2}
_PURCHASE_NAMES = frozenset({"purchase", "ordercompleted", "checkoutcompleted", "orderplaced"})


def is_purchase(event_name: str) -> bool:
    """``Purchase``, ``Order Completed``, ``order_completed``... (case, spaces, _ and - ignored)."""
    key = event_name.lower().replace(" ", "").replace("_", "").replace("-", "")
    return key in _PURCHASE_NAMES


def revenue_of(properties: dict[str, Any]) -> Decimal:
    """Revenue of a purchase: ``revenue``, else ``total``; 0 when absent or not a number."""
    for key in ("revenue", "total"):
        value = properties.get(key)
        if value is None or isinstance(value, bool):
            continue
        try:
            amount = Decimal(str(value))
        except (InvalidOperation, ValueError):
            continue
        if amount.is_finite() and abs(amount) < Decimal("1e14"):
            return amount
    return Decimal(0)


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
    """Per key, the value with the newest ``at`` wins (ties: the later write). ``at`` is the
    event's state time, ``min(event_time, received_at)`` (core.event_time.state_time)."""
    stamp = at.isoformat()
    for key, value in new.items():
        if key not in times or times[key] <= stamp:
            traits[key] = value
            times[key] = stamp


def merge_trait_sets(
    traits: dict[str, Any], times: dict[str, str], other: dict[str, Any], other_times: dict[str, str]
) -> None:
    """Fold another profile's traits in, key by key, newest state time winning."""
    for key, value in other.items():
        stamp = other_times.get(key, "")
        if key not in traits or times.get(key, "") < stamp:
            traits[key] = value
            times[key] = stamp
