"""Failed jobs written by the workers themselves: an event isolated from its batch, or a
coalesced job whose payload cannot be read (workers/isolation.py).

Both land in RQ's failed registry exactly as a job RQ failed would (status ``failed``, a
failure ``Result`` carrying the reason), so ``stratum status``, ``/ops`` and ``stratum
replay-failed`` (status.py) list and replay them like any other.
"""

from __future__ import annotations

from redis import Redis
from rq.job import Job, JobStatus
from rq.registry import FailedJobRegistry
from rq.results import Result

from stratum.queue.layout import PROCESS_BATCH, MsgpackSerializer, events_queue, job_data, job_meta


def record_failed_batch(connection: Redis, queue_name: str, payload: bytes, exc_string: str, *,
                        event_count: int, failure_ttl_s: int, job_timeout_s: int) -> str:
    """Save a failed ``process_batch`` job of ``queue_name`` holding ``payload``; return its id."""
    job = Job.create(PROCESS_BATCH, args=[payload], connection=connection, serializer=MsgpackSerializer,
                     origin=queue_name, timeout=job_timeout_s, failure_ttl=failure_ttl_s, result_ttl=0,
                     description="process_batch (isolated event)", status=JobStatus.FAILED,
                     meta=job_meta(event_count))
    _add_failure(connection, queue_name, job, exc_string, failure_ttl_s)
    return job.id


def fail_queued_job(connection: Redis, queue_name: str, job_id: str, exc_string: str, *, failure_ttl_s: int) -> None:
    """Move an existing job (one taken off the queue by a coalescing claim) whose payload
    cannot be read to the failed registry. A payload that cannot be read cannot be scrubbed
    either, so it is dropped (an empty payload): raw email and phone never rest in the
    failed registry (CONTRACT 6)."""
    job = Job.fetch(job_id, connection=connection, serializer=MsgpackSerializer)
    job.set_status(JobStatus.FAILED)
    job.data = job_data(b"")  # the registry saves the job, data included
    _add_failure(connection, queue_name, job, exc_string, failure_ttl_s)


def _add_failure(connection: Redis, queue_name: str, job: Job, exc_string: str, failure_ttl_s: int) -> None:
    with connection.pipeline() as pipe:
        FailedJobRegistry(queue=events_queue(connection, queue_name)).add(job, ttl=failure_ttl_s,
                                                                          exc_string=exc_string, pipeline=pipe)
        Result.create_failure(job, failure_ttl_s, exc_string=exc_string, pipeline=pipe)
        pipe.execute()
