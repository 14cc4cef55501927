"""The rows of ``events`` and ``event_keys``, in COPY's binary format (workers/copy_binary.py).

Everything of an event's row but the profile and the decisions is known once the event is
prepared, so ``copy_prefix`` is built then, before the batch's transaction opens: the
transaction, which holds the identity locks other workers may be waiting for, only
appends the two fields the plan decides (``copy_row``). Its dedupe key's row is known
whole then (``key_row``).
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
    micros,
    uuid_bytes,
    uuid_field,
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
# The field count, then the fixed-size fields: tenant_id, event_id, event_time, received_at, source_id.
_EVENT_HEAD = struct.Struct("!hi16si16siqiqi16s").pack
# The field count, then every field: tenant_id, key_hash (32 bytes), event_id, event_time.
_KEY_ROW = struct.Struct("!hi16si32si16siq").pack
_JSONB = b"\x01"
_known: dict[str, bytes] = {}  # tenant and source ids: few, and on every row


def _known_uuid(value: str) -> bytes:
    raw = _known.get(value)
    if raw is None:
        if len(_known) >= 10_000:
            _known.clear()
        raw = _known[value] = uuid_bytes(value)
    return raw


def copy_prefix(e: PreparedEvent) -> bytes:
    """The row's field count and its fields up to ``emq``."""
    ev = e.event
    dedupe = e.dedupe_hex.encode()
    event_type = ev.event_type.encode()
    name = ev.event_name.encode()
    props = _encode(e.properties)
    ctx = _encode(e.context)
    idents = _encode([[i.type, i.hash] for i in e.identifiers])
    return b"".join((
        _EVENT_HEAD(14, 16, _known_uuid(e.tenant_id), 16, uuid_bytes(ev.event_id), 8, micros(ev.event_time), 8,
                    micros(e.received_at), 16, _known_uuid(e.source_id)),
        length(len(dedupe)), dedupe, length(len(event_type)), event_type, length(len(name)), name,
        length(len(props) + 1), _JSONB, props, length(len(ctx) + 1), _JSONB, ctx,
        length(len(idents) + 1), _JSONB, idents, SMALLINT_FIELD.pack(2, ev.emq),
    ))


def copy_row(e: PreparedEvent, profile_id: str | None, decisions: list[dict]) -> bytes:
    """The whole row: the prefix, the event's profile, its decisions (summarized past
    ``MAX_EVENT_DECISIONS`` entries)."""
    decided = jsonb_field(summarize_decisions(decisions)) if decisions else NULL
    return e.copy_prefix + uuid_field(profile_id) + decided


def key_row(e: PreparedEvent) -> bytes:
    """The event's ``event_keys`` row: its tenant, the SHA-256 of its scoped dedupe key
    (``dedupe_hex``), its id and its time."""
    ev = e.event
    return _KEY_ROW(4, 16, _known_uuid(e.tenant_id), 32, bytes.fromhex(e.dedupe_hex), 16, uuid_bytes(ev.event_id),
                    8, micros(ev.event_time))
