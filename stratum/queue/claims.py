"""Coalescing claims: a running batch job takes the next queued batch jobs so a worker
persists them all in one transaction per tenant (``workers/jobs.py``), up to a number of
events (each job's ``meta`` says how many it holds: a batch of 1,000 events counts 1,000).

Nothing may be lost if the worker dies meanwhile:

- claiming is atomic: one Lua call moves the job ids from the queue into
  ``claimed_key(owner)``, a set owned by the running job, and records the owner (with the
  queue the jobs came from) in ``CLAIM_OWNERS_KEY``;
- claims never expire: only three things end a claimed job's claim: the commit of its
  round (``finish_round`` deletes the job and takes it out of the claim, atomically), the
  end of the owner job (``give_back`` puts whatever is still claimed back at the head of
  the queue, atomically with dropping the owner's record; after a failure that is every
  round not committed), or the reaper;
- the reaper (``stratum/queue/liveness.py``) puts a dead worker's claimed jobs back on the
  queue together with its own job, and ``release_orphaned_claims`` walks every recorded
  owner: claims whose owner is not running on a live worker (its worker died, or the job
  ended without releasing them, e.g. a timeout) go back to the queue, however old they
  are and whatever RQ's registries say. The check and the release are one Lua call, so a
  job started again meanwhile keeps its new claims.
"""

from __future__ import annotations

import logging

from redis import Redis

from stratum.queue.layout import (
    ALIVE_KEY_PREFIX,
    CLAIM_OWNERS_KEY,
    EVENT_COUNT_META,
    JOB_KEY_PREFIX,
    claimed_key,
    job_key,
)

log = logging.getLogger(__name__)

# KEYS: 1 queue list, 2 claimed set of the running job, 3 job hash of the running job,
#       4 claim owners hash
# ARGV: 1 max events of the running job and its claims, 2 running job id, 3 job key prefix,
#       4 name of the event count in a job's meta, 5 events counted for a job without one,
#       6 '1' when the running job's own events count against the budget (its first round)
# Returns: flat {job_id, data, ...} of the jobs claimed (only jobs still holding data)
_CLAIM = r"""
local function events_of(meta)
  if meta then
    local ok, m = pcall(cmsgpack.unpack, meta)
    if ok and type(m) == 'table' and tonumber(m[ARGV[4]]) then
      return math.max(1, tonumber(m[ARGV[4]]))
    end
  end
  return math.max(1, tonumber(ARGV[5]))
end
local budget = tonumber(ARGV[1])
if ARGV[6] == '1' then budget = budget - events_of(redis.call('HGET', KEYS[3], 'meta')) end
local out = {}
while budget > 0 do
  local id = redis.call('LINDEX', KEYS[1], 0)
  if not id then break end
  local job = redis.call('HMGET', ARGV[3] .. id, 'data', 'meta')
  if job[1] then
    local n = events_of(job[2])
    -- stop at the first job that does not fit: jobs are taken in queue order
    if n > budget then break end
    budget = budget - n
    redis.call('SADD', KEYS[2], id)
    out[#out + 1] = id
    out[#out + 1] = job[1]
  end
  -- a job whose hash is gone is dropped, as RQ's own dequeue skips it
  redis.call('LPOP', KEYS[1])
end
if #out > 0 then redis.call('HSET', KEYS[4], ARGV[2], KEYS[1]) end
return out
"""

# KEYS: 1 queue list, 2 claimed set of the owner job, 3 claim owners hash
# ARGV: 1 owner job id
# Returns: the ids put back
_RELEASE = r"""
local ids = redis.call('SMEMBERS', KEYS[2])
for _, id in ipairs(ids) do redis.call('LPUSH', KEYS[1], id) end
redis.call('DEL', KEYS[2])
redis.call('HDEL', KEYS[3], ARGV[1])
return ids
"""

# KEYS: 1 claimed set of the owner job, 2 claim owners hash, 3 owner job hash
# ARGV: 1 owner job id, 2 heartbeat key prefix, 3 queue list to use if the owner's is unknown
# Returns: false while the owner runs on a live worker, else the ids put back
_RELEASE_ORPHANED = r"""
local owner = redis.call('HMGET', KEYS[3], 'status', 'worker_name')
if owner[1] == 'started' and owner[2] and owner[2] ~= ''
   and redis.call('EXISTS', ARGV[2] .. owner[2]) == 1 then
  return false
end
local queue = redis.call('HGET', KEYS[2], ARGV[1]) or ARGV[3]
local ids = redis.call('SMEMBERS', KEYS[1])
for _, id in ipairs(ids) do redis.call('LPUSH', queue, id) end
redis.call('DEL', KEYS[1])
redis.call('HDEL', KEYS[2], ARGV[1])
return ids
"""


class Coalescer:
    """Claims of running jobs on one Redis connection (passed in)."""

    def __init__(self, connection: Redis) -> None:
        self._redis = connection
        self._claim = connection.register_script(_CLAIM)

    def claim(self, queue_key: str, owner_job_id: str, max_events: int,
              unknown_job_events: int, *, with_owner: bool = True) -> list[tuple[str, bytes]]:
        """Take queued jobs for ``owner_job_id`` from the head of the queue while its own
        events (unless ``with_owner`` is false: a later round of the same job) and those of
        the jobs taken stay within ``max_events``; returns (job id, job data) in queue order.

        Events are counted from each job's ``meta`` (``layout.job_meta``, written by the
        ingest script); a job without the count (written by RQ directly) counts as
        ``unknown_job_events``. Claiming stops at the first job that does not fit, so a
        batch larger than ``max_events`` is never claimed and runs alone."""
        if max_events <= 0:
            return []
        flat = self._claim(keys=[queue_key, claimed_key(owner_job_id), job_key(owner_job_id), CLAIM_OWNERS_KEY],
                           args=[max_events, owner_job_id, JOB_KEY_PREFIX, EVENT_COUNT_META, unknown_job_events,
                                 "1" if with_owner else "0"])
        return [(flat[i].decode(), flat[i + 1]) for i in range(0, len(flat), 2)]

    def finish_round(self, owner_job_id: str, job_ids: list[str], stored: list[str]) -> None:
        """One round's claimed jobs are done (``stored``: those persisted, deleted; the
        others were failed and keep their hash): they leave the claim, which stays open
        for the job's next round."""
        if not job_ids:
            return
        with self._redis.pipeline(transaction=True) as pipe:
            for job_id in stored:
                pipe.delete(job_key(job_id))
            pipe.srem(claimed_key(owner_job_id), *job_ids)
            pipe.execute()

    def give_back(self, queue_key: str, owner_job_id: str) -> int:
        """Put the claimed jobs back at the head of the queue (failure, or a dead worker)."""
        return release_claims(self._redis, queue_key, owner_job_id)


def release_claims(connection: Redis, queue_key: str, owner_job_id: str) -> int:
    """Put the jobs ``owner_job_id`` claimed back at the head of the queue; return how many."""
    return len(connection.eval(_RELEASE, 3, queue_key, claimed_key(owner_job_id), CLAIM_OWNERS_KEY, owner_job_id))


def claimed_count(connection: Redis, queue_key: str) -> int:
    """How many jobs of ``queue_key`` running jobs hold claimed right now."""
    owners = [o.decode() for o, q in connection.hgetall(CLAIM_OWNERS_KEY).items() if q.decode() == queue_key]
    if not owners:
        return 0
    with connection.pipeline(transaction=False) as pipe:
        for owner in owners:
            pipe.scard(claimed_key(owner))
        return sum(pipe.execute())


def release_orphaned_claims(connection: Redis, default_queue_key: str) -> list[str]:
    """Put back every claimed job whose owner is not running on a live worker (its
    heartbeat is gone, or it is no longer ``started``); return their ids.

    Independent of RQ's registries and of the claims' age: every owner recorded in
    ``CLAIM_OWNERS_KEY`` is checked. Jobs go back to the queue they were claimed from
    (``default_queue_key`` for claims recorded without one)."""
    released: list[str] = []
    for raw in connection.hkeys(CLAIM_OWNERS_KEY):
        owner = raw.decode()
        ids = connection.eval(_RELEASE_ORPHANED, 3, claimed_key(owner), CLAIM_OWNERS_KEY, job_key(owner),
                              owner, ALIVE_KEY_PREFIX, default_queue_key)
        if ids:
            released += [i.decode() for i in ids]
            log.warning("put back %d jobs claimed by job %s, which no live worker runs", len(ids), owner)
    return released
