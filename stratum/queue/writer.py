"""The ingest API's RQ job writer: one Lua script that queues a batch as an RQ job.

One script does everything a request needs from Redis, so the per-event dedupe marks
and the RQ job either all happen or none do: a request that fails before or during the
call leaves no marks behind, and its retry goes through (CONTRACT 4.5). It is also one
round trip: backpressure check, rate limit, dedupe marks, job hash, queue push.

Dedupe marks live in one Redis hash per tenant per window-long time bucket (two HMGETs
and one HSET per request, whatever the batch size, instead of a key per event: per-event
keys cost 200 Redis calls for a 100-event batch and about 245 bytes each).

The job hash holds the fields RQ's ``Queue.enqueue`` writes (``tests/test_queue_layout.py``
keeps them equal), its ``meta`` holding the number of events queued (``layout.job_meta``:
coalescing claims by events), except that ``data`` is not zlib-compressed (RQ reads it either way)
and ``description`` is a fixed name instead of RQ's repr of the arguments, which would
copy the payload. The job data for the common case (no duplicate) is built in Python and
stored as is; when some events are duplicates the script rebuilds the payload from the
kept event blobs (offsets into the same bytes; ``core.schemas.assemble_batch`` is the
Python twin). Redis checks memory before running a writing script (``noeviction``
answers OOM up front), so a script never stops half-way for lack of memory.

This module only builds the script's arguments and reads its reply; the caller runs it
on its own connection (the ingest API's asyncio client).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import NamedTuple

import msgspec

from core.schemas import assemble_batch, msgpack_array_header
from stratum.queue.layout import (
    EVENT_COUNT_META,
    QUEUES_KEY,
    job_data,
    job_data_prefix,
    job_key,
    queue_key,
)

# KEYS: 1 job hash, 2 queue list, 3 set of queues, 4 rate-limit counter of this second,
#       5 dedupe bucket of this window, 6 dedupe bucket of the previous window
# ARGV: 1 complete job data (every event), 2 timestamp, 3 queue name, 4 job timeout s,
#       5 failure TTL s, 6 high-water mark, 7 rate limit (events/s, 0 = none),
#       8 event count N, 9 dedupe bucket TTL s, 10 job data prefix, 11 batch header,
#       12 flat msgpack array: the N dedupe fields ("" = none), then the N event ids
#       (one packed argument instead of 2N: argument handling dominated the script's cost;
#       flat, so unpacking it builds no table per event)
#       13 name of the event count in the job's meta,
#       14 msgpack array of the N blob lengths, 15 offset of the first blob in ARGV[1]
#       (both read only when some events are duplicates)
# Returns: {"queued"|"full"|"limited", n_queued, {i, original event id, ...} for duplicates}
ENQUEUE_SCRIPT = r"""
local n = tonumber(ARGV[8])
if tonumber(ARGV[6]) > 0 and redis.call('LLEN', KEYS[2]) >= tonumber(ARGV[6]) then
  return {'full', 0, {}}
end
local limit = tonumber(ARGV[7])
if limit > 0 then
  local used = tonumber(redis.call('GET', KEYS[4]) or '0')
  if used + n > limit and used > 0 then
    return {'limited', 0, {}}
  end
end
local meta = cmsgpack.unpack(ARGV[12])
local fields = {}
for i = 1, n do
  local f = meta[i]
  if f ~= '' then fields[#fields + 1] = f end
end
local cur, prev = {}, {}
if #fields > 0 then
  cur = redis.call('HMGET', KEYS[5], unpack(fields))
  prev = redis.call('HMGET', KEYS[6], unpack(fields))
end
local out, seen, marks, kept = {}, {}, {}, {}
local j, dups = 0, 0
for i = 1, n do
  local f = meta[i]
  local orig = false
  if f ~= '' then
    j = j + 1
    orig = cur[j] or prev[j] or seen[f] or false
    if not orig then
      seen[f] = meta[n + i]
      marks[#marks + 1] = f
      marks[#marks + 1] = meta[n + i]
    end
  end
  if orig then
    out[#out + 1] = i
    out[#out + 1] = orig
    dups = dups + 1
  else
    kept[#kept + 1] = i
  end
end
local function commit_marks()
  -- Marks and the rate counter are written last: Redis does not undo a script that fails
  -- half-way, so anything that can fail (the job writes) happens before them. A failure
  -- after the job is queued leaves no marks: a retry is queued again and the workers'
  -- permanent dedupe stores the events once.
  if #marks > 0 then
    redis.call('HSET', KEYS[5], unpack(marks))
    redis.call('EXPIRE', KEYS[5], tonumber(ARGV[9]))
  end
  if limit > 0 then
    redis.call('INCRBY', KEYS[4], n)
    redis.call('EXPIRE', KEYS[4], 2)
  end
end
local m = #kept
if m == 0 then
  commit_marks()
  return {'queued', 0, out}
end
local data = ARGV[1]
if dups > 0 then
  -- rare: rebuild the payload from the kept event blobs
  local lengths = cmsgpack.unpack(ARGV[14])
  local offsets, off = {}, tonumber(ARGV[15])
  for i = 1, n do
    offsets[i] = off
    off = off + lengths[i]
  end
  local parts = {}
  for _, i in ipairs(kept) do
    parts[#parts + 1] = string.sub(ARGV[1], offsets[i], offsets[i] + lengths[i] - 1)
  end
  local header
  if m < 16 then
    header = string.char(0x90 + m)
  else
    header = string.char(0xdc, math.floor(m / 256), m % 256)
  end
  local payload = ARGV[11] .. header .. table.concat(parts)
  local len = #payload
  data = ARGV[10] .. string.char(math.floor(len / 16777216) % 256, math.floor(len / 65536) % 256,
                                 math.floor(len / 256) % 256, len % 256) .. payload .. string.char(0x80)
end
local job_meta = {}
job_meta[ARGV[13]] = m
local ok = redis.pcall('HSET', KEYS[1],
  'status', 'queued', 'created_at', ARGV[2], 'enqueued_at', ARGV[2], 'data', data, 'meta', cmsgpack.pack(job_meta),
  'origin', ARGV[3], 'description', 'process_batch', 'timeout', ARGV[4],
  'result_ttl', '0', 'failure_ttl', ARGV[5],
  'success_callback_name', '', 'failure_callback_name', '', 'stopped_callback_name', '',
  'started_at', '', 'ended_at', '', 'last_heartbeat', '', 'worker_name', '', 'group_id', '')
if type(ok) == 'table' and ok.err then return ok end
ok = redis.pcall('RPUSH', KEYS[2], string.sub(KEYS[1], 8))
if type(ok) == 'table' and ok.err then
  redis.call('DEL', KEYS[1])
  return ok
end
redis.call('SADD', KEYS[3], KEYS[2])
commit_marks()
return {'queued', m, out}
"""

_msgpack = msgspec.msgpack.Encoder()
_PREFIX = job_data_prefix()


def dedupe_bucket_key(tenant_id: str, bucket: int) -> str:
    """Redis hash of the dedupe marks of one tenant for one window-long bucket of time.

    Dedupe is scoped per tenant (not per source). A mark is found while its bucket or the
    next one is current, so a key is remembered for at least the window and at most twice it.
    """
    return f"stratum:dedupe:{tenant_id}:{bucket}"


def rate_key(source_id: str, second: int) -> str:
    """Events a source sent during one second (unix time)."""
    return f"stratum:rate:{source_id}:{second}"


class PendingEvent(NamedTuple):
    """One event of a job (a named tuple: one is built per event on the ingest hot path)."""

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


@dataclass(frozen=True)
class JobWriter:
    """The fixed part of every enqueue call for one queue."""

    queue_name: str
    dedupe_window_s: int
    job_timeout_s: int
    failed_job_ttl_s: int
    high_water: int

    def call(self, job_id: str, tenant_id: str, source_id: str, rate_limit: int, header: bytes,
             events: list[PendingEvent], now: float) -> tuple[list[str], list[bytes | str | int]]:
        """KEYS and ARGV of ``ENQUEUE_SCRIPT`` queueing ``events`` (after the batch ``header``)
        as job ``job_id`` unless the queue is full or the source is over ``rate_limit``
        events per second (0: no limit); a batch is never split."""
        window = max(1, self.dedupe_window_s)
        bucket = int(now // window)
        keys = [job_key(job_id), queue_key(self.queue_name), QUEUES_KEY, rate_key(source_id, int(now)),
                dedupe_bucket_key(tenant_id, bucket), dedupe_bucket_key(tenant_id, bucket - 1)]
        prefix = _PREFIX
        blobs = [ev.blob for ev in events]
        # 4: the payload's length after the job data prefix; +1: Lua strings are 1-based
        first_offset = len(prefix) + 4 + len(header) + len(msgpack_array_header(len(blobs))) + 1
        meta = [ev.dedupe_key or "" for ev in events]
        meta += [ev.event_id for ev in events]
        data = job_data(assemble_batch(header, blobs))
        args: list[bytes | str | int] = [
            data, rq_timestamp(now), self.queue_name, self.job_timeout_s, self.failed_job_ttl_s, self.high_water,
            rate_limit, len(events), 2 * window, prefix, header, _msgpack.encode(meta), EVENT_COUNT_META,
            _msgpack.encode([len(b) for b in blobs]), first_offset,
        ]
        return keys, args


def enqueue_result(reply: list, n_events: int) -> EnqueueResult:
    """Read ``ENQUEUE_SCRIPT``'s reply for a call with ``n_events`` events."""
    status, queued, out = reply
    if status in (b"full", b"limited"):
        return EnqueueResult(status == b"full", status == b"limited", 0, [None] * n_events)
    duplicates_of: list[str | None] = [None] * n_events
    for k in range(0, len(out), 2):
        duplicates_of[int(out[k]) - 1] = out[k + 1].decode()
    return EnqueueResult(False, False, int(queued), duplicates_of)


def rq_timestamp(now: float) -> str:
    """RQ's ``utcformat``: ISO 8601 with microseconds and a literal Z."""
    return datetime.fromtimestamp(now, UTC).isoformat(timespec="microseconds")[:-6] + "Z"
