"""Identity rule dry-run (CONTRACT 9): replay stored events through the planner under the
current rules and under proposed ones, onto an empty graph, and compare. Pure.

Both replays run side by side over one stream of events, each a single
``IdentityPlanner`` that is never asked for a plan: after every event its output lists are
counted and emptied, and the profiles it created are marked as stored, so that a later
merge of two of them counts as a merge (the planner only records merges of stored
profiles). Memory is the two in-memory graphs (identifiers and live profiles), never the
events.

Proposed rules (``parse_rules``), any subset, over the tenant's: ``limits`` (per type),
``priority`` (every type once, strongest first) and ``blocked_values`` (literal values,
compared by the hash each type would give them). The planner ranks types by one fixed
order, so a proposed priority replays by relabelling types onto the slots of that order
(and their limits with them); the trust rules depend on which types are email, phone or
external_id, so a priority must keep those three above device_id and anonymous_id.
"""

from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from core.errors import BlockedIdentifier, InvalidIdentifier
from core.identifiers import KNOWN_TYPES, PRIORITY, Identifier, normalize_identifier
from core.identity import IdentityPlanner, IdentityRules
from core.identity_plan import EventIdentity

MAX_EXAMPLES = 20
_BY_RANK = sorted(PRIORITY, key=PRIORITY.__getitem__)


class InvalidRules(ValueError):
    """The proposed rules are malformed; ``field`` names the bad part."""

    def __init__(self, field_: str, message: str) -> None:
        super().__init__(message)
        self.field = field_
        self.message = message


@dataclass(frozen=True)
class ProposedRules:
    rules: IdentityRules
    relabel: Mapping[str, str]  # stored type -> the planner's type of the same rank
    blocked: frozenset[tuple[str, str]]  # (type, hash)


@dataclass(frozen=True)
class StoredEvent:
    event_id: str
    time: datetime  # state time
    identifiers: list[tuple[str, str]]  # (type, hash) as stored
    trusted: bool  # a server-side source


def _blocked_hashes(values: Iterable[Any]) -> frozenset[tuple[str, str]]:
    out: set[tuple[str, str]] = set()
    for value in values:
        for id_type in PRIORITY:
            try:
                ident = normalize_identifier(id_type, str(value))
            except (InvalidIdentifier, BlockedIdentifier):
                continue  # not a value of this type, or blocked for everyone already
            out.add((ident.type, ident.hash))
    return frozenset(out)


def parse_rules(current: IdentityRules, proposed: Mapping[str, Any]) -> ProposedRules:
    """Proposed rules over ``current``; raises InvalidRules."""
    unknown = set(proposed) - {"limits", "priority", "blocked_values"}
    if unknown:
        raise InvalidRules(f"rules.{sorted(unknown)[0]}", "rules take only limits, priority and blocked_values")
    limits = dict(current.type_limits)
    raw_limits = proposed.get("limits") or {}
    if not isinstance(raw_limits, dict):
        raise InvalidRules("rules.limits", "limits must be an object of type -> count")
    for id_type, n in raw_limits.items():
        if id_type not in PRIORITY or not isinstance(n, int) or isinstance(n, bool) or not 0 <= n <= 100_000:
            raise InvalidRules(f"rules.limits.{id_type}", "limits map an identifier type to a count 0..100000")
        limits[id_type] = n
    priority = proposed.get("priority") or _BY_RANK
    if not isinstance(priority, list) or sorted(map(str, priority)) != sorted(PRIORITY):
        raise InvalidRules("rules.priority", f"priority lists each of {', '.join(_BY_RANK)} once, strongest first")
    if any(t not in KNOWN_TYPES for t in priority[:len(KNOWN_TYPES)]):
        raise InvalidRules("rules.priority", "email, phone and external_id must rank above device_id and "
                                             "anonymous_id (the trust rules depend on them)")
    relabel = {t: _BY_RANK[rank] for rank, t in enumerate(priority)}
    blocked_raw = proposed.get("blocked_values") or []
    if not isinstance(blocked_raw, list) or len(blocked_raw) > 10_000:
        raise InvalidRules("rules.blocked_values", "blocked_values is a list of at most 10000 values")
    rules = IdentityRules({relabel[t]: n for t, n in limits.items()}, current.max_identifiers, current.max_merges)
    return ProposedRules(rules, relabel, _blocked_hashes(blocked_raw))


@dataclass
class Replay:
    """One side of the dry-run: a planner over an empty graph, and what it did."""

    rules: IdentityRules
    relabel: Mapping[str, str] = field(default_factory=dict)
    blocked: frozenset[tuple[str, str]] = frozenset()
    merges: int = 0
    decisions: Counter = field(default_factory=Counter)
    planner: IdentityPlanner = field(init=False)

    def __post_init__(self) -> None:
        ids = itertools.count()
        self.planner = IdentityPlanner({}, {}, self.rules, lambda: f"p{next(ids)}")

    def add(self, event: StoredEvent) -> tuple[tuple[str, str], ...]:
        """Plan one event; return what it did beyond linking (merges and refusals)."""
        idents = [Identifier(self.relabel.get(t, t), h, h) for t, h in event.identifiers if (t, h) not in self.blocked]
        planner = self.planner
        plan = planner.plan
        planner.add_event(0, EventIdentity(idents, event.time, event.trusted))
        for p in plan.created.values():
            p.new = False  # as if stored: a later merge of it is a merge
        back = {v: k for k, v in self.relabel.items()}
        outcome = tuple(sorted([("merge", back.get(m.trigger.type, m.trigger.type)) for m in plan.merges]
                               + [(d.kind, back.get(d.identifier.type, d.identifier.type)) for d in plan.decisions]))
        self.merges += len(plan.merges)
        self.decisions.update(d.kind for d in plan.decisions)
        for name in ("merges", "links", "moves", "decisions", "event_profiles"):
            getattr(plan, name).clear()
        plan.created.clear()
        plan.confirmed.clear()
        return outcome

    @property
    def profiles(self) -> int:
        return len(self.planner.state)


@dataclass
class DryRunResult:
    events: int = 0
    examples: list[dict[str, Any]] = field(default_factory=list)
    truncated: bool = False


def dry_run(events: Iterable[StoredEvent], now: Replay, would_be: Replay, *, max_events: int,
            out_of_time: Any = lambda: False) -> DryRunResult:
    """Replay ``events`` (in order) through both sides; stop after ``max_events`` or when
    ``out_of_time()`` says so (then ``truncated``). Examples: the first events whose merges
    or refusals differ between the two sides."""
    result = DryRunResult()
    for event in events:
        if result.events >= max_events or (result.events % 1000 == 0 and out_of_time()):
            result.truncated = True
            break
        result.events += 1
        a, b = now.add(event), would_be.add(event)
        if a != b and len(result.examples) < MAX_EXAMPLES:
            result.examples.append({"event_id": event.event_id, "identifiers": [
                {"type": t, "hash": h} for t, h in event.identifiers],
                "now": [{"kind": k, "type": t} for k, t in a], "would_be": [{"kind": k, "type": t} for k, t in b]})
    return result
