"""Identity you can explain (CONTRACT 9): a profile's decision log, and why two identifiers
are (or are not) on one profile.

- ``GET /api/v1/cdp/profiles/{id}/decisions?cursor=&limit=``: the links, merges and
  refusals that shaped the profile (and the profiles merged into it), oldest first, keyset
  pages over ``identity_decisions (tenant_id, profile_id, id)``; the cursor is the last id.
- ``GET /api/v1/cdp/identity/explain``: when both identifiers are on one profile, the
  shortest chain of that profile's links (merges are links of type ``merge``) from ``a`` to
  ``b``, found by breadth-first search; otherwise the refusals recorded on either side that
  name an identifier of the other side, or, when one identifier is on no profile (blocked,
  suppressed, left out), the refusals of the other's profile that name it.

Node references are ``"type:hash"`` strings, as in the graph.
"""

from __future__ import annotations

import uuid
from collections import deque
from typing import Any

from litestar import Request, get
from litestar.params import FromPath, FromQuery
from msgspec import Struct, field
from psycopg import AsyncConnection
from psycopg.types.json import Jsonb

from read_api.auth import principal_of, tenant_key
from read_api.errors import BadRequest, NotFound
from read_api.events import page_size
from read_api.graph import node_ref
from read_api.openapi import errors_for
from read_api.profiles import identifier_hash_from_query, parse_profile_id, resolve_profile_id
from read_api.schemas import iso
from read_api.state import ReadState

MAX_BLOCKING_DECISIONS = 100


class DecisionIdentifier(Struct):
    type: str
    hash: str | None


class Decision(Struct):
    at: str
    event_id: str | None
    kind: str
    identifiers: list[DecisionIdentifier]
    rule: str | None
    message: str


class DecisionPage(Struct):
    decisions: list[Decision]
    next_cursor: str | None


class PathStep(Struct):
    from_: str = field(name="from")
    to: str = field()
    link_type: str = field()
    event_id: str | None = field()
    at: str = field()


class Explanation(Struct):
    same_profile: bool
    path: list[PathStep]
    blocking_decisions: list[Decision]


# The live profile and every profile merged into it; per profile at most one page of rows
# past the cursor (an index range each), then the page over all of them.
_DECISIONS_SQL = """
SELECT d.id, d.decided_at, d.event_id::text, d.kind, d.identifiers, d.rule, d.message
FROM (SELECT %(profile_id)s::uuid AS id
      UNION ALL SELECT id FROM profiles WHERE merged_into = %(profile_id)s AND tenant_id = %(tenant_id)s) p
CROSS JOIN LATERAL (
    SELECT * FROM identity_decisions x
    WHERE x.tenant_id = %(tenant_id)s AND x.profile_id = p.id AND x.id > %(after)s
    ORDER BY x.id LIMIT %(limit)s
) d
ORDER BY d.id LIMIT %(limit)s
"""

_HOLDER_SQL = "SELECT profile_id::text FROM profile_identifiers WHERE tenant_id = %s AND type = %s AND hash = %s"

_LINKS_SQL = """
SELECT from_type, from_hash, to_type, to_hash, link_type, event_id::text, created_at FROM identity_links
WHERE tenant_id = %s AND profile_id = %s ORDER BY created_at, id
"""
_NODES_SQL = "SELECT type, hash FROM profile_identifiers WHERE tenant_id = %s AND profile_id = %s"

# Refusals recorded on ``side`` (or a profile merged into it) naming an identifier that
# ``other`` holds now.
_BLOCKING_SQL = """
SELECT d.id, d.decided_at, d.event_id::text, d.kind, d.identifiers, d.rule, d.message
FROM identity_decisions d
WHERE d.tenant_id = %(tenant_id)s AND d.kind NOT IN ('link', 'merge')
  AND d.profile_id IN (SELECT %(side)s::uuid UNION ALL
                       SELECT id FROM profiles WHERE merged_into = %(side)s AND tenant_id = %(tenant_id)s)
  AND EXISTS (SELECT 1 FROM jsonb_array_elements(d.identifiers) i
              JOIN profile_identifiers pi ON pi.tenant_id = d.tenant_id AND pi.type = i->>'type'
                                         AND pi.hash = i->>'hash'
              WHERE pi.profile_id = %(other)s)
ORDER BY d.id LIMIT %(limit)s
"""


# Refusals recorded on ``side`` (or a profile merged into it) that name ``ident``.
_LEFT_OUT_SQL = """
SELECT d.id, d.decided_at, d.event_id::text, d.kind, d.identifiers, d.rule, d.message
FROM identity_decisions d
WHERE d.tenant_id = %(tenant_id)s AND d.kind NOT IN ('link', 'merge') AND d.identifiers @> %(ident)s
  AND d.profile_id IN (SELECT %(side)s::uuid UNION ALL
                       SELECT id FROM profiles WHERE merged_into = %(side)s AND tenant_id = %(tenant_id)s)
ORDER BY d.id LIMIT %(limit)s
"""


def _decision(row: tuple[Any, ...]) -> Decision:
    _id, at, event_id, kind, identifiers, rule, message = row
    return Decision(at=iso(at), event_id=event_id, kind=kind,
                    identifiers=[DecisionIdentifier(i.get("type", ""), i.get("hash")) for i in identifiers],
                    rule=rule, message=message)


def _after(cursor: str | None) -> int:
    if not cursor:
        return 0
    try:
        after = int(cursor)
    except ValueError:
        after = -1
    if after < 0:
        raise BadRequest("cursor is not one this API returned; pass next_cursor back unchanged",
                         code="invalid_cursor")
    return after


@get("/api/v1/cdp/profiles/{profile_id:str}/decisions", guards=[tenant_key],
     summary="The identity decisions that shaped a profile, oldest first",
     description="Links, merges and refusals (`limit`, `untrusted_merge`, `unverified_claim`, `blocked`, "
                 "`suppressed`) with the event, rule and identifiers behind each, including those of profiles "
                 "merged into this one. Keyset pages: pass `next_cursor` back as `cursor`.",
     responses=errors_for(400, 401, 403, 404, 503))
async def profile_decisions(request: Request, profile_id: FromPath[str], cursor: FromQuery[str | None] = None,
                            limit: FromQuery[int | None] = None) -> DecisionPage:
    st: ReadState = request.app.state.read
    principal = principal_of(request)
    n = page_size(limit)
    after = _after(cursor)
    requested = parse_profile_id(profile_id)
    async with st.pool.connection() as conn:
        live = await resolve_profile_id(conn, principal.tenant_id, requested)
        rows = await (await conn.execute(_DECISIONS_SQL, {"profile_id": live, "tenant_id": principal.tenant_id,
                                                          "after": after, "limit": n + 1})).fetchall()
    next_cursor = str(rows[n - 1][0]) if len(rows) > n else None
    return DecisionPage(decisions=[_decision(r) for r in rows[:n]], next_cursor=next_cursor)


def shortest_path(links: list[tuple[Any, ...]], nodes: set[str], start: str, goal: str) -> list[PathStep] | None:
    """Breadth-first search over the links (undirected), through current nodes only (an
    identifier moved off the profile leaves its old links behind). Steps read from
    ``start`` to ``goal``; ties go to the older link. None when no chain joins them."""
    adjacent: dict[str, list[tuple[str, tuple[Any, ...]]]] = {}
    for link in links:
        a, b = node_ref(link[0], link[1]), node_ref(link[2], link[3])
        if a in nodes and b in nodes and a != b:
            adjacent.setdefault(a, []).append((b, link))
            adjacent.setdefault(b, []).append((a, link))
    came: dict[str, tuple[str, tuple[Any, ...]] | None] = {start: None}
    todo = deque([start])
    while todo:
        here = todo.popleft()
        if here == goal:
            break
        for there, link in adjacent.get(here, ()):
            if there not in came:
                came[there] = (here, link)
                todo.append(there)
    if goal not in came:
        return None
    steps: list[PathStep] = []
    at = goal
    while (prev := came[at]) is not None:
        here, link = prev
        steps.append(PathStep(from_=here, to=at, link_type=link[4], event_id=link[5], at=iso(link[6])))
        at = here
    return steps[::-1]


async def _holder(conn: AsyncConnection, tenant_id: str, key: tuple[str, str]) -> str | None:
    row = await (await conn.execute(_HOLDER_SQL, (tenant_id, *key))).fetchone()
    return row[0] if row else None


@get("/api/v1/cdp/identity/explain", guards=[tenant_key], summary="Why two identifiers are (not) one profile",
     description="`a_type` with `a_value` (normalized as in lookups) or `a_hash`, and the same for `b`. "
                 "`same_profile: true`: `path` is the chain of links and merges joining them, each with its "
                 "evidence event. `false`: `blocking_decisions` are the refusals that kept them apart.",
     responses=errors_for(400, 401, 403, 404, 503))
async def explain_identity(
    request: Request,
    a_type: FromQuery[str | None] = None, a_value: FromQuery[str | None] = None, a_hash: FromQuery[str | None] = None,
    b_type: FromQuery[str | None] = None, b_value: FromQuery[str | None] = None, b_hash: FromQuery[str | None] = None,
    phone_region: FromQuery[str | None] = None,
) -> Explanation:
    st: ReadState = request.app.state.read
    tenant_id = principal_of(request).tenant_id
    a = identifier_hash_from_query(a_type, a_value, a_hash, phone_region)
    b = identifier_hash_from_query(b_type, b_value, b_hash, phone_region)
    async with st.pool.connection() as conn:
        pa, pb = await _holder(conn, tenant_id, a), await _holder(conn, tenant_id, b)
        if (pa is None) != (pb is None):
            # One is on no profile: the refusals of the other's profile that left it out, if any.
            side, missing = (pa, b) if pb is None else (pb, a)
            rows = await (await conn.execute(_LEFT_OUT_SQL, {
                "tenant_id": tenant_id, "side": side, "limit": MAX_BLOCKING_DECISIONS,
                "ident": Jsonb([{"type": missing[0], "hash": missing[1]}])})).fetchall()
            if rows:
                return Explanation(same_profile=False, path=[], blocking_decisions=[_decision(r) for r in rows])
        if pa is None or pb is None:
            missing_names = " and ".join(n for n, p in (("a", pa), ("b", pb)) if p is None)
            raise NotFound(f"no profile holds identifier {missing_names}")
        if pa == pb:
            profile = uuid.UUID(pa)
            links = await (await conn.execute(_LINKS_SQL, (tenant_id, profile))).fetchall()
            nodes = {node_ref(t, h) for t, h in await (await conn.execute(_NODES_SQL, (tenant_id, profile))).fetchall()}
            path = shortest_path(links, nodes, node_ref(*a), node_ref(*b)) or []
            return Explanation(same_profile=True, path=path, blocking_decisions=[])
        blocking = []
        for side, other in ((pa, pb), (pb, pa)):
            blocking += await (await conn.execute(_BLOCKING_SQL, {"tenant_id": tenant_id, "side": side, "other": other,
                                                                  "limit": MAX_BLOCKING_DECISIONS})).fetchall()
    blocking.sort(key=lambda r: r[0])
    return Explanation(same_profile=False, path=[],
                       blocking_decisions=[_decision(r) for r in blocking[:MAX_BLOCKING_DECISIONS]])
