"""From queued events to rows-to-be: identifiers normalized and hashed, PII scrubbed.

Pure apart from its inputs; runs before any database work so a transaction is short.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from core.errors import BlockedIdentifier, InvalidIdentifier
from core.event_time import state_time
from core.identifiers import Identifier, normalize_identifier
from core.privacy import scrub_context, scrub_pii
from core.schemas import QueuedBatch, QueuedEvent, QueuedSegmentEvent
from core.segment import map_segment_event


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


def prepare_batch(batch: QueuedBatch, extra_blocked: frozenset[str] = frozenset()) -> list[PreparedEvent]:
    region = batch.phone_region
    out: list[PreparedEvent] = []
    for queued in batch.events:
        if isinstance(queued, QueuedSegmentEvent):
            ev = map_segment_event(
                queued.raw, event_type=queued.event_type, event_id=queued.event_id, dedupe_key=queued.dedupe_key,
                event_time=queued.event_time, received_at=batch.received_at, batch_context=batch.context,
                batch_integrations=batch.integrations, phone_region=region, extra_blocked=extra_blocked)
        else:
            ev = queued
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
        out.append(PreparedEvent(
            event=ev, tenant_id=batch.tenant_id, source_id=batch.source_id, source_type=batch.source_type,
            received_at=batch.received_at, identifiers=identifiers,
            properties=scrub_pii(ev.properties, region), context=scrub_context(ev.context, region),
            traits=scrub_pii(ev.traits, region), decisions=decisions,
            traits_once=scrub_pii(ev.traits_once, region) if ev.traits_once else {},
        ))
    return out
