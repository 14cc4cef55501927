"""The identity planner's vocabulary: what it reads (profile states, events with their
trust) and what it returns (a plan of links, moves, merges and decisions). Pure data;
the planner is core/identity.py.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

from core.identifiers import KNOWN_TYPES, PRIORITY, Identifier

MAX_EVENT_DECISIONS = 20  # an event's decision list is summarized past this many entries
_WEAKEST = len(PRIORITY)


@dataclass(slots=True)
class ProfileState:
    """What the planner needs to know of a profile (loaded, or created by this plan)."""

    id: str
    first_seen: datetime
    counts: dict[str, int] = field(default_factory=dict)
    merge_count: int = 0
    new: bool = False
    # identifiers only unverified website claims carried, (type, hash) -> link rank (larger:
    # linked more recently); the ones a trusted identifier may displace at a type limit
    provisional: dict[tuple[str, str], int] = field(default_factory=dict)

    def copy(self) -> ProfileState:
        return ProfileState(self.id, self.first_seen, dict(self.counts), self.merge_count, self.new,
                            dict(self.provisional))

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
    # linked by an unverified claim under ``protect``: provisional until a trusted event carries it
    provisional: bool = False


@dataclass(frozen=True)
class Move:
    """An identifier already stored that changes profile: a provisional one that a trusted
    event carried to another profile's known identifier (then no longer provisional), or one
    displaced at a type limit to a profile of its own (still provisional)."""

    identifier: Identifier
    from_profile: str
    to_profile: str
    event_index: int
    via: Identifier | None
    provisional: bool


@dataclass(frozen=True)
class Merge:
    survivor: str
    absorbed: str
    trigger: Identifier
    event_index: int
    # the event's identifier already on the other side (the edge the merge adds to the graph)
    via: Identifier | None = field(default=None, compare=False)


@dataclass(frozen=True)
class Apart:
    """An identifier that may not join a profile: an unmerge split them (CONTRACT 9).
    ``holder``: the profile holding the identifier when loaded (None: on no profile)."""

    key: tuple[str, str]
    holder: str | None
    profile: str


@dataclass(frozen=True)
class Decision:
    """Something the planner refused to do, recorded with the event."""

    event_index: int
    kind: str  # "limit" | "untrusted_merge" | "merge_limit" | "unverified_claim" | "unmerge_block"
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
    moves: list[Move] = field(default_factory=list)
    # provisional identifiers a trusted event carried where they are: no longer provisional
    confirmed: set[tuple[str, str]] = field(default_factory=set)
    decisions: list[Decision] = field(default_factory=list)
    event_profiles: list[str | None] = field(default_factory=list)


def summarize_decisions(decisions: list[dict], limit: int = MAX_EVENT_DECISIONS) -> list[dict]:
    """An event's decision list as stored: the first ``limit`` entries, then one ``summary``
    entry counting the rest by kind (a flood of identifiers cannot grow an event's row)."""
    if len(decisions) <= limit:
        return decisions
    rest = decisions[limit:]
    kinds: dict[str, int] = {}
    for d in rest:
        kinds[str(d.get("kind"))] = kinds.get(str(d.get("kind")), 0) + 1
    listed = ", ".join(f"{n} {k}" for k, n in sorted(kinds.items()))
    return [*decisions[:limit], {"kind": "summary", "omitted": len(rest), "kinds": kinds,
                                 "message": f"{len(rest)} more decisions not listed ({listed})"}]


@dataclass(frozen=True)
class EventIdentity:
    """One event as the planner sees it: its identifiers, its time, and how far its claims
    can be trusted (CONTRACT 6: trust, verified identity)."""

    identifiers: Sequence[Identifier]
    time: datetime
    # a server-side source (TRUSTED_SOURCE_TYPES)
    trusted: bool = True
    # (type, hash) of its known identifiers that carried a valid signature
    verified: frozenset[tuple[str, str]] = frozenset()
    # its source runs identity_verification = protect
    protect: bool = False

    def authoritative(self, ident: Identifier) -> bool:
        """A claim that may move a provisional identifier or displace one at a limit."""
        return self.trusted or (ident.type, ident.hash) in self.verified

    def unverified_claim(self, ident: Identifier) -> bool:
        """Under ``protect``: a known identifier without a valid signature."""
        return (self.protect and not self.trusted and ident.type in KNOWN_TYPES
                and (ident.type, ident.hash) not in self.verified)

    @property
    def may_merge_known(self) -> bool:
        """Only server-side sources and verified claims merge two known profiles."""
        return self.trusted or bool(self.verified)
