"""Unit tests for core.segment_rules, core.computed_traits and core.anomalies (pure)."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, seed, settings
from hypothesis import strategies as st

from core.anomalies import AnomalyRules, baseline, judge_hour
from core.computed_traits import InvalidComputedTrait, parse_computed_trait
from core.errors import StratumError
from core.segment_rules import (
    OPERATORS,
    InvalidRule,
    RuleTooComplex,
    compile_rules,
    condition_paths,
    is_time_based,
    validate_rules,
)

VALID_VALUES = {
    "eq": "x", "neq": 3, "gt": 1, "gte": "b", "lt": 2.5, "lte": 0, "between": [1, 2], "in": ["a", 1, True],
    "not_in": [1], "contains": "x", "not_contains": True, "starts_with": "a", "ends_with": "z",
    "exists": None, "not_exists": None, "before": "2026-01-01", "after": "2026-01-01T10:00:00Z",
    "within_last_days": 7,
}


def _error(rules) -> StratumError:
    with pytest.raises(StratumError) as info:
        validate_rules(rules)
    return info.value


def test_eighteen_operators_each_validate_and_compile_with_parameters_only():
    assert len(OPERATORS) == 18 and set(VALID_VALUES) == set(OPERATORS)
    for op, value in VALID_VALUES.items():
        cond = {"trait": "k'; DROP TABLE profiles; --", "op": op}
        if value is not None:
            cond["value"] = value
        rules = {"all": [cond]}
        validate_rules(rules)
        compiled = compile_rules(rules)
        assert "DROP" not in compiled.sql, op  # user values never reach the SQL text
        assert compiled.sql.count("%s") == len(compiled.params), op


@pytest.mark.parametrize(("rules", "field", "code"), [
    ({"all": [{"trait": "a", "op": "eq", "value": 1}, {"trait": "b", "op": "equals"}]}, "rules.all[1].op",
     "invalid_rule"),
    ({"any": [{"all": [{"trait": "a"}]}]}, "rules.any[0].all[0].op", "invalid_rule"),
    ({"all": [{"trait": "a", "op": "gt", "value": True}]}, "rules.all[0].value", "invalid_rule"),
    ({"all": [{"trait": "a", "op": "gt"}]}, "rules.all[0].value", "invalid_rule"),
    ({"all": [{"trait": "a", "op": "exists", "value": 1}]}, "rules.all[0].value", "invalid_rule"),
    ({"all": [{"trait": "a", "op": "between", "value": [1, "z"]}]}, "rules.all[0].value", "invalid_rule"),
    ({"all": [{"trait": "a", "op": "in", "value": [1, [2]]}]}, "rules.all[0].value[1]", "invalid_rule"),
    ({"all": [{"trait": "a", "op": "in", "value": []}]}, "rules.all[0].value", "invalid_rule"),
    ({"all": [{"trait": "a", "op": "contains", "value": ""}]}, "rules.all[0].value", "invalid_rule"),
    ({"all": [{"trait": "a", "op": "starts_with", "value": 1}]}, "rules.all[0].value", "invalid_rule"),
    ({"all": [{"trait": "a", "op": "within_last_days", "value": 1.5}]}, "rules.all[0].value", "invalid_rule"),
    ({"all": [{"trait": "", "op": "exists"}]}, "rules.all[0].trait", "invalid_rule"),
    ({"all": [{"trait": "a", "op": "exists", "extra": 1}]}, "rules.all[0].extra", "invalid_rule"),
    ({"all": [{"trait": "a", "counter": "events", "op": "exists"}]}, "rules.all[0]", "invalid_rule"),
    ({"all": [{"consent": "fax", "op": "exists"}]}, "rules.all[0].consent", "invalid_rule"),
    ({"all": [{"consent": "email", "op": "eq", "value": "yes"}]}, "rules.all[0].value", "invalid_rule"),
    ({"all": [{"consent": "email", "op": "gt", "value": True}]}, "rules.all[0].op", "invalid_rule"),
    ({"all": [{"identifier": "ssn", "op": "exists"}]}, "rules.all[0].identifier", "invalid_rule"),
    ({"all": [{"identifier": "email", "op": "eq"}]}, "rules.all[0].op", "invalid_rule"),
    ({"all": [{"identifier": "email", "op": "exists", "value": "x"}]}, "rules.all[0].value", "invalid_rule"),
    ({"all": [{"lifecycle": []}]}, "rules.all[0].lifecycle", "invalid_rule"),
    ({"all": [{"lifecycle": "vip"}]}, "rules.all[0].lifecycle", "invalid_rule"),
    ({"all": [{"event": "E", "within_days": 7, "count": {"op": "gt", "value": 1, "x": 1}}]},
     "rules.all[0].count.x", "invalid_rule"),
    ({"all": [{"event": "E", "within_days": 7, "count": {"op": "starts_with", "value": 1}}]},
     "rules.all[0].count.op", "invalid_rule"),
    ({"all": [{"event": 5, "within_days": 7}]}, "rules.all[0].event", "invalid_rule"),
    ({"all": [1]}, "rules.all[0]", "invalid_rule"),
    ({"all": [{"trait": "a\x00", "op": "exists"}]}, "rules.all[0].trait", "invalid_rule"),
    ({"all": [{"trait": "a", "op": "in", "value": ["ok", "x\x00"]}]}, "rules.all[0].value[1]", "invalid_rule"),
    ({"all": [], "any": []}, "rules", "invalid_rule"),
    ({"all": [{"all": [{"all": [{"all": [{"all": [{"all": []}]}]}]}]}]}, "rules.all[0].all[0].all[0].all[0].all[0]",
     "rule_too_complex"),
    ({"any": [{"trait": "t", "op": "exists"}] * 51}, "rules", "rule_too_complex"),
])
def test_errors_name_the_bad_part(rules, field, code):
    err = _error(rules)
    assert (err.field, err.code) == (field, code)
    assert err.message.startswith(field)


def test_limits_are_inclusive():
    validate_rules({"all": [{"all": [{"all": [{"all": [{"all": [{"trait": "t", "op": "exists"}]}]}]}]}]})
    validate_rules({"all": [{"trait": "t", "op": "exists"}] * 50})
    assert isinstance(_error({"all": [{"all": [{"trait": "t", "op": "exists"}] * 26},
                                      {"any": [{"trait": "t", "op": "exists"}] * 25}]}), RuleTooComplex)


def test_paths_and_time_based():
    rules = {"all": [{"computed": "a", "op": "gt", "value": 1},
                     {"any": [{"computed": "b", "op": "exists"}, {"lifecycle": "known"}]}]}
    assert condition_paths(rules, "computed") == [("rules.all[0].computed", "a"), ("rules.all[1].any[0].computed", "b")]
    assert not is_time_based(rules)
    assert is_time_based({"any": [{"all": [{"event": "E", "within_days": 3}]}]})
    assert is_time_based({"all": [{"trait": "t", "op": "within_last_days", "value": 3}]})


def test_computed_defaults_cover_profiles_without_a_value():
    compiled = compile_rules({"all": [{"computed": "n", "op": "eq", "value": 0}]}, {"n": 0})
    assert "coalesce(p.computed -> %s, %s::jsonb)" in compiled.sql and compiled.params[:2] == ("n", "0")


_json = st.recursive(st.none() | st.booleans() | st.integers(-10, 10) | st.floats(allow_nan=True)
                     | st.sampled_from(["all", "any", "op", "trait", "eq", "between", "in", "events", "known", ""]),
                     lambda children: st.lists(children, max_size=4)
                     | st.dictionaries(st.sampled_from(["all", "any", "trait", "op", "value", "counter", "lifecycle",
                                                        "event", "within_days", "count", "consent", "identifier",
                                                        "computed"]), children, max_size=4),
                     max_leaves=20)
_PATH = re.compile(r"^rules(\.[a-z_]+|\[\d+\])*$")


@seed(20261130)
@settings(max_examples=600, deadline=None, database=None)
@given(_json)
def test_fuzz_validation_accepts_or_names_a_path(rules):
    try:
        validate_rules(rules)
    except (InvalidRule, RuleTooComplex) as err:
        assert err.field is not None and _PATH.match(err.field), err.field
        return
    compiled = compile_rules(rules)
    assert compiled.sql.count("%s") == len(compiled.params)


def test_computed_trait_definitions():
    t = parse_computed_trait({"name": "spend", "function": "sum", "event": "Buy", "property": "total",
                              "within_days": 30})
    assert t.default is None and "sum(" in t.aggregate_sql()
    assert parse_computed_trait({"name": "n", "function": "count", "event": "E", "within_days": 1}).default == 0
    assert "count(*) FILTER" in parse_computed_trait({"name": "n", "function": "count", "event": "E",
                                                      "property": "p", "within_days": 1}).aggregate_sql()
    assert "min(e.event_time)" in parse_computed_trait({"name": "f", "function": "first", "event": "E",
                                                        "within_days": 1}).aggregate_sql()
    with pytest.raises(InvalidComputedTrait):
        parse_computed_trait({"name": "1bad", "function": "count", "event": "E", "within_days": 1})


def test_anomaly_baseline_is_robust_and_scores_both_ways():
    rules = AnomalyRules()
    assert baseline([10, 12, 11, 500]) == (11.5, 1.0)  # one odd week barely moves it
    assert judge_hour(0, [20, 20], rules) is None  # too little history
    assert judge_hour(0, [20, 21, 19, 20], rules).kind == "drop"  # a silent hour
    assert judge_hour(60, [20, 21, 19, 20], rules).kind == "spike"
    assert judge_hour(22, [20, 21, 19, 20], rules).kind is None
    assert judge_hour(0, [2, 2, 2], rules).kind is None  # below the minimum baseline for a drop
    noisy = judge_hour(40, [10, 30, 20, 40, 25], rules)
    assert noisy.kind is None and noisy.expected == 25


def test_event_presence_compiles_to_exists_left_bare():
    from core.segment_rules import compile_rules

    def sql(count):
        return compile_rules({"all": [{"event": "E", "within_days": 3, "count": count}]}).sql

    assert sql({"op": "gte", "value": 1}).startswith("(EXISTS (")
    assert sql({"op": "eq", "value": 0}).startswith("(NOT EXISTS (")
    assert "count(*)" in sql({"op": "gte", "value": 2}) and sql({"op": "gte", "value": 2}).startswith("(coalesce(")
    assert compile_rules({"all": [{"identifier": "email", "op": "exists"}]}).sql.startswith("(EXISTS (")
