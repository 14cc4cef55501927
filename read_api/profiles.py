"""Profile lookups: by id (following merges) and by identifier (normalized and hashed
exactly as at ingest)."""

from __future__ import annotations

import re
import uuid
from typing import Any

from litestar import Request, get
from litestar.params import FromQuery
from psycopg import AsyncConnection

from core.errors import BlockedIdentifier, InvalidIdentifier
from core.identifiers import IDENTIFIER_TYPES, normalize_identifier
from read_api.errors import BadRequest, NotFound
from read_api.state import ReadState

_HEX64 = re.compile(r"^[0-9a-f]{64}$")

_PROFILE_SQL = """
SELECT id::text, lifecycle, traits, event_count, purchase_count, revenue, first_seen, last_seen, merged_into::text
FROM profiles WHERE id = %s AND tenant_id = %s
"""


def parse_profile_id(value: str) -> uuid.UUID:
    try:
        return uuid.UUID(value)
    except ValueError:
        raise NotFound(f"no profile {value}") from None


async def load_profile(conn: AsyncConnection, tenant_id: str, profile_id: uuid.UUID) -> dict[str, Any]:
    """PROFILE of CONTRACT section 5; a merged-away id answers with its survivor."""
    row = await (await conn.execute(_PROFILE_SQL, (profile_id, tenant_id))).fetchone()
    if row is None:
        raise NotFound(f"no profile {profile_id}")
    merged_from = None
    if row[8] is not None:
        merged_from = row[0]
        row = await (await conn.execute(_PROFILE_SQL, (row[8], tenant_id))).fetchone()
        if row is None:
            raise NotFound(f"no profile {profile_id}")
    pid = row[0]
    idents = await (await conn.execute(
        "SELECT type, hash, first_seen, last_seen FROM profile_identifiers WHERE profile_id = %s"
        " ORDER BY first_seen, type, hash", (pid,))).fetchall()
    consents = await (await conn.execute(
        "SELECT consent_type, granted, updated_at FROM consents WHERE profile_id = %s ORDER BY consent_type",
        (pid,))).fetchall()
    return {
        "id": pid,
        "lifecycle": row[1],
        "traits": row[2],
        "identifiers": [{"type": t, "hash": h, "first_seen": fs.isoformat(), "last_seen": ls.isoformat()}
                        for t, h, fs, ls in idents],
        "consents": {c: {"granted": g, "updated_at": at.isoformat()} for c, g, at in consents},
        "counters": {"events": row[3], "purchases": row[4], "revenue": float(row[5])},
        "first_seen": row[6].isoformat(),
        "last_seen": row[7].isoformat(),
        "merged_from": merged_from,
    }


def identifier_hash_from_query(identifier_type: str | None, identifier_value: str | None,
                               identifier_hash: str | None, phone_region: str | None) -> tuple[str, str]:
    """(type, hash) from the query string, normalized exactly as ingest does."""
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


@get("/api/v1/cdp/profiles/{profile_id:str}", summary="A profile by id (merged ids answer with the survivor)")
async def get_profile(request: Request, profile_id: str) -> dict[str, Any]:
    st: ReadState = request.app.state.read
    principal = await st.keys.tenant(request)
    pid = parse_profile_id(profile_id)
    async with st.pool.connection() as conn:
        return await load_profile(conn, principal.tenant_id, pid)


@get("/api/v1/cdp/profiles", summary="The live profile holding an identifier")
async def find_profile(
    request: Request,
    identifier_type: FromQuery[str | None] = None,
    identifier_value: FromQuery[str | None] = None,
    identifier_hash: FromQuery[str | None] = None,
    phone_region: FromQuery[str | None] = None,
) -> dict[str, Any]:
    st: ReadState = request.app.state.read
    principal = await st.keys.tenant(request)
    id_type, id_hash = identifier_hash_from_query(identifier_type, identifier_value, identifier_hash, phone_region)
    async with st.pool.connection() as conn:
        row = await (await conn.execute(
            "SELECT profile_id FROM profile_identifiers WHERE tenant_id = %s AND type = %s AND hash = %s",
            (principal.tenant_id, id_type, id_hash))).fetchone()
        if row is None:
            raise NotFound(f"no profile holds this {id_type}")
        return await load_profile(conn, principal.tenant_id, row[0])
