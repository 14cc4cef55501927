"""The events table's COPY rows, in COPY's text format.

Everything of a row but the profile and the decisions is known once an event is prepared,
so ``copy_prefix`` is built then, before the batch's transaction opens: the transaction,
which holds the identity locks other workers may be waiting for, only appends the two
columns the plan decides (``copy_line``). The lines are built directly: psycopg's per-row
formatter was a large share of the worker's time.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING

import msgspec

from core.identity import summarize_decisions

if TYPE_CHECKING:
    from workers.prepare import PreparedEvent

# The two columns decided in the transaction come last.
EVENT_COLUMNS = (
    "tenant_id, event_id, event_time, received_at, source_id, dedupe_key, event_type, event_name, properties,"
    " context, identifiers, emq, profile_id, decisions"
)

_encode = msgspec.json.Encoder().encode
_NULL = "\\N"


def copy_text(value: str) -> str:
    """A value in COPY's text format (backslash, tab and line breaks escaped)."""
    if "\\" in value:
        value = value.replace("\\", "\\\\")
    if "\t" in value or "\n" in value or "\r" in value:
        value = value.replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")
    return value


def _json_text(value: object) -> str:
    """JSON in COPY's text format. JSON text holds no raw tab or line break (they are
    escaped inside strings), so only its backslashes need doubling."""
    text = _encode(value).decode()
    return text.replace("\\", "\\\\") if "\\" in text else text


def _timestamp(value: datetime) -> str:
    """RFC 3339 text Postgres reads as timestamptz; msgspec writes it about 15x faster than
    ``isoformat`` (the two timestamps were a third of a row's cost)."""
    return _encode(value)[1:-1].decode()


def copy_prefix(e: PreparedEvent) -> str:
    """The row's columns up to ``emq``, tab-separated."""
    ev = e.event
    return "\t".join((
        e.tenant_id, ev.event_id, _timestamp(ev.event_time), _timestamp(e.received_at), e.source_id,
        e.dedupe_hex, copy_text(ev.event_type), copy_text(ev.event_name), _json_text(e.properties),
        _json_text(e.context), _json_text([[i.type, i.hash] for i in e.identifiers]), str(ev.emq),
    ))


def copy_line(e: PreparedEvent, profile_id: str | None, decisions: list[dict]) -> str:
    """The whole row: the prefix, the event's profile, its decisions (summarized past
    ``MAX_EVENT_DECISIONS`` entries)."""
    decided = _json_text(summarize_decisions(decisions)) if decisions else _NULL
    return f"{e.copy_prefix}\t{profile_id or _NULL}\t{decided}"
