"""Per-tenant export slots: at most N streamed exports of one tenant at a time, across every
read API process.

Protocol (why it cannot be exceeded by concurrent requests):

- A tenant's slots are a Redis sorted set ``stratum:export-slots:<tenant>`` of lease tokens,
  scored by their expiry (Redis server time, ms). One Lua script drops expired leases,
  counts the rest and adds the new one only while the count is below the limit: check and
  take are one atomic step, so 30 simultaneous requests against a limit of 4 get 4 slots.
- A slot is taken before the export opens its Postgres connection and given back
  (``ExportSlot.release``) when the stream ends, fails, or the client goes away.
- While the export runs, a task renews the lease every third of its length, independent of
  how fast the client reads. A process that dies stops renewing: its slots expire after
  ``lease_s`` instead of being held forever.
- Slots are per tenant, so one tenant's exports never block another tenant's.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
import weakref

from redis.asyncio import Redis

# KEYS[1] slot set; ARGV: token, lease ms, limit. Returns 1 when the slot was taken.
_ACQUIRE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[3]) then
  return 0
end
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[2]))
return 1
"""

# KEYS[1] slot set; ARGV: token, lease ms. Extends a lease still held; 0 if it was lost.
_RENEW = """
if not redis.call('ZSCORE', KEYS[1], ARGV[1]) then
  return 0
end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[2]))
return 1
"""


def export_slots_key(tenant_id: str) -> str:
    return f"stratum:export-slots:{tenant_id}"


class ExportSlot:
    """One taken slot; ``release`` is idempotent and never raises."""

    def __init__(self, slots: ExportSlots, key: str, token: str) -> None:
        self._slots, self._key, self._token = slots, key, token
        self._renewer: asyncio.Task | None = None
        self._released = False

    def keep_alive_while(self, owner: object) -> None:
        """Renew the lease while ``owner`` (the export's stream) exists. The task holds only a
        weak reference: a stream dropped without being closed still gives its slot back."""
        self._renewer = asyncio.get_running_loop().create_task(self._renew_while(weakref.ref(owner)))

    async def _renew_while(self, owner: weakref.ref) -> None:
        interval_s = self._slots.lease_ms / 3000
        while True:
            await asyncio.sleep(interval_s)
            if owner() is None:
                await self.release()
                return
            # A blip in Redis must not end the export; the next round tries again.
            with contextlib.suppress(Exception):
                await self._slots.renew(self._key, self._token)

    async def release(self) -> None:
        if self._released:
            return
        self._released = True
        if self._renewer is not None and self._renewer is not asyncio.current_task():
            self._renewer.cancel()
        # If Redis is unreachable now, the lease simply expires after lease_s.
        with contextlib.suppress(Exception):
            await self._slots.redis.zrem(self._key, self._token)


class ExportSlots:
    """Takes and renews per-tenant export slots in Redis (see the module docstring)."""

    def __init__(self, redis: Redis, limit: int, lease_s: float) -> None:
        self.redis = redis
        self.limit = limit
        self.lease_ms = max(int(lease_s * 1000), 1000)
        self._acquire = redis.register_script(_ACQUIRE)
        self._renew = redis.register_script(_RENEW)

    async def try_acquire(self, tenant_id: str) -> ExportSlot | None:
        """A slot of ``tenant_id``, or None when all its slots are taken. Redis errors propagate
        (the API answers 503: without the counter the limit could not be kept)."""
        key, token = export_slots_key(tenant_id), uuid.uuid4().hex
        if not await self._acquire(keys=[key], args=[token, self.lease_ms, self.limit]):
            return None
        return ExportSlot(self, key, token)

    async def renew(self, key: str, token: str) -> bool:
        return bool(await self._renew(keys=[key], args=[token, self.lease_ms]))
