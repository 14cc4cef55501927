"""Profile lookups: by id (following merges) and by identifier (normalized and hashed
exactly as at ingest).

One lookup is one round trip: a single statement resolves identifier (or id) -> live
profile -> document with its identifiers and consents, run outside a transaction block
(no BEGIN/COMMIT round trips). There is no cache: a statement sees one snapshot, so an
answer is never older than the last change committed before the request, whoever made it
(worker batches, merges, unmerges, consent updates, erasure), and no writer has anything
to invalidate. An indexed read of one profile costs Postgres less than a cache round trip
plus the validation it would need (docs/PERFORMANCE.md).
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import msgspec
from litestar import Request, Response, get
from litestar.params import FromPath, FromQuery
from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool

from core.errors import BlockedIdentifier, InvalidIdentifier
from core.identifiers import IDENTIFIER_TYPES, normalize_identifier
from read_api.auth import principal_of, tenant_key_before_request
from read_api.autocommit import fetch_one
from read_api.encoded_response import EncodedJSONResponse
from read_api.errors import BadRequest, NotFound
from read_api.openapi import errors_for
from read_api.schemas import ConsentState, Counters, Profile, ProfileIdentifier, iso
from read_api.state import ReadState

_HEX64 = re.compile(r"^[0-9a-f]{64}$")

# Computed traits of ``p``: every trait its tenant defines, with the default (0, false,
# null) where none is stored.
COMPUTED_SQL = """(
    SELECT jsonb_object_agg(t.name, coalesce(p.computed -> t.name, CASE t.function WHEN 'exists' THEN 'false'::jsonb
                            WHEN 'count' THEN '0'::jsonb WHEN 'unique' THEN '0'::jsonb ELSE 'null'::jsonb END))
    FROM computed_traits t WHERE t.tenant_id = p.tenant_id)"""

# The PROFILE columns of ``p`` plus its identifiers and consents, aggregated per profile
# (index on profile_identifiers.profile_id, PK of consents), and its computed traits: every
# trait the tenant defines, with the default (0, false, null) where none is stored. Used by
# exports, which turn many rows into PROFILEs; a lookup has Postgres build its one document
# (_document_sql).
PROFILE_COLUMNS = """
p.id::text, p.lifecycle, p.traits, p.event_count, p.purchase_count, p.revenue, p.first_seen,
p.last_seen, p.updated_at, p.merged_into::text,
i.types, i.hashes, i.firsts, i.lasts, c.types, c.granted, c.updated, c.sources, ct.computed
"""
PROFILE_JOINS = f"""
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
    FROM consents WHERE tenant_id = p.tenant_id AND profile_id = p.id
) c ON true
LEFT JOIN LATERAL (SELECT {COMPUTED_SQL} AS computed) ct ON true
"""


def _document_sql(merged_from: str) -> str:
    """The PROFILE of ``p`` as one JSON text, built by Postgres in the statement that finds
    it (identifiers by the index on profile_id, consents by their primary key), so the
    process decodes one string into the ``Profile`` struct instead of walking rows.

    Timestamps are Postgres's own JSON rendering in the session's zone (UTC on the read
    API's pools): '2026-01-02T03:04:06.12345+00:00', the fraction without trailing zeros.
    ``_decode_document`` brings them to the API's form; rendering that form in SQL
    (to_char, replace, concatenation for eight values, set up again on every execution)
    was most of the statement's Postgres time above a bare lookup's (docs/PERFORMANCE.md)."""
    return f"""json_build_object(
  'id', p.id::text, 'lifecycle', p.lifecycle, 'traits', p.traits,
  'identifiers', coalesce((
      SELECT json_agg(json_build_object('type', type, 'hash', hash, 'first_seen', first_seen,
                                        'last_seen', last_seen) ORDER BY first_seen, type, hash)
      FROM profile_identifiers WHERE profile_id = p.id), '[]'),
  'consents', coalesce((
      SELECT json_object_agg(consent_type, json_build_object('granted', granted,
                             'updated_at', updated_at, 'source_id', source_id::text) ORDER BY consent_type)
      FROM consents WHERE tenant_id = p.tenant_id AND profile_id = p.id), '{{}}'),
  'computed', coalesce({COMPUTED_SQL}, '{{}}'::jsonb),
  'counters', json_build_object('events', p.event_count, 'purchases', p.purchase_count, 'revenue', p.revenue::float8),
  'first_seen', p.first_seen, 'last_seen', p.last_seen,
  'merged_from', {merged_from})::text"""


# A merged-away id resolves to its survivor: merges re-point earlier absorbed profiles
# straight at the final survivor (workers/identity_store.py), so one hop is enough.
_BY_ID_SQL = f"""
SELECT {_document_sql("CASE WHEN r.merged_into IS NOT NULL THEN r.id::text END")}
FROM profiles r JOIN profiles p ON p.id = coalesce(r.merged_into, r.id) AND p.tenant_id = r.tenant_id
WHERE r.id = %s AND r.tenant_id = %s
"""

# Identifiers always belong to a live profile: a merge moves them to the survivor in its
# transaction, and a statement sees one snapshot, so no answer is half-merged.
_BY_IDENTIFIER_SQL = f"""
SELECT {_document_sql("NULL")}
FROM profile_identifiers k JOIN profiles p ON p.tenant_id = k.tenant_id AND p.id = k.profile_id
WHERE k.tenant_id = %s AND k.type = %s AND k.hash = %s
"""

_decode_profile = msgspec.json.Decoder(Profile).decode
_encode_profile = msgspec.json.Encoder().encode

# The API's form of a UTC timestamp (Python's isoformat): 25 characters without a
# fraction, 32 with six digits of it.
_API_TIME_LENGTHS = (25, 32)


def api_time(ts: str) -> str:
    """A timestamp as Postgres renders it in JSON, in the API's form (``schemas.iso``): a
    fraction of six digits or none, and a UTC offset. Postgres drops a fraction's trailing
    zeros ('...:06.12345+00:00' for 123450 us); any offset other than +00:00 (a session
    outside UTC) is converted."""
    if len(ts) in _API_TIME_LENGTHS and ts.endswith("+00:00"):
        return ts
    return iso(datetime.fromisoformat(ts))


def _decode_document(doc: str) -> Profile:
    """The ``Profile`` of a document built by ``_document_sql``, its timestamps in the API's form."""
    profile = _decode_profile(doc)
    profile.first_seen = api_time(profile.first_seen)
    profile.last_seen = api_time(profile.last_seen)
    for ident in profile.identifiers:
        ident.first_seen = api_time(ident.first_seen)
        ident.last_seen = api_time(ident.last_seen)
    for consent in profile.consents.values():
        consent.updated_at = api_time(consent.updated_at)
    return profile


def profile_response(profile: Profile) -> Response[Profile]:
    """The PROFILE as the JSON response, encoded here: the same bytes and the same
    OpenAPI schema as returning the struct, without Litestar's per-response serializer
    lookup, encoder set-up and header assembly (read_api/encoded_response.py)."""
    return EncodedJSONResponse(_encode_profile(profile))


@dataclass
class LoadedProfile:
    profile: Profile
    merged: bool  # the requested id was merged into profile.id


def profile_from_row(row: tuple[Any, ...]) -> LoadedProfile:
    """A row of ``SELECT <merged flag>, PROFILE_COLUMNS ...`` as a PROFILE."""
    (merged, pid, lifecycle, traits, events, purchases, revenue, first_seen, last_seen, _, _,
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
    return LoadedProfile(profile, merged)


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


async def load_profile(pool: AsyncConnectionPool, tenant_id: str, profile_id: uuid.UUID) -> Profile:
    """The PROFILE for an id; a merged-away id answers with its survivor, ``merged_from``
    set to the requested id. NotFound if the tenant has no such profile."""
    row = await fetch_one(pool, _BY_ID_SQL, (profile_id, tenant_id))
    if row is None:
        raise NotFound(f"no profile {profile_id}")
    return _decode_document(row[0])


async def load_profile_by_identifier(pool: AsyncConnectionPool, tenant_id: str, id_type: str,
                                     id_hash: str) -> Profile:
    """The live PROFILE holding (type, hash). NotFound if no profile holds it."""
    row = await fetch_one(pool, _BY_IDENTIFIER_SQL, (tenant_id, id_type, id_hash))
    if row is None:
        raise NotFound(f"no profile holds this {id_type}")
    return _decode_document(row[0])


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


@get("/api/v1/cdp/profiles/{profile_id:str}", before_request=tenant_key_before_request, summary="A profile by id",
     description="A merged-away id answers with the surviving profile, `merged_from` set to the requested id.",
     responses=errors_for(401, 403, 404, 503))
async def get_profile(request: Request, profile_id: FromPath[str]) -> Response[Profile]:
    st: ReadState = request.app.state.read
    return profile_response(await load_profile(st.statements, principal_of(request).tenant_id, parse_profile_id(profile_id)))


@get("/api/v1/cdp/profiles", before_request=tenant_key_before_request,
     summary="The live profile holding an identifier",
     description="`identifier_value` is normalized and hashed exactly as at ingest (`phone_region` for "
                 "national phone numbers); or pass the SHA-256 `identifier_hash` directly.",
     responses=errors_for(400, 401, 403, 404, 503))
async def find_profile(
    request: Request,
    identifier_type: FromQuery[str | None] = None,
    identifier_value: FromQuery[str | None] = None,
    identifier_hash: FromQuery[str | None] = None,
    phone_region: FromQuery[str | None] = None,
) -> Response[Profile]:
    st: ReadState = request.app.state.read
    key = identifier_hash_from_query(identifier_type, identifier_value, identifier_hash, phone_region)
    return profile_response(await load_profile_by_identifier(st.statements, principal_of(request).tenant_id, *key))
