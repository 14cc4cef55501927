"""Computed traits (CONTRACT 8): a fold of one event name's events (and one property) over a
sliding window, per profile. Pure: validation and the SQL aggregate of each function.

Values: ``count`` (events, or events carrying the property when one is named), ``sum``,
``avg``, ``min``, ``max`` (over numeric property values; other values are ignored),
``first``/``last`` (the property value of the earliest/latest event; the event time when no
property is named), ``unique`` (distinct non-null property values), ``exists`` (any event).
A profile with no matching event in the window has the function's default: 0 for ``count``
and ``unique``, false for ``exists``, no value (null) for the others.
"""

from __future__ import annotations

import builtins
import re
from dataclasses import dataclass
from typing import Any

from core.errors import StratumError

FUNCTIONS = ("count", "sum", "avg", "min", "max", "first", "last", "unique", "exists")
NEEDS_PROPERTY = frozenset({"sum", "avg", "min", "max", "unique"})
MAX_WINDOW_DAYS = 36_500
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.\-]{0,63}$")

# Aggregates over the rows of ``events e`` of one profile; ``v`` is ``e.properties -> %s``.
# ``<F>`` is the condition that picks the trait's rows among those scanned ("true" when the
# scan reads only them), so several traits can share one scan of a profile's events.
_NUM = "CASE WHEN jsonb_typeof(e.properties -> %(prop)s) = 'number' THEN (e.properties -> %(prop)s)::numeric END"
_AGGREGATES = {
    "count": "to_jsonb(count(*) FILTER (WHERE <F>))",
    "count_property": "to_jsonb(count(*) FILTER (WHERE <F> AND jsonb_typeof(e.properties -> %(prop)s) <> 'null'))",
    "sum": f"to_jsonb(sum({_NUM}) FILTER (WHERE <F>))",
    "avg": f"to_jsonb(round(avg({_NUM}) FILTER (WHERE <F>), 6))",
    "min": f"to_jsonb(min({_NUM}) FILTER (WHERE <F>))",
    "max": f"to_jsonb(max({_NUM}) FILTER (WHERE <F>))",
    "first": "(array_agg(e.properties -> %(prop)s ORDER BY e.event_time, e.event_id)"
             " FILTER (WHERE <F> AND e.properties ? %(prop)s))[1]",
    "last": "(array_agg(e.properties -> %(prop)s ORDER BY e.event_time DESC, e.event_id DESC)"
            " FILTER (WHERE <F> AND e.properties ? %(prop)s))[1]",
    "first_time": "to_jsonb(min(e.event_time) FILTER (WHERE <F>))",
    "last_time": "to_jsonb(max(e.event_time) FILTER (WHERE <F>))",
    "unique": "to_jsonb(count(DISTINCT e.properties -> %(prop)s)"
              " FILTER (WHERE <F> AND jsonb_typeof(e.properties -> %(prop)s) <> 'null'))",
    "exists": "to_jsonb(count(*) FILTER (WHERE <F>) > 0)",
}


class InvalidComputedTrait(StratumError):
    code = "invalid_computed_trait"


@dataclass(frozen=True)
class ComputedTrait:
    name: str
    function: str
    event: str
    property: str | None
    within_days: int

    @builtins.property  # ``property`` is a field of this class
    def default(self) -> Any:
        """The value of a profile with no matching event in the window."""
        return {"count": 0, "unique": 0, "exists": False}.get(self.function)

    def aggregate_sql(self, rows: str = "true") -> str:
        """The aggregate over those rows of ``events e`` for which the SQL condition ``rows``
        holds (named ``%(prop)s`` parameter: the property)."""
        key = self.function
        if key == "count" and self.property:
            key = "count_property"
        elif key in ("first", "last") and not self.property:
            key += "_time"
        return _AGGREGATES[key].replace("<F>", rows)


def parse_computed_trait(body: dict[str, Any]) -> ComputedTrait:
    """A definition from an API body; InvalidComputedTrait (field = the bad key) otherwise."""
    name = body.get("name")
    if not isinstance(name, str) or not _NAME.match(name):
        raise InvalidComputedTrait("name: 1 to 64 letters, digits, '_', '.', '-', starting with a letter or '_'",
                                   field="name")
    function = body.get("function")
    if function not in FUNCTIONS:
        raise InvalidComputedTrait(f"function: use one of {', '.join(FUNCTIONS)}", field="function")
    event = body.get("event")
    if not isinstance(event, str) or not 1 <= len(event) <= 255:
        raise InvalidComputedTrait("event: an event name of 1 to 255 characters", field="event")
    prop = body.get("property")
    if prop is not None and (not isinstance(prop, str) or not 1 <= len(prop) <= 255):
        raise InvalidComputedTrait("property: a property name of 1 to 255 characters", field="property")
    if function in NEEDS_PROPERTY and prop is None:
        raise InvalidComputedTrait(f"property: {function} needs a property to fold", field="property")
    days = body.get("within_days")
    if not isinstance(days, int) or isinstance(days, bool) or not 1 <= days <= MAX_WINDOW_DAYS:
        raise InvalidComputedTrait(f"within_days: a whole number of days from 1 to {MAX_WINDOW_DAYS}",
                                   field="within_days")
    for key in ("event", "property"):
        if "\x00" in (body.get(key) or ""):
            raise InvalidComputedTrait(f"{key}: text must not contain U+0000", field=key)
    unknown = sorted(set(body) - {"name", "function", "event", "property", "within_days"})
    if unknown:
        raise InvalidComputedTrait(f"{unknown[0]}: unknown field", field=unknown[0])
    return ComputedTrait(name, function, event, prop, days)
