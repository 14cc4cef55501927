"""Profile lookups: by id (following merges) and by identifier (normalized and hashed
exactly as at ingest), served through the validated profile cache (read_api/cache.py).

A cache hit costs one primary-key query (the validation); a miss one query too, as the
profile row, its identifiers and its consents come back in a single statement (two when a
cached copy turned out stale).
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from typing import Any

from litestar import Request, get
from litestar.params import FromPath, FromQuery
from psycopg import AsyncConnection

from core.errors import BlockedIdentifier, InvalidIdentifier
from core.identifiers import IDENTIFIER_TYPES, normalize_identifier
from read_api.auth import principal_of, tenant_key
from read_api.errors import BadRequest, NotFound
from read_api.openapi import errors_for
from read_api.schemas import ConsentState, Counters, Profile, ProfileIdentifier, iso
from read_api.state import ReadState

_HEX64 = re.compile(r"^[0-9a-f]{64}$")

# The PROFILE columns of ``p`` plus its identifiers and consents, aggregated per profile
# (index on profile_identifiers.profile_id, PK of consents), and its computed traits: every
# trait the tenant defines, with the default (0, false, null) where none is stored.
# Used by lookups and exports.
PROFILE_COLUMNS = """
p.id::text, p.lifecycle, p.traits, p.event_count, p.purchase_count, p.revenue, p.first_seen,
p.last_seen, p.updated_at, p.merged_into::text,
i.types, i.hashes, i.firsts, i.lasts, c.types, c.granted, c.updated, c.sources, ct.computed
"""
PROFILE_JOINS = """
LEFT JOIN LATERAL (
    SELECT array_agg(type ORDER BY first_seen, type, hash) AS types,
           array_agg(hash ORDER BY first_seen, type, hash) AS hashes,
           array_agg(first_seen ORDER BY first_seen, type, hash) AS firsts,
           array_agg(last_seen ORDER BY first_seen, type, hash) AS lasts
    FROM profile_identifiers WHERE profile_id = p.id
) i ON true
LEFT JOIN LATERAL (
    SELECT array_agg(consent_type ORDER BY consent_type) AS types,
           array_agg(granted ORDER BY consent_type) AS granted,
           array_agg(updated_at ORDER BY consent_type) AS updated,
           array_agg(source_id::text ORDER BY consent_type) AS sources
    FROM consents WHERE profile_id = p.id
) c ON true
LEFT JOIN LATERAL (
    SELECT jsonb_object_agg(t.name, coalesce(p.computed -> t.name, CASE t.function WHEN 'exists' THEN 'false'::jsonb
                            WHEN 'count' THEN '0'::jsonb WHEN 'unique' THEN '0'::jsonb ELSE 'null'::jsonb END))
           AS computed
    FROM computed_traits t WHERE t.tenant_id = p.tenant_id
) ct ON true
"""

# A merged-away id resolves to its survivor: merges re-point earlier absorbed profiles
# straight at the final survivor (workers/identity_store.py), so one hop is enough.
_BY_ID_SQL = f"""
SELECT r.merged_into IS NOT NULL, {PROFILE_COLUMNS}
FROM profiles r JOIN profiles p ON p.id = coalesce(r.merged_into, r.id) AND p.tenant_id = r.tenant_id
{PROFILE_JOINS}
WHERE r.id = %s AND r.tenant_id = %s
"""

_BY_IDENTIFIER_SQL = f"""
SELECT false, {PROFILE_COLUMNS}
FROM profile_identifiers k JOIN profiles p ON p.id = k.profile_id
{PROFILE_JOINS}
WHERE k.tenant_id = %s AND k.type = %s AND k.hash = %s
"""

_VERSION_BY_ID_SQL = "SELECT updated_at FROM profiles WHERE id = %s AND tenant_id = %s AND merged_into IS NULL"
_VERSION_BY_IDENTIFIER_SQL = """
SELECT p.id::text, p.updated_at FROM profile_identifiers k JOIN profiles p ON p.id = k.profile_id
WHERE k.tenant_id = %s AND k.type = %s AND k.hash = %s
"""


@dataclass
class LoadedProfile:
    profile: Profile
    version: str  # profiles.updated_at as read with the profile
    merged: bool  # the requested id was merged into profile.id


def profile_from_row(row: tuple[Any, ...]) -> LoadedProfile:
    """A row of ``SELECT <merged flag>, PROFILE_COLUMNS ...`` as a PROFILE."""
    (merged, pid, lifecycle, traits, events, purchases, revenue, first_seen, last_seen, updated_at, _,
     i_types, i_hashes, i_firsts, i_lasts, c_types, c_granted, c_updated, c_sources, computed) = row
    identifiers = [
        ProfileIdentifier(t, h, iso(fs), iso(ls))
        for t, h, fs, ls in zip(i_types or (), i_hashes or (), i_firsts or (), i_lasts or (), strict=True)
    ]
    consents = {
        t: ConsentState(g, iso(at), src)
        for t, g, at, src in zip(c_types or (), c_granted or (), c_updated or (), c_sources or (), strict=True)
    }
    profile = Profile(id=pid, lifecycle=lifecycle, traits=traits, identifiers=identifiers, consents=consents,
                      counters=Counters(events, purchases, float(revenue)), first_seen=iso(first_seen),
                      last_seen=iso(last_seen), computed=computed or {})
    return LoadedProfile(profile, iso(updated_at), merged)


def parse_profile_id(value: str) -> uuid.UUID:
    """A profile id from the path; anything that is not a UUID names no profile (404)."""
    try:
        return uuid.UUID(value)
    except ValueError:
        raise NotFound(f"no profile {value}") from None


async def resolve_profile_id(conn: AsyncConnection, tenant_id: str, profile_id: uuid.UUID) -> str:
    """The live profile id for a requested id (its survivor if it was merged away).

    Raises NotFound when the tenant has no such profile (another tenant's id included).
    """
    row = await (await conn.execute(
        "SELECT coalesce(merged_into, id)::text FROM profiles WHERE id = %s AND tenant_id = %s",
        (profile_id, tenant_id))).fetchone()
    if row is None:
        raise NotFound(f"no profile {profile_id}")
    return row[0]


async def load_profile(conn: AsyncConnection, tenant_id: str, profile_id: uuid.UUID) -> LoadedProfile:
    """The PROFILE for an id; a merged-away id answers with its survivor. NotFound if none."""
    row = await (await conn.execute(_BY_ID_SQL, (profile_id, tenant_id))).fetchone()
    if row is None:
        raise NotFound(f"no profile {profile_id}")
    return profile_from_row(row)


async def load_profile_by_identifier(conn: AsyncConnection, tenant_id: str, id_type: str,
                                     id_hash: str) -> LoadedProfile:
    """The live PROFILE holding (type, hash). NotFound if no profile holds it."""
    row = await (await conn.execute(_BY_IDENTIFIER_SQL, (tenant_id, id_type, id_hash))).fetchone()
    if row is None:
        raise NotFound(f"no profile holds this {id_type}")
    return profile_from_row(row)


def identifier_hash_from_query(identifier_type: str | None, identifier_value: str | None,
                               identifier_hash: str | None, phone_region: str | None) -> tuple[str, str]:
    """(type, hash) from the query string, normalized exactly as ingest does.

    Raises BadRequest for a missing or unknown type, a malformed hash, or a value that is
    invalid or blocked for its type.
    """
    if not identifier_type:
        raise BadRequest("identifier_type is required", code="missing_parameter")
    if identifier_type not in IDENTIFIER_TYPES:
        raise BadRequest(f"unknown identifier_type {identifier_type!r}; use one of {', '.join(sorted(IDENTIFIER_TYPES))}",
                         code="unknown_identifier_type")
    if identifier_hash is not None:
        h = identifier_hash.strip().lower()
        if not _HEX64.match(h):
            raise BadRequest("identifier_hash must be 64 hex characters (SHA-256)", code="invalid_identifier_hash")
        return identifier_type, h
    if identifier_value is None:
        raise BadRequest("give identifier_value or identifier_hash", code="missing_parameter")
    try:
        ident = normalize_identifier(identifier_type, identifier_value, default_region=phone_region)
    except (InvalidIdentifier, BlockedIdentifier) as exc:
        raise BadRequest(exc.message, code=exc.code) from None
    return ident.type, ident.hash


@get("/api/v1/cdp/profiles/{profile_id:str}", guards=[tenant_key], summary="A profile by id",
     description="A merged-away id answers with the surviving profile, `merged_from` set to the requested id.",
     responses=errors_for(401, 403, 404, 503))
async def get_profile(request: Request, profile_id: FromPath[str]) -> Profile:
    st: ReadState = request.app.state.read
    principal = principal_of(request)
    tenant_id = principal.tenant_id
    pid = parse_profile_id(profile_id)
    cached = await st.cache.by_id(tenant_id, str(pid))
    async with st.pool.connection() as conn:
        if cached is not None:
            row = await (await conn.execute(_VERSION_BY_ID_SQL, (pid, tenant_id))).fetchone()
            if row is not None and iso(row[0]) == cached.version:
                st.metrics.cache_hit.inc()
                return cached.profile
            st.metrics.cache_stale.inc()
        else:
            st.metrics.cache_miss.inc()
        loaded = await load_profile(conn, tenant_id, pid)
    await st.cache.put(tenant_id, loaded.profile, loaded.version)
    if loaded.merged:
        loaded.profile.merged_from = str(pid)
    return loaded.profile


@get("/api/v1/cdp/profiles", guards=[tenant_key], summary="The live profile holding an identifier",
     description="`identifier_value` is normalized and hashed exactly as at ingest (`phone_region` for "
                 "national phone numbers); or pass the SHA-256 `identifier_hash` directly.",
     responses=errors_for(400, 401, 403, 404, 503))
async def find_profile(
    request: Request,
    identifier_type: FromQuery[str | None] = None,
    identifier_value: FromQuery[str | None] = None,
    identifier_hash: FromQuery[str | None] = None,
    phone_region: FromQuery[str | None] = None,
) -> Profile:
    st: ReadState = request.app.state.read
    principal = principal_of(request)
    tenant_id = principal.tenant_id
    key = identifier_hash_from_query(identifier_type, identifier_value, identifier_hash, phone_region)
    cached = await st.cache.by_identifier(tenant_id, *key)
    async with st.pool.connection() as conn:
        if cached is not None:
            row = await (await conn.execute(_VERSION_BY_IDENTIFIER_SQL, (tenant_id, *key))).fetchone()
            if row is not None and row[0] == cached.profile.id and iso(row[1]) == cached.version:
                st.metrics.cache_hit.inc()
                return cached.profile
            st.metrics.cache_stale.inc()
        else:
            st.metrics.cache_miss.inc()
        loaded = await load_profile_by_identifier(conn, tenant_id, *key)
    await st.cache.put(tenant_id, loaded.profile, loaded.version, identifier=key)
    return loaded.profile
