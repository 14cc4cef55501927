"""Per-tenant export slots (read_api/export_slots.py) against a real Redis: atomic taking,
renewal, release, and slots that give themselves back when their owner is gone."""

from __future__ import annotations

import asyncio
import gc
import time

from redis.asyncio import Redis

from read_api.export_slots import ExportSlots, export_slots_key


class _Owner:
    """Stands in for an export stream (weak-referenceable)."""


def _run(settings, body):
    async def main():
        redis = Redis.from_url(settings.redis_url)
        try:
            return await body(redis)
        finally:
            await redis.aclose()

    return asyncio.run(main())


def test_concurrent_takers_get_exactly_the_limit(settings, redis_conn):
    async def body(redis):
        slots = ExportSlots(redis, limit=4, lease_s=60)
        taken = await asyncio.gather(*(slots.try_acquire("t1") for _ in range(30)))
        other = await slots.try_acquire("t2")
        got = [s for s in taken if s is not None]
        count = await redis.zcard(export_slots_key("t1"))
        for s in [*got, other]:
            await s.release()
            await s.release()  # idempotent
        return len(got), other is not None, count, await redis.exists(export_slots_key("t1"))

    assert _run(settings, body) == (4, True, 4, 0)


def test_renew_extends_a_held_lease_and_refuses_a_lost_one(settings, redis_conn):
    async def body(redis):
        slots = ExportSlots(redis, limit=1, lease_s=60)
        slot = await slots.try_acquire("t1")
        key = export_slots_key("t1")
        (token, first), = await redis.zrange(key, 0, -1, withscores=True)
        await redis.zadd(key, {token: first - 30_000})  # as if the lease were half gone
        renewed = await slots.renew(key, token.decode())
        (_, later), = await redis.zrange(key, 0, -1, withscores=True)
        await slot.release()
        return renewed, later >= first, await slots.renew(key, token.decode())

    assert _run(settings, body) == (True, True, False)


def test_a_slot_whose_owner_is_gone_gives_itself_back(settings, redis_conn):
    async def body(redis):
        slots = ExportSlots(redis, limit=1, lease_s=1)  # renewal checks every third of a second
        owner = _Owner()
        slot = await slots.try_acquire("t1")
        slot.keep_alive_while(owner)
        assert await slots.try_acquire("t1") is None
        del owner
        gc.collect()
        deadline = time.monotonic() + 10
        while await redis.zcard(export_slots_key("t1")) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        return await redis.zcard(export_slots_key("t1"))

    assert _run(settings, body) == 0
