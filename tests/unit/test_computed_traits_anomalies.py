"""core.computed_traits definitions and folds, core.anomalies bands and histories (pure)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from core.anomalies import AnomalyRules, history_of, judge_hour, normal_band, weekly_ranges
from core.computed_traits import InvalidComputedTrait, parse_computed_trait

GOOD = {"name": "orders_90d", "function": "count", "event": "Order Completed", "within_days": 90}


@pytest.mark.parametrize(("change", "field"), [
    ({"name": "9lives"}, "name"),
    ({"function": "median"}, "function"),
    ({"event": ""}, "event"),
    ({"property": ""}, "property"),
    ({"function": "sum"}, "property"),
    ({"within_days": 0}, "within_days"),
    ({"within_days": True}, "within_days"),
    ({"event": "Order\x00"}, "event"),
    ({"property": "total\x00"}, "property"),
    ({"colour": "red"}, "colour"),
])
def test_definition_refusals_name_the_field(change, field):
    with pytest.raises(InvalidComputedTrait) as info:
        parse_computed_trait({**GOOD, **change})
    assert info.value.field == field
    assert info.value.as_dict()["field"] == field


@pytest.mark.parametrize(("function", "prop", "fold", "default"), [
    ("count", None, "to_jsonb(count(*) FILTER", 0),
    ("count", "total", "jsonb_typeof(e.properties -> %(prop)s) <> 'null'", 0),
    ("sum", "total", "to_jsonb(sum(", None),
    ("avg", "total", "round(avg(", None),
    ("first", None, "to_jsonb(min(e.event_time)", None),
    ("last", None, "to_jsonb(max(e.event_time)", None),
    ("first", "plan", "ORDER BY e.event_time, e.event_id", None),
    ("last", "plan", "ORDER BY e.event_time DESC, e.event_id DESC", None),
    ("unique", "sku", "count(DISTINCT e.properties -> %(prop)s)", 0),
    ("exists", None, "> 0)", False),
])
def test_each_function_folds_with_its_sql_and_default(function, prop, fold, default):
    trait = parse_computed_trait({**GOOD, "function": function, **({"property": prop} if prop else {})})
    assert fold in trait.aggregate_sql()
    assert trait.default == default


def test_normal_band_needs_enough_history_and_never_goes_below_zero():
    rules = AnomalyRules()
    assert normal_band([10, 12], rules) is None
    expected, low, high = normal_band([100, 110, 90, 105], rules)
    assert expected == pytest.approx(102.5)
    assert 0 <= low < expected < high
    assert normal_band([1, 1, 1], rules)[1] == 0.0  # the floor keeps the band from going negative


def test_a_drop_needs_a_baseline_worth_judging():
    rules = AnomalyRules()
    assert judge_hour(0, [100, 100, 100], rules).kind == "drop"
    assert judge_hour(0, [2, 2, 2], rules).kind is None  # too small a baseline to call a drop
    assert judge_hour(500, [2, 2, 2], rules).kind == "spike"
    assert judge_hour(5, [2], rules) is None


def test_weekly_ranges_and_history_start_at_the_sources_first_hour():
    start = datetime(2026, 11, 30, 10, tzinfo=UTC)
    end = start + timedelta(hours=1)
    ranges = weekly_ranges(start, end, 2)
    assert ranges == [(start, end), (start - timedelta(weeks=1), end - timedelta(weeks=1)),
                      (start - timedelta(weeks=2), end - timedelta(weeks=2))]
    counts = {("s", start - timedelta(weeks=1)): 7}
    assert history_of(counts, "s", start, 3, start - timedelta(weeks=2)) == [7, 0]
    assert history_of(counts, "s", start, 3, start) == []
