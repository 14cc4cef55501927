"""What a failed job keeps in Redis: its batch in scrubbed form, never raw email or phone
(CONTRACT 6: failed-job payloads hold the scrubbed form, and replaying them gives the same
result).

RQ keeps a failed job's ``data`` for the failure TTL. ``scrub_failed_job`` is the worker's
RQ exception handler: it runs before RQ records the failure and rewrites the job's data with
``core.privacy.scrub_batch``; a payload that cannot be decoded (so cannot be scrubbed) is
dropped, leaving an empty payload that fails again if replayed. A job that RQ will retry
keeps its data until its last attempt fails.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from types import TracebackType

import msgspec
from rq.job import Job

from core.privacy import scrub_batch
from core.schemas import decode_batch, encode_event_value
from stratum.queue import job_data
from workers import runtime

log = logging.getLogger(__name__)


def scrubbed_payload(payload: object,
                     extra_blocked_of: Callable[[str], frozenset[str]] = lambda tenant_id: frozenset()) -> bytes:
    """The scrubbed form of a ``process_batch`` payload; ``b""`` when it cannot be read.
    ``extra_blocked_of(tenant_id)`` gives the tenant's blocked values."""
    if not isinstance(payload, bytes):
        return b""
    try:
        batch = decode_batch(payload)
    except (msgspec.DecodeError, msgspec.ValidationError, ValueError, RecursionError):
        return b""
    try:
        return encode_event_value(scrub_batch(batch, extra_blocked_of(batch.tenant_id)))
    except Exception:  # whatever broke the job may break mapping too: keep nothing raw
        log.warning("failed job payload could not be scrubbed; dropped")
        return b""


def tenant_blocked_values(tenant_id: str) -> frozenset[str]:
    """The tenant's blocked values, for mapping Segment events as the worker does (the
    global list only when the database cannot say)."""
    try:
        return runtime.current().tenant_config(tenant_id).extra_blocked
    except Exception:  # database away: map with the global list only
        log.warning("tenant settings unavailable while scrubbing a failed job; using no tenant blocked values")
        return frozenset()


def scrub_failed_job(job: Job, exc_type: type[BaseException] | None, exc_value: BaseException | None,
                     tb: TracebackType | None) -> bool:
    """RQ exception handler: replace the failing job's data by its scrubbed form. Always lets
    the next handler run (returns True)."""
    if job.should_retry:
        return True
    try:
        args = job.args
        payload = args[0] if args else None
    except Exception:  # data RQ cannot even deserialize: drop it
        payload = None
    data = job_data(scrubbed_payload(payload, tenant_blocked_values))
    job.data = data  # what RQ writes when it records the failure (the registry saves the job)
    try:
        job.connection.hset(job.key, "data", data)
    except Exception:  # RQ records the failure next; its own error handling applies
        log.warning("could not replace the data of failed job %s with its scrubbed form", job.id)
    return True
