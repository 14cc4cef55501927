"""Coalescing claims: a running batch job takes the next queued batch jobs so a worker
persists them all in one transaction per tenant (``workers/jobs.py``).

Nothing may be lost if the worker dies meanwhile, so claiming is atomic (one Lua call
moves the job ids from the queue into ``claimed_key(owner)``, a set owned by the running
job), and the reaper (``stratum/queue/liveness.py``) puts a dead worker's claimed jobs
back on the queue together with its own. After the commit the claimed jobs are deleted;
on failure they are put back at the head of the queue.
"""

from __future__ import annotations

from redis import Redis

from stratum.queue.layout import JOB_KEY_PREFIX, claimed_key, job_key

CLAIMED_TTL_S = 24 * 3600

# KEYS: 1 queue list, 2 claimed set of the running job
# ARGV: 1 max jobs to claim, 2 claimed-set TTL s, 3 job key prefix
# Returns: flat {job_id, data, ...} of the jobs claimed (only jobs still holding data)
_CLAIM = r"""
local ids = redis.call('LPOP', KEYS[1], tonumber(ARGV[1]))
if not ids then return {} end
local out = {}
for _, id in ipairs(ids) do
  local data = redis.call('HGET', ARGV[3] .. id, 'data')
  if data then
    redis.call('SADD', KEYS[2], id)
    out[#out + 1] = id
    out[#out + 1] = data
  end
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

    def claim(self, queue_key: str, owner_job_id: str, max_jobs: int) -> list[tuple[str, bytes]]:
        """Take up to ``max_jobs`` queued jobs for ``owner_job_id``; returns (job id, job data)."""
        if max_jobs <= 0:
            return []
        flat = self._claim(keys=[queue_key, claimed_key(owner_job_id)], args=[max_jobs, CLAIMED_TTL_S, JOB_KEY_PREFIX])
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
