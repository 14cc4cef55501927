"""Identity planning: from a batch's identifiers and a snapshot of the affected graph to
a plan (profiles to create, identifiers to link or move, profiles to merge, identifiers left
out with their decisions).

Pure: the worker loads the snapshot, calls ``plan_identities`` and applies the plan in one
transaction (workers/identity_store.py). Rules are CONTRACT section 6: identity rules, trust,
verified identity, public keys cannot fill a profile, order.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any, overload

from core.identifiers import KNOWN_TYPES, PRIORITY, Identifier
from core.identity_plan import (
    MAX_EVENT_DECISIONS,
    Apart,
    Decision,
    EventIdentity,
    Link,
    Merge,
    Move,
    Plan,
    ProfileState,
    summarize_decisions,
)

__all__ = [
    "DEFAULT_TYPE_LIMITS", "MAX_EVENT_DECISIONS", "TRUSTED_SOURCE_TYPES", "Apart", "Decision", "EventIdentity",
    "IdentityPlanner", "IdentityRules", "Link", "Merge", "Move", "Plan", "ProfileState", "plan_identities",
    "summarize_decisions",
]

DEFAULT_TYPE_LIMITS: Mapping[str, int] = {
    "external_id": 1, "email": 5, "phone": 5, "device_id": 10, "anonymous_id": 100,
}
TRUSTED_SOURCE_TYPES = frozenset({"server", "crm", "import", "sgtm"})


@dataclass(frozen=True)
class IdentityRules:
    type_limits: Mapping[str, int] = field(default_factory=lambda: dict(DEFAULT_TYPE_LIMITS))
    max_identifiers: int = 1000
    max_merges: int = 100

    @classmethod
    def from_tenant_settings(cls, settings: Mapping[str, Any]) -> IdentityRules:
        """The rules of a tenant's ``settings`` (decoded JSON, validated when written)."""
        limits = dict(DEFAULT_TYPE_LIMITS)
        limits.update({k: int(v) for k, v in dict(settings.get("type_limits") or {}).items() if k in limits})
        return cls(
            type_limits=limits,
            max_identifiers=int(settings.get("max_identifiers", 1000)),
            max_merges=int(settings.get("max_merges", 100)),
        )


def _survivor_key(p: ProfileState) -> tuple:
    return (p.best_priority, p.first_seen, p.id)


def _decision_order(c: _Claim) -> tuple:
    return (c.unverified, PRIORITY[c.ident.type], c.profile is None, c.position)


@dataclass(slots=True)
class _Claim:
    """One identifier of the event and the profile holding it before the event."""

    ident: Identifier
    profile: str | None  # None: on no profile, or moving off one (``moving_from``)
    authoritative: bool
    unverified: bool  # an unverified claim under protect
    provisional: bool
    position: int  # in the event
    moving_from: str | None = None

    @property
    def key(self) -> tuple[str, str]:
        return (self.ident.type, self.ident.hash)


@dataclass(slots=True)
class _Combined:
    """What the event's profile would look like after the merges and links kept so far."""

    profiles: list[str] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)
    total: int = 0
    merge_count: int = 0
    # only held profiles count here: linking a new email to a profile merges nothing
    known: bool = False

    def add_identifier(self, id_type: str, n: int = 1) -> None:
        self.counts[id_type] = self.counts.get(id_type, 0) + n
        self.total += n


@dataclass(slots=True)
class _Kept:
    """The outcome of deciding what is left out: what the event may act on."""

    held: list[_Claim] = field(default_factory=list)  # on a profile; their profiles are merged
    new: list[_Claim] = field(default_factory=list)  # linked (or moved) to the event's profile
    displaced: list[tuple[str, str]] = field(default_factory=list)  # provisional, to a profile of its own


class IdentityPlanner:
    """Plans a batch event by event, in four named steps per event:

    1. ``choose_anchors``: which profile holds each identifier now, in decision order;
    2. ``decide_left_out``: walking those claims, what must be left out so that no limit,
       trust or verification rule breaks (CONTRACT 6), before anything changes;
    3. ``merge``: the profiles of the kept claims become one;
    4. ``link``: the kept new identifiers join that profile, provisional ones move to it,
       displaced ones leave it.

    Because step 2 finishes before step 3 starts, a left-out identifier never causes a link
    or a merge for its event. The planner works on copies: its inputs are never modified.
    """

    def __init__(self, graph: Mapping[tuple[str, str], str], profiles: Mapping[str, ProfileState],
                 rules: IdentityRules, new_profile_id: Callable[[], str],
                 apart: Sequence[Apart] = (), settled: Mapping[int, str] | None = None) -> None:
        self.rules = rules
        self.apart = apart
        self.settled = settled or {}
        self.new_profile_id = new_profile_id
        self.owner: dict[tuple[str, str], str] = dict(graph)
        self.state: dict[str, ProfileState] = {pid: p.copy() for pid, p in profiles.items()}
        self.redirect: dict[str, str] = {}  # absorbed profile -> the profile that absorbed it
        # ranks of provisional links made here: after every loaded one
        self.next_rank = 1 + max((r for p in profiles.values() for r in p.provisional.values()), default=0)
        self.plan = Plan()

    def live(self, key: tuple[str, str]) -> str | None:
        """The profile holding ``key`` now, following merges made earlier in this plan."""
        return self._final(self.owner.get(key))

    @overload
    def _final(self, pid: str) -> str: ...
    @overload
    def _final(self, pid: None) -> None: ...
    @overload
    def _final(self, pid: str | None) -> str | None: ...

    def _final(self, pid: str | None) -> str | None:
        while pid in self.redirect:
            pid = self.redirect[pid]
        return pid

    def add_event(self, index: int, event: EventIdentity) -> None:
        settled = self.settled.get(index)
        if settled is not None:  # on a profile no event of the batch can change (plan_identities)
            self.plan.event_profiles.append(settled)
            return
        known_profile = self._only_holder(event)
        if known_profile is not None:  # the common case, with nothing to decide
            s = self.state[known_profile]
            s.first_seen = min(s.first_seen, event.time)
            self.plan.event_profiles.append(known_profile)
            return
        kept = self.decide_left_out(index, event, self.choose_anchors(event)) if event.identifiers else _Kept()
        target = self.merge(index, kept)
        self.plan.event_profiles.append(self.link(index, event, target, kept))

    def _only_holder(self, event: EventIdentity) -> str | None:
        """The profile holding every identifier of the event, when no rule can apply to it
        (nothing new, nothing to merge, no claim to check, nothing provisional), else None."""
        if event.protect and not event.trusted:
            return None
        pid = None
        owner, redirect = self.owner, self.redirect
        for ident in event.identifiers:
            holder = owner.get((ident.type, ident.hash))  # self.live(), inlined: once per event
            while holder in redirect:
                holder = redirect[holder]
            if holder is None or (pid is not None and holder != pid):
                return None
            pid = holder
        if pid is not None and self.state[pid].provisional:
            provisional = self.state[pid].provisional
            if any((i.type, i.hash) in provisional for i in event.identifiers):
                return None
        return pid

    def choose_anchors(self, event: EventIdentity) -> list[_Claim]:
        """The event's identifiers with their current profiles, in the order they are decided:
        under protect, the home's claims (verified ones, anonymous_id, device_id) before
        unverified ones; then strongest type first (when something has to give, the weaker
        one does); within a type, those already on a profile first (the one seen later gives
        way)."""
        trusted, verified = event.trusted, event.verified
        protected = event.protect and not trusted
        claims = []
        for n, ident in enumerate(event.identifiers):
            key = (ident.type, ident.hash)
            pid = self.live(key)
            signed = key in verified
            provisional = pid is not None and key in self.state[pid].provisional
            claims.append(_Claim(ident, pid, trusted or signed,
                                 protected and not signed and ident.type in KNOWN_TYPES, provisional, n))
        if any(c.provisional for c in claims):
            self._find_moves(claims)
        claims.sort(key=_decision_order)
        return claims

    @staticmethod
    def _find_moves(claims: list[_Claim]) -> None:
        """A provisional identifier that a trusted claim carries together with another
        profile's (non-provisional) known identifier moves to that profile instead of
        merging the two: it becomes a new claim of the event."""
        firm = {c.profile for c in claims
                if c.profile is not None and c.authoritative and not c.provisional and c.ident.type in KNOWN_TYPES}
        for c in claims:
            if c.provisional and c.authoritative and firm - {c.profile}:
                c.moving_from, c.profile = c.profile, None

    def decide_left_out(self, index: int, event: EventIdentity, claims: list[_Claim]) -> _Kept:
        """Walk the claims, keeping each one that fits the profile the kept ones so far would
        form; record a decision for each one left out. Changes nothing but ``plan.decisions``."""
        combined, kept = _Combined(), _Kept()
        refused: dict[str, tuple[str, str]] = {}  # profile -> (kind, message) of its refusal
        moving_out: dict[str, list[str]] = {}  # profile -> types of the claims moving off it
        for c in claims:
            if c.moving_from is not None:
                moving_out.setdefault(c.moving_from, []).append(c.ident.type)
        for claim in claims:
            if claim.unverified and not self._unverified_claim_fits(index, claim, combined, kept):
                continue
            pid = claim.profile
            if pid is None:
                self._keep_new(index, event, claim, combined, kept)
                continue
            if pid not in combined.profiles:
                if self._kept_apart(index, claim, [*combined.profiles, pid], kept):
                    continue
                joining = self._state_without(pid, moving_out[pid]) if pid in moving_out else self.state[pid]
                refusal = refused.get(pid) or self._join_making_room(combined, joining, event, kept)
                if refusal is not None:
                    refused[pid] = refusal
                    self._decide(index, refusal[0], claim.ident, refusal[1])
                    continue
                self._join(combined, joining)
            kept.held.append(claim)
        return kept

    def _unverified_claim_fits(self, index: int, claim: _Claim, combined: _Combined, kept: _Kept) -> bool:
        """The protect rule: an unverified claim is an ordinary match on the event's home
        profile (or a new identifier for it), and left out anywhere else."""
        if claim.profile is not None and claim.profile not in combined.profiles:
            self._decide(index, "unverified_claim", claim.ident,
                         f"unverified {claim.ident.type} held by another profile: left out (sign it to link it)")
            return False
        if claim.profile is None and not (kept.held or kept.new):
            self._decide(index, "unverified_claim", claim.ident,
                         f"unverified {claim.ident.type} and no verified identifier, anonymous_id or device_id "
                         "to attach it to: left out")
            return False
        return True

    def _keep_new(self, index: int, event: EventIdentity, claim: _Claim, combined: _Combined, kept: _Kept) -> None:
        """Keep a claim that is on no profile (or moves) if the profile has room; at a type
        limit, a trusted claim displaces the latest provisional identifier of that type."""
        t = claim.ident.type
        if self._kept_apart(index, claim, combined.profiles, kept):
            return
        message = self._limit_message(combined.counts, combined.total, t)
        if message is not None:
            at_type_limit = combined.counts.get(t, 0) >= self.rules.type_limits.get(t, 0)
            displaced = self._displaceable(combined, t, event, kept) if claim.authoritative and at_type_limit else None
            if displaced is None:
                self._decide(index, "limit", claim.ident, message)
                return
            kept.displaced.append(displaced)
            combined.add_identifier(t, -1)
        combined.add_identifier(t)
        kept.new.append(claim)

    def _displaceable(self, combined: _Combined, id_type: str, event: EventIdentity,
                      kept: _Kept) -> tuple[str, str] | None:
        """The most recently linked provisional identifier of ``id_type`` on the profiles kept
        so far that this event does not carry, or None."""
        found = self._provisional_of(id_type, [self.state[p] for p in combined.profiles], event, kept)
        return found[0] if found else None

    @staticmethod
    def _provisional_of(id_type: str, profiles: Sequence[ProfileState], event: EventIdentity,
                        kept: _Kept) -> list[tuple[str, str]]:
        """Provisional identifiers of ``id_type`` on ``profiles`` that the event neither
        carries nor already displaces, most recently linked first."""
        carried = {(i.type, i.hash) for i in event.identifiers} | set(kept.displaced)
        found = [(rank, k) for p in profiles for k, rank in p.provisional.items()
                 if k[0] == id_type and k not in carried]
        return [k for _rank, k in sorted(found, reverse=True)]

    def _join_making_room(self, combined: _Combined, joining: ProfileState, event: EventIdentity,
                          kept: _Kept) -> tuple[str, str] | None:
        """Why ``joining`` may not join what is kept so far, or None. Where only a type limit
        stands in the way and the event's kept trusted new identifiers of that type outnumber
        the excess, the excess of provisional identifiers is displaced instead."""
        refusal = self._join_refusal(combined, joining, event.may_merge_known)
        if refusal is None or refusal[0] != "limit":
            return refusal
        room: list[tuple[str, str]] = []
        for t in set(combined.counts) | set(joining.counts):
            excess = combined.counts.get(t, 0) + joining.counts.get(t, 0) - self.rules.type_limits.get(t, 0)
            if excess <= 0:
                continue
            newcomers = sum(1 for c in kept.new if c.ident.type == t and c.authoritative)
            candidates = self._provisional_of(t, [self.state[p] for p in combined.profiles] + [joining], event, kept)
            if newcomers < excess or len(candidates) < excess:
                return refusal
            room.extend(candidates[:excess])
        trial = _Combined(list(combined.profiles), dict(combined.counts), combined.total, combined.merge_count,
                          combined.known)
        for k in room:
            trial.add_identifier(k[0], -1)
        if not room or self._join_refusal(trial, joining, event.may_merge_known) is not None:
            return refusal
        kept.displaced.extend(room)
        for k in room:
            combined.add_identifier(k[0], -1)
        return None

    def merge(self, index: int, kept: _Kept) -> str | None:
        """Merge the profiles of the kept claims into one (survivor by the rule); return it,
        or None when no kept claim is on a profile."""
        if not kept.held:
            return None
        first_claim: dict[str, Identifier] = {}  # profile -> the event's strongest identifier on it
        for claim in kept.held:
            if claim.profile is not None:  # always, for a held claim
                first_claim.setdefault(claim.profile, claim.ident)
        if len(first_claim) == 1:
            return kept.held[0].profile
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
            s.provisional.update(a.provisional)
            s.first_seen = min(s.first_seen, a.first_seen)
            self.plan.created.pop(absorbed, None)
        return survivor

    def link(self, index: int, event: EventIdentity, target: str | None, kept: _Kept) -> str | None:
        """Link the kept new identifiers to ``target`` (a new profile when None), move the
        kept provisional ones to it and the displaced ones off it; return the event's profile
        (None when nothing of the event was kept: no home). ``decide_left_out`` made sure
        everything fits."""
        if target is None:
            if not kept.new:
                return None
            target = self._new_profile(event.time)
        s = self.state[target]
        for claim in kept.held:
            if claim.provisional and claim.authoritative:
                s.provisional.pop(claim.key, None)
                self.plan.confirmed.add(claim.key)
        for key in kept.displaced:
            self._displace(index, event, key, target)
        via = kept.held[0].ident if kept.held else None
        for claim in kept.new:
            if claim.moving_from is not None:
                self._move(index, claim, claim.moving_from, target, via)
            else:
                self.owner[claim.key] = target
                s.counts[claim.ident.type] = s.counts.get(claim.ident.type, 0) + 1
                if claim.unverified:
                    s.provisional[claim.key] = self.next_rank
                    self.next_rank += 1
                self.plan.links.append(Link(claim.ident, target, index, via, claim.unverified))
            via = via or claim.ident
        if event.time < s.first_seen:
            s.first_seen = event.time
        return target

    def _new_profile(self, first_seen: datetime) -> str:
        pid = self.new_profile_id()
        self.state[pid] = self.plan.created[pid] = ProfileState(pid, first_seen, {}, 0, True)
        return pid

    def _move(self, index: int, claim: _Claim, moving_from: str, target: str, via: Identifier | None) -> None:
        """A provisional identifier joins ``target`` from ``moving_from`` (its profile before
        the event), no longer provisional (no merge)."""
        source = self._final(moving_from)
        self.plan.confirmed.add(claim.key)
        if source == target:  # its profile joined the event's profile anyway
            self.state[target].provisional.pop(claim.key, None)
            return
        s, t = self.state[source], claim.ident.type
        s.counts[t] -= 1
        s.provisional.pop(claim.key, None)
        self.state[target].counts[t] = self.state[target].counts.get(t, 0) + 1
        self.owner[claim.key] = target
        self.plan.moves.append(Move(claim.ident, source, target, index, via, provisional=False))
        self._decide(index, "unverified_claim", claim.ident,
                     f"moved off a profile that only unverified claims linked this {t} to")

    def _displace(self, index: int, event: EventIdentity, key: tuple[str, str], target: str) -> None:
        """Move a provisional identifier off ``target`` to a profile of its own."""
        s, t = self.state[target], key[0]
        rank = s.provisional.pop(key)
        s.counts[t] -= 1
        pid = self._new_profile(event.time)
        self.state[pid].counts[t] = 1
        self.state[pid].provisional[key] = rank
        self.owner[key] = pid
        ident = Identifier(t, "", key[1])  # stored identifiers are known by their hash only
        self.plan.moves.append(Move(ident, target, pid, index, None, provisional=True))
        self._decide(index, "limit", ident, f"displaced at the profile's {t} limit by a server-side or verified "
                                            f"{t}; moved to a profile of its own")

    def finish(self) -> Plan:
        """The plan, with every profile id resolved to its final survivor (a merge can absorb
        a profile that an earlier event of the batch was attributed to)."""
        plan, final = self.plan, self._final
        plan.event_profiles = [final(p) for p in plan.event_profiles]
        if self.redirect:
            plan.links = [lk if lk.profile_id not in self.redirect else replace(lk, profile_id=final(lk.profile_id))
                          for lk in plan.links]
            plan.merges = [m if m.survivor not in self.redirect else replace(m, survivor=final(m.survivor))
                           for m in plan.merges]
        plan.moves = [replace(mv, from_profile=final(mv.from_profile), to_profile=final(mv.to_profile))
                      for mv in plan.moves]
        if plan.confirmed:
            # a provisional identifier linked and then confirmed within this plan is simply linked
            linked = {(lk.identifier.type, lk.identifier.hash) for lk in plan.links}
            plan.links = [replace(lk, provisional=False)
                          if lk.provisional and (lk.identifier.type, lk.identifier.hash) in plan.confirmed else lk
                          for lk in plan.links]
            plan.confirmed -= linked
        return plan

    def _kept_apart(self, index: int, claim: _Claim, members: Sequence[str], kept: _Kept) -> bool:
        """Whether keeping ``claim`` would put an identifier with a profile an unmerge split
        it from (``members``: the profiles the event's profile would be made of); records the
        refusal."""
        if not self.apart:
            return False
        new_keys = {c.key for c in kept.new} | {claim.key}
        for a in self.apart:
            holder = self.live(a.key) if a.key in self.owner else self._final(a.holder)
            other = self._final(a.profile)
            if holder == other or other not in members:
                continue
            if holder in members or (a.key in new_keys and holder is None):
                self._decide(index, "unmerge_block", claim.ident,
                             f"an unmerge split {a.key[0]} {a.key[1][:12]} from profile {a.profile}: "
                             "not joined again")
                return True
        return False

    def _decide(self, index: int, kind: str, ident: Identifier, message: str) -> None:
        self.plan.decisions.append(Decision(index, kind, ident, message))

    def _limit_message(self, counts: Mapping[str, int], total: int, id_type: str) -> str | None:
        limit = self.rules.type_limits.get(id_type, 0)
        if counts.get(id_type, 0) >= limit:
            return f"profile already holds {limit} {id_type} identifier(s)"
        if total >= self.rules.max_identifiers:
            return f"profile already holds {self.rules.max_identifiers} identifiers"
        return None

    def _state_without(self, pid: str, moving_types: Sequence[str]) -> ProfileState:
        """The profile as it joins the event, without the claims moving off it."""
        p = self.state[pid]
        if not moving_types:
            return p
        p = p.copy()
        for t in moving_types:
            p.counts[t] -= 1
        return p

    def _join_refusal(self, combined: _Combined, p: ProfileState, may_merge_known: bool) -> tuple[str, str] | None:
        """Why ``p`` may not join what is kept so far (None when it may, or is the first)."""
        if not combined.profiles and not combined.total:
            return None
        joined = ProfileState("", p.first_seen, dict(combined.counts), combined.merge_count)
        # Kept new identifiers alone are no profile yet: joining them is no merge.
        return _merge_refusal(joined, p, self.rules, may_merge_known, known=combined.known,
                              merging=bool(combined.profiles))

    @staticmethod
    def _join(combined: _Combined, p: ProfileState) -> None:
        if combined.profiles:
            combined.merge_count += 1
        combined.profiles.append(p.id)
        combined.merge_count += p.merge_count
        counts = combined.counts
        for t, n in p.counts.items():
            counts[t] = counts.get(t, 0) + n
            combined.total += n
            if n > 0 and t in KNOWN_TYPES:
                combined.known = True


def plan_identities(
    events: Sequence[EventIdentity | tuple[Sequence[Identifier], datetime]],
    graph: Mapping[tuple[str, str], str],
    profiles: Mapping[str, ProfileState],
    rules: IdentityRules,
    *,
    new_profile_id: Callable[[], str],
    trusted_source: bool = True,
    apart: Sequence[Apart] = (),
    settled: Mapping[int, str] | None = None,
) -> Plan:
    """Plan the identity changes for ``events``, in order.

    An event is an ``EventIdentity`` or an (identifiers, event time) pair, which takes
    ``trusted_source``. ``graph`` maps (type, hash) to the live profile holding it;
    ``profiles`` holds the state of every profile in ``graph``. Neither is modified. Each
    event ends attributed to one profile (``plan.event_profiles``), or None when nothing of
    it was kept (no identifier, or no home for them). ``apart``: identifiers an unmerge
    split from a profile, which no event may join to it again. ``settled``: events (by
    index) attributed to the given profile without planning: each sits wholly on a profile
    that no event of the batch can change (``settled_holder``, ``profiles_to_plan``), which
    then need not be in ``profiles``.
    """
    planner = IdentityPlanner(graph, profiles, rules, new_profile_id, apart, settled)
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


def settled_holder(event: EventIdentity, graph: Mapping[tuple[str, str], str],
                   provisional: Collection[tuple[str, str]]) -> str | None:
    """The one profile of ``graph`` holding every identifier of ``event`` when there is
    nothing to decide for it (no new identifier, none provisional, no protected claim to
    check: what ``IdentityPlanner._only_holder`` lets through before the batch changes
    anything), else None. ``provisional``: the keys of ``graph`` linked provisionally."""
    if event.protect and not event.trusted:
        return None
    pid = None
    for ident in event.identifiers:
        key = (ident.type, ident.hash)
        holder = graph.get(key)
        if holder is None or (pid is not None and holder != pid) or key in provisional:
            return None
        pid = holder
    return pid


def profiles_to_plan(events: Iterable[EventIdentity], graph: Mapping[tuple[str, str], str],
                     provisional: Collection[tuple[str, str]]) -> set[str]:
    """The profiles of ``graph`` that planning ``events`` may change: every holder of an
    identifier of an event without a ``settled_holder``. Links, merges, moves and
    displacements only ever touch the holders of the identifiers of the event being
    decided (or profiles it creates), so no other profile's identifier counts or
    provisional identifiers are read by the plan; events settled on those profiles are
    passed to ``plan_identities`` as ``settled``."""
    out: set[str] = set()
    for event in events:
        if settled_holder(event, graph, provisional) is None:
            for ident in event.identifiers:
                pid = graph.get((ident.type, ident.hash))
                if pid is not None:
                    out.add(pid)
    return out
