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


@dataclass(frozen=True)
class EventIdentity:
    """One event as the planner sees it: its identifiers, its time, and how far its claims
    can be trusted."""

    identifiers: Sequence[Identifier]
    time: datetime
    # a server-side source (TRUSTED_SOURCE_TYPES): may merge two known profiles
    trusted: bool = True


@dataclass(frozen=True)
class _Claim:
    """One identifier of the event and the profile holding it before the event (None: new)."""

    ident: Identifier
    profile: str | None


@dataclass
class _Combined:
    """What the event's profile would look like after the merges and links kept so far."""

    profiles: list[str] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)
    total: int = 0
    merge_count: int = 0
    # only held profiles count here: linking a new email to a profile merges nothing
    known: bool = False

    def add_identifier(self, id_type: str) -> None:
        self.counts[id_type] = self.counts.get(id_type, 0) + 1
        self.total += 1


@dataclass
class _Kept:
    """The outcome of deciding what is left out: the claims the event may act on."""

    held: list[_Claim] = field(default_factory=list)  # on a profile; their profiles are merged
    new: list[Identifier] = field(default_factory=list)  # on no profile yet; linked


class IdentityPlanner:
    """Plans a batch event by event, in four named steps per event:

    1. ``choose_anchors``: which profile holds each identifier now, strongest first;
    2. ``decide_left_out``: walking those claims, what must be left out so that no limit or
       trust rule breaks (CONTRACT 6), before anything changes;
    3. ``merge``: the profiles of the kept claims become one;
    4. ``link``: the kept new identifiers join that profile.

    Because step 2 finishes before step 3 starts, a left-out identifier never causes a link
    or a merge for its event. The planner works on copies: its inputs are never modified.
    """

    def __init__(self, graph: Mapping[tuple[str, str], str], profiles: Mapping[str, ProfileState],
                 rules: IdentityRules, new_profile_id: Callable[[], str]) -> None:
        self.rules = rules
        self.new_profile_id = new_profile_id
        self.owner: dict[tuple[str, str], str] = dict(graph)
        self.state: dict[str, ProfileState] = {
            pid: ProfileState(p.id, p.first_seen, dict(p.counts), p.merge_count, p.new) for pid, p in profiles.items()
        }
        self.redirect: dict[str, str] = {}  # absorbed profile -> the profile that absorbed it
        self.plan = Plan()

    def live(self, key: tuple[str, str]) -> str | None:
        """The profile holding ``key`` now, following merges made earlier in this plan."""
        return self._final(self.owner.get(key))

    def _final(self, pid: str | None) -> str | None:
        while pid in self.redirect:
            pid = self.redirect[pid]
        return pid

    def add_event(self, index: int, event: EventIdentity) -> None:
        if not event.identifiers:
            self.plan.event_profiles.append(None)
            return
        kept = self.decide_left_out(index, event, self.choose_anchors(event))
        target = self.merge(index, kept)
        target = self.link(index, event, target, kept)
        self.plan.event_profiles.append(target)

    def choose_anchors(self, event: EventIdentity) -> list[_Claim]:
        """The event's identifiers with their current profiles, in the order they are decided:
        strongest type first (when something has to give, the weaker one does), and within a
        type those already on a profile before new ones (the one seen later gives way)."""
        claims = [_Claim(i, self.live((i.type, i.hash))) for i in event.identifiers]
        order = {id(c): n for n, c in enumerate(claims)}
        return sorted(claims, key=lambda c: (PRIORITY[c.ident.type], c.profile is None, order[id(c)]))

    def decide_left_out(self, index: int, event: EventIdentity, claims: list[_Claim]) -> _Kept:
        """Walk the claims, keeping each one that fits the profile the kept ones so far would
        form; record a decision for each one left out. Changes nothing but ``plan.decisions``."""
        combined, kept = _Combined(), _Kept()
        refused: dict[str, tuple[str, str]] = {}  # profile -> (kind, message) of its refusal
        for claim in claims:
            pid = claim.profile
            if pid is None:
                message = self._limit_message(combined.counts, combined.total, claim.ident.type)
                if message is not None:
                    self._decide(index, "limit", claim.ident, message)
                    continue
                combined.add_identifier(claim.ident.type)
                kept.new.append(claim.ident)
                continue
            if pid not in combined.profiles:
                refusal = refused.get(pid) or self._join_refusal(combined, self.state[pid], event.trusted)
                if refusal is not None:
                    refused[pid] = refusal
                    self._decide(index, refusal[0], claim.ident, refusal[1])
                    continue
                self._join(combined, self.state[pid])
            kept.held.append(claim)
        return kept

    def merge(self, index: int, kept: _Kept) -> str | None:
        """Merge the profiles of the kept claims into one (survivor by the rule); return it,
        or None when no kept claim is on a profile."""
        if not kept.held:
            return None
        first_claim: dict[str, Identifier] = {}  # profile -> the event's strongest identifier on it
        for claim in kept.held:
            first_claim.setdefault(claim.profile, claim.ident)
        survivor = min(first_claim, key=lambda p: _survivor_key(self.state[p]))
        s = self.state[survivor]
        for absorbed, trigger in first_claim.items():
            if absorbed == survivor:
                continue
            a = self.state.pop(absorbed)
            self.redirect[absorbed] = survivor
            if not a.new:
                self.plan.merges.append(Merge(survivor, absorbed, trigger, index, first_claim[survivor]))
                s.merge_count += a.merge_count + 1
            # else: created earlier in this plan, it never reaches the database: nothing to
            # merge, its links and events go straight to the survivor.
            for t, n in a.counts.items():
                s.counts[t] = s.counts.get(t, 0) + n
            s.first_seen = min(s.first_seen, a.first_seen)
            self.plan.created.pop(absorbed, None)
        return survivor

    def link(self, index: int, event: EventIdentity, target: str | None, kept: _Kept) -> str:
        """Link the kept new identifiers to ``target`` (a new profile when None); return the
        event's profile. ``decide_left_out`` made sure they fit."""
        if target is None:
            target = self.new_profile_id()
            self.state[target] = self.plan.created[target] = ProfileState(target, event.time, {}, 0, True)
        s = self.state[target]
        via = kept.held[0].ident if kept.held else None
        for ident in kept.new:
            self.owner[(ident.type, ident.hash)] = target
            s.counts[ident.type] = s.counts.get(ident.type, 0) + 1
            self.plan.links.append(Link(ident, target, index, via))
            via = via or ident
        if event.time < s.first_seen:
            s.first_seen = event.time
        return target

    def finish(self) -> Plan:
        """The plan, with every profile id resolved to its final survivor (a merge can absorb
        a profile that an earlier event of the batch was attributed to)."""
        plan, final = self.plan, self._final
        plan.event_profiles = [final(p) for p in plan.event_profiles]
        plan.links = [Link(lk.identifier, final(lk.profile_id), lk.event_index, lk.via) for lk in plan.links]
        plan.merges = [Merge(final(m.survivor), m.absorbed, m.trigger, m.event_index, m.via) for m in plan.merges]
        return plan

    def _decide(self, index: int, kind: str, ident: Identifier, message: str) -> None:
        self.plan.decisions.append(Decision(index, kind, ident, message))

    def _limit_message(self, counts: Mapping[str, int], total: int, id_type: str) -> str | None:
        limit = self.rules.type_limits.get(id_type, 0)
        if counts.get(id_type, 0) >= limit:
            return f"profile already holds {limit} {id_type} identifier(s)"
        if total >= self.rules.max_identifiers:
            return f"profile already holds {self.rules.max_identifiers} identifiers"
        return None

    def _join_refusal(self, combined: _Combined, p: ProfileState, trusted: bool) -> tuple[str, str] | None:
        """Why ``p`` may not join the profiles kept so far (None when it may, or is the first)."""
        if not combined.profiles and not combined.total:
            return None
        joined = ProfileState("", p.first_seen, dict(combined.counts), combined.merge_count)
        # Kept new identifiers alone are no profile yet: joining them is no merge.
        return _merge_refusal(joined, p, self.rules, trusted, known=combined.known,
                              merging=bool(combined.profiles))

    @staticmethod
    def _join(combined: _Combined, p: ProfileState) -> None:
        if combined.profiles:
            combined.merge_count += 1
        combined.profiles.append(p.id)
        combined.merge_count += p.merge_count
        for t, n in p.counts.items():
            combined.counts[t] = combined.counts.get(t, 0) + n
        combined.total += p.total
        combined.known = combined.known or p.is_known


def plan_identities(
    events: Sequence[EventIdentity | tuple[Sequence[Identifier], datetime]],
    graph: Mapping[tuple[str, str], str],
    profiles: Mapping[str, ProfileState],
    rules: IdentityRules,
    *,
    new_profile_id: Callable[[], str],
    trusted_source: bool = True,
) -> Plan:
    """Plan the identity changes for ``events``, in order.

    An event is an ``EventIdentity`` or an (identifiers, event time) pair, which takes
    ``trusted_source``. ``graph`` maps (type, hash) to the live profile holding it;
    ``profiles`` holds the state of every profile in ``graph``. Neither is modified. Each
    event ends attributed to one profile (``plan.event_profiles``), or None when it had no
    identifier.
    """
    planner = IdentityPlanner(graph, profiles, rules, new_profile_id)
    for index, event in enumerate(events):
        if not isinstance(event, EventIdentity):
            event = EventIdentity(event[0], event[1], trusted_source)
        planner.add_event(index, event)
    return planner.finish()


def _merge_refusal(survivor: ProfileState, absorbed: ProfileState, rules: IdentityRules,
                   trusted_source: bool, *, known: bool | None = None,
                   merging: bool = True) -> tuple[str, str] | None:
    """(decision kind, message) when the two may not be merged, else None. ``known`` overrides
    whether ``survivor`` counts as known (identifiers about to be linked do not); without
    ``merging``, only the identifier limits apply."""
    survivor_known = survivor.is_known if known is None else known
    if not trusted_source and survivor_known and absorbed.is_known:
        return ("untrusted_merge",
                "a website source may not merge two profiles that both hold an email, phone or external_id")
    for t in set(survivor.counts) | set(absorbed.counts):
        combined = survivor.counts.get(t, 0) + absorbed.counts.get(t, 0)
        if combined > rules.type_limits.get(t, 0):
            return ("limit", f"merging would give the profile {combined} {t} identifiers (limit "
                             f"{rules.type_limits.get(t, 0)})")
    if survivor.total + absorbed.total > rules.max_identifiers:
        return ("limit", f"merging would exceed {rules.max_identifiers} identifiers per profile")
    if merging and survivor.merge_count + absorbed.merge_count + 1 > rules.max_merges:
        return ("merge_limit", f"profile has reached {rules.max_merges} merges")
    return None
