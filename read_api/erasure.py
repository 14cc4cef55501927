"""Erasure (right to be forgotten): ``DELETE /api/v1/cdp/profiles/{id}``.

In one transaction, holding the profile's row lock (read_api/profile_locks.py), it deletes
the live profile and every profile merged into it, their identifiers, events (every
monthly partition) with their ``event_keys`` rows, consents, consent history, identity
links and merge audit rows (whose snapshots hold the absorbed profiles' traits).

Suppression: the erased identifier hashes are added to the Redis set
``core.cache_keys.suppressed_identifiers_key(tenant)`` before the transaction commits (if
Redis cannot take them, nothing is erased and the answer is 503), so that later events
carrying them do not silently rebuild the person. Workers must honour that set; see
docs/API.md for what is and is not guaranteed. ``?suppress=false`` erases without
suppressing (for a person who asked to be forgotten but may come back as a new customer).
"""

from __future__ import annotations

from litestar import Request, delete
from litestar.params import FromPath, FromQuery
from psycopg import AsyncConnection

from core.cache_keys import (
    identifier_cache_key,
    profile_cache_key,
    suppressed_identifiers_key,
    suppressed_member,
)
from read_api.auth import principal_of, tenant_admin_key
from read_api.openapi import errors_for
from read_api.profile_locks import lock_live_profile
from read_api.profiles import parse_profile_id
from read_api.schemas import ErasedCounts, Erasure
from read_api.state import ReadState

_ABSORBED_SQL = "SELECT id::text FROM profiles WHERE merged_into = %s AND tenant_id = %s"
_IDENTIFIERS_SQL = "DELETE FROM profile_identifiers WHERE profile_id = %s RETURNING type, hash"
# Every partition has the (tenant_id, profile_id, ...) index; event_keys go with their events.
_EVENTS_SQL = """
WITH gone AS (
    DELETE FROM events WHERE tenant_id = %(tenant_id)s AND profile_id = ANY(%(ids)s::uuid[]) RETURNING dedupe_key
), keys AS (
    DELETE FROM event_keys k USING gone WHERE k.tenant_id = %(tenant_id)s AND k.dedupe_key = gone.dedupe_key
    RETURNING 1
)
SELECT (SELECT count(*) FROM gone), (SELECT count(*) FROM keys)
"""
_CONSENTS_SQL = "DELETE FROM consents WHERE profile_id = ANY(%s::uuid[])"
_CONSENT_HISTORY_SQL = "DELETE FROM consent_history WHERE profile_id = ANY(%s::uuid[])"
_LINKS_SQL = "DELETE FROM identity_links WHERE tenant_id = %s AND profile_id = ANY(%s::uuid[])"
_MERGES_SQL = """
DELETE FROM profile_merges WHERE tenant_id = %(tenant_id)s
AND (survivor_id = ANY(%(ids)s::uuid[]) OR absorbed_id = ANY(%(ids)s::uuid[]))
"""
_PROFILES_SQL = "DELETE FROM profiles WHERE tenant_id = %s AND id = ANY(%s::uuid[])"


async def _delete_rows(conn: AsyncConnection, tenant_id: str, live: str) -> tuple[ErasedCounts, list[str],
                                                                                 list[tuple[str, str]]]:
    absorbed = [r[0] for r in await (await conn.execute(_ABSORBED_SQL, (live, tenant_id))).fetchall()]
    ids = [live, *absorbed]
    identifiers = [(t, h) for t, h in await (await conn.execute(_IDENTIFIERS_SQL, (live,))).fetchall()]
    events, _ = await (await conn.execute(_EVENTS_SQL, {"tenant_id": tenant_id, "ids": ids})).fetchone()
    consents = (await conn.execute(_CONSENTS_SQL, (ids,))).rowcount
    await conn.execute(_CONSENT_HISTORY_SQL, (ids,))
    await conn.execute(_LINKS_SQL, (tenant_id, ids))
    await conn.execute(_MERGES_SQL, {"tenant_id": tenant_id, "ids": ids})
    profiles = (await conn.execute(_PROFILES_SQL, (tenant_id, ids))).rowcount
    counts = ErasedCounts(profiles=profiles, identifiers=len(identifiers), events=events, consents=consents)
    return counts, ids, identifiers


@delete("/api/v1/cdp/profiles/{profile_id:str}", guards=[tenant_admin_key], status_code=200,
        summary="Erase a profile (admin key)",
        description="Deletes the person: the profile and profiles merged into it, identifiers, events, consents, "
                    "consent history, identity links, merge records and cached copies. Erased identifiers are "
                    "suppressed (`suppress=false` to skip). A merged-away id erases its survivor.",
        responses=errors_for(401, 403, 404, 409, 503))
async def erase_profile(request: Request, profile_id: FromPath[str], suppress: FromQuery[bool] = True) -> Erasure:
    st: ReadState = request.app.state.read
    tenant_id = principal_of(request).tenant_id
    requested = parse_profile_id(profile_id)
    async with st.pool.connection() as conn, conn.transaction():
        live = await lock_live_profile(conn, tenant_id, requested)
        counts, ids, identifiers = await _delete_rows(conn, tenant_id, live)
        # Redis before commit: if it fails, the transaction rolls back and the client
        # retries (503); a person is never erased without their identifiers suppressed.
        async with st.redis.pipeline(transaction=True) as pipe:
            if suppress and identifiers:
                pipe.sadd(suppressed_identifiers_key(tenant_id), *(suppressed_member(t, h) for t, h in identifiers))
            pipe.delete(*(profile_cache_key(tenant_id, pid) for pid in ids),
                        *(identifier_cache_key(tenant_id, t, h) for t, h in identifiers))
            await pipe.execute()
    # Again after commit: a concurrent lookup may have cached the profile in between.
    await st.cache.drop(tenant_id, ids, identifiers)
    return Erasure(erased=counts)
