"""From queued events to rows-to-be: identifiers normalized and hashed, PII scrubbed,
identity claims checked against the source's identity secrets.

Pure apart from its inputs; runs before any database work so a transaction is short.
Every event is first put in its scrubbed form (``core.privacy.scrub_queued_event``) and
only that form is used, so a scrubbed copy of an event (a failed job, a dead letter)
replays to exactly what the original stores.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from functools import cached_property
from typing import Any

from core.dedupe import dedupe_digest, dedupe_scope
from core.errors import BlockedIdentifier, InvalidIdentifier
from core.event_time import state_time
from core.identifiers import Identifier, normalize_identifier
from core.identity_signature import SignedClaim, check_claims, unverified_warnings
from core.privacy import scrub_pii, scrub_queued_event
from core.schemas import QueuedBatch, QueuedEvent, QueuedSegmentEvent
from core.segment import map_segment_event
from workers.runtime import SourceIdentity


@dataclass
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

    @property
    def state_time(self) -> datetime:
        """``min(event_time, received_at)``: what traits, consents and first/last seen are
        ordered by, so a client clock ahead cannot freeze a profile (CONTRACT 6)."""
        return state_time(self.event.event_time, self.received_at)

    @cached_property
    def dedupe_hash(self) -> bytes:
        """SHA-256 of the event's dedupe key in its source's scope (core.dedupe): the key
        under which ``event_keys`` holds it; its hex is what ``events.dedupe_key`` stores."""
        return dedupe_digest(dedupe_scope(self.source_type, self.source_id), self.event.dedupe_key)

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
    caller isolates it (workers/isolation.py)."""
    region = batch.phone_region
    identity = identity or SourceIdentity.unknown(batch.source_type)
    if isinstance(queued, QueuedSegmentEvent):
        ev = map_segment_event(
            queued.raw, event_type=queued.event_type, event_id=queued.event_id, dedupe_key=queued.dedupe_key,
            event_time=queued.event_time, received_at=batch.received_at, batch_context=batch.context,
            batch_integrations=batch.integrations, phone_region=region, extra_blocked=extra_blocked)
    else:
        ev = queued
    # Signed claims hold raw values and signatures: checked below, never kept, so the
    # scrubbed event carries none (a scrubbed copy replays its claims as unverified).
    claims = ev.claims
    ev = scrub_queued_event(ev, region)
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
    verified: set[tuple[str, str]] = set()
    refused: dict[tuple[str, str], str] = {}
    if claims:
        verified, refused = check_claims((SignedClaim(*c) for c in claims), identity.secrets,
                                         phone_region=region, extra_blocked=extra_blocked)
    if identity.protect:
        decisions.extend({"kind": "warning", "message": w}
                         for w in unverified_warnings(((i.type, i.hash) for i in identifiers), verified, refused))
    return PreparedEvent(
        event=ev, tenant_id=batch.tenant_id, source_id=batch.source_id, source_type=batch.source_type,
        received_at=batch.received_at, identifiers=identifiers,
        properties=ev.properties, context=ev.context, traits=ev.traits, decisions=decisions,
        verified=frozenset(verified & seen), protect=identity.protect,
        traits_once=scrub_pii(ev.traits_once, region) if ev.traits_once else {},
    )
