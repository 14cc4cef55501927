"""Profile cache in Redis, validated against Postgres on every hit.

An entry is a PROFILE together with the ``profiles.updated_at`` it was read with (in the
same statement, so the two are consistent). A hit is served only after a one-row primary
key query confirms that ``updated_at`` is unchanged; otherwise the profile is loaded again.
Every transaction that changes a profile (worker batches, merges, consent updates)
sets ``updated_at = now()`` on it, and erasure deletes the row, so a committed change is
never hidden by the cache, whoever made it, without any invalidation call from the
writers. Entries of erased profiles are also deleted, and all expire after
``profile_cache_ttl_s``.

What a hit saves is the identifiers and consents aggregation (up to 1,000 identifier rows
for a large profile); it still costs one indexed lookup. The cache is an optimisation
only: when Redis fails, lookups go to Postgres and nothing is raised.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

import msgspec
import redis.exceptions
from msgspec import Struct
from redis.asyncio import Redis

from core.cache_keys import identifier_cache_key, profile_cache_key
from read_api.schemas import Profile

log = logging.getLogger(__name__)

_REDIS_ERRORS = (redis.exceptions.RedisError, OSError)


class CachedProfile(Struct):
    version: str  # profiles.updated_at (ISO 8601, UTC) the profile was read with
    profile: Profile


_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder(CachedProfile).decode


class ProfileCache:
    def __init__(self, redis: Redis, ttl_s: int) -> None:
        self._redis = redis
        self._ttl_s = ttl_s

    @property
    def enabled(self) -> bool:
        return self._ttl_s > 0

    async def by_id(self, tenant_id: str, profile_id: str) -> CachedProfile | None:
        """The cached entry of a live profile id, unvalidated; None on a miss or a Redis error."""
        if not self.enabled:
            return None
        try:
            raw = await self._redis.get(profile_cache_key(tenant_id, profile_id))
        except _REDIS_ERRORS as exc:
            log.warning("profile cache unavailable: %s", exc)
            return None
        return self._decode(raw)

    async def by_identifier(self, tenant_id: str, id_type: str, id_hash: str) -> CachedProfile | None:
        """The cached entry of the profile that held an identifier when cached, unvalidated."""
        if not self.enabled:
            return None
        try:
            profile_id = await self._redis.get(identifier_cache_key(tenant_id, id_type, id_hash))
            if profile_id is None:
                return None
            raw = await self._redis.get(profile_cache_key(tenant_id, profile_id.decode()))
        except _REDIS_ERRORS as exc:
            log.warning("profile cache unavailable: %s", exc)
            return None
        return self._decode(raw)

    async def put(self, tenant_id: str, profile: Profile, version: str,
                  identifier: tuple[str, str] | None = None) -> None:
        """Cache a live profile (``merged_from`` is per request and is not stored)."""
        if not self.enabled:
            return
        entry = CachedProfile(version, msgspec.structs.replace(profile, merged_from=None))
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                pipe.set(profile_cache_key(tenant_id, profile.id), _encode(entry), ex=self._ttl_s)
                if identifier is not None:
                    pipe.set(identifier_cache_key(tenant_id, *identifier), profile.id, ex=self._ttl_s)
                await pipe.execute()
        except _REDIS_ERRORS as exc:
            log.warning("profile cache unavailable: %s", exc)

    async def drop(self, tenant_id: str, profile_ids: Iterable[str],
                   identifiers: Iterable[tuple[str, str]] = ()) -> None:
        """Delete the entries of profiles and identifiers (after an erasure)."""
        keys = [profile_cache_key(tenant_id, pid) for pid in profile_ids]
        keys += [identifier_cache_key(tenant_id, t, h) for t, h in identifiers]
        if not keys:
            return
        try:
            for start in range(0, len(keys), 1000):
                await self._redis.delete(*keys[start:start + 1000])
        except _REDIS_ERRORS as exc:
            # Still correct (hits are validated and the rows are gone); the entries expire.
            log.warning("profile cache entries not deleted, they expire within the TTL: %s", exc)

    @staticmethod
    def _decode(raw: bytes | None) -> CachedProfile | None:
        if raw is None:
            return None
        try:
            return _decode(raw)
        except msgspec.DecodeError:
            return None  # written by another release: treat as a miss
