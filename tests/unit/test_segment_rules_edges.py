"""core.segment_rules at its edges: each refusal names the bad part and says what to
change; every condition kind compiles to SQL with its values as parameters only."""

from __future__ import annotations

import pytest

from core.segment_rules import (
    MAX_DEPTH,
    InvalidRule,
    RuleTooComplex,
    compile_rules,
    parse_time,
    validate_rules,
)


def _one(condition) -> dict:
    return {"all": [condition]}


@pytest.mark.parametrize(("rules", "field", "words"), [
    ([], "rules", "expected an object"),
    ({"all": [], "any": []}, "rules", "exactly one"),
    ({"all": [], "nope": []}, "rules.nope", "unknown key in a group"),
    ({"all": {}}, "rules.all", "expected a list"),
    (_one("trait"), "rules.all[0]", "expected a condition object"),
    (_one({"trait": "a", "counter": "events", "op": "eq", "value": 1}), "rules.all[0]", "exactly one of"),
    (_one({"trait": "a", "op": "eq", "value": 1, "extra": 1}), "rules.all[0].extra", "unknown key"),
    (_one({"trait": "a\x00", "op": "eq", "value": "x"}), "rules.all[0].trait", "U+0000"),
    (_one({"trait": "a", "op": "in", "value": ["ok", "b\x00"]}), "rules.all[0].value[1]", "U+0000"),
    (_one({"trait": "", "op": "eq", "value": 1}), "rules.all[0].trait", "1 to 255 characters"),
    (_one({"counter": "visits", "op": "eq", "value": 1}), "rules.all[0].counter", "unknown counter"),
    (_one({"consent": "fax", "op": "eq", "value": True}), "rules.all[0].consent", "unknown consent type"),
    (_one({"identifier": "ssn", "op": "exists"}), "rules.all[0].identifier", "unknown identifier type"),
    (_one({"trait": "a", "value": 1}), "rules.all[0].op", "missing operator"),
    (_one({"counter": "events", "op": "contains", "value": 1}), "rules.all[0].op", "unknown operator"),
    (_one({"trait": "a", "op": "exists", "value": 1}), "rules.all[0].value", "takes no value"),
    (_one({"trait": "a", "op": "eq"}), "rules.all[0].value", "needs a value"),
    (_one({"consent": "email", "op": "eq", "value": "yes"}), "rules.all[0].value", "true or false"),
    (_one({"counter": "events", "op": "between", "value": [1]}), "rules.all[0].value", "two numbers"),
    (_one({"counter": "events", "op": "between", "value": [5, 1]}), "rules.all[0].value", "low <= high"),
    (_one({"counter": "events", "op": "in", "value": []}), "rules.all[0].value", "list of 1 to"),
    (_one({"counter": "revenue", "op": "gt", "value": "10"}), "rules.all[0].value", "compares with a number"),
    (_one({"trait": "a", "op": "eq", "value": float("nan")}), "rules.all[0].value", "finite number"),
    (_one({"trait": "a", "op": "gt", "value": [1]}), "rules.all[0].value", "a number or a string"),
    (_one({"trait": "a", "op": "between", "value": 3}), "rules.all[0].value", "between takes [low, high]"),
    (_one({"trait": "a", "op": "between", "value": [1, "b"]}), "rules.all[0].value", "two numbers or two strings"),
    (_one({"trait": "a", "op": "between", "value": ["z", "a"]}), "rules.all[0].value", "low <= high"),
    (_one({"trait": "a", "op": "not_in", "value": "x"}), "rules.all[0].value", "list of 1 to"),
    (_one({"trait": "a", "op": "in", "value": [{"x": 1}]}), "rules.all[0].value[0]", "strings, numbers or booleans"),
    (_one({"trait": "a", "op": "contains", "value": [1]}), "rules.all[0].value", "a string, a number or a boolean"),
    (_one({"trait": "a", "op": "contains", "value": ""}), "rules.all[0].value", "non-empty value"),
    (_one({"trait": "a", "op": "starts_with", "value": ""}), "rules.all[0].value", "non-empty string"),
    (_one({"trait": "a", "op": "after", "value": "yesterday"}), "rules.all[0].value", "ISO 8601"),
    (_one({"trait": "a", "op": "within_last_days", "value": 0}), "rules.all[0].value", "whole number of days"),
    (_one({"lifecycle": []}), "rules.all[0].lifecycle", "at least one lifecycle stage"),
    (_one({"lifecycle": ["known", "vip"]}), "rules.all[0].lifecycle[1]", "unknown lifecycle stage"),
    (_one({"lifecycle": "vip"}), "rules.all[0].lifecycle", "unknown lifecycle stage"),
    (_one({"event": "", "within_days": 3}), "rules.all[0].event", "event name"),
    (_one({"event": "Order", "within_days": True}), "rules.all[0].within_days", "whole number of days"),
    (_one({"event": "Order", "within_days": 3, "count": 2}), "rules.all[0].count", '{"op", "value"}'),
    (_one({"event": "Order", "within_days": 3, "count": {"op": "gt", "n": 1}}), "rules.all[0].count.n", "unknown key"),
    (_one({"event": "Order", "within_days": 3, "count": {"op": "like", "value": 1}}), "rules.all[0].count.op",
     "unknown operator for a count"),
    (_one({"event": "Order", "within_days": 3, "count": {"op": "gt"}}), "rules.all[0].count.value", "needs a value"),
])
def test_each_refusal_names_the_bad_part(rules, field, words):
    with pytest.raises(InvalidRule) as info:
        validate_rules(rules)
    assert info.value.field == field
    assert words in str(info.value)
    assert info.value.as_dict()["code"] == "invalid_rule"


def test_too_deep_and_too_many_are_too_complex():
    deep: dict = {"all": []}
    node = deep
    for _ in range(MAX_DEPTH + 1):
        child: dict = {"all": []}
        node["all"].append(child)
        node = child
    with pytest.raises(RuleTooComplex):
        validate_rules(deep)
    many = {"any": [{"counter": "events", "op": "gt", "value": i} for i in range(51)]}
    with pytest.raises(RuleTooComplex):
        validate_rules(many)


@pytest.mark.parametrize(("condition", "sql_part", "params"), [
    ({"lifecycle": "known"}, "p.lifecycle = ANY(%s::text[])", [["known"]]),
    ({"lifecycle": ["known", "customer"]}, "p.lifecycle = ANY(%s::text[])", [["known", "customer"]]),
    ({"counter": "revenue", "op": "between", "value": [1, 9.5]}, "p.revenue BETWEEN %s::numeric AND %s::numeric",
     ["1", "9.5"]),
    ({"counter": "events", "op": "in", "value": [1, 2]}, "p.event_count", [["1", "2"]]),
    ({"trait": "plan", "op": "in", "value": ["pro", 1, True]}, "(p.traits -> %s) = ANY(%s::jsonb[])",
     ["plan", ['"pro"', "1", "true"]]),
    # all strings: the text is compared first, the jsonb comparison only where it matched
    ({"trait": "plan", "op": "not_in", "value": ["a'b"]},
     "NOT coalesce(((p.traits ->> %s) = ANY(%s::text[]) AND (p.traits -> %s) = ANY(%s::jsonb[])), false)",
     ["plan", ["a'b"], "plan", ['"a\'b"']]),
    ({"consent": "email", "op": "exists"}, "c.tenant_id = p.tenant_id AND c.profile_id = p.id", ["email"]),
    ({"consent": "ads", "op": "neq", "value": True}, "IS DISTINCT FROM %s::boolean", ["ads", True]),
    ({"identifier": "email", "op": "not_exists"}, "NOT EXISTS (SELECT 1 FROM profile_identifiers", ["email"]),
    ({"event": "Order", "within_days": 30, "count": {"op": "gte", "value": 2}}, "e.event_name = %s",
     ["Order", 30, "2"]),
    ({"trait": "plan", "op": "between", "value": ["a", "m"]}, 'COLLATE "C" BETWEEN', ["plan", "plan", "a", "m"]),
    ({"trait": "signup", "op": "before", "value": "2026-01-31"}, "stratum_try_timestamptz",
     ["signup", "signup", "2026-01-31T00:00:00+00:00"]),
])
def test_every_condition_kind_compiles_with_parameters_only(condition, sql_part, params):
    rules = _one(condition)
    validate_rules(rules)
    compiled = compile_rules(rules)
    assert sql_part in compiled.sql
    assert list(compiled.params) == params
    assert not [v for v in params if isinstance(v, str) and f"'{v}'" in compiled.sql]  # never inlined


def test_computed_traits_compile_with_and_without_a_default():
    rules = _one({"computed": "orders", "op": "gt", "value": 2})
    validate_rules(rules)
    with_default = compile_rules(rules, {"orders": 0})
    assert "coalesce(p.computed -> %s, %s::jsonb)" in with_default.sql
    assert with_default.params[:2] == ("orders", "0")
    flag = compile_rules(_one({"computed": "vip", "op": "eq", "value": True}), {"vip": False})
    assert "false" in flag.params
    without = compile_rules(rules)
    assert "(p.computed -> %s)" in without.sql and "coalesce(p.computed" not in without.sql


def test_empty_groups_are_neutral():
    assert compile_rules({"all": []}).sql == "true"
    assert compile_rules({"any": []}).sql == "false"
    nested = compile_rules({"any": [{"all": []}, {"counter": "events", "op": "gt", "value": 1}]})
    assert nested.sql.startswith("(true OR coalesce(")


@pytest.mark.parametrize(("text", "expected"), [
    ("2026-01-31", "2026-01-31T00:00:00+00:00"),
    ("2026-01-31T10:00:00Z", "2026-01-31T10:00:00+00:00"),
    ("2026-01-31T10:00:00+02:00", "2026-01-31T10:00:00+02:00"),
    ("2026-13-01", None),
    ("short", None),
    (20260131, None),
])
def test_parse_time(text, expected):
    parsed = parse_time(text)
    assert (parsed.isoformat() if parsed else None) == expected
