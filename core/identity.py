"""Identity planning: from a batch's identifiers and a snapshot of the affected graph to
a plan (profiles to create, identifiers to link, profiles to merge, identifiers dropped).

Pure: the worker loads the snapshot, calls ``plan_identities`` and applies the plan in one
transaction (workers/identity_store.py). Rules are CONTRACT section 6.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from core.identifiers import KNOWN_TYPES, PRIORITY, Identifier

DEFAULT_TYPE_LIMITS: Mapping[str, int] = {
    "external_id": 1, "email": 5, "phone": 5, "device_id": 10, "anonymous_id": 100,
}
TRUSTED_SOURCE_TYPES = frozenset({"server", "crm", "import", "sgtm"})
_WEAKEST = len(PRIORITY)


@dataclass(frozen=True)
class IdentityRules:
    type_limits: Mapping[str, int] = field(default_factory=lambda: dict(DEFAULT_TYPE_LIMITS))
    max_identifiers: int = 1000
    max_merges: int = 100

    @classmethod
    def from_tenant_settings(cls, settings: Mapping[str, object]) -> IdentityRules:
        limits = dict(DEFAULT_TYPE_LIMITS)
        limits.update({k: int(v) for k, v in dict(settings.get("type_limits") or {}).items() if k in limits})
        return cls(
            type_limits=limits,
            max_identifiers=int(settings.get("max_identifiers", 1000)),
            max_merges=int(settings.get("max_merges", 100)),
        )


@dataclass
class ProfileState:
    """What the planner needs to know of a profile (loaded, or created by this plan)."""

    id: str
    first_seen: datetime
    counts: dict[str, int] = field(default_factory=dict)
    merge_count: int = 0
    new: bool = False

    @property
    def best_priority(self) -> int:
        return min((PRIORITY[t] for t, n in self.counts.items() if n > 0), default=_WEAKEST)

    @property
    def is_known(self) -> bool:
        return any(self.counts.get(t, 0) > 0 for t in KNOWN_TYPES)

    @property
    def total(self) -> int:
        return sum(self.counts.values())


@dataclass(frozen=True)
class Link:
    identifier: Identifier
    profile_id: str
    event_index: int
    # the event's strongest identifier already on the profile (edge source), if any
    via: Identifier | None


@dataclass(frozen=True)
class Merge:
    survivor: str
    absorbed: str
    trigger: Identifier
    event_index: int
    # the event's identifier already on the other side (the edge the merge adds to the graph)
    via: Identifier | None = field(default=None, compare=False)


@dataclass(frozen=True)
class Decision:
    """Something the planner refused to do, recorded with the event."""

    event_index: int
    kind: str  # "limit" | "untrusted_merge" | "merge_limit"
    identifier: Identifier
    message: str

    def as_dict(self) -> dict[str, str]:
        return {"kind": self.kind, "type": self.identifier.type, "hash": self.identifier.hash,
                "message": self.message}


@dataclass
class Plan:
    created: dict[str, ProfileState] = field(default_factory=dict)
    links: list[Link] = field(default_factory=list)
    merges: list[Merge] = field(default_factory=list)
    decisions: list[Decision] = field(default_factory=list)
    event_profiles: list[str | None] = field(default_factory=list)


def _survivor_key(p: ProfileState) -> tuple:
    return (p.best_priority, p.first_seen, p.id)


def plan_identities(
    events: Sequence[tuple[Sequence[Identifier], datetime]],
    graph: Mapping[tuple[str, str], str],
    profiles: Mapping[str, ProfileState],
    rules: IdentityRules,
    *,
    trusted_source: bool,
    new_profile_id: Callable[[], str],
) -> Plan:
    """Plan the identity changes for ``events`` (identifiers, event time), in order.

    ``graph`` maps (type, hash) to the live profile holding it; ``profiles`` holds the state
    of every profile in ``graph``. Neither is modified. Each event ends attributed to one
    profile (``plan.event_profiles``), or None when it had no identifier left.
    """
    owner: dict[tuple[str, str], str] = dict(graph)
    state: dict[str, ProfileState] = {
        pid: ProfileState(p.id, p.first_seen, dict(p.counts), p.merge_count, p.new) for pid, p in profiles.items()
    }
    plan = Plan()
    redirect: dict[str, str] = {}  # absorbed profile -> the profile that absorbed it

    def live(key: tuple[str, str]) -> str | None:
        """The profile holding ``key`` now, following merges made earlier in this plan."""
        pid = owner.get(key)
        while pid in redirect:
            pid = redirect[pid]
        return pid

    def merge(target: str, other: str, trigger: Identifier, via: Identifier | None, index: int) -> str | None:
        """Merge two profiles (survivor by the rule); the survivor, or None if refused."""
        survivor, absorbed = sorted((target, other), key=lambda p: _survivor_key(state[p]))
        s, a = state[survivor], state[absorbed]
        refusal = _merge_refusal(s, a, rules, trusted_source)
        if refusal is not None:
            plan.decisions.append(Decision(index, refusal[0], trigger, refusal[1]))
            return None
        redirect[absorbed] = survivor
        if not a.new:
            plan.merges.append(Merge(survivor, absorbed, trigger, index, via))
            s.merge_count += a.merge_count + 1
        # else: created earlier in this plan, it never reaches the database: nothing to
        # merge, its links and events go straight to the survivor.
        for t, n in a.counts.items():
            s.counts[t] = s.counts.get(t, 0) + n
        s.first_seen = min(s.first_seen, a.first_seen)
        del state[absorbed]
        plan.created.pop(absorbed, None)
        return survivor

    def new_profile(event_time: datetime) -> str:
        pid = new_profile_id()
        state[pid] = plan.created[pid] = ProfileState(pid, event_time, {}, 0, True)
        return pid

    def limit_message(s: ProfileState, ident: Identifier) -> str | None:
        limit = rules.type_limits.get(ident.type, 0)
        if s.counts.get(ident.type, 0) >= limit:
            return f"profile already holds {limit} {ident.type} identifier(s)"
        if s.total >= rules.max_identifiers:
            return f"profile already holds {rules.max_identifiers} identifiers"
        return None

    for index, (identifiers, event_time) in enumerate(events):
        if not identifiers:
            plan.event_profiles.append(None)
            continue
        # Strongest identifier first: when something has to give, the weaker one does
        # (CONTRACT 6: the lowest-priority conflicting identifier is left out).
        ordered = sorted(identifiers, key=lambda i: PRIORITY[i.type])
        target: str | None = None
        anchors: list[Identifier] = []  # the event's identifiers already on the target
        pending: list[Identifier] = []  # identifiers no profile holds yet
        for ident in ordered:
            pid = live((ident.type, ident.hash))
            if pid is None:
                pending.append(ident)
            elif target is None or pid == target:
                target = pid
                anchors.append(ident)
            else:
                merged = merge(target, pid, ident, anchors[0] if anchors else None, index)
                if merged is not None:
                    target = merged
                    anchors.append(ident)

        if target is None:
            target = new_profile(event_time)
        elif pending and (conflict := _outranking_conflict(state[target], anchors, pending, rules)) is not None:
            # A new identifier that the profile has no room for outranks everything tying
            # the event to that profile (a shared device seen with a second user id): the
            # weaker anchors are left out instead, and the event gets a profile of its own.
            for a in anchors:
                plan.decisions.append(Decision(index, "limit", a, f"left out: the event's {conflict.type} "
                                                                  "does not fit on the profile this identifier is on"))
            target, anchors = new_profile(event_time), []
        for ident in pending:
            s = state[target]
            message = limit_message(s, ident)
            if message is not None:
                plan.decisions.append(Decision(index, "limit", ident, message))
                continue
            owner[(ident.type, ident.hash)] = target
            s.counts[ident.type] = s.counts.get(ident.type, 0) + 1
            plan.links.append(Link(ident, target, index, anchors[0] if anchors else None))
            anchors.append(ident)
        s = state[target]
        if event_time < s.first_seen:
            s.first_seen = event_time
        plan.event_profiles.append(target)

    # A merge can absorb a profile that an earlier event of the batch was attributed to.
    def final(pid: str | None) -> str | None:
        while pid in redirect:
            pid = redirect[pid]
        return pid

    plan.event_profiles = [final(p) for p in plan.event_profiles]
    plan.links = [Link(lk.identifier, final(lk.profile_id), lk.event_index, lk.via) for lk in plan.links]
    plan.merges = [Merge(final(m.survivor), m.absorbed, m.trigger, m.event_index, m.via) for m in plan.merges]
    return plan


def _outranking_conflict(profile: ProfileState, anchors: list[Identifier], pending: list[Identifier],
                         rules: IdentityRules) -> Identifier | None:
    """The first new identifier that would not fit on ``profile`` and outranks every anchor
    (the event's identifiers already on it), or None."""
    counts, total = dict(profile.counts), profile.total
    strongest_anchor = min(PRIORITY[a.type] for a in anchors)
    for ident in pending:
        full = counts.get(ident.type, 0) >= rules.type_limits.get(ident.type, 0) or total >= rules.max_identifiers
        if full:
            if PRIORITY[ident.type] < strongest_anchor:
                return ident
            continue
        counts[ident.type] = counts.get(ident.type, 0) + 1
        total += 1
    return None


def _merge_refusal(survivor: ProfileState, absorbed: ProfileState, rules: IdentityRules,
                   trusted_source: bool) -> tuple[str, str] | None:
    if not trusted_source and survivor.is_known and absorbed.is_known:
        return ("untrusted_merge",
                "a website source may not merge two profiles that both hold an email, phone or external_id")
    for t in set(survivor.counts) | set(absorbed.counts):
        combined = survivor.counts.get(t, 0) + absorbed.counts.get(t, 0)
        if combined > rules.type_limits.get(t, 0):
            return ("limit", f"merging would give the profile {combined} {t} identifiers (limit "
                             f"{rules.type_limits.get(t, 0)})")
    if survivor.total + absorbed.total > rules.max_identifiers:
        return ("limit", f"merging would exceed {rules.max_identifiers} identifiers per profile")
    if survivor.merge_count + absorbed.merge_count + 1 > rules.max_merges:
        return ("merge_limit", f"profile has reached {rules.max_merges} merges")
    return None
