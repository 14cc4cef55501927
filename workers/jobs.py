"""The job functions RQ runs. ``process_batch`` is the only one the ingest API enqueues.

What a failure does to a job:

- a transient error (workers/outages.py) is retried with backoff; when the retries run
  out, ``ServiceUnavailable`` propagates, the coalesced batches go back on the queue
  untouched and the worker puts this job back too, then waits for the service;
- an event that cannot be stored is isolated (workers/isolation.py): every other event of
  the job, coalesced batches included, is stored, and only that event becomes a failed job;
- a coalesced batch that cannot even be read becomes a failed job of its own; this job's
  own unreadable payload fails this job, before anything is claimed;
- RQ's job timeout propagates (the claimed batches go back), and RQ fails the job.
"""

from __future__ import annotations

import contextlib
import logging
import random
import time
from collections import defaultdict
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import TypeVar

from rq import get_current_job
from rq.job import Job
from rq.timeouts import BaseTimeoutException

from core.event_time import retention_cutoff
from core.schemas import QueuedBatch, QueuedEvent, QueuedSegmentEvent, decode_batch
from stratum.db.overlap import Overlap, run_all, while_waiting
from stratum.db.partitions import ensure_partitions
from stratum.queue import layout
from stratum.queue.claims import Coalescer
from workers import runtime, stream
from workers.failed_jobs import tenant_blocked_values
from workers.isolation import (
    FailedEventSink,
    caused_by_data,
    failed_event_payload,
    failure_reason,
    persist_isolating,
)
from workers.outages import REDIS_OUTAGE, ServiceUnavailable, connection_lost, is_transient
from workers.persist import BatchOutcome, persist_tenant_events, record_rejected, split_expired
from workers.prepare import PreparedEvent, prepare_event

log = logging.getLogger(__name__)
T = TypeVar("T")

# Events prepared per step of a round prepared ahead: a statement's result that arrives
# during a step waits for it (about 15-25 us per event; stratum/db/overlap.py).
STEP_EVENTS = 8


@dataclass(slots=True)
class _Item:
    """A prepared event and where it was queued (to rebuild it alone if it must be isolated;
    ``job_id``: the coalesced job it came from, None for the running job's own payload)."""

    prepared: PreparedEvent
    batch: QueuedBatch
    queued: QueuedEvent | QueuedSegmentEvent
    job_id: str | None = None


@dataclass
class _Round:
    """Queued batches decoded and prepared, ready for their transactions (one per tenant).

    ``job_ids``: the coalesced jobs the round holds (the running job's own payload is not
    one of them); ``unreadable``: (job id, reason) of those whose batch could not be read;
    ``isolated``: events that became failed jobs of their own, here or in a transaction."""

    job_ids: list[str] = field(default_factory=list)
    by_tenant: dict[str, list[_Item]] = field(default_factory=lambda: defaultdict(list))
    unreadable: list[tuple[str, str]] = field(default_factory=list)
    isolated: int = 0

    @classmethod
    def carrying(cls, items: list[_Item], then: _Round) -> _Round:
        """Events a round deferred, ahead of the next round's (their jobs stay claimed)."""
        rnd = cls(job_ids=list(dict.fromkeys([*(i.job_id for i in items if i.job_id is not None), *then.job_ids])),
                  unreadable=then.unreadable, isolated=then.isolated)
        for item in items:
            rnd.by_tenant[item.batch.tenant_id].append(item)
        for tenant_id, tenant_items in then.by_tenant.items():
            rnd.by_tenant[tenant_id].extend(tenant_items)
        return rnd

    def isolate(self, sink: FailedEventSink | None, batch: QueuedBatch,
                queued: QueuedEvent | QueuedSegmentEvent, exc: Exception) -> None:
        if sink is None:
            raise exc
        sink.record(failed_event_payload(batch, queued, tenant_blocked_values(batch.tenant_id)), failure_reason(exc),
                    event_id=queued.event_id)
        self.isolated += 1


def process_batch(payload: bytes) -> dict[str, int]:
    """RQ job: persist one queued batch (msgpack ``QueuedBatch``), coalesced with the next
    queued batches when there are any (stratum/queue/claims.py). Exactly once: running it again
    for the same payload stores nothing twice."""
    rt = runtime.current()
    try:
        return _process_batch(rt, payload)
    except BaseTimeoutException:
        # The timeout may have cut a query short, on the job's connection or on the side
        # one of a preparation step: such a connection is unusable.
        rt.reset_connection()
        rt.reset_side_connection()
        raise


def _process_batch(rt: runtime.WorkerRuntime, payload: bytes) -> dict[str, int]:
    """The job's own batch and what it coalesces, in rounds of at most
    ``worker_coalesce_max_events`` events: while one round's statements wait for Postgres,
    this thread claims and prepares the next in steps (decoding, mapping, normalizing and
    hashing are half of the worker's Python; stratum/db/overlap.py), so the worker's Python
    and its Postgres backend work at the same time. Each round's jobs are deleted once it
    committed; up to ``worker_rounds_per_job`` rounds run while the queue holds more, none
    started after a quarter of the job timeout or once a warm shutdown was asked for."""
    job = get_current_job()
    sink = _failed_event_sink(job, rt)
    if job is None or rt.settings.worker_coalesce_max_events <= 0:
        return persist_payloads([payload], sink)
    decode_batch(payload)  # unreadable: this job fails alone, before it claims anything
    coalescer = Coalescer(job.connection)
    queue_key = layout.queue_key(job.origin)
    # Counted in events; a job that does not say how many it holds counts as a full batch.
    claim = partial(coalescer.claim, queue_key, job.id, rt.settings.worker_coalesce_max_events,
                    rt.settings.max_events_per_request)
    claimed = claim()
    if not claimed:
        return persist_payloads([payload], sink)
    totals = {"stored": 0, "duplicates": 0, "profiles_created": 0, "merges": 0, "isolated": 0, "coalesced_jobs": 0,
              "rounds": 0, "deferred": 0}
    ahead: Overlap[_Round] | None = None
    try:
        rnd = _prepare_round(rt, [payload, *_payloads_of(claimed)], sink, [None, *(i for i, _ in claimed)])
        deadline = time.monotonic() + rt.settings.job_timeout_s / 4
        last = False
        while True:
            if (not last and totals["rounds"] + 1 < rt.settings.worker_rounds_per_job
                    and time.monotonic() < deadline and not rt.stop_requested):
                ahead = Overlap(_claim_and_prepare(rt, claim, sink))
            # Every round but the last defers events whose identifiers another worker holds
            # (workers/persist.py); the last one waits for them, so the job ends with all stored.
            with while_waiting(ahead):
                deferred = _persist_round(rt, rnd, sink, coalescer, job.id, totals,
                                          defer=ahead is not None and rt.settings.worker_defer_conflicts)
            if ahead is None:
                break
            nxt, ahead = ahead.result(), None  # what the waits left of it is done now
            if not nxt.job_ids:
                if not deferred:
                    break
                last = True  # the queue is drained: one more round, for the deferred events
            rnd = _Round.carrying(deferred, nxt)
    except BaseException:
        # An outage or the job timeout (a poison event never gets here: it is isolated).
        # The claimed batches not yet stored go back untouched, for whichever job runs next,
        # with whatever the round being prepared ahead had claimed (claims are recorded as
        # they are made).
        if ahead is not None:
            ahead.close()
        with contextlib.suppress(*REDIS_OUTAGE):
            coalescer.give_back(queue_key, job.id)
        raise
    # Every committed round left the claim (finish_round); this drops the job's owner
    # record. A job still found in the claim would be a bug: it goes back to the queue.
    if coalescer.give_back(queue_key, job.id):
        log.error("job %s: jobs were still claimed after its last round; put back on the queue", job.id)
    if totals["deferred"]:
        log.info("job %s: %d events stored in %d rounds; %d times an event waited for a later round (its identifier"
                 " was held by another worker)", job.id, totals["stored"], totals["rounds"], totals["deferred"])
    return totals


def _payloads_of(claimed: list[tuple[str, bytes]]) -> list[bytes | Exception]:
    out: list[bytes | Exception] = []
    for _, data in claimed:
        try:
            out.append(layout.payload_of(data))
        except Exception as exc:  # not even a job of ours
            out.append(exc)
    return out


def _claim_and_prepare(rt: runtime.WorkerRuntime, claim: Callable[..., list[tuple[str, bytes]]],
                       sink: FailedEventSink | None) -> Generator[None, None, _Round]:
    """The next round, in steps (run while this round's statements wait): claimed jobs,
    prepared; empty when none are queued."""
    claimed = claim(with_owner=False)
    yield
    return (yield from _prepare_steps(rt, _payloads_of(claimed), sink, [i for i, _ in claimed], side=True))


def _persist_round(rt: runtime.WorkerRuntime, rnd: _Round, sink: FailedEventSink | None, coalescer: Coalescer,
                   owner_job_id: str, totals: dict[str, int], *, defer: bool = False) -> list[_Item]:
    """Store a round, then fail its unreadable jobs and delete the others (only now, with
    everything else stored: a give-back before must find them claimed). Returns the events
    deferred (``defer``): their jobs stay claimed, for the next round."""
    outcome = _persist_prepared(rt, rnd, sink, defer=defer)
    for job_id, reason in rnd.unreadable:
        assert sink is not None  # a job runs under RQ here, so it has a sink
        sink.fail_job(job_id, reason)
    deferred = _items_of(rnd, outcome.deferred)
    waiting = {i.job_id for i in deferred}
    done = [j for j in rnd.job_ids if j not in waiting]
    failed = {job_id for job_id, _ in rnd.unreadable}
    coalescer.finish_round(owner_job_id, done, [j for j in done if j not in failed])
    for key, n in (("stored", outcome.stored), ("duplicates", outcome.duplicates),
                   ("profiles_created", outcome.profiles_created), ("merges", outcome.merges),
                   ("isolated", rnd.isolated), ("coalesced_jobs", len(done)), ("rounds", 1),
                   ("deferred", len(deferred))):
        totals[key] += n
    return deferred


def _items_of(rnd: _Round, events: list[PreparedEvent]) -> list[_Item]:
    """The round's items holding ``events`` (the same objects), in the round's order."""
    if not events:
        return []
    wanted = {id(e) for e in events}
    return [i for items in rnd.by_tenant.values() for i in items if id(i.prepared) in wanted]


def _failed_event_sink(job: Job | None, rt: runtime.WorkerRuntime) -> FailedEventSink | None:
    if job is None:
        return None  # called outside RQ: a poison event raises instead
    return FailedEventSink(job.connection, job.origin, rt.settings.failed_job_ttl_s, rt.settings.job_timeout_s)


def persist_payloads(payloads: Sequence[bytes], sink: FailedEventSink | None = None, *,
                     job_ids: Sequence[str | None] = ()) -> dict:
    """Persist queued batches exactly once (one transaction per tenant, split only to
    isolate a bad event). ``job_ids`` (parallel to ``payloads``) name the coalesced jobs a
    payload came from, None for the running job's own. Without a ``sink`` a bad event, or
    a payload that cannot be read, raises. Returns counts, plus ``unreadable``: (job id,
    reason) of the coalesced jobs whose batch could not be read, for the caller to fail."""
    rt = runtime.current()
    rnd = _prepare_round(rt, payloads, sink, job_ids or [None] * len(payloads))
    total = _persist_prepared(rt, rnd, sink)
    return {"stored": total.stored, "duplicates": total.duplicates, "profiles_created": total.profiles_created,
            "merges": total.merges, "isolated": rnd.isolated, "unreadable": rnd.unreadable}


def _prepare_round(rt: runtime.WorkerRuntime, payloads: Sequence[bytes | Exception], sink: FailedEventSink | None,
                   job_ids: Sequence[str | None]) -> _Round:
    """Decode and prepare ``payloads`` (an Exception: a job whose data could not be read)."""
    return run_all(_prepare_steps(rt, payloads, sink, job_ids))


def _prepare_steps(rt: runtime.WorkerRuntime, payloads: Sequence[bytes | Exception], sink: FailedEventSink | None,
                   job_ids: Sequence[str | None], *, side: bool = False) -> Generator[None, None, _Round]:
    """``_prepare_round`` in steps of ``STEP_EVENTS`` events. ``side``: while the job's
    connection is busy (a round prepared ahead), tenant settings are read on the side one."""
    rnd = _Round(job_ids=[j for j in job_ids if j is not None])
    n = 0
    for job_id, raw in zip(job_ids, payloads, strict=True):
        try:
            if isinstance(raw, Exception):
                raise raw
            batch = decode_batch(raw)
        except Exception as exc:
            if sink is None or job_id is None:
                raise
            rnd.unreadable.append((job_id, failure_reason(exc)))
            continue
        config = _with_retry(rt, f"tenant {batch.tenant_id} settings",
                             partial(rt.tenant_config, batch.tenant_id, batch.source_id, side=side),
                             reset=rt.reset_side_connection if side else rt.reset_connection)
        identity = config.source_identity(batch.source_id, batch.source_type)
        for queued in batch.events:
            try:
                prepared = prepare_event(batch, queued, config.extra_blocked, identity)
            except Exception as exc:
                if not caused_by_data(exc):
                    raise
                rnd.isolate(sink, batch, queued, exc)
                continue
            rnd.by_tenant[batch.tenant_id].append(_Item(prepared, batch, queued, job_id))
            n += 1
            if n % STEP_EVENTS == 0:
                yield
    return rnd


def _persist_prepared(rt: runtime.WorkerRuntime, rnd: _Round, sink: FailedEventSink | None, *,
                      defer: bool = False) -> BatchOutcome:
    total = BatchOutcome()
    for tenant_id, items in rnd.by_tenant.items():
        outcome = persist_isolating(
            partial(_persist_items, rt, tenant_id, defer=defer), items,
            lambda item, exc: rnd.isolate(sink, item.batch, item.queued, exc), _add_outcomes, BatchOutcome())
        total = _add_outcomes(total, outcome)
    return total


def _add_outcomes(a: BatchOutcome, b: BatchOutcome) -> BatchOutcome:
    return BatchOutcome(a.stored + b.stored, a.duplicates + b.duplicates, a.profiles_created + b.profiles_created,
                        a.merges + b.merges, a.deferred + b.deferred)


def _persist_with_retry(rt: runtime.WorkerRuntime, tenant_id: str, events: list[PreparedEvent], *,
                        defer: bool = False) -> BatchOutcome:
    # Past the retention cut-off (queued before a month rolled out): never stored, so no
    # partition is created for it and no profile counts it.
    events, expired = split_expired(events, retention_cutoff(datetime.now(UTC), rt.settings.retention_months))
    months = {e.month for e in events}
    granularity = timedelta(seconds=max(0, rt.settings.identifier_touch_granularity_s))

    def attempt() -> BatchOutcome:
        conn = rt.connection()
        missing = months - rt.known_partitions
        if missing:
            ensure_partitions(conn, missing)
            rt.known_partitions |= missing
        config = rt.tenant_config(tenant_id)
        stream.discard(tenant_id)
        with conn.transaction():
            record_rejected(conn, tenant_id, expired, "event_too_old")
            outcome = persist_tenant_events(conn, tenant_id, events, config.rules,
                                            touch_granularity=granularity, defer=defer)
        stream.publish(tenant_id)  # live stream messages, once committed (workers/stream.py)
        return outcome

    return _with_retry(rt, f"batch for tenant {tenant_id}", attempt)


def _persist_items(rt: runtime.WorkerRuntime, tenant_id: str, items: Sequence[_Item], *,
                   defer: bool = False) -> BatchOutcome:
    return _persist_with_retry(rt, tenant_id, [i.prepared for i in items], defer=defer)


def _with_retry(rt: runtime.WorkerRuntime, what: str, fn: Callable[[], T],
                reset: Callable[[], None] | None = None) -> T:
    """Run ``fn``, retrying transient errors (workers/outages.py) with jittered exponential
    backoff (50 ms doubling up to 2 s; the default 10 attempts ride out a ~10 s database
    restart). When they run out, raise ``ServiceUnavailable``: the worker requeues the job
    and waits for the database. Any other error propagates at once."""
    attempts = max(1, rt.settings.db_retry_attempts)
    for n in range(1, attempts + 1):
        try:
            return fn()
        except Exception as exc:
            if not is_transient(exc) or isinstance(exc, ServiceUnavailable):
                raise
            if connection_lost(exc):
                (reset or rt.reset_connection)()  # the connection itself is gone
            if n == attempts:
                raise ServiceUnavailable(f"{what}: {failure_reason(exc)}, {attempts} attempts") from exc
            delay = min(2.0, 0.05 * 2 ** (n - 1)) * (0.5 + random.random())
            log.warning("%s: %s (attempt %d/%d), retrying in %.2fs", what, failure_reason(exc), n, attempts, delay)
            time.sleep(delay)
    raise AssertionError("unreachable")
