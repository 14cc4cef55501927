"""The rows of ``events`` and ``event_keys``, in COPY's binary format (workers/copy_binary.py).

Everything of an event's row but the profile and the decisions is known once the event is
prepared, so its prefix is built then (``event_rows``), before the batch's transaction opens: the
transaction, which holds the identity locks other workers may be waiting for, only
appends the two fields the plan decides (``copy_row``). Its dedupe key's row is known
whole then.
"""

from __future__ import annotations

import struct
from typing import TYPE_CHECKING

import msgspec

from core.identity import summarize_decisions
from workers.copy_binary import (
    NULL,
    SMALLINT_FIELD,
    jsonb_field,
    length,
    timestamp_bytes,
    uuid_bytes,
)

if TYPE_CHECKING:
    from workers.prepare import PreparedEvent

# The two columns decided in the transaction come last.
EVENT_COLUMNS = (
    "tenant_id, event_id, event_time, received_at, source_id, dedupe_key, event_type, event_name, properties,"
    " context, identifiers, emq, profile_id, decisions"
)
KEY_COLUMNS = "tenant_id, key_hash, event_id, event_time"

_encode = msgspec.json.Encoder().encode
# The field count, then the fixed-size fields: tenant_id, event_id, event_time, received_at,
# source_id, dedupe_key (the 64 hex digits of a SHA-256).
_EVENT_HEAD = struct.Struct("!hi16si16si8si8si16si64s").pack
# The field count, then every field: tenant_id, key_hash (32 bytes), event_id, event_time.
_KEY_ROW = struct.Struct("!hi16si32si16si8s").pack
_JSONB = b"\x01"
# Tenant and source ids as bytes: few, and on every row; forgotten all at once when full.
_known: dict[str, bytes] = {}
_MAX_KNOWN = 10_000


def _known_uuid(value: str) -> bytes:
    raw = _known.get(value)
    if raw is None:
        if len(_known) >= _MAX_KNOWN:
            _known.clear()
        raw = _known[value] = uuid_bytes(value)
    return raw


def event_rows(e: PreparedEvent, digest: bytes) -> tuple[bytes, bytes]:
    """The event's ``events`` row up to ``emq`` (its field count and those fields), and its
    whole ``event_keys`` row: its tenant, ``digest`` (the SHA-256 of its scoped dedupe key,
    whose hex is ``dedupe_hex``), its id and its time. Built together: they share the id,
    the time and the tenant."""
    ev = e.event
    raw_id = uuid_bytes(ev.event_id)
    tenant = _known_uuid(e.tenant_id)
    at = timestamp_bytes(ev.event_time)
    event_type = ev.event_type.encode()
    name = ev.event_name.encode()
    props = _encode(e.properties)
    ctx = _encode(e.context)
    idents = _encode([[i.type, i.hash] for i in e.identifiers])
    prefix = b"".join((
        _EVENT_HEAD(14, 16, tenant, 16, raw_id, 8, at, 8, timestamp_bytes(e.received_at), 16,
                    _known_uuid(e.source_id), 64, e.dedupe_hex.encode()),
        length(len(event_type)), event_type, length(len(name)), name,
        length(len(props) + 1), _JSONB, props, length(len(ctx) + 1), _JSONB, ctx,
        length(len(idents) + 1), _JSONB, idents, SMALLINT_FIELD.pack(2, ev.emq),
    ))
    return prefix, _KEY_ROW(4, 16, tenant, 32, digest, 16, raw_id, 8, at)


def copy_row(e: PreparedEvent, profile: bytes, decisions: list[dict]) -> bytes:
    """The whole row: the prefix, the event's profile (its field: ``uuid_field``), its
    decisions (summarized past ``MAX_EVENT_DECISIONS`` entries)."""
    if decisions:
        return b"".join((e.copy_prefix, profile, jsonb_field(summarize_decisions(decisions))))
    return b"".join((e.copy_prefix, profile, NULL))
