"""Profile upkeep rules: lifecycle, purchases and revenue, trait merging and its caps. Pure."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Any

import msgspec

# CONTRACT 6, caps: a public write key must not be able to grow a profile without bound.
MAX_TRAIT_KEYS = 500
MAX_TRAITS_BYTES = 64 * 1024
_json_encode = msgspec.json.Encoder().encode

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


def _entry_bytes(key: str, value: Any) -> int:
    """Bytes one ``"key": value`` pair adds to the traits' JSON (with its separator)."""
    return len(_json_encode(key)) + len(_json_encode(value)) + 2


def _traits_bytes(traits: dict[str, Any]) -> int:
    return len(_json_encode(traits))


class _TraitBudget:
    """Keeps a profile's traits within MAX_TRAIT_KEYS keys and MAX_TRAITS_BYTES of JSON as
    values are set one by one (the size is tracked, not re-encoded per key)."""

    def __init__(self, traits: dict[str, Any], max_keys: int, max_bytes: int) -> None:
        self.traits, self.max_keys, self.max_bytes = traits, max_keys, max_bytes
        self.size = _traits_bytes(traits)

    def set(self, times: dict[str, str], key: str, value: Any, stamp: str) -> bool:
        """Set ``key`` to ``value`` stamped ``stamp`` if the caps allow it; False (nothing
        changed) when they refuse it."""
        if key not in self.traits and len(self.traits) >= self.max_keys:
            return False
        old = _entry_bytes(key, self.traits[key]) if key in self.traits else 0
        new_size = self.size - old + _entry_bytes(key, value)
        # A change that does not grow the JSON is always allowed (a profile stored over the
        # cap before it existed can still be updated).
        if new_size > max(self.max_bytes, self.size):
            return False
        self.size = new_size
        self.traits[key] = value
        times[key] = stamp
        return True


def merge_traits(
    traits: dict[str, Any], times: dict[str, str], new: dict[str, Any], at: datetime,
    *, max_keys: int = MAX_TRAIT_KEYS, max_bytes: int = MAX_TRAITS_BYTES,
) -> list[str]:
    """Per key, the value with the newest ``at`` wins (ties: the later write). ``at`` is the
    event's state time, ``min(event_time, received_at)`` (core.event_time.state_time).

    A key that would take the profile past ``max_keys`` keys or ``max_bytes`` of JSON is
    refused (the profile keeps what it had); returns the refused keys, for a warning on the
    event. Never raises for size."""
    stamp = at.isoformat()
    budget: _TraitBudget | None = None
    refused: list[str] = []
    for key, value in new.items():
        if key in times and times[key] > stamp:
            continue
        if budget is None:  # most events fit easily: only measure when something changes
            budget = _TraitBudget(traits, max_keys, max_bytes)
        if not budget.set(times, key, value, stamp):
            refused.append(key)
    return refused


def merge_trait_sets(
    traits: dict[str, Any], times: dict[str, str], other: dict[str, Any], other_times: dict[str, str],
    *, max_keys: int = MAX_TRAIT_KEYS, max_bytes: int = MAX_TRAITS_BYTES,
) -> list[str]:
    """Fold another profile's traits in, key by key, newest state time winning, within the
    same caps as ``merge_traits`` (the survivor's keys first); returns the keys left out
    (the absorbed profile's snapshot in the merge record still holds them)."""
    budget = _TraitBudget(traits, max_keys, max_bytes)
    refused: list[str] = []
    for key, value in other.items():
        stamp = other_times.get(key, "")
        if key in traits and times.get(key, "") >= stamp:
            continue
        if not budget.set(times, key, value, stamp):
            refused.append(key)
    return refused


# ``$set_once`` stamps (PostHog): ``ONCE_PREFIX`` + the state time counted backwards, in
# fixed width. The prefix sorts before every ISO stamp, so a plain trait (``$set``) always
# overrides a set-once value; between two set-once values the older state time has the
# larger stamp, so the newest-stamp-wins rule of ``merge_trait_sets`` keeps the oldest
# value on a merge too. Nothing else reads ``trait_times``.
ONCE_PREFIX = "!"
_ONCE_EPOCH = datetime(1, 1, 1, tzinfo=UTC)
_ONCE_SPAN_US = 10**18


def once_stamp(at: datetime) -> str:
    """The ``trait_times`` stamp of a set-once value with state time ``at``."""
    elapsed = at - _ONCE_EPOCH
    us = (elapsed.days * 86_400 + elapsed.seconds) * 1_000_000 + elapsed.microseconds
    return f"{ONCE_PREFIX}{_ONCE_SPAN_US - us:019d}"


def merge_traits_once(
    traits: dict[str, Any], times: dict[str, str], new: dict[str, Any], at: datetime,
    *, max_keys: int = MAX_TRAIT_KEYS, max_bytes: int = MAX_TRAITS_BYTES,
) -> list[str]:
    """``$set_once``: set a key the profile lacks; replace only a set-once value with a newer
    state time (the oldest wins, whatever the arrival order); never a value set plainly.
    Same caps as ``merge_traits``; returns the refused keys."""
    stamp = once_stamp(at)
    budget: _TraitBudget | None = None
    refused: list[str] = []
    for key, value in new.items():
        if key in traits:
            current = times.get(key)
            if current is None or not current.startswith(ONCE_PREFIX) or current >= stamp:
                continue
        if budget is None:
            budget = _TraitBudget(traits, max_keys, max_bytes)
        if not budget.set(times, key, value, stamp):
            refused.append(key)
    return refused
