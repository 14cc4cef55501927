"""Erasure (right to be forgotten): ``DELETE /api/v1/cdp/profiles/{id}``.

In one transaction, holding the profile's row lock (read_api/profile_locks.py), it deletes
the live profile and every profile merged into it, their identifiers, events (every
monthly partition), consents, consent history, identity links, unmerge blocks and merge
audit rows (whose snapshots hold the absorbed profiles' traits). The events' ``event_keys`` rows stay as
hash-only tombstones, so a late copy of an erased event is not stored.

Suppression: the erased identifier hashes go into ``suppressed_identifiers`` in the same
transaction, so later events carrying them do not silently rebuild the person: workers
drop suppressed identifiers (recorded with the event as a ``suppressed`` decision).
The erased events' ids are recorded in ``event_outcomes`` as ``erased``. Undelivered
webhook messages of the person become ``skipped`` (``erased``) and every payload of the
person's messages is deleted.
``?suppress=false`` erases without suppressing (for a person who asked to be forgotten
but may come back as a new customer).
"""

from __future__ import annotations

from litestar import Request, delete
from litestar.params import FromPath, FromQuery
from psycopg import AsyncConnection

from read_api.auth import principal_of, tenant_admin_key
from read_api.openapi import errors_for
from read_api.profile_locks import lock_live_profile
from read_api.profiles import parse_profile_id
from read_api.schemas import ErasedCounts, Erasure
from read_api.state import ReadState

_ABSORBED_SQL = "SELECT id::text FROM profiles WHERE merged_into = %s AND tenant_id = %s"
_IDENTIFIERS_SQL = "DELETE FROM profile_identifiers WHERE profile_id = %s RETURNING type, hash"
# Every partition has the (tenant_id, profile_id, ...) index. The events' ``event_keys`` rows
# stay: they hold only the SHA-256 of the scoped dedupe key, and as tombstones they keep a
# late copy of an erased event from being stored again (CONTRACT 5).
_EVENTS_SQL = """
WITH gone AS (
    DELETE FROM events WHERE tenant_id = %(tenant_id)s AND profile_id = ANY(%(ids)s::uuid[])
    RETURNING event_id
), outcomes AS (
    INSERT INTO event_outcomes (event_id, tenant_id, status) SELECT event_id, %(tenant_id)s, 'erased' FROM gone
    ON CONFLICT (tenant_id, event_id) DO UPDATE SET status = 'erased', duplicate_of = NULL
    RETURNING 1  -- data-modifying CTEs run whether or not the query reads them
)
SELECT count(*) FROM gone
"""
_CONSENTS_SQL = "DELETE FROM consents WHERE tenant_id = %s AND profile_id = ANY(%s::uuid[])"
_CONSENT_HISTORY_SQL = "DELETE FROM consent_history WHERE profile_id = ANY(%s::uuid[])"
_LINKS_SQL = "DELETE FROM identity_links WHERE tenant_id = %s AND profile_id = ANY(%s::uuid[])"
_DECISIONS_SQL = "DELETE FROM identity_decisions WHERE tenant_id = %s AND profile_id = ANY(%s::uuid[])"
_MERGES_SQL = """
DELETE FROM profile_merges WHERE tenant_id = %(tenant_id)s
AND (survivor_id = ANY(%(ids)s::uuid[]) OR absorbed_id = ANY(%(ids)s::uuid[]))
"""
_PROFILES_SQL = "DELETE FROM profiles WHERE tenant_id = %s AND id = ANY(%s::uuid[])"
# Unmerge blocks naming the person's profiles or identifiers (they hold identifier hashes).
_BLOCKS_SQL = """
DELETE FROM identity_blocks WHERE tenant_id = %(tenant_id)s AND (profile_id = ANY(%(ids)s::uuid[])
    OR (type, hash) IN (SELECT * FROM unnest(%(types)s::text[], %(hashes)s::text[])))
"""
# Undelivered webhook messages of the person are skipped (CONTRACT 5); every payload goes.
_DELIVERIES_SQL = """
UPDATE deliveries SET body = NULL, event_time = NULL,
    skip_reason = CASE WHEN status IN ('pending', 'failed') THEN 'erased' ELSE skip_reason END,
    status = CASE WHEN status IN ('pending', 'failed') THEN 'skipped' ELSE status END
WHERE tenant_id = %(tenant_id)s AND profile_id = ANY(%(ids)s::uuid[])
"""


async def _delete_rows(conn: AsyncConnection, tenant_id: str, live: str) -> tuple[ErasedCounts, list[str],
                                                                                 list[tuple[str, str]]]:
    absorbed = [r[0] for r in await (await conn.execute(_ABSORBED_SQL, (live, tenant_id))).fetchall()]
    ids = [live, *absorbed]
    identifiers = [(t, h) for t, h in await (await conn.execute(_IDENTIFIERS_SQL, (live,))).fetchall()]
    (events,) = await (await conn.execute(_EVENTS_SQL, {"tenant_id": tenant_id, "ids": ids})).fetchone()
    consents = (await conn.execute(_CONSENTS_SQL, (tenant_id, ids))).rowcount
    await conn.execute(_CONSENT_HISTORY_SQL, (ids,))
    await conn.execute(_LINKS_SQL, (tenant_id, ids))
    await conn.execute(_DECISIONS_SQL, (tenant_id, ids))
    await conn.execute(_MERGES_SQL, {"tenant_id": tenant_id, "ids": ids})
    await conn.execute(_BLOCKS_SQL, {"tenant_id": tenant_id, "ids": ids, "types": [t for t, _ in identifiers],
                                     "hashes": [h for _, h in identifiers]})
    profiles = (await conn.execute(_PROFILES_SQL, (tenant_id, ids))).rowcount
    await conn.execute(_DELIVERIES_SQL, {"tenant_id": tenant_id, "ids": ids})
    counts = ErasedCounts(profiles=profiles, identifiers=len(identifiers), events=events, consents=consents)
    return counts, ids, identifiers


@delete("/api/v1/cdp/profiles/{profile_id:str}", guards=[tenant_admin_key], status_code=200,
        summary="Erase a profile (admin key)",
        description="Deletes the person: the profile and profiles merged into it, identifiers, events, consents, "
                    "consent history, identity links and merge records. Erased identifiers are "
                    "suppressed (`suppress=false` to skip). A merged-away id erases its survivor.",
        responses=errors_for(401, 403, 404, 409, 503))
async def erase_profile(request: Request, profile_id: FromPath[str], suppress: FromQuery[bool] = True) -> Erasure:
    st: ReadState = request.app.state.read
    tenant_id = principal_of(request).tenant_id
    requested = parse_profile_id(profile_id)
    async with st.pool.connection() as conn, conn.transaction():
        live = await lock_live_profile(conn, tenant_id, requested)
        counts, _, identifiers = await _delete_rows(conn, tenant_id, live)
        if suppress and identifiers:
            # In the erasure's own transaction: workers read suppression and the graph in one
            # statement, so they see either the person or the suppression, never neither.
            await conn.execute(
                "INSERT INTO suppressed_identifiers (tenant_id, type, hash)"
                " SELECT %s, t, h FROM unnest(%s::text[], %s::text[]) AS u(t, h) ON CONFLICT DO NOTHING",
                (tenant_id, [t for t, _ in identifiers], [h for _, h in identifiers]))
    return Erasure(erased=counts)
