"""Key names and the job layout: everything this project writes into RQ's keyspace, or
beside it, is spelled here.

Jobs are ordinary RQ jobs (so RQ's workers, registries and tooling all apply), but their
``data`` is msgpack instead of pickle: ``[func_name, None, [payload], {}]`` where
``payload`` is a ``core.schemas.QueuedBatch`` encoded as msgpack bytes. The ingest API
builds these bytes inside Redis (``stratum/queue/writer.py``), so the layout here is the
single description both sides share. ``tests/test_queue_layout.py`` compares a job written
that way with one written by RQ's own ``Queue.enqueue``, so an RQ upgrade that changes the
layout fails a test.

RQ's keys (the names RQ itself uses; the test checks them against RQ):

- ``rq:queue:{name}``: list of queued job ids; ``rq:queues``: set of queue keys;
- ``rq:queue:{name}:intermediate``: RQ 3 moves a job id here (``LMOVE``) when a worker
  dequeues it, before it records the job as started;
- ``rq:job:{id}``: the job hash. Its ``meta`` (RQ's field for user data, msgpack like the
  job data) is ``{"event_count": n}``: the number of events of the batch, which the
  ingest script writes and coalescing claims count by (``job_meta``).

Ours:

- ``stratum:claimed:{job}``: set of job ids a running job claimed to coalesce with, and
  ``stratum:claim-owners``: hash of the jobs holding claims -> their queue key
  (``stratum/queue/claims.py``); neither expires;
- ``stratum:alive:{worker}``: a worker's heartbeat (``stratum/queue/liveness.py``);
- ``stratum:stranded:{job}``: when a job was first seen stuck in the intermediate list;
- ``stratum:dedupe:{tenant}:{bucket}``, ``stratum:rate:{source}:{second}``: the ingest
  script's dedupe marks and rate counters (``stratum/queue/writer.py``).
"""

from __future__ import annotations

import contextlib
import zlib
from typing import Any

import msgspec
from redis import Redis
from rq import Queue

PROCESS_BATCH = "workers.jobs.process_batch"

JOB_KEY_PREFIX = "rq:job:"
QUEUE_KEY_PREFIX = "rq:queue:"
QUEUES_KEY = "rq:queues"
EVENT_COUNT_META = "event_count"
CLAIM_OWNERS_KEY = "stratum:claim-owners"
ALIVE_KEY_PREFIX = "stratum:alive:"

_encoder = msgspec.msgpack.Encoder()


class MsgpackSerializer:
    """RQ serializer: msgpack via msgspec. Never pickle: a queue payload is data, not code."""

    @staticmethod
    def dumps(obj: Any) -> bytes:
        return _encoder.encode(obj)

    @staticmethod
    def loads(data: bytes) -> Any:
        return msgspec.msgpack.decode(data)


def job_key(job_id: str) -> str:
    """RQ's job hash (``Job.key_for``)."""
    return JOB_KEY_PREFIX + job_id


def queue_key(queue_name: str) -> str:
    """RQ's list of queued job ids (``Queue.key``)."""
    return QUEUE_KEY_PREFIX + queue_name


def intermediate_key(queue_key_: str) -> str:
    """RQ 3's list of jobs dequeued but not yet started (``Queue.intermediate_queue_key``)."""
    return f"{queue_key_}:intermediate"


def claimed_key(owner_job_id: str) -> str:
    """Set of the job ids ``owner_job_id`` claimed to coalesce with."""
    return f"stratum:claimed:{owner_job_id}"


def alive_key(worker_name: str) -> str:
    """A worker's heartbeat: exists while the worker process lives."""
    return ALIVE_KEY_PREFIX + worker_name


def stranded_key(job_id: str) -> str:
    """When the reaper first saw ``job_id`` in the intermediate list (unix seconds)."""
    return f"stratum:stranded:{job_id}"


def job_meta(event_count: int) -> dict[str, int]:
    """A batch job's ``meta``: how many events it holds."""
    return {EVENT_COUNT_META: event_count}


def job_data_prefix(func_name: str = PROCESS_BATCH) -> bytes:
    """Bytes of ``[func_name, None, [`` followed by the bin32 marker of the payload;
    the enqueue script appends a 4-byte length, the payload and an empty kwargs map."""
    return b"\x94" + _encoder.encode(func_name) + b"\xc0\x91\xc6"


def job_data(payload: bytes, func_name: str = PROCESS_BATCH) -> bytes:
    """The Python twin of what the enqueue script writes into the job's ``data`` field."""
    return job_data_prefix(func_name) + len(payload).to_bytes(4, "big") + payload + b"\x80"


def payload_of(data: bytes) -> bytes:
    """The payload argument of a job's ``data`` field, as read straight from the job hash.

    The ingest script stores ``data`` as is; RQ zlib-compresses it whenever it saves a job
    itself (a requeue or a replay), so both forms occur."""
    with contextlib.suppress(zlib.error):
        data = zlib.decompress(data)
    _func, _instance, args, _kwargs = MsgpackSerializer.loads(data)
    return args[0]


def events_queue(connection: Redis, name: str) -> Queue:
    return Queue(name, connection=connection, serializer=MsgpackSerializer)
