"""The job the ingest script writes is the job RQ would write (stratum/queue/writer.py).

The ingest API writes RQ jobs with its own Lua script instead of ``Queue.enqueue``; these
tests compare both, field by field in the job hash, so an RQ upgrade that changes the job
layout or a key name fails here rather than in production.
"""

from __future__ import annotations

import asyncio
import re
import uuid
import zlib
from datetime import UTC, datetime

import pytest
from redis import Redis
from redis.asyncio import Redis as AsyncRedis
from rq.job import Job

from core.schemas import (
    QUEUE_FORMAT_VERSION,
    QueuedBatch,
    QueuedSegmentEvent,
    assemble_batch,
    encode_batch_header,
    encode_event,
)
from ingest_api.enqueue import BatchEnqueuer, PendingEvent
from stratum.queue import layout
from stratum.queue.layout import PROCESS_BATCH, MsgpackSerializer, events_queue, job_data, job_meta

RQ_TIMESTAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$")
TIMESTAMP_FIELDS = {"created_at", "enqueued_at"}
# Deliberate differences: RQ compresses ``data`` (and reads it uncompressed as well), the
# script always marks the payload as bin32 (it appends events to it in Redis), and
# RQ's default description is a repr of the arguments, which would copy the payload; the
# RQ job below is given the ingest script's description.
DESCRIPTION = "process_batch"


def _header() -> bytes:
    return encode_batch_header(QueuedBatch(
        version=QUEUE_FORMAT_VERSION, tenant_id=str(uuid.uuid4()), source_id=str(uuid.uuid4()), source_type="server",
        phone_region=None, received_at=datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC), request_id="req-1",
        context=None, integrations=None, events=[]))


def _events(n: int) -> list[PendingEvent]:
    out = []
    for i in range(n):
        event_id = str(uuid.uuid4())
        blob = encode_event(QueuedSegmentEvent(event_id, f"key-{i}", "track", datetime(2026, 1, 2, tzinfo=UTC),
                                               b'{"event": "Viewed"}'))
        out.append(PendingEvent(blob, event_id, f"dedupe-{i}"))
    return out


def _ingest_enqueue(settings, job_id: str, header: bytes, events: list[PendingEvent], tenant_id: str = "t1"):
    async def run():
        client = AsyncRedis.from_url(settings.redis_url)
        try:
            enqueuer = BatchEnqueuer(client, settings.queue_name, dedupe_window_s=settings.dedupe_window_s,
                                     job_timeout_s=settings.job_timeout_s, failed_job_ttl_s=settings.failed_job_ttl_s,
                                     high_water=0)
            return await enqueuer.enqueue(job_id, tenant_id, "s1", 0, header, events)
        finally:
            await client.aclose()

    return asyncio.run(run())


def _rq_enqueue(settings, redis_conn: Redis, payload: bytes, n_events: int) -> Job:
    """The job RQ writes for the same function and payload, with the options ingest uses."""
    queue = events_queue(redis_conn, settings.queue_name)
    return queue.enqueue(PROCESS_BATCH, payload, description=DESCRIPTION, result_ttl=0,
                         failure_ttl=settings.failed_job_ttl_s, job_timeout=settings.job_timeout_s,
                         meta=job_meta(n_events))


@pytest.mark.parametrize("n_events", [3, 200, 1000])  # msgpack fixint, uint8 and uint16 counts
def test_ingest_script_writes_the_job_rq_writes(settings, redis_conn, n_events):
    header, events = _header(), _events(n_events)
    payload = assemble_batch(header, [e.blob for e in events])
    ingest_id = str(uuid.uuid4())
    assert _ingest_enqueue(settings, ingest_id, header, events).queued == n_events
    ours = redis_conn.hgetall(layout.job_key(ingest_id))
    rq_job = _rq_enqueue(settings, redis_conn, payload, n_events)
    theirs = redis_conn.hgetall(rq_job.key)

    assert sorted(ours) == sorted(theirs), "the job hash fields differ from RQ's"
    for field in sorted(theirs):
        name = field.decode()
        if name in TIMESTAMP_FIELDS:
            assert RQ_TIMESTAMP.match(ours[field].decode()), (name, ours[field])
            assert RQ_TIMESTAMP.match(theirs[field].decode()), (name, theirs[field])
        elif name == "data":
            # RQ may pick a shorter msgpack length marker (bin16): equal once decoded
            assert ours[field] == job_data(payload)
            assert MsgpackSerializer.loads(ours[field]) == MsgpackSerializer.loads(zlib.decompress(theirs[field]))
        else:
            assert ours[field] == theirs[field], f"job field {name!r}: ours {ours[field]!r}, RQ's {theirs[field]!r}"

    # Both sit in the same queue list, and the queue is registered the same way.
    queue = events_queue(redis_conn, settings.queue_name)
    assert queue.job_ids == [ingest_id, rq_job.id]
    assert redis_conn.smembers(layout.QUEUES_KEY) == {queue.key.encode()}
    assert {k.decode() for k in redis_conn.keys("rq:*")} == {
        queue.key, layout.QUEUES_KEY, layout.job_key(ingest_id), rq_job.key}


def test_rq_reads_the_ingest_job_as_its_own(settings, redis_conn):
    header, events = _header(), _events(2)
    payload = assemble_batch(header, [e.blob for e in events])
    ingest_id = str(uuid.uuid4())
    _ingest_enqueue(settings, ingest_id, header, events)
    rq_job = _rq_enqueue(settings, redis_conn, payload, 2)
    ours = Job.fetch(ingest_id, connection=redis_conn, serializer=MsgpackSerializer)
    theirs = Job.fetch(rq_job.id, connection=redis_conn, serializer=MsgpackSerializer)
    for attr in ("func_name", "args", "kwargs", "origin", "description", "timeout", "result_ttl", "failure_ttl",
                 "meta", "worker_name", "started_at", "ended_at"):
        assert getattr(ours, attr) == getattr(theirs, attr), attr
    assert ours.get_status() == theirs.get_status() == "queued"
    assert list(ours.args) == [payload]
    assert ours.meta == {"event_count": 2}
    assert ours.enqueued_at is not None and ours.created_at is not None


def test_duplicates_are_left_out_of_the_job_data(settings, redis_conn):
    """The script's own payload assembly (some events are duplicates) matches Python's."""
    header = _header()
    first, second = _events(20), _events(20)
    _ingest_enqueue(settings, str(uuid.uuid4()), header, first[:10])
    # the first ten dedupe keys were seen: only events 10..19 of the second batch are queued
    again = [PendingEvent(e.blob, e.event_id, f"dedupe-{i}") for i, e in enumerate(second)]
    job_id = str(uuid.uuid4())
    result = _ingest_enqueue(settings, job_id, header, again)
    assert result.queued == 10
    assert result.duplicates_of == [e.event_id for e in first[:10]] + [None] * 10
    data = redis_conn.hget(layout.job_key(job_id), "data")
    assert data == job_data(assemble_batch(header, [e.blob for e in second[10:]]))
    assert layout.payload_of(data) == assemble_batch(header, [e.blob for e in second[10:]])
    # the job counts the events it holds, not the events sent
    meta = Job.fetch(job_id, connection=redis_conn, serializer=MsgpackSerializer).meta
    assert meta == job_meta(10) == {"event_count": 10}


def test_key_names_are_rqs(settings, redis_conn):
    queue = events_queue(redis_conn, settings.queue_name)
    assert layout.queue_key(settings.queue_name) == queue.key
    assert layout.intermediate_key(queue.key) == queue.intermediate_queue_key
    assert queue.redis_queues_keys == layout.QUEUES_KEY
    assert layout.job_key("abc") == Job.key_for("abc")
