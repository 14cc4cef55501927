"""The events table's COPY rows, in COPY's text format.

Everything of a row but the profile and the decisions is known once an event is prepared,
so ``copy_prefix`` is built then, before the batch's transaction opens: the transaction,
which holds the identity locks other workers may be waiting for, only appends the two
columns the plan decides (``copy_line``). The lines are built directly: psycopg's per-row
formatter was a large share of the worker's time (workers/copy_rows.py).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from core.identity import summarize_decisions
from workers.copy_rows import NULL, copy_text, json_text, timestamp_text

if TYPE_CHECKING:
    from workers.prepare import PreparedEvent

# The two columns decided in the transaction come last.
EVENT_COLUMNS = (
    "tenant_id, event_id, event_time, received_at, source_id, dedupe_key, event_type, event_name, properties,"
    " context, identifiers, emq, profile_id, decisions"
)


def copy_prefix(e: PreparedEvent) -> str:
    """The row's columns up to ``emq``, tab-separated."""
    ev = e.event
    return "\t".join((
        e.tenant_id, ev.event_id, timestamp_text(ev.event_time), timestamp_text(e.received_at), e.source_id,
        e.dedupe_hex, copy_text(ev.event_type), copy_text(ev.event_name), json_text(e.properties),
        json_text(e.context), json_text([[i.type, i.hash] for i in e.identifiers]), str(ev.emq),
    ))


def copy_line(e: PreparedEvent, profile_id: str | None, decisions: list[dict]) -> str:
    """The whole row: the prefix, the event's profile, its decisions (summarized past
    ``MAX_EVENT_DECISIONS`` entries)."""
    decided = json_text(summarize_decisions(decisions)) if decisions else NULL
    return f"{e.copy_prefix}\t{profile_id or NULL}\t{decided}"
