"""Dedupe marks and the queue write, in one atomic Redis call.

``ENQUEUE_BATCH`` runs as one Lua script, so the per-event dedupe marks and the RQ job
either all happen or none do: a request that fails before or during the call leaves no
marks behind, and its retry goes through (CONTRACT 4.5). It also makes the whole request
one round trip: backpressure check, N marks, job hash, queue push.

Inside the script the job payload is assembled from a pre-encoded batch header plus the
event blobs that were not duplicates (see ``core.schemas.assemble_batch`` for the Python
twin). Redis checks memory before running a writing script (``noeviction`` answers OOM
up front), so a script never stops half-way for lack of memory.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime

from redis.asyncio import Redis

from stratum.queue import job_data_prefix

# KEYS: 1 job hash, 2 queue list, 3 set of queues, 4 rate-limit counter of this second,
#       5.. one dedupe key per marked event
# ARGV: 1 job data prefix, 2 batch header, 3 dedupe TTL s, 4 timestamp, 5 queue name,
#       6 job timeout s, 7 failure TTL s, 8 high-water mark, 9 event count N,
#       10 rate limit (events/s, 0 = none), then per event: blob, mark value (event id),
#       marked? ("1"/"0")
# Returns: {"queued"|"full"|"limited", n_queued, per-event original event id or ""}
_SCRIPT = r"""
local n = tonumber(ARGV[9])
if tonumber(ARGV[8]) > 0 and redis.call('LLEN', KEYS[2]) >= tonumber(ARGV[8]) then
  return {'full', 0, {}}
end
local limit = tonumber(ARGV[10])
if limit > 0 then
  local used = tonumber(redis.call('GET', KEYS[4]) or '0')
  if used + n > limit and used > 0 then
    return {'limited', 0, {}}
  end
  redis.call('INCRBY', KEYS[4], n)
  redis.call('EXPIRE', KEYS[4], 2)
end
local ttl = tonumber(ARGV[3])
local out = {}
local blobs = {}
local k = 5
for i = 1, n do
  local base = 10 + (i - 1) * 3
  local dup = false
  if ARGV[base + 3] == '1' then
    -- GET then SET rather than SET NX GET: the latter needs Redis 7, and a script is atomic anyway
    local prev = redis.call('GET', KEYS[k])
    if prev then
      out[i] = prev
      dup = true
    else
      redis.call('SET', KEYS[k], ARGV[base + 2], 'EX', ttl)
    end
    k = k + 1
  end
  if not dup then
    out[i] = ''
    blobs[#blobs + 1] = ARGV[base + 1]
  end
end
local m = #blobs
if m == 0 then
  return {'queued', 0, out}
end
local header
if m < 16 then
  header = string.char(0x90 + m)
elseif m < 65536 then
  header = string.char(0xdc, math.floor(m / 256), m % 256)
else
  return redis.error_reply('batch too large')
end
local payload = ARGV[2] .. header .. table.concat(blobs)
local len = #payload
local len4 = string.char(math.floor(len / 16777216) % 256, math.floor(len / 65536) % 256,
                         math.floor(len / 256) % 256, len % 256)
redis.call('HSET', KEYS[1],
  'status', 'queued', 'created_at', ARGV[4], 'enqueued_at', ARGV[4],
  'data', ARGV[1] .. len4 .. payload .. string.char(0x80),
  'origin', ARGV[5], 'description', 'process_batch', 'timeout', ARGV[6],
  'result_ttl', '0', 'failure_ttl', ARGV[7],
  'success_callback_name', '', 'failure_callback_name', '', 'stopped_callback_name', '',
  'started_at', '', 'ended_at', '', 'last_heartbeat', '', 'worker_name', '', 'group_id', '')
redis.call('SADD', KEYS[3], KEYS[2])
redis.call('RPUSH', KEYS[2], string.sub(KEYS[1], 8))
return {'queued', m, out}
"""

JOB_KEY_PREFIX = "rq:job:"
QUEUES_KEY = "rq:queues"


def dedupe_key(tenant_id: str, key: str) -> str:
    """Redis key of an event's dedupe mark; scoped per tenant (not per source)."""
    return f"stratum:dedupe:{tenant_id}:{key}"


@dataclass(frozen=True)
class PendingEvent:
    blob: bytes
    event_id: str
    dedupe_key: str | None  # None: no client key, nothing to mark (event_id is unique)


@dataclass(frozen=True)
class EnqueueResult:
    queue_full: bool
    rate_limited: bool
    queued: int
    # per event: None if queued, else the event id of the copy seen first
    duplicates_of: list[str | None]


class BatchEnqueuer:
    """Writes accepted events as one RQ job. The Redis connection is passed in."""

    def __init__(self, redis: Redis, queue_name: str, *, dedupe_window_s: int, job_timeout_s: int,
                 failed_job_ttl_s: int, high_water: int) -> None:
        self._redis = redis
        self._script = redis.register_script(_SCRIPT)
        self._queue_key = f"rq:queue:{queue_name}"
        self._queue_name = queue_name
        self._prefix = job_data_prefix()
        self._fixed = (str(dedupe_window_s), job_timeout_s, failed_job_ttl_s, high_water)

    async def enqueue(self, job_id: str, tenant_id: str, source_id: str, rate_limit: int,
                      header: bytes, events: list[PendingEvent]) -> EnqueueResult:
        """Queue ``events`` as one job unless the queue is full or the source is over
        ``rate_limit`` events per second (0: no limit); a batch is never split."""
        ttl, timeout, failure_ttl, high_water = self._fixed
        second = int(time.time())
        keys = [JOB_KEY_PREFIX + job_id, self._queue_key, QUEUES_KEY, f"stratum:rate:{source_id}:{second}"]
        args: list[bytes | str | int] = [
            self._prefix, header, ttl, _rq_timestamp(), self._queue_name, timeout, failure_ttl,
            high_water, len(events), rate_limit,
        ]
        for ev in events:
            marked = ev.dedupe_key is not None
            if marked:
                keys.append(dedupe_key(tenant_id, ev.dedupe_key))
            args.extend((ev.blob, ev.event_id, "1" if marked else "0"))
        status, queued, out = await self._script(keys=keys, args=args)
        if status in (b"full", b"limited"):
            return EnqueueResult(status == b"full", status == b"limited", 0, [None] * len(events))
        return EnqueueResult(False, False, int(queued), [o.decode() if o else None for o in out])

    async def queue_depth(self) -> int:
        return int(await self._redis.llen(self._queue_key))


def _rq_timestamp() -> str:
    # RQ's utcformat: ISO 8601 with microseconds and a literal Z
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
