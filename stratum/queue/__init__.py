"""The queue: the only package that knows RQ's key layout, used by every edge.

- ``layout``: key names, the msgpack serializer and the job ``data`` layout;
- ``writer``: the ingest API's Lua job writer (dedupe marks, rate limit, job hash, push);
- ``claims``: coalescing claims of running jobs;
- ``liveness``: worker heartbeats and the reaper of dead workers' jobs;
- ``status``: queue counts, workers, failed-job listing and replay.
- ``failed``: failed jobs the workers write themselves (an isolated event, an unreadable
  coalesced batch).

The ingest API, the read API, the workers and the CLI import from here, never from each
other. The Redis connection is always passed in.
"""

from stratum.queue.layout import (
    PROCESS_BATCH,
    MsgpackSerializer,
    events_queue,
    job_data,
    job_data_prefix,
)

__all__ = ["PROCESS_BATCH", "MsgpackSerializer", "events_queue", "job_data", "job_data_prefix"]
