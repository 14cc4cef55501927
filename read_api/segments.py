"""Segments (CONTRACT 8): create, list, get, change, delete; members (keyset pages);
preview (the builder's live count and a sample). Admin key to change, any tenant key to read.

Rules are validated by ``core.segment_rules`` (400 ``invalid_rule`` naming the bad part, 400
``rule_too_complex``); a computed trait a rule names must exist. Creating a segment, or
changing its rules or kind, evaluates it over every live profile before answering (a static
segment is that snapshot); the scheduler then keeps dynamic ones current
(workers/audience_jobs.py).
"""

from __future__ import annotations

import uuid
from typing import Any

import psycopg
from litestar import Request, delete, get, patch, post
from litestar.params import FromPath, FromQuery, JSONBody
from msgspec import Struct

from core.segment_rules import InvalidRule, condition_paths, validate_rules
from read_api.auth import principal_of, tenant_admin_key, tenant_key
from read_api.errors import BadRequest, Conflict, NotFound
from read_api.openapi import errors_for
from read_api.schemas import iso
from read_api.sources import run_admin
from read_api.state import ReadState
from stratum.audiences import SEGMENT_COLUMNS, SegmentRow, evaluate_segment, preview_segment

KINDS = ("dynamic", "static")
MAX_NAME = 200
DEFAULT_MEMBERS_PAGE = 100
MAX_MEMBERS_PAGE = 1000
DEFAULT_SAMPLE = 10
MAX_SAMPLE = 100


class Segment(Struct):
    id: str
    name: str
    kind: str
    rules: dict[str, Any]
    size: int
    created_at: str
    updated_at: str


class SegmentList(Struct):
    segments: list[Segment]


class Members(Struct):
    profiles: list[str]
    next_cursor: str | None


class Preview(Struct):
    size: int
    sample: list[str]


class SegmentFields(Struct):
    traits: list[str]
    events: list[str]
    computed: list[str]


class SizePoint(Struct):
    at: str
    size: int


class SegmentHistory(Struct):
    points: list[SizePoint]


def segment_from_row(row: SegmentRow) -> Segment:
    return Segment(id=row.id, name=row.name, kind=row.kind, rules=row.rules, size=row.size,
                   created_at=iso(row.created_at), updated_at=iso(row.updated_at))


def parse_segment_id(value: str) -> uuid.UUID:
    try:
        return uuid.UUID(value)
    except ValueError:
        raise NotFound(f"no segment {value}") from None


def _name(value: Any) -> str:
    if not isinstance(value, str) or not value.strip() or len(value.strip()) > MAX_NAME or "\x00" in value:
        raise BadRequest(f"name: a segment name of 1 to {MAX_NAME} characters", code="invalid_name")
    return value.strip()


def _kind(value: Any) -> str:
    if value not in KINDS:
        raise BadRequest(f"kind: use one of {', '.join(KINDS)}", code="invalid_kind")
    return value


def _check_rules(conn: psycopg.Connection, tenant_id: str, rules: Any) -> dict:
    """Validated rules; computed traits they name must exist (400 ``invalid_rule`` otherwise)."""
    validate_rules(rules)
    names = {r[0] for r in conn.execute("SELECT name FROM computed_traits WHERE tenant_id = %s", (tenant_id,))}
    for path, name in condition_paths(rules, "computed"):
        if name not in names:
            raise InvalidRule(f"{path}: no computed trait named {name!r}; create it first", field=path)
    return rules


def _unknown_fields(body: dict, allowed: set[str]) -> None:
    extra = sorted(set(body) - allowed)
    if extra:
        raise BadRequest(f"{extra[0]}: unknown field; use {', '.join(sorted(allowed))}", code="invalid_field")


def _load(conn: psycopg.Connection, tenant_id: str, segment_id: uuid.UUID) -> SegmentRow:
    row = conn.execute(f"SELECT {SEGMENT_COLUMNS} FROM segments WHERE tenant_id = %s AND id = %s",
                       (tenant_id, segment_id)).fetchone()
    if row is None:
        raise NotFound(f"no segment {segment_id}")
    return SegmentRow(*row)


def _create(conn: psycopg.Connection, tenant_id: str, body: dict) -> SegmentRow:
    _unknown_fields(body, {"name", "kind", "rules"})
    name, kind = _name(body.get("name")), _kind(body.get("kind", "dynamic"))
    rules = _check_rules(conn, tenant_id, body.get("rules"))
    segment_id = uuid.uuid4()
    try:
        with conn.transaction():
            conn.execute("INSERT INTO segments (tenant_id, id, name, kind, rules) VALUES (%s, %s, %s, %s, %s::jsonb)",
                         (tenant_id, segment_id, name, kind, psycopg.types.json.Jsonb(rules)))
    except psycopg.errors.UniqueViolation:
        raise Conflict(f"a segment named {name!r} exists already", code="name_taken") from None
    evaluate_segment(conn, tenant_id, str(segment_id), rules)
    return _load(conn, tenant_id, segment_id)


def _update(conn: psycopg.Connection, tenant_id: str, segment_id: uuid.UUID, body: dict) -> SegmentRow:
    _unknown_fields(body, {"name", "kind", "rules"})
    current = _load(conn, tenant_id, segment_id)
    name = _name(body["name"]) if "name" in body else current.name
    kind = _kind(body["kind"]) if "kind" in body else current.kind
    rules = _check_rules(conn, tenant_id, body["rules"]) if "rules" in body else current.rules
    try:
        with conn.transaction():
            conn.execute("UPDATE segments SET name = %s, kind = %s, rules = %s, updated_at = now()"
                         " WHERE tenant_id = %s AND id = %s",
                         (name, kind, psycopg.types.json.Jsonb(rules), tenant_id, segment_id))
    except psycopg.errors.UniqueViolation:
        raise Conflict(f"a segment named {name!r} exists already", code="name_taken") from None
    if rules != current.rules or kind != current.kind:
        evaluate_segment(conn, tenant_id, str(segment_id), rules)
    return _load(conn, tenant_id, segment_id)


def _delete(conn: psycopg.Connection, tenant_id: str, segment_id: uuid.UUID) -> SegmentRow:
    row = _load(conn, tenant_id, segment_id)
    conn.execute("DELETE FROM segments WHERE tenant_id = %s AND id = %s", (tenant_id, segment_id))
    return row


@post("/api/v1/cdp/segments", guards=[tenant_admin_key], status_code=201, summary="Create a segment (admin key)",
      description="Body `{\"name\", \"kind\": \"dynamic\"|\"static\", \"rules\"}`; answers the SEGMENT with its size.",
      responses=errors_for(400, 401, 403, 409, 503))
async def create_segment(request: Request, data: JSONBody[dict[str, Any]]) -> Segment:
    st: ReadState = request.app.state.read
    row = await run_admin(st, _create, principal_of(request).tenant_id, data)
    return segment_from_row(row)


@get("/api/v1/cdp/segments", guards=[tenant_key], summary="The tenant's segments",
     responses=errors_for(401, 403, 503))
async def list_segments(request: Request) -> SegmentList:
    st: ReadState = request.app.state.read
    async with st.pool.connection() as conn:
        rows = await (await conn.execute(
            f"SELECT {SEGMENT_COLUMNS} FROM segments WHERE tenant_id = %s ORDER BY created_at, id",
            (principal_of(request).tenant_id,))).fetchall()
    return SegmentList(segments=[segment_from_row(SegmentRow(*r)) for r in rows])


@get("/api/v1/cdp/segments/{segment_id:str}", guards=[tenant_key], summary="A segment",
     responses=errors_for(401, 403, 404, 503))
async def get_segment(request: Request, segment_id: FromPath[str]) -> Segment:
    st: ReadState = request.app.state.read
    sid = parse_segment_id(segment_id)
    async with st.pool.connection() as conn:
        row = await (await conn.execute(f"SELECT {SEGMENT_COLUMNS} FROM segments WHERE tenant_id = %s AND id = %s",
                                        (principal_of(request).tenant_id, sid))).fetchone()
    if row is None:
        raise NotFound(f"no segment {segment_id}")
    return segment_from_row(SegmentRow(*row))


@patch("/api/v1/cdp/segments/{segment_id:str}", guards=[tenant_admin_key], summary="Change a segment (admin key)",
       description="Any of `name`, `kind`, `rules`; new rules or kind re-evaluate the membership.",
       responses=errors_for(400, 401, 403, 404, 409, 503))
async def update_segment(request: Request, segment_id: FromPath[str], data: JSONBody[dict[str, Any]]) -> Segment:
    st: ReadState = request.app.state.read
    sid = parse_segment_id(segment_id)
    return segment_from_row(await run_admin(st, _update, principal_of(request).tenant_id, sid, data))


@delete("/api/v1/cdp/segments/{segment_id:str}", guards=[tenant_admin_key], status_code=200,
        summary="Delete a segment (admin key)", description="Answers the SEGMENT as it was; members and history go.",
        responses=errors_for(401, 403, 404, 503))
async def delete_segment(request: Request, segment_id: FromPath[str]) -> Segment:
    st: ReadState = request.app.state.read
    return segment_from_row(await run_admin(st, _delete, principal_of(request).tenant_id,
                                            parse_segment_id(segment_id)))


@get("/api/v1/cdp/segments/{segment_id:str}/members", guards=[tenant_key], summary="A segment's members",
     description="`{\"profiles\": [ids], \"next_cursor\"}` in profile id order; pass `next_cursor` as `cursor`.",
     responses=errors_for(400, 401, 403, 404, 503))
async def segment_members(request: Request, segment_id: FromPath[str], cursor: FromQuery[str | None] = None,
                          limit: FromQuery[int] = DEFAULT_MEMBERS_PAGE) -> Members:
    st: ReadState = request.app.state.read
    tenant_id = principal_of(request).tenant_id
    sid = parse_segment_id(segment_id)
    if not 1 <= limit <= MAX_MEMBERS_PAGE:
        raise BadRequest(f"limit: from 1 to {MAX_MEMBERS_PAGE}", code="invalid_limit")
    after = None
    if cursor:
        try:
            after = uuid.UUID(cursor)
        except ValueError:
            raise BadRequest("cursor: pass the next_cursor of the previous page", code="invalid_cursor") from None
    async with st.pool.connection() as conn:
        if await (await conn.execute("SELECT 1 FROM segments WHERE tenant_id = %s AND id = %s",
                                     (tenant_id, sid))).fetchone() is None:
            raise NotFound(f"no segment {segment_id}")
        rows = await (await conn.execute(
            "SELECT profile_id::text FROM segment_members WHERE tenant_id = %s AND segment_id = %s"
            " AND (%s::uuid IS NULL OR profile_id > %s::uuid) ORDER BY profile_id LIMIT %s",
            (tenant_id, sid, after, after, limit + 1))).fetchall()
    ids = [r[0] for r in rows[:limit]]
    return Members(profiles=ids, next_cursor=ids[-1] if len(rows) > limit else None)


def _preview(conn: psycopg.Connection, tenant_id: str, body: dict) -> tuple[int, list[str]]:
    _unknown_fields(body, {"rules", "sample_size"})
    sample = body.get("sample_size", DEFAULT_SAMPLE)
    if not isinstance(sample, int) or isinstance(sample, bool) or not 0 <= sample <= MAX_SAMPLE:
        raise BadRequest(f"sample_size: from 0 to {MAX_SAMPLE}", code="invalid_parameter")
    rules = _check_rules(conn, tenant_id, body.get("rules"))
    return preview_segment(conn, tenant_id, rules, sample)


@post("/api/v1/cdp/segments/preview", guards=[tenant_key], status_code=200, summary="Live count of rules",
      description="Body `{\"rules\", \"sample_size\"?}` -> `{\"size\", \"sample\": [ids]}`; changes nothing.",
      responses=errors_for(400, 401, 403, 503))
async def preview(request: Request, data: JSONBody[dict[str, Any]]) -> Preview:
    st: ReadState = request.app.state.read
    size, sample = await run_admin(st, _preview, principal_of(request).tenant_id, data)
    return Preview(size=size, sample=sample)


# The builder's pickers: trait keys of the most recently changed profiles, event names of
# the last 30 days by volume (the (tenant_id, event_time) index), computed trait names.
_FIELDS_SQL = """
SELECT 'trait', k FROM (
    SELECT DISTINCT jsonb_object_keys(traits) AS k FROM (
        SELECT traits FROM profiles WHERE tenant_id = %(t)s AND merged_into IS NULL
        ORDER BY updated_at DESC LIMIT %(sample)s) s) keys
UNION ALL
SELECT 'event', event_name FROM (
    SELECT event_name FROM events WHERE tenant_id = %(t)s AND event_time >= now() - interval '30 days'
    GROUP BY event_name ORDER BY count(*) DESC, event_name LIMIT %(limit)s) e
UNION ALL
SELECT 'computed', name FROM computed_traits WHERE tenant_id = %(t)s
"""
FIELDS_PROFILE_SAMPLE = 1000
FIELDS_LIMIT = 200
HISTORY_POINTS = 500


@get("/api/v1/cdp/segments/fields", guards=[tenant_key], summary="Trait keys, event names and computed traits",
     description="For rule pickers: trait keys of the 1,000 most recently changed profiles, the 200 most frequent "
                 "event names of the last 30 days, every computed trait name.",
     responses=errors_for(401, 403, 503))
async def segment_fields(request: Request) -> SegmentFields:
    st: ReadState = request.app.state.read
    out: dict[str, list[str]] = {"trait": [], "event": [], "computed": []}
    async with st.pool.connection() as conn:
        for kind, name in await (await conn.execute(_FIELDS_SQL, {
                "t": principal_of(request).tenant_id, "sample": FIELDS_PROFILE_SAMPLE,
                "limit": FIELDS_LIMIT})).fetchall():
            out[kind].append(name)
    return SegmentFields(traits=sorted(out["trait"])[:FIELDS_LIMIT], events=out["event"],
                         computed=sorted(out["computed"]))


@get("/api/v1/cdp/segments/{segment_id:str}/history", guards=[tenant_key], summary="A segment's size over time",
     description="`{\"points\": [{\"at\", \"size\"}]}`: the size at the end of each hour with entries or exits "
                 "(the last 500 such hours).",
     responses=errors_for(401, 403, 404, 503))
async def segment_history(request: Request, segment_id: FromPath[str]) -> SegmentHistory:
    st: ReadState = request.app.state.read
    tenant_id = principal_of(request).tenant_id
    sid = parse_segment_id(segment_id)
    async with st.pool.connection() as conn:
        if await (await conn.execute("SELECT 1 FROM segments WHERE tenant_id = %s AND id = %s",
                                     (tenant_id, sid))).fetchone() is None:
            raise NotFound(f"no segment {segment_id}")
        rows = await (await conn.execute(
            "SELECT h, size FROM (SELECT h, sum(delta) OVER (ORDER BY h)::bigint AS size FROM ("
            " SELECT date_trunc('hour', at, 'UTC') AS h, sum(CASE kind WHEN 'entered' THEN 1 ELSE -1 END) AS delta"
            " FROM segment_events WHERE tenant_id = %s AND segment_id = %s GROUP BY 1) d ORDER BY h DESC LIMIT %s) x"
            " ORDER BY h", (tenant_id, sid, HISTORY_POINTS))).fetchall()
    return SegmentHistory(points=[SizePoint(at=iso(h), size=n) for h, n in rows])


SEGMENT_ROUTES = [create_segment, list_segments, segment_fields, get_segment, update_segment, delete_segment,
                  segment_members, segment_history, preview]
