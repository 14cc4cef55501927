"""The job functions RQ runs. ``process_batch`` is the only one the ingest API enqueues."""

from __future__ import annotations

import logging
import random
import time
from collections import defaultdict

import psycopg
from rq import get_current_job

from core.schemas import decode_batch
from stratum.db.partitions import ensure_partitions, month_start
from stratum.queue import layout
from stratum.queue.claims import Coalescer
from workers import runtime, stream
from workers.identity_store import SnapshotChanged
from workers.persist import BatchOutcome, persist_tenant_events
from workers.prepare import PreparedEvent, prepare_batch

log = logging.getLogger(__name__)

# Errors worth another attempt: lost connections, deadlocks, serialization failures, and
# our own "graph moved under us". Anything else is a poison batch and fails the job.
TRANSIENT = (
    psycopg.OperationalError,
    psycopg.errors.DeadlockDetected,
    psycopg.errors.SerializationFailure,
    psycopg.errors.LockNotAvailable,
    SnapshotChanged,
)


def process_batch(payload: bytes) -> dict[str, int]:
    """RQ job: persist one queued batch (msgpack ``QueuedBatch``), coalesced with the next
    queued batches when there are any (stratum/queue/claims.py). Exactly once: running it again
    for the same payload stores nothing twice."""
    job = get_current_job()
    rt = runtime.current()
    if job is None or rt.settings.worker_coalesce_max_events <= 0:
        return persist_payloads([payload])
    coalescer = Coalescer(job.connection)
    queue_key = layout.queue_key(job.origin)
    # Counted in events; a job that does not say how many it holds counts as a full batch.
    claimed = coalescer.claim(queue_key, job.id, rt.settings.worker_coalesce_max_events,
                              rt.settings.max_events_per_request)
    if not claimed:
        return persist_payloads([payload])
    try:
        result = persist_payloads([payload, *(layout.payload_of(data) for _, data in claimed)])
    except Exception:
        log.warning("coalesced persist of %d batches failed; retrying this batch alone", len(claimed) + 1,
                    exc_info=True)
        # Put the others back untouched and try this job's own batch alone: one poison batch
        # must not fail the batches it happened to be coalesced with.
        coalescer.give_back(queue_key, job.id)
        return persist_payloads([payload])
    coalescer.finish(job.id, [job_id for job_id, _ in claimed])
    result["coalesced_jobs"] = len(claimed)
    return result


def persist_payloads(payloads: list[bytes]) -> dict[str, int]:
    """Persist queued batches exactly once (one transaction per tenant)."""
    rt = runtime.current()
    by_tenant: dict[str, list[PreparedEvent]] = defaultdict(list)
    for payload in payloads:
        batch = decode_batch(payload)
        config = _with_retry(rt, f"tenant {batch.tenant_id} settings", lambda b=batch: rt.tenant_config(b.tenant_id))
        by_tenant[batch.tenant_id].extend(prepare_batch(batch, config.extra_blocked))
    total = BatchOutcome()
    for tenant_id, events in by_tenant.items():
        outcome = _persist_with_retry(rt, tenant_id, events)
        total.stored += outcome.stored
        total.duplicates += outcome.duplicates
        total.profiles_created += outcome.profiles_created
        total.merges += outcome.merges
    return {"stored": total.stored, "duplicates": total.duplicates,
            "profiles_created": total.profiles_created, "merges": total.merges}


def _persist_with_retry(rt: runtime.WorkerRuntime, tenant_id: str, events: list[PreparedEvent]) -> BatchOutcome:
    months = {month_start(e.event.event_time) for e in events}

    def attempt() -> BatchOutcome:
        conn = rt.connection()
        missing = months - rt.known_partitions
        if missing:
            ensure_partitions(conn, missing)
            rt.known_partitions |= missing
        config = rt.tenant_config(tenant_id)
        stream.discard(tenant_id)
        with conn.transaction():
            outcome = persist_tenant_events(conn, tenant_id, events, config.rules)
        stream.publish(tenant_id)  # live stream messages, once committed (workers/stream.py)
        return outcome

    return _with_retry(rt, f"batch for tenant {tenant_id}", attempt)


def _with_retry(rt: runtime.WorkerRuntime, what: str, fn):
    """Run ``fn``, retrying transient database errors with jittered exponential backoff
    (50 ms doubling up to 2 s; the default 10 attempts ride out a ~10 s database restart)."""
    attempts = max(1, rt.settings.db_retry_attempts)
    for n in range(1, attempts + 1):
        try:
            return fn()
        except TRANSIENT as exc:
            if isinstance(exc, psycopg.OperationalError) and not isinstance(exc, psycopg.errors.TransactionRollback
                                                                            | psycopg.errors.LockNotAvailable):
                rt.reset_connection()  # the connection itself is gone
            if n == attempts:
                raise
            delay = min(2.0, 0.05 * 2 ** (n - 1)) * (0.5 + random.random())
            log.warning("%s: %s (attempt %d/%d), retrying in %.2fs", what, type(exc).__name__, n, attempts, delay)
            time.sleep(delay)
    raise AssertionError("unreachable")
