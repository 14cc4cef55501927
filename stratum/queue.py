"""The RQ side of the queue: names, the msgpack serializer and the job layout.

Jobs are ordinary RQ jobs (so RQ's workers, registries and tooling all apply), but their
``data`` is msgpack instead of pickle: ``[func_name, None, [payload], {}]`` where
``payload`` is a ``core.schemas.QueuedBatch`` encoded as msgpack bytes. The ingest API
builds these bytes inside Redis (ingest_api/enqueue.py), so the layout here is the
single description both sides share.
"""

from __future__ import annotations

from typing import Any

import msgspec
from redis import Redis
from rq import Queue

PROCESS_BATCH = "workers.jobs.process_batch"

_encoder = msgspec.msgpack.Encoder()


class MsgpackSerializer:
    """RQ serializer: msgpack via msgspec. Never pickle: a queue payload is data, not code."""

    @staticmethod
    def dumps(obj: Any) -> bytes:
        return _encoder.encode(obj)

    @staticmethod
    def loads(data: bytes) -> Any:
        return msgspec.msgpack.decode(data)


def job_data_prefix(func_name: str = PROCESS_BATCH) -> bytes:
    """Bytes of ``[func_name, None, [`` followed by the bin32 marker of the payload;
    the enqueue script appends a 4-byte length, the payload and an empty kwargs map."""
    return b"\x94" + _encoder.encode(func_name) + b"\xc0\x91\xc6"


def job_data(payload: bytes, func_name: str = PROCESS_BATCH) -> bytes:
    """The Python twin of what the enqueue script writes into the job's ``data`` field."""
    return job_data_prefix(func_name) + len(payload).to_bytes(4, "big") + payload + b"\x80"


def events_queue(connection: Redis, name: str) -> Queue:
    return Queue(name, connection=connection, serializer=MsgpackSerializer)
