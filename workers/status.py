"""Queue status and failed-job replay for ``stratum status`` and ``stratum replay-failed``."""

from __future__ import annotations

from datetime import UTC, datetime

from redis import Redis
from rq import Worker
from rq.job import Job
from rq.registry import FailedJobRegistry, ScheduledJobRegistry, StartedJobRegistry

from stratum.queue import MsgpackSerializer, events_queue
from stratum.settings import Settings


def queue_status(settings: Settings, connection: Redis | None = None) -> dict:
    """``{"queues": {NAME: {queued, started, scheduled, failed, oldest_queued_age_s}}, "workers": n}``"""
    conn = connection or Redis.from_url(settings.redis_url)
    queues = {}
    q = events_queue(conn, settings.queue_name)
    oldest_age = 0.0
    first = conn.lindex(q.key, 0)
    if first is not None:
        enqueued = conn.hget(Job.key_for(first.decode()), "enqueued_at")
        if enqueued:
            ts = datetime.strptime(enqueued.decode(), "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)
            oldest_age = round(max(0.0, (datetime.now(UTC) - ts).total_seconds()), 3)
    queues[q.name] = {
        "queued": q.count,
        # taken by a worker: started, or dequeued and about to start (RQ's intermediate list)
        "started": StartedJobRegistry(queue=q).count + conn.llen(f"{q.key}:intermediate"),
        "scheduled": ScheduledJobRegistry(queue=q).count,
        "failed": FailedJobRegistry(queue=q).count,
        "oldest_queued_age_s": oldest_age,
    }
    return {"queues": queues, "workers": Worker.count(connection=conn)}


def failed_jobs(settings: Settings, connection: Redis | None = None, limit: int = 100) -> list[dict]:
    conn = connection or Redis.from_url(settings.redis_url)
    q = events_queue(conn, settings.queue_name)
    registry = FailedJobRegistry(queue=q)
    out = []
    for job_id in registry.get_job_ids(0, limit - 1):
        job = Job.fetch(job_id, connection=conn, serializer=MsgpackSerializer)
        result = job.latest_result()
        exc = ((result.exc_string if result is not None else None) or "").strip().splitlines()
        out.append({"job_id": job_id, "reason": exc[-1] if exc else "unknown",
                    "ended_at": job.ended_at.isoformat() if job.ended_at else None})
    return out


def replay_failed(settings: Settings, job_ids: list[str] | None, connection: Redis | None = None) -> int:
    """Re-enqueue failed jobs (all when ``job_ids`` is None). Safe: processing is idempotent."""
    conn = connection or Redis.from_url(settings.redis_url)
    q = events_queue(conn, settings.queue_name)
    registry = FailedJobRegistry(queue=q)
    ids = registry.get_job_ids() if job_ids is None else job_ids
    n = 0
    for job_id in ids:
        try:
            registry.requeue(job_id)
            n += 1
        except Exception as exc:  # noqa: BLE001 - report and continue with the others
            print(f"could not replay {job_id}: {exc}")
    return n
