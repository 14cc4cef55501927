"""Isolating a poison event: one bad event must never fail the events queued with it.

``persist_isolating`` stores a list of events in one transaction; when that fails with an
error caused by the data (a value the database refuses; not an outage, workers/outages.py,
nor a full disk), it splits the list in halves and stores
each half the same way, down to the single event that fails. Halves that succeed commit on
their own: running a half again later stores nothing twice (processing is idempotent), so
nothing depends on the order of the splits. A batch that fills the server's lock table
(``needs_smaller_batches``) is stored in halves the same way, without isolating anything.

The isolated event goes to RQ's failed registry as a job of its own (``process_batch`` of a
one-event batch), with its reason, where ``stratum status``, ``/ops`` and ``stratum
replay-failed`` list and replay it (stratum/queue/status.py). The reason names the error class
and SQLSTATE only, never the error's text: database messages quote the offending value.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

import msgspec
import psycopg
from redis import Redis
from rq.timeouts import BaseTimeoutException

from core.privacy import scrub_batch, scrub_document, scrub_pii
from core.schemas import QueuedBatch, QueuedEvent, QueuedSegmentEvent
from stratum.queue.failed import fail_queued_job, record_failed_batch
from workers.outages import is_transient

log = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")

_encoder = msgspec.msgpack.Encoder()


def failed_event_payload(batch: QueuedBatch, queued: QueuedEvent | QueuedSegmentEvent,
                         extra_blocked: frozenset[str] = frozenset()) -> bytes:
    """The queue payload of an isolated event's failed job: its batch's header with that one
    event in scrubbed form (``core.privacy.scrub_batch``), so a replay stores what the event
    would have stored, and no raw email or phone rests in the failed registry (CONTRACT 6).

    An event that cannot even be mapped (often why it was isolated) keeps its raw JSON
    scrubbed as a document (``core.privacy.scrub_document``; an empty body when it is not
    JSON), batch context included."""
    one = msgspec.structs.replace(batch, events=[queued])
    try:
        return _encoder.encode(scrub_batch(one, extra_blocked))
    except Exception:  # the event's own fault: keep what can be kept without raw values
        log.warning("isolated event %s could not be mapped; its failed job keeps it scrubbed as a document",
                    queued.event_id)
    region = batch.phone_region
    events: list[QueuedEvent | QueuedSegmentEvent] = []
    if isinstance(queued, QueuedSegmentEvent):
        # not even JSON: nothing of it can be kept, but the event (its id) stays on record
        scrubbed = scrub_document(queued.raw, region)
        events.append(msgspec.structs.replace(queued, raw=scrubbed.encode() if scrubbed is not None else b""))
    return _encoder.encode(msgspec.structs.replace(
        one, context=scrub_pii(batch.context, region) if batch.context else None,
        integrations=scrub_pii(batch.integrations, region) if batch.integrations else None, events=events))


def failure_reason(exc: BaseException) -> str:
    """``ClassName (sqlstate XXXXX)``: what failed, without the value that made it fail."""
    state = getattr(exc, "sqlstate", None) if isinstance(exc, psycopg.Error) else None
    return f"{type(exc).__name__} (sqlstate {state})" if state else type(exc).__name__


# SQLSTATE classes that describe the data: data exception, integrity constraint violation,
# syntax error or access rule violation, program limit exceeded (a value too large to index).
_DATA_SQLSTATE_CLASSES = frozenset({"22", "23", "42", "54"})


def must_propagate(exc: BaseException) -> bool:
    """Errors that are not the data's: outages (the whole job goes back on the queue) and
    RQ's job timeout (the job fails as a whole, as RQ decides)."""
    return is_transient(exc) or isinstance(exc, BaseTimeoutException) or not isinstance(exc, Exception)


def caused_by_data(exc: BaseException) -> bool:
    """Worth splitting the batch for: the database refused a value, or our own code met a
    value it did not expect (any non-database exception). Resource and server errors (disk
    full, out of memory, query cancelled, internal errors) would fail every half alike:
    they fail the job as a whole instead, to be replayed once the cause is fixed."""
    if must_propagate(exc):
        return False
    if isinstance(exc, psycopg.Error):
        # no SQLSTATE (and not a lost connection): psycopg refused to send a value
        return exc.sqlstate is None or exc.sqlstate[:2] in _DATA_SQLSTATE_CLASSES
    return True


def needs_smaller_batches(exc: BaseException) -> bool:
    """The server ran out of shared memory (SQLSTATE 53200), in practice its lock table: a
    transaction holds an advisory lock per identifier of its batch, and the table holds
    about ``max_locks_per_transaction`` x ``max_connections`` locks for all of them at
    once. The same events in smaller transactions take fewer locks at a time."""
    return isinstance(exc, psycopg.errors.OutOfMemory)


def persist_isolating(store: Callable[[Sequence[T]], R], items: Sequence[T],
                      on_poison: Callable[[T, Exception], None], combine: Callable[[R, R], R], empty: R) -> R:
    """``store(items)``; on an error caused by the data (``caused_by_data``), bisect until
    each failing item is alone and hand it to ``on_poison``; on a full lock table
    (``needs_smaller_batches``), bisect until the halves fit. Any other error propagates
    untouched."""
    try:
        return store(items)
    except Exception as exc:
        if len(items) > 1 and needs_smaller_batches(exc):
            log.warning("storing %d events failed (%s); storing them in halves", len(items), failure_reason(exc))
        elif not caused_by_data(exc):
            raise
        elif len(items) == 1:
            on_poison(items[0], exc)
            return empty
        else:
            log.warning("storing %d events failed (%s); splitting the batch to isolate the bad event",
                        len(items), failure_reason(exc))
    mid = len(items) // 2
    left = persist_isolating(store, items[:mid], on_poison, combine, empty)
    right = persist_isolating(store, items[mid:], on_poison, combine, empty)
    return combine(left, right)


@dataclass
class FailedEventSink:
    """Where isolated events go: RQ's failed registry of the queue their job came from."""

    connection: Redis
    queue_name: str
    failure_ttl_s: int
    job_timeout_s: int

    def record(self, payload: bytes, reason: str, *, event_id: str) -> str:
        """Save a failed one-event job holding ``payload``; return its id."""
        job_id = record_failed_batch(self.connection, self.queue_name, payload,
                                     f"event {event_id} isolated from its batch\n{reason}", event_count=1,
                                     failure_ttl_s=self.failure_ttl_s, job_timeout_s=self.job_timeout_s)
        log.error("event %s isolated into failed job %s: %s", event_id, job_id, reason)
        return job_id

    def fail_job(self, job_id: str, reason: str) -> None:
        """Move a claimed (coalesced) job whose whole payload is unreadable to the failed registry."""
        fail_queued_job(self.connection, self.queue_name, job_id, f"queued batch could not be read\n{reason}",
                        failure_ttl_s=self.failure_ttl_s)
        log.error("coalesced job %s failed: %s", job_id, reason)
