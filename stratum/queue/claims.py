"""Coalescing claims: a running batch job takes the next queued batch jobs so a worker
persists them all in one transaction per tenant (``workers/jobs.py``), up to a number of
events (each job's ``meta`` says how many it holds: a batch of 1,000 events counts 1,000).

Nothing may be lost if the worker dies meanwhile, so claiming is atomic (one Lua call
moves the job ids from the queue into ``claimed_key(owner)``, a set owned by the running
job), and the reaper (``stratum/queue/liveness.py``) puts a dead worker's claimed jobs
back on the queue together with its own. After the commit the claimed jobs are deleted;
on failure they are put back at the head of the queue.
"""

from __future__ import annotations

from redis import Redis

from stratum.queue.layout import EVENT_COUNT_META, JOB_KEY_PREFIX, claimed_key, job_key

CLAIMED_TTL_S = 24 * 3600

# KEYS: 1 queue list, 2 claimed set of the running job, 3 job hash of the running job
# ARGV: 1 max events of the running job and its claims, 2 claimed-set TTL s, 3 job key prefix,
#       4 name of the event count in a job's meta, 5 events counted for a job without one
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
local budget = tonumber(ARGV[1]) - events_of(redis.call('HGET', KEYS[3], 'meta'))
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
if #out > 0 then redis.call('EXPIRE', KEYS[2], tonumber(ARGV[2])) end
return out
"""

# KEYS: 1 queue list, 2 claimed set of the owner job
_RELEASE = r"""
local ids = redis.call('SMEMBERS', KEYS[2])
for _, id in ipairs(ids) do redis.call('LPUSH', KEYS[1], id) end
redis.call('DEL', KEYS[2])
return #ids
"""


class Coalescer:
    """Claims of running jobs on one Redis connection (passed in)."""

    def __init__(self, connection: Redis) -> None:
        self._redis = connection
        self._claim = connection.register_script(_CLAIM)

    def claim(self, queue_key: str, owner_job_id: str, max_events: int,
              unknown_job_events: int) -> list[tuple[str, bytes]]:
        """Take queued jobs for ``owner_job_id`` from the head of the queue while its own
        events and those of the jobs taken stay within ``max_events``; returns (job id, job
        data) in queue order.

        Events are counted from each job's ``meta`` (``layout.job_meta``, written by the
        ingest script); a job without the count (written by RQ directly) counts as
        ``unknown_job_events``. Claiming stops at the first job that does not fit, so a
        batch larger than ``max_events`` is never claimed and runs alone."""
        if max_events <= 0:
            return []
        flat = self._claim(keys=[queue_key, claimed_key(owner_job_id), job_key(owner_job_id)],
                           args=[max_events, CLAIMED_TTL_S, JOB_KEY_PREFIX, EVENT_COUNT_META, unknown_job_events])
        return [(flat[i].decode(), flat[i + 1]) for i in range(0, len(flat), 2)]

    def finish(self, owner_job_id: str, job_ids: list[str]) -> None:
        """The claimed jobs are persisted: delete them and the claim."""
        with self._redis.pipeline(transaction=True) as pipe:
            for job_id in job_ids:
                pipe.delete(job_key(job_id))
            pipe.delete(claimed_key(owner_job_id))
            pipe.execute()

    def give_back(self, queue_key: str, owner_job_id: str) -> int:
        """Put the claimed jobs back at the head of the queue (failure, or a dead worker)."""
        return release_claims(self._redis, queue_key, owner_job_id)


def release_claims(connection: Redis, queue_key: str, owner_job_id: str) -> int:
    """Put the jobs ``owner_job_id`` claimed back at the head of the queue; return how many."""
    return int(connection.eval(_RELEASE, 2, queue_key, claimed_key(owner_job_id)))
