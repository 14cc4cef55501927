"""From queued events to rows-to-be: identifiers normalized and hashed, PII scrubbed,
identity claims checked against the source's identity secrets.

Pure apart from its inputs; runs before any database work so a transaction is short.
Every event is first put in its scrubbed form (``core.privacy.scrub_queued_event``; a
Segment event is mapped and built already scrubbed, in one pass) and only that form is
used, so a scrubbed copy of an event (a failed job, a dead letter) replays to exactly what
the original stores.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

from core.dedupe import dedupe_digest, dedupe_scope
from core.emq import emq_score
from core.errors import BlockedIdentifier, InvalidIdentifier
from core.event_time import state_time
from core.identifiers import Identifier, normalize_identifier
from core.identity import TRUSTED_SOURCE_TYPES, EventIdentity
from core.identity_signature import SignedClaim, check_claims, unverified_warnings
from core.privacy import redact_text, scrub_object, scrub_payload, scrub_pii, scrub_queued_event
from core.profiles import PurchaseAmount, is_purchase, purchase_amount
from core.resting_identifiers import candidate_outcome, outcome_memo
from core.schemas import QueuedBatch, QueuedEvent, QueuedSegmentEvent
from core.segment import segment_parts
from stratum.db.partitions import month_start
from workers.event_rows import event_rows
from workers.runtime import SourceIdentity


@dataclass(slots=True)
class PreparedEvent:
    """One event ready to persist. ``verified``: (type, hash) of its known identifiers whose
    signature checked out (CONTRACT 6, verified identity); ``protect``: its source runs
    identity_verification = protect. The identity planner receives both per event."""

    event: QueuedEvent
    tenant_id: str
    source_id: str
    source_type: str
    received_at: Any
    identifiers: list[Identifier]
    properties: dict[str, Any]
    context: dict[str, Any]
    traits: dict[str, Any]
    decisions: list[dict[str, str]] = field(default_factory=list)
    verified: frozenset[tuple[str, str]] = frozenset()
    protect: bool = False
    traits_once: dict[str, Any] = field(default_factory=dict)  # PostHog $set_once

    # Derived once, here (``__post_init__``, which a ``dataclasses.replace`` copy runs again):
    # before the batch's transaction holds any lock, and for a job's next round while the
    # current round's statements wait (workers/jobs.py).
    #: ``min(event_time, received_at)``: what traits, consents and first/last seen are
    #: ordered by, so a client clock ahead cannot freeze a profile (CONTRACT 6)
    state_time: datetime = field(init=False)
    #: what the event adds to its profile's revenue when it is a purchase (None: it is not)
    purchase: PurchaseAmount | None = field(init=False)
    #: hex of the SHA-256 of the event's dedupe key in its source's scope (core.dedupe): what
    #: ``events.dedupe_key`` stores, and the key ``event_keys`` holds (decoded)
    dedupe_hex: str = field(init=False)
    #: its ``events`` COPY row up to the columns the transaction decides (workers/event_rows.py)
    copy_prefix: bytes = field(init=False)
    #: its ``event_keys`` COPY row (workers/event_rows.py)
    key_row: bytes = field(init=False)
    #: what the identity planner reads of it
    identity: EventIdentity = field(init=False)
    #: the first day of its month: the ``events`` partition it goes to
    month: date = field(init=False)

    def __post_init__(self) -> None:
        ev = self.event
        self.state_time = state_time(ev.event_time, self.received_at)
        self.purchase = purchase_amount(self.properties) if is_purchase(ev.event_name) else None
        digest = dedupe_digest(dedupe_scope(self.source_type, self.source_id), ev.dedupe_key)
        self.dedupe_hex = digest.hex()
        self.copy_prefix, self.key_row = event_rows(self, digest)
        # Website write keys are public: unless a claim is verified, their events may not merge
        # known profiles, and under protect may not claim another profile's identifiers. A
        # website source set to identity_verification = off is treated as a server source
        # (CONTRACT 6).
        trusted = self.source_type in TRUSTED_SOURCE_TYPES or (self.source_type == "website" and not self.protect)
        self.identity = EventIdentity(self.identifiers, self.state_time, trusted, self.verified, self.protect)
        self.month = month_start(ev.event_time)


def prepare_batch(batch: QueuedBatch, extra_blocked: frozenset[str] = frozenset(),
                  identity: SourceIdentity | None = None) -> list[PreparedEvent]:
    """``identity``: the batch's source's verification mode and identity secrets (None: as
    for a source that cannot be found, website sources protected, nothing verified)."""
    identity = identity or SourceIdentity.unknown(batch.source_type)
    return [prepare_event(batch, queued, extra_blocked, identity) for queued in batch.events]


def prepare_event(batch: QueuedBatch, queued: QueuedEvent | QueuedSegmentEvent,
                  extra_blocked: frozenset[str] = frozenset(),
                  identity: SourceIdentity | None = None) -> PreparedEvent:
    """One queued event of ``batch``, ready to store. May raise on a malformed event: the
    caller isolates it (workers/isolation.py).

    A Segment event gives the same result as its mapped form (``map_segment_event``) would:
    ``tests/unit/test_prepare_segment.py`` holds the two paths equal."""
    identity = identity or SourceIdentity.unknown(batch.source_type)
    if isinstance(queued, QueuedSegmentEvent):
        return _prepare_segment_event(batch, queued, extra_blocked, identity)
    return _prepare_mapped_event(batch, queued, extra_blocked, identity)


def _prepare_mapped_event(batch: QueuedBatch, queued: QueuedEvent, extra_blocked: frozenset[str],
                          identity: SourceIdentity) -> PreparedEvent:
    region = batch.phone_region
    # Signed claims hold raw values and signatures: checked below, never kept, so the
    # scrubbed event carries none (a scrubbed copy replays its claims as unverified).
    claims = queued.claims
    ev = scrub_queued_event(queued, region)
    identifiers: list[Identifier] = []
    decisions: list[dict[str, str]] = [{"kind": "warning", "message": w} for w in ev.warnings]
    seen: set[tuple[str, str]] = set()
    for id_type, raw in ev.identifiers:
        try:  # memoized in core: repeat identifiers cost a cache lookup
            ident = normalize_identifier(id_type, raw, default_region=region, extra_blocked=extra_blocked)
        except (BlockedIdentifier, InvalidIdentifier) as exc:
            decisions.append({"kind": exc.code, "type": id_type, "message": exc.message})
            continue
        if (ident.type, ident.hash) not in seen:
            seen.add((ident.type, ident.hash))
            identifiers.append(ident)
    return _prepared(batch, ev, identifiers, seen, decisions, claims, extra_blocked, identity)


def _prepare_segment_event(batch: QueuedBatch, queued: QueuedSegmentEvent, extra_blocked: frozenset[str],
                           identity: SourceIdentity) -> PreparedEvent:
    """The mapping, scrubbing and normalization of ``_prepare_mapped_event(map_segment_event(...))``
    in one pass: each identifier candidate resolves through one memo lookup
    (``core.resting_identifiers``) instead of three normalizations, and the event is built
    once, already scrubbed."""
    region = batch.phone_region
    parts = segment_parts(queued.raw, queued.event_type, batch.context, batch.integrations)
    mapped: list[tuple[str, str]] = []
    resting: list[tuple[str, str]] = []
    identifiers: list[Identifier] = []
    warnings: list[str] = []
    refused: list[dict[str, str]] = []
    seen: set[tuple[str, str]] = set()
    memo = outcome_memo(region, extra_blocked)
    for candidate in parts.candidates:
        value = candidate[1]
        if value is None or value == "":
            continue
        outcome = memo.get(candidate) if type(value) is str else None
        if outcome is None:
            outcome = candidate_outcome(candidate[0], value, region, extra_blocked)
        if outcome.mapped is None:
            if outcome.warning is not None:  # always set when nothing maps
                warnings.append(outcome.warning)
            continue
        if outcome.mapped in mapped:
            continue
        mapped.append(outcome.mapped)
        if not outcome.resting:
            continue
        resting.append((outcome.mapped[0], outcome.resting))
        ident = outcome.stored
        if ident is None:
            if outcome.decision is not None:  # always set when nothing is stored
                refused.append(outcome.decision)
        elif (ident.type, ident.hash) not in seen:
            seen.add((ident.type, ident.hash))
            identifiers.append(ident)
    score = emq_score([t for t, _ in mapped], parts.properties, parts.context, queued.event_time, batch.received_at)
    traits = parts.traits
    ev = QueuedEvent(
        event_id=queued.event_id, dedupe_key=redact_text(queued.dedupe_key), event_type=queued.event_type,
        event_name=redact_text(parts.name), event_time=queued.event_time, identifiers=resting,
        properties=scrub_payload(parts.properties, region), context=scrub_payload(parts.context, region),
        traits=scrub_object(traits, region) if traits else traits, consent=None, emq=score, warnings=warnings,
        previous_id=redact_text(parts.previous_id),
    )
    decisions = [{"kind": "warning", "message": w} for w in warnings]
    decisions.extend(refused)
    return _prepared(batch, ev, identifiers, seen, decisions, parts.claims, extra_blocked, identity)


def _prepared(batch: QueuedBatch, ev: QueuedEvent, identifiers: list[Identifier], seen: set[tuple[str, str]],
              decisions: list[dict[str, str]], claims: list[tuple[str, str, str, str]],
              extra_blocked: frozenset[str], identity: SourceIdentity) -> PreparedEvent:
    """The prepared event: identity claims checked, unverified known identifiers of a
    protected source flagged."""
    region = batch.phone_region
    verified: set[tuple[str, str]] = set()
    refused: dict[tuple[str, str], str] = {}
    if claims:
        verified, refused = check_claims((SignedClaim(*c) for c in claims), identity.secrets,
                                         phone_region=region, extra_blocked=extra_blocked)
    if identity.protect:
        decisions.extend({"kind": "warning", "message": w}
                         for w in unverified_warnings(((i.type, i.hash) for i in identifiers), verified, refused))
    prepared = PreparedEvent(
        event=ev, tenant_id=batch.tenant_id, source_id=batch.source_id, source_type=batch.source_type,
        received_at=batch.received_at, identifiers=identifiers,
        properties=ev.properties, context=ev.context, traits=ev.traits, decisions=decisions,
        verified=frozenset(verified & seen) if verified else frozenset(), protect=identity.protect,
        traits_once=scrub_pii(ev.traits_once, region) if ev.traits_once else {},
    )
    return prepared
