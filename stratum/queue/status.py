"""Queue status, workers, failed-job listing and replay: what ``stratum status``,
``stratum replay-failed`` and the read API's ``/ops`` endpoints show and do."""

from __future__ import annotations

from datetime import UTC, datetime

from redis import Redis
from rq import Worker
from rq.exceptions import InvalidJobOperation, NoSuchJobError
from rq.job import Job
from rq.registry import FailedJobRegistry, ScheduledJobRegistry, StartedJobRegistry

from stratum.queue.claims import claimed_count
from stratum.queue.layout import (
    MsgpackSerializer,
    alive_key,
    events_queue,
    intermediate_key,
    job_key,
)
from stratum.settings import Settings


def queue_status(settings: Settings, connection: Redis | None = None) -> dict:
    """``{"queues": {NAME: {queued, started, scheduled, failed, oldest_queued_age_s}}, "workers": n}``"""
    conn = connection or Redis.from_url(settings.redis_url)
    queues = {}
    for name in settings.worker_queues:  # the events queue and the import lane
        q = events_queue(conn, name)
        oldest_age = 0.0
        first = conn.lindex(q.key, 0)
        if first is not None:
            enqueued = conn.hget(job_key(first.decode()), "enqueued_at")
            if enqueued:
                ts = datetime.strptime(enqueued.decode(), "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)
                oldest_age = round(max(0.0, (datetime.now(UTC) - ts).total_seconds()), 3)
        queues[q.name] = {
            "queued": q.count,
            # taken by a worker: started, dequeued and about to start (RQ's intermediate list),
            # or claimed by a started job to be persisted with it (coalescing)
            "started": StartedJobRegistry(queue=q).count + conn.llen(intermediate_key(q.key)) + claimed_count(conn, q.key),
            "scheduled": ScheduledJobRegistry(queue=q).count,
            "failed": FailedJobRegistry(queue=q).count,
            "oldest_queued_age_s": oldest_age,
        }
    return {"queues": queues, "workers": Worker.count(connection=conn)}


def _iso(ts: datetime | None) -> str | None:
    return ts.isoformat() if ts else None


def workers_status(settings: Settings, connection: Redis) -> list[dict]:
    """The events queue's RQ workers, sorted by name: name, state, ``alive`` (its heartbeat
    is fresh), queues, current job id, job counts, birth and last heartbeat."""
    workers = Worker.all(queue=events_queue(connection, settings.queue_name), serializer=MsgpackSerializer)
    with connection.pipeline(transaction=False) as pipe:
        for w in workers:
            pipe.exists(alive_key(w.name))
        alive = pipe.execute()
    out = [{"name": w.name, "state": w.get_state(), "alive": bool(up), "queues": w.queue_names(),
            "current_job_id": w.get_current_job_id(), "successful_jobs": w.successful_job_count,
            "failed_jobs": w.failed_job_count, "birth": w.birth_date, "last_heartbeat": w.last_heartbeat}
           for w, up in zip(workers, alive, strict=True)]
    return sorted(out, key=lambda w: w["name"])


def failed_jobs(settings: Settings, connection: Redis | None = None, limit: int = 100) -> list[dict]:
    """The most recent failed jobs, newest first: job id, reason (the last line of the
    exception), enqueued/ended times, worker. Payloads are never included."""
    conn = connection or Redis.from_url(settings.redis_url)
    out = []
    ids = [job_id for r in _failed_registries(settings, conn) for job_id in r.get_job_ids(0, limit - 1, desc=True)]
    for job_id in ids:
        try:
            job = Job.fetch(job_id, connection=conn, serializer=MsgpackSerializer)
        except NoSuchJobError:  # expired between the listing and now
            continue
        result = job.latest_result()
        exc = ((result.exc_string if result is not None else None) or "").strip().splitlines()
        out.append({"job_id": job_id, "reason": exc[-1] if exc else "unknown", "enqueued_at": _iso(job.enqueued_at),
                    "ended_at": _iso(job.ended_at), "worker_name": job.worker_name or None})
    out.sort(key=lambda j: j["ended_at"] or "", reverse=True)
    return out[:limit]


def _failed_registries(settings: Settings, conn: Redis) -> list[FailedJobRegistry]:
    """The failed registries of the events queue and the import lane."""
    return [FailedJobRegistry(queue=events_queue(conn, name)) for name in settings.worker_queues]


def failed_job_count(settings: Settings, connection: Redis) -> int:
    """How many jobs the failed registries of the events queue and the import lane hold."""
    return sum(r.count for r in _failed_registries(settings, connection))


def requeue_failed(settings: Settings, job_ids: list[str] | None,
                   connection: Redis | None = None) -> tuple[int, list[dict]]:
    """Re-enqueue failed jobs (all when ``job_ids`` is None). Safe: processing is idempotent.
    Returns (how many were requeued, the ids skipped with why)."""
    conn = connection or Redis.from_url(settings.redis_url)
    registries = _failed_registries(settings, conn)
    wanted = [(r, job_id) for r in registries for job_id in r.get_job_ids()] if job_ids is None else None
    if wanted is None:  # named ids: the registry that holds each (the events queue's if none does)
        wanted = [(next((r for r in registries if job_id in r), registries[0]), job_id) for job_id in job_ids]
    n, skipped = 0, []
    for registry, job_id in wanted:
        try:
            registry.requeue(job_id)
            n += 1
        except (NoSuchJobError, InvalidJobOperation):
            skipped.append({"job_id": job_id, "reason": "not a failed job (already replayed or expired)"})
    return n, skipped


def replay_failed(settings: Settings, job_ids: list[str] | None, connection: Redis | None = None) -> int:
    """``requeue_failed`` for callers that only need the count."""
    return requeue_failed(settings, job_ids, connection)[0]
