"""A profile's consents: the current state per type and the history of changes.

``PUT`` records a change made through the API (a preference centre, a support agent):
``source_id`` is null and the caller's IP and user agent are kept with the history row.
"""

from __future__ import annotations

from datetime import datetime

from litestar import Request, get, put
from litestar.params import FromPath, JSONBody
from psycopg import AsyncConnection

from core.schemas import ConsentIn
from read_api.auth import principal_of, tenant_admin_key, tenant_key
from read_api.errors import BadRequest
from read_api.openapi import errors_for
from read_api.profile_locks import lock_live_profile
from read_api.profiles import parse_profile_id, resolve_profile_id
from read_api.schemas import ConsentChange, Consents, ConsentState, ConsentUpdate, iso
from read_api.state import ReadState

CONSENT_TYPES: tuple[str, ...] = ConsentIn.__struct_fields__  # analytics, ads, email, sms, all
HISTORY_LIMIT = 1000
MAX_USER_AGENT_CHARS = 512  # kept with every history row; real browsers send under 300

_CURRENT_SQL = """
SELECT consent_type, granted, updated_at, source_id::text FROM consents WHERE tenant_id = %s AND profile_id = %s
ORDER BY consent_type
"""
_HISTORY_SQL = """
SELECT consent_type, granted, recorded_at, source_id::text, event_id::text, ip, user_agent
FROM consent_history WHERE profile_id = %s ORDER BY recorded_at DESC, id DESC LIMIT %s
"""
_UPSERT_SQL = """
INSERT INTO consents (profile_id, consent_type, tenant_id, granted, updated_at, source_id)
SELECT %s, t, %s, g, %s, NULL FROM unnest(%s::text[], %s::boolean[]) AS u(t, g)
ON CONFLICT (tenant_id, profile_id, consent_type) DO UPDATE
SET granted = EXCLUDED.granted, updated_at = EXCLUDED.updated_at, source_id = NULL
"""
_HISTORY_INSERT_SQL = """
INSERT INTO consent_history (tenant_id, profile_id, consent_type, granted, recorded_at, source_id, event_id, ip, user_agent)
SELECT %s, %s, t, g, %s, NULL, NULL, %s, %s FROM unnest(%s::text[], %s::boolean[]) AS u(t, g)
"""


def validated_changes(update: ConsentUpdate) -> dict[str, bool]:
    """The requested consent changes; BadRequest for none or an unknown type."""
    if not update.consents:
        raise BadRequest(f"give at least one consent type: {', '.join(CONSENT_TYPES)}", code="missing_consents")
    unknown = sorted(set(update.consents) - set(CONSENT_TYPES))
    if unknown:
        raise BadRequest(f"unknown consent type {unknown[0]!r}; use {', '.join(CONSENT_TYPES)}",
                         code="unknown_consent_type")
    return dict(sorted(update.consents.items()))


def checked_user_agent(user_agent: str | None) -> str | None:
    """The caller's User-Agent as stored with the history; BadRequest when it is too long
    or holds control characters (NUL cannot be stored)."""
    if user_agent is None:
        return None
    if len(user_agent) > MAX_USER_AGENT_CHARS:
        raise BadRequest(f"User-Agent header must be at most {MAX_USER_AGENT_CHARS} characters to be kept with the "
                         f"consent history, got {len(user_agent)}", code="user_agent_too_long")
    if any(ord(c) < 32 or ord(c) == 127 for c in user_agent):
        raise BadRequest("User-Agent header must not contain control characters", code="invalid_user_agent")
    return user_agent


async def read_consents(conn: AsyncConnection, tenant_id: str, profile_id: str) -> Consents:
    async with conn.pipeline():
        current_cur = await conn.execute(_CURRENT_SQL, (tenant_id, profile_id))
        history_cur = await conn.execute(_HISTORY_SQL, (profile_id, HISTORY_LIMIT))
    current, history = await current_cur.fetchall(), await history_cur.fetchall()
    return Consents(
        consents={t: ConsentState(g, iso(at), src) for t, g, at, src in current},
        history=[ConsentChange(t, g, iso(at), src, ev, ip, ua) for t, g, at, src, ev, ip, ua in history],
    )


@get("/api/v1/cdp/profiles/{profile_id:str}/consents", guards=[tenant_key], summary="A profile's consents and their history",
     description=f"History is newest first, at most {HISTORY_LIMIT} changes.",
     responses=errors_for(401, 403, 404, 503))
async def get_consents(request: Request, profile_id: FromPath[str]) -> Consents:
    st: ReadState = request.app.state.read
    principal = principal_of(request)
    requested = parse_profile_id(profile_id)
    async with st.pool.connection() as conn:
        return await read_consents(conn, principal.tenant_id,
                                   await resolve_profile_id(conn, principal.tenant_id, requested))


@put("/api/v1/cdp/profiles/{profile_id:str}/consents", guards=[tenant_admin_key], summary="Set consents of a profile (admin key)",
     description="Body `{\"consents\": {\"email\": true, \"ads\": false}}`; types: "
                 f"{', '.join(CONSENT_TYPES)}. Types not named keep their state. Answers the new state and history.",
     responses=errors_for(400, 401, 403, 404, 409, 503))
async def put_consents(request: Request, profile_id: FromPath[str], data: JSONBody[ConsentUpdate]) -> Consents:
    st: ReadState = request.app.state.read
    principal = principal_of(request)
    requested = parse_profile_id(profile_id)
    changes = validated_changes(data)
    ip = request.client.host if request.client else None
    user_agent = checked_user_agent(request.headers.get("user-agent"))
    async with st.pool.connection() as conn:
        async with conn.transaction():
            live = await lock_live_profile(conn, principal.tenant_id, requested)
            now: datetime = (await (await conn.execute("SELECT now()")).fetchone())[0]
            types, granted = list(changes), list(changes.values())
            await conn.execute(_UPSERT_SQL, (live, principal.tenant_id, now, types, granted))
            await conn.execute(_HISTORY_INSERT_SQL, (principal.tenant_id, live, now, ip, user_agent, types, granted))
            # A consent change is a change of the profile, so its updated_at moves too.
            await conn.execute("UPDATE profiles SET updated_at = now() WHERE tenant_id = %s AND id = %s",
                               (principal.tenant_id, live))
        return await read_consents(conn, principal.tenant_id, live)
