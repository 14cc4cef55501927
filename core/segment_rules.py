"""The segment rule language (CONTRACT 8): validation and compilation to SQL. Pure.

RULES is ``{"all": [...]}`` or ``{"any": [...]}`` of RULES or conditions. ``validate_rules``
raises ``InvalidRule`` (400 ``invalid_rule``) whose ``field`` is the path of the bad part,
written like ``rules.all[1].op``, or ``RuleTooComplex`` (400 ``rule_too_complex``) past
5 levels or 50 conditions.

``compile_rules`` turns valid rules into a parameterized SQL boolean over the alias ``p``
(a row of ``profiles``): every user value travels as a ``%s`` parameter, never inside the
SQL text. The expression reads indexed or per-row data only (profile columns, the
``consents`` primary key, ``profile_identifiers (profile_id, type)``, the events indexes on
``(tenant_id, profile_id, event_time)`` for counts per profile and on ``(tenant_id,
event_name, event_time)`` for the profiles with an event in a window), so a segment is
answered by the database, not evaluated profile by profile in Python. The caller adds the
tenant and ``merged_into IS NULL``.

Semantics: comparisons match values of the same JSON type only (a number trait never
equals the string ``"1"``); ``between`` is inclusive; negative operators (``neq``,
``not_in``, ``not_contains``, ``not_exists``) match profiles that lack the key;
``contains`` is a literal substring of a string, or an element of an array;
``starts_with``/``ends_with`` are literal; ``before``/``after``/``within_last_days`` read
string values as ISO 8601 times (values that are not times never match).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from core.errors import StratumError
from core.identifiers import IDENTIFIER_TYPES

OPERATORS = (
    "eq", "neq", "gt", "gte", "lt", "lte", "between", "in", "not_in", "contains", "not_contains",
    "starts_with", "ends_with", "exists", "not_exists", "before", "after", "within_last_days",
)
MAX_DEPTH = 5
MAX_CONDITIONS = 50
MAX_LIST_VALUES = 1000
MAX_DAYS = 36_500
LIFECYCLE_STAGES = ("anonymous", "known", "customer", "churned")
CONSENT_TYPES = ("analytics", "ads", "email", "sms", "all")
COUNTERS = {"events": "p.event_count", "purchases": "p.purchase_count", "revenue": "p.revenue"}
CONDITION_KINDS = ("trait", "counter", "lifecycle", "consent", "identifier", "computed", "event")

_NUMERIC_OPS = ("eq", "neq", "gt", "gte", "lt", "lte", "between", "in", "not_in")
_CONSENT_OPS = ("eq", "neq", "exists", "not_exists")
_PRESENCE_OPS = ("exists", "not_exists")
_ORDER_OPS = {"gt": ">", "gte": ">=", "lt": "<", "lte": "<="}
_SLOT = re.compile(r"\{(\w+)\}")


class InvalidRule(StratumError):
    code = "invalid_rule"


class RuleTooComplex(StratumError):
    code = "rule_too_complex"


def _bad(path: str, what: str) -> InvalidRule:
    return InvalidRule(f"{path}: {what}", field=path)


def _type_of(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    return "array" if isinstance(value, list) else "object"


def _is_number(value: Any) -> bool:
    return _type_of(value) == "number" and value == value and abs(value) != float("inf")


# --------------------------------------------------------------------------- validation


def validate_rules(rules: Any, path: str = "rules") -> None:
    """Check RULES against the language; raise InvalidRule / RuleTooComplex naming the bad part."""
    counted = _validate_group(rules, path, 1)
    if counted > MAX_CONDITIONS:
        raise RuleTooComplex(f"{path}: {counted} conditions; at most {MAX_CONDITIONS} are allowed", field=path)


def condition_paths(rules: dict, kind: str, path: str = "rules") -> list[tuple[str, str]]:
    """(path, name) of every condition of one kind (``computed``, ``event``...) in valid rules,
    e.g. ``("rules.all[0].computed", "orders_90d")``."""
    op = "all" if "all" in rules else "any"
    out: list[tuple[str, str]] = []
    for i, child in enumerate(rules[op]):
        child_path = f"{path}.{op}[{i}]"
        if "all" in child or "any" in child:
            out += condition_paths(child, kind, child_path)
        elif kind in child:
            out.append((f"{child_path}.{kind}", child[kind]))
    return out


def is_time_based(rules: dict) -> bool:
    """Whether valid rules can change truth with time alone (an event count in a window, a
    trait time within the last N days): such segments need periodic re-evaluation."""
    for child in rules["all" if "all" in rules else "any"]:
        if "all" in child or "any" in child:
            if is_time_based(child):
                return True
        elif "event" in child or child.get("op") == "within_last_days":
            return True
    return False


def _validate_group(node: Any, path: str, depth: int) -> int:
    if not isinstance(node, dict):
        raise _bad(path, 'expected an object {"all": [...]} or {"any": [...]}')
    keys = set(node)
    if keys not in ({"all"}, {"any"}):
        extra = sorted(keys - {"all", "any"})
        if extra:
            raise _bad(f"{path}.{extra[0]}", 'unknown key in a group; a group is {"all": [...]} or {"any": [...]}')
        raise _bad(path, 'a group has exactly one of "all" or "any"')
    if depth > MAX_DEPTH:
        raise RuleTooComplex(f"{path}: rules nest deeper than {MAX_DEPTH} levels", field=path)
    (op,) = keys
    children = node[op]
    if not isinstance(children, list):
        raise _bad(f"{path}.{op}", "expected a list of conditions or groups")
    count = 0
    for i, child in enumerate(children):
        child_path = f"{path}.{op}[{i}]"
        if isinstance(child, dict) and ("all" in child or "any" in child):
            count += _validate_group(child, child_path, depth + 1)
        else:
            _validate_condition(child, child_path)
            count += 1
        if count > MAX_CONDITIONS:
            raise RuleTooComplex(f"{path}: more than {MAX_CONDITIONS} conditions", field=path)
    return count


def _reject_nul(value: Any, path: str) -> None:
    """Postgres text and jsonb cannot hold U+0000: refuse it rather than fail the query."""
    if isinstance(value, str):
        if "\x00" in value:
            raise _bad(path, "text must not contain U+0000")
    elif isinstance(value, list):
        for i, item in enumerate(value):
            _reject_nul(item, f"{path}[{i}]")
    elif isinstance(value, dict):
        for key, item in value.items():
            _reject_nul(key, path)
            _reject_nul(item, f"{path}.{key}")


def _validate_condition(node: Any, path: str) -> None:
    if not isinstance(node, dict):
        raise _bad(path, "expected a condition object")
    _reject_nul(node, path)
    kinds = [k for k in CONDITION_KINDS if k in node]
    if len(kinds) != 1:
        raise _bad(path, f"a condition names exactly one of {', '.join(CONDITION_KINDS)}")
    kind = kinds[0]
    allowed = {"lifecycle": {"lifecycle"}, "identifier": {"identifier", "op"},
               "event": {"event", "within_days", "count"}}.get(kind, {kind, "op", "value"})
    for key in node:
        if key not in allowed:
            raise _bad(f"{path}.{key}", f"unknown key for a {kind} condition; use {', '.join(sorted(allowed))}")
    if kind == "lifecycle":
        _validate_lifecycle(node["lifecycle"], f"{path}.lifecycle")
        return
    if kind == "event":
        _validate_event(node, path)
        return
    _validate_name(node, kind, path)
    op = node.get("op")
    allowed_ops = {"counter": _NUMERIC_OPS, "consent": _CONSENT_OPS, "identifier": _PRESENCE_OPS}.get(kind, OPERATORS)
    if op not in allowed_ops:
        raise _bad(f"{path}.op", f"{'missing operator' if op is None else 'unknown operator'}"
                                 f" for a {kind} condition; use one of {', '.join(allowed_ops)}")
    if kind == "identifier":
        return
    if op in _PRESENCE_OPS:
        if node.get("value") is not None:
            raise _bad(f"{path}.value", f"{op} takes no value")
        return
    if "value" not in node:
        raise _bad(f"{path}.value", f"{op} needs a value")
    value_path = f"{path}.value"
    if kind == "counter":
        _validate_numeric_value(op, node["value"], value_path)
    elif kind == "consent":
        if not isinstance(node["value"], bool):
            raise _bad(value_path, "a consent is compared with true or false")
    else:
        _validate_value(op, node["value"], value_path)


def _validate_name(node: dict, kind: str, path: str) -> None:
    name = node[kind]
    if not isinstance(name, str) or not name or len(name) > 255:
        raise _bad(f"{path}.{kind}", "expected a name of 1 to 255 characters")
    if kind == "counter" and name not in COUNTERS:
        raise _bad(f"{path}.counter", f"unknown counter; use one of {', '.join(COUNTERS)}")
    if kind == "consent" and name not in CONSENT_TYPES:
        raise _bad(f"{path}.consent", f"unknown consent type; use one of {', '.join(CONSENT_TYPES)}")
    if kind == "identifier" and name not in IDENTIFIER_TYPES:
        raise _bad(f"{path}.identifier", f"unknown identifier type; use one of {', '.join(sorted(IDENTIFIER_TYPES))}")


def _validate_lifecycle(value: Any, path: str) -> None:
    stages = value if isinstance(value, list) else [value]
    if not stages:
        raise _bad(path, "name at least one lifecycle stage")
    for i, stage in enumerate(stages):
        if stage not in LIFECYCLE_STAGES:
            where = f"{path}[{i}]" if isinstance(value, list) else path
            raise _bad(where, f"unknown lifecycle stage; use one of {', '.join(LIFECYCLE_STAGES)}")


def _validate_event(node: dict, path: str) -> None:
    name = node["event"]
    if not isinstance(name, str) or not name or len(name) > 255:
        raise _bad(f"{path}.event", "expected an event name of 1 to 255 characters")
    days = node.get("within_days")
    if not _is_positive_int(days):
        raise _bad(f"{path}.within_days", f"expected a whole number of days from 1 to {MAX_DAYS}")
    count = node.get("count", {"op": "gte", "value": 1})
    if not isinstance(count, dict):
        raise _bad(f"{path}.count", 'expected {"op", "value"}')
    for key in count:
        if key not in ("op", "value"):
            raise _bad(f"{path}.count.{key}", 'unknown key; a count is {"op", "value"}')
    if count.get("op") not in _NUMERIC_OPS:
        raise _bad(f"{path}.count.op", f"unknown operator for a count; use one of {', '.join(_NUMERIC_OPS)}")
    if "value" not in count:
        raise _bad(f"{path}.count.value", "a count needs a value")
    _validate_numeric_value(count["op"], count["value"], f"{path}.count.value")


def _is_positive_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= MAX_DAYS


def _validate_numeric_value(op: str, value: Any, path: str) -> None:
    if op == "between":
        if not (isinstance(value, list) and len(value) == 2 and all(_is_number(v) for v in value)):
            raise _bad(path, "between takes [low, high], two numbers")
        if value[0] > value[1]:
            raise _bad(path, "between takes [low, high] with low <= high")
    elif op in ("in", "not_in"):
        if not (isinstance(value, list) and 0 < len(value) <= MAX_LIST_VALUES and all(_is_number(v) for v in value)):
            raise _bad(path, f"{op} takes a list of 1 to {MAX_LIST_VALUES} numbers")
    elif not _is_number(value):
        raise _bad(path, f"{op} compares with a number")


def _validate_value(op: str, value: Any, path: str) -> None:
    kind = _type_of(value)
    if op in ("eq", "neq"):
        if kind == "number" and not _is_number(value):
            raise _bad(path, "not a finite number")
    elif op in _ORDER_OPS:
        if kind not in ("number", "string") or (kind == "number" and not _is_number(value)):
            raise _bad(path, f"{op} compares with a number or a string")
    elif op == "between":
        if not (isinstance(value, list) and len(value) == 2):
            raise _bad(path, "between takes [low, high]")
        kinds = {_type_of(v) for v in value}
        if kinds not in ({"number"}, {"string"}) or (kinds == {"number"} and not all(map(_is_number, value))):
            raise _bad(path, "between takes two numbers or two strings")
        if value[0] > value[1]:
            raise _bad(path, "between takes [low, high] with low <= high")
    elif op in ("in", "not_in"):
        if not (isinstance(value, list) and 0 < len(value) <= MAX_LIST_VALUES):
            raise _bad(path, f"{op} takes a list of 1 to {MAX_LIST_VALUES} values")
        for i, item in enumerate(value):
            if _type_of(item) not in ("string", "number", "boolean") or (
                    _type_of(item) == "number" and not _is_number(item)):
                raise _bad(f"{path}[{i}]", f"{op} lists strings, numbers or booleans")
    elif op in ("contains", "not_contains"):
        if kind not in ("string", "number", "boolean") or (kind == "number" and not _is_number(value)):
            raise _bad(path, f"{op} takes a string, a number or a boolean")
        if value == "":
            raise _bad(path, f"{op} takes a non-empty value")
    elif op in ("starts_with", "ends_with"):
        if kind != "string" or not value:
            raise _bad(path, f"{op} takes a non-empty string")
    elif op in ("before", "after"):
        if parse_time(value) is None:
            raise _bad(path, f"{op} takes an ISO 8601 date or time, e.g. 2026-01-31T00:00:00Z")
    elif op == "within_last_days" and not _is_positive_int(value):
        raise _bad(path, f"within_last_days takes a whole number of days from 1 to {MAX_DAYS}")


def parse_time(value: Any) -> datetime | None:
    """An ISO 8601 date or time as an aware datetime (UTC when no zone is given), else None."""
    if not isinstance(value, str) or not 10 <= len(value) <= 40:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


# --------------------------------------------------------------------------- compilation


@dataclass(frozen=True)
class CompiledRule:
    """A SQL boolean over ``p`` (profiles) with its ``%s`` parameters, in order."""

    sql: str
    params: tuple[Any, ...]


def _fill(template: str, **slots: tuple[str, list]) -> tuple[str, list]:
    """Substitute ``{name}`` slots by SQL fragments, collecting their parameters in text order."""
    params: list = []

    def sub(m: re.Match) -> str:
        sql, p = slots[m.group(1)]
        params.extend(p)
        return sql

    return _SLOT.sub(sub, template), params


def _param(value: Any, cast: str = "") -> tuple[str, list]:
    return f"%s{cast}", [value]


def _json(value: Any) -> tuple[str, list]:
    return "%s::jsonb", [json.dumps(value)]


def compile_rules(rules: dict, computed_defaults: dict[str, Any] | None = None) -> CompiledRule:
    """SQL for valid RULES (call ``validate_rules`` first). ``computed_defaults`` maps a
    computed trait name to the value a profile without a stored value has (0 for counts)."""
    sql, params = _compile_group(rules, computed_defaults or {})
    return CompiledRule(sql, tuple(params))


def _compile_group(node: dict, defaults: dict[str, Any]) -> tuple[str, list]:
    op = "all" if "all" in node else "any"
    parts: list[str] = []
    params: list = []
    for child in node[op]:
        if "all" in child or "any" in child:
            sql, p = _compile_group(child, defaults)
        else:
            sql, p = _compile_condition(child, defaults)
            # EXISTS is never NULL; left bare, a top-level one becomes a semi or anti join
            # (one pass over the identifiers or events) instead of a probe per profile.
            if not sql.startswith(_EXISTS_FORMS):
                sql = f"coalesce({sql}, false)"
        parts.append(sql)
        params.extend(p)
    if not parts:
        return ("true" if op == "all" else "false"), []
    return "(" + (" AND " if op == "all" else " OR ").join(parts) + ")", params


def _compile_condition(node: dict, defaults: dict[str, Any]) -> tuple[str, list]:
    if "lifecycle" in node:
        stages = node["lifecycle"] if isinstance(node["lifecycle"], list) else [node["lifecycle"]]
        return "p.lifecycle = ANY(%s::text[])", [list(stages)]
    if "trait" in node:
        return _json_condition(("(p.traits -> %s)", [node["trait"]]), ("(p.traits ->> %s)", [node["trait"]]),
                               node["op"], node.get("value"))
    if "computed" in node:
        name = node["computed"]
        default = defaults.get(name)
        if default is None:
            x, xt = ("(p.computed -> %s)", [name]), ("(p.computed ->> %s)", [name])
        else:
            x = ("coalesce(p.computed -> %s, %s::jsonb)", [name, json.dumps(default)])
            xt = ("coalesce(p.computed ->> %s, %s)", [name, str(default).lower() if isinstance(default, bool)
                                                      else str(default)])
        return _json_condition(x, xt, node["op"], node.get("value"))
    if "counter" in node:
        return _numeric_condition((COUNTERS[node["counter"]], []), node["op"], node.get("value"))
    if "consent" in node:
        return _consent_condition(node)
    if "identifier" in node:
        sql = "EXISTS (SELECT 1 FROM profile_identifiers i WHERE i.profile_id = p.id AND i.type = %s)"
        return (sql if node["op"] == "exists" else f"NOT {sql}"), [node["identifier"]]
    count = node.get("count", {"op": "gte", "value": 1})
    where = ("FROM events e WHERE e.tenant_id = p.tenant_id AND e.profile_id = p.id"
             " AND e.event_name = %s AND e.event_time >= now() - make_interval(days => %s::int)")
    params = [node["event"], node["within_days"]]
    presence = _count_presence(count["op"], count["value"])
    if presence is not None:
        return f"{'' if presence else 'NOT '}EXISTS (SELECT 1 {where})", params
    return _numeric_condition((f"(SELECT count(*) {where})", params), count["op"], count["value"])


_EXISTS_FORMS = ("EXISTS (", "NOT EXISTS (")


def _count_presence(op: str, value: Any) -> bool | None:
    """True when a count condition means "at least one", False when it means "none", None
    otherwise (then the events are counted)."""
    if type(value) not in (int, float):
        return None
    if (op, value) in (("gte", 1), ("gt", 0)):
        return True
    if (op, value) in (("eq", 0), ("lt", 1), ("lte", 0)):
        return False
    return None


def _numeric_condition(x: tuple[str, list], op: str, value: Any) -> tuple[str, list]:
    if op == "between":
        return _fill("{x} BETWEEN {lo} AND {hi}", x=x, lo=_param(str(value[0]), "::numeric"),
                     hi=_param(str(value[1]), "::numeric"))
    if op in ("in", "not_in"):
        sql, params = _fill("{x} = ANY({v})", x=x, v=_param([str(v) for v in value], "::numeric[]"))
        return (sql if op == "in" else f"NOT ({sql})"), params
    sym = {"eq": "=", "neq": "<>", **_ORDER_OPS}[op]
    return _fill(f"{{x}} {sym} {{v}}", x=x, v=_param(str(value), "::numeric"))


def _consent_condition(node: dict) -> tuple[str, list]:
    # The newer of the type's own state and "all" decides (as destinations gate on consent).
    granted = ("(SELECT c.granted FROM consents c WHERE c.tenant_id = p.tenant_id AND c.profile_id = p.id"
               " AND c.consent_type IN (%s, 'all') ORDER BY c.updated_at DESC LIMIT 1)", [node["consent"]])
    op = node["op"]
    if op in _PRESENCE_OPS:
        return _fill("{g} IS NOT NULL" if op == "exists" else "{g} IS NULL", g=granted)
    return _fill("{g} = {v}" if op == "eq" else "{g} IS DISTINCT FROM {v}", g=granted,
                 v=_param(node["value"], "::boolean"))


def _json_condition(x: tuple[str, list], xt: tuple[str, list], op: str, value: Any) -> tuple[str, list]:
    """One operator over a jsonb value ``x`` (``xt``: the same as text). Casts sit inside CASE
    on ``jsonb_typeof`` so a value of another type never raises, it just does not match.

    Equality with strings (``eq``, ``in``, ``not_in``) is tested on the text first: two jsonb
    strings are equal only if their texts are, so ``xt = 'DE' AND x = '"DE"'`` means what
    ``x = '"DE"'`` means, and the jsonb comparison (a container walk, several times the cost
    of a text comparison, on every profile a preview scans) runs only for the rows whose text
    matched."""
    if op == "eq":
        if isinstance(value, str):
            return _fill("({xt} = {t} AND {x} = {v})", xt=xt, t=_param(value, "::text"), x=x, v=_json(value))
        return _fill("{x} = {v}", x=x, v=_json(value))
    if op == "neq":
        return _fill("({x} IS NULL OR {x} <> {v})", x=x, v=_json(value))
    if op in _ORDER_OPS:
        sym = _ORDER_OPS[op]
        if _type_of(value) == "number":
            return _fill(f"CASE WHEN jsonb_typeof({{x}}) = 'number' THEN ({{x}})::numeric {sym} {{v}} ELSE false END",
                         x=x, v=_param(str(value), "::numeric"))
        return _fill(f"CASE WHEN jsonb_typeof({{x}}) = 'string' THEN {{xt}} COLLATE \"C\" {sym} {{v}} ELSE false END",
                     x=x, xt=xt, v=_param(value, "::text"))
    if op == "between":
        if _type_of(value[0]) == "number":
            return _fill("CASE WHEN jsonb_typeof({x}) = 'number' THEN ({x})::numeric BETWEEN {lo} AND {hi}"
                         " ELSE false END", x=x, lo=_param(str(value[0]), "::numeric"),
                         hi=_param(str(value[1]), "::numeric"))
        return _fill("CASE WHEN jsonb_typeof({x}) = 'string' THEN {xt} COLLATE \"C\" BETWEEN {lo} AND {hi}"
                     " ELSE false END", x=x, xt=xt, lo=_param(value[0], "::text"), hi=_param(value[1], "::text"))
    if op in ("in", "not_in"):
        # An array parameter, not IN (SELECT jsonb_array_elements(..)): that subquery is a
        # SubPlan, which keeps the whole statement (the profile scan and the semi joins of
        # every EXISTS condition beside it) out of a parallel plan.
        sql, params = _fill("{x} = ANY({v})", x=x, v=_param([json.dumps(v) for v in value], "::jsonb[]"))
        if all(isinstance(v, str) for v in value):
            sql, params = _fill("({xt} = ANY({t}) AND {rest})", xt=xt, t=_param(list(value), "::text[]"),
                                rest=(sql, params))
        return (sql if op == "in" else f"NOT coalesce({sql}, false)"), params
    if op in ("contains", "not_contains"):
        if isinstance(value, str):
            sql, params = _fill("CASE jsonb_typeof({x}) WHEN 'string' THEN strpos({xt}, {s}) > 0"
                                " WHEN 'array' THEN {x} @> jsonb_build_array({v}) ELSE false END",
                                x=x, xt=xt, s=_param(value, "::text"), v=_json(value))
        else:
            sql, params = _fill("CASE jsonb_typeof({x}) WHEN 'array' THEN {x} @> jsonb_build_array({v})"
                                " ELSE false END", x=x, v=_json(value))
        return (sql if op == "contains" else f"NOT coalesce({sql}, false)"), params
    if op in ("starts_with", "ends_with"):
        test = "starts_with({xt}, {v})" if op == "starts_with" else "right({xt}, char_length({v})) = {v}"
        return _fill(f"CASE WHEN jsonb_typeof({{x}}) = 'string' THEN {test} ELSE false END",
                     x=x, xt=xt, v=_param(value, "::text"))
    if op == "exists":
        return _fill("coalesce(jsonb_typeof({x}) <> 'null', false)", x=x)
    if op == "not_exists":
        return _fill("NOT coalesce(jsonb_typeof({x}) <> 'null', false)", x=x)
    if op in ("before", "after"):
        sym = "<" if op == "before" else ">"
        at = parse_time(value)
        if at is None:  # validation refuses such rules before they are compiled
            raise ValueError(f"{op} needs an ISO 8601 time, got {value!r}")
        return _fill(f"CASE WHEN jsonb_typeof({{x}}) = 'string' THEN stratum_try_timestamptz({{xt}}) {sym} {{v}}"
                     " ELSE false END", x=x, xt=xt, v=_param(at.isoformat(), "::timestamptz"))
    # within_last_days
    return _fill("CASE WHEN jsonb_typeof({x}) = 'string' THEN stratum_try_timestamptz({xt})"
                 " BETWEEN now() - make_interval(days => {n}) AND now() ELSE false END",
                 x=x, xt=xt, n=_param(value, "::int"))
