"""Wire schemas of the read API (msgspec Structs): what handlers return and accept.

Timestamps are ISO 8601 strings in UTC (``2025-01-31T12:00:00.123456+00:00``). Identifier
hashes are SHA-256 hex of the normalized value (CONTRACT section 6).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import msgspec
from msgspec import UNSET, Struct, UnsetType


def iso(ts: datetime) -> str:
    """A timestamp as the API shows it: ISO 8601 in UTC."""
    return ts.astimezone(UTC).isoformat()


class ErrorBody(Struct):
    """Every error: CONTRACT 4.6."""

    code: str
    message: str
    status: int
    errors: list[dict[str, Any]] | UnsetType = UNSET


# Profiles


class ProfileIdentifier(Struct):
    type: str
    hash: str
    first_seen: str
    last_seen: str


class ConsentState(Struct):
    granted: bool
    updated_at: str
    source_id: str | None


class Counters(Struct):
    events: int
    purchases: int
    revenue: float


class Profile(Struct):
    """PROFILE of CONTRACT section 5. ``merged_from`` is the requested id when it was merged
    into this (surviving) profile, else null."""

    id: str
    lifecycle: str
    traits: dict[str, Any]
    identifiers: list[ProfileIdentifier]
    consents: dict[str, ConsentState]
    counters: Counters
    first_seen: str
    last_seen: str
    merged_from: str | None = None
    # Computed traits by name (CONTRACT 5 and 8).
    computed: dict[str, Any] = msgspec.field(default_factory=dict)


# Events


class EventIdentifier(Struct):
    type: str
    hash: str


class Event(Struct):
    """A stored event. ``decisions`` lists what identity resolution decided about it
    (identifiers left out by a limit or trust rule, blocked values dropped)."""

    event_id: str
    event_name: str
    event_type: str
    event_time: str
    received_at: str
    source_id: str
    properties: dict[str, Any]
    context: dict[str, Any]
    emq: int
    identifiers: list[EventIdentifier]
    decisions: list[dict[str, Any]]


class EventPage(Struct):
    """Newest first; pass ``next_cursor`` back as ``cursor`` for the next page (null: no more)."""

    events: list[Event]
    next_cursor: str | None


class EventStatus(Struct):
    event_id: str
    status: str
    profile_id: str | None


# Identity graph


class GraphNode(Struct):
    type: str
    hash: str
    first_seen: str


class EdgeEvidence(Struct):
    event_id: str | None


class GraphEdge(Struct):
    """``from`` and ``to`` are ``"type:hash"`` node references."""

    from_: str = msgspec.field(name="from")
    to: str = msgspec.field()
    link_type: str = msgspec.field()
    evidence: EdgeEvidence = msgspec.field()


class GraphMerge(Struct):
    """``trigger`` is the ``"type:hash"`` identifier whose sighting caused the merge; ``id``
    names the merge (for unmerge)."""

    id: str
    survivor: str
    absorbed: str
    trigger: str
    at: str


class Graph(Struct):
    nodes: list[GraphNode]
    edges: list[GraphEdge]
    merges: list[GraphMerge]


class UnmergeRequest(Struct):
    """``merge_id``: the ``id`` of an entry of the graph's ``merges``."""

    merge_id: str | int


class Unmerge(Struct):
    """An undone merge: ``survivor`` and ``absorbed`` are both live profiles again. The same
    answer for every repeat."""

    merge_id: str
    survivor: str
    absorbed: str
    undone_at: str


# Consents


class ConsentChange(Struct):
    consent_type: str
    granted: bool
    recorded_at: str
    source_id: str | None
    event_id: str | None
    ip: str | None
    user_agent: str | None


class Consents(Struct):
    consents: dict[str, ConsentState]
    history: list[ConsentChange]


class ConsentUpdate(Struct, forbid_unknown_fields=True):
    """``{"consents": {"email": true, "ads": false}}``; types: analytics, ads, email, sms, all."""

    consents: dict[str, bool]


# Erasure


class ErasedCounts(Struct):
    profiles: int
    identifiers: int
    events: int
    consents: int


class Erasure(Struct):
    erased: ErasedCounts


# Sources


class Source(Struct):
    id: str
    name: str
    type: str
    active: bool
    phone_region: str | None
    rate_limit: int | None
    allowed_origins: list[str]
    identity_verification: str
    created_at: str


class SourceWithKey(Source):
    """A SOURCE with its write key: shown once, at creation and rotation (and, when a
    website source is created, its identity secret, shown this once too)."""

    write_key: str
    identity_secret: str | UnsetType = UNSET


class SourceWithIdentitySecret(Source):
    """A website SOURCE with its new identity secret, shown this once."""

    identity_secret: str


class SourceList(Struct):
    sources: list[Source]


class SourceCreate(Struct, forbid_unknown_fields=True):
    name: str
    type: str = "website"
    phone_region: str | None = None
    rate_limit: int | None = None
    allowed_origins: list[str] = msgspec.field(default_factory=list)
    identity_verification: str | None = None  # protect (website default) or off


class SourcePatch(Struct, forbid_unknown_fields=True):
    """Only the fields present change; ``null`` clears ``phone_region`` / ``rate_limit``.
    ``type`` is accepted only unchanged (else 400 ``immutable_field``)."""

    name: str | UnsetType = UNSET
    active: bool | UnsetType = UNSET
    phone_region: str | None | UnsetType = UNSET
    rate_limit: int | None | UnsetType = UNSET
    allowed_origins: list[str] | UnsetType = UNSET
    identity_verification: str | None | UnsetType = UNSET
    type: str | UnsetType = UNSET

    def changes(self) -> dict[str, Any]:
        return {f: v for f in self.__struct_fields__ if (v := getattr(self, f)) is not UNSET}


# Stats


class HourlyVolume(Struct):
    source_id: str
    hour: str
    events: int


class DailyVolume(Struct):
    source_id: str
    day: str
    events: int


class Volume(Struct):
    hourly: list[HourlyVolume]
    daily: list[DailyVolume]


class EmqDistribution(Struct):
    mean: float
    bands: dict[str, int]


class Stats(Struct):
    """Volumes by ``event_time`` (hourly: the last 48 hours; daily: the last 30 days, UTC);
    ``emq`` and ``identity_match_rate`` over the same 30 days; lifecycle counts of live profiles."""

    volume: Volume
    emq: EmqDistribution
    identity_match_rate: float
    profiles_by_lifecycle: dict[str, int]
    window: dict[str, str]
