"""Computed traits (CONTRACT 8): define, list, get, change, delete.

Creating or changing a trait backfills it from the stored events before answering; the
scheduler keeps values current as events arrive and recounts when the window slides
(workers/audience_jobs.py). Values appear on PROFILE as ``computed`` (read_api/profiles.py).
"""

from __future__ import annotations

import uuid
from typing import Any

import psycopg
from litestar import Request, delete, get, patch, post
from litestar.params import FromPath, JSONBody
from msgspec import Struct

from core.computed_traits import parse_computed_trait
from read_api.auth import principal_of, tenant_admin_key, tenant_key
from read_api.errors import Conflict, NotFound
from read_api.openapi import errors_for
from read_api.schemas import iso
from read_api.sources import run_admin
from read_api.state import ReadState
from stratum.audiences import TRAIT_COLUMNS, refresh_computed_trait, trait_from_row


class ComputedTraitOut(Struct):
    id: str
    name: str
    function: str
    event: str
    property: str | None
    within_days: int
    created_at: str
    updated_at: str


class ComputedTraitList(Struct):
    computed_traits: list[ComputedTraitOut]


def _out(row: tuple) -> ComputedTraitOut:
    tid, name, function, event, prop, days, created, updated = row
    return ComputedTraitOut(id=tid, name=name, function=function, event=event, property=prop, within_days=days,
                            created_at=iso(created), updated_at=iso(updated))


def parse_trait_id(value: str) -> uuid.UUID:
    try:
        return uuid.UUID(value)
    except ValueError:
        raise NotFound(f"no computed trait {value}") from None


def _load(conn: psycopg.Connection, tenant_id: str, trait_id: uuid.UUID) -> tuple:
    row = conn.execute(f"SELECT {TRAIT_COLUMNS} FROM computed_traits WHERE tenant_id = %s AND id = %s",
                       (tenant_id, trait_id)).fetchone()
    if row is None:
        raise NotFound(f"no computed trait {trait_id}")
    return row


def _backfill(conn: psycopg.Connection, tenant_id: str, trait_id: uuid.UUID) -> tuple:
    row = _load(conn, tenant_id, trait_id)
    refresh_computed_trait(conn, tenant_id, trait_from_row(row))
    conn.execute("UPDATE computed_traits SET refreshed_at = now() WHERE tenant_id = %s AND id = %s",
                 (tenant_id, trait_id))
    return row


def _create(conn: psycopg.Connection, tenant_id: str, body: dict) -> tuple:
    trait = parse_computed_trait(body)
    trait_id = uuid.uuid4()
    try:
        with conn.transaction():
            conn.execute("INSERT INTO computed_traits (tenant_id, id, name, function, event_name, property, within_days)"
                         " VALUES (%s, %s, %s, %s, %s, %s, %s)",
                         (tenant_id, trait_id, trait.name, trait.function, trait.event, trait.property,
                          trait.within_days))
    except psycopg.errors.UniqueViolation:
        raise Conflict(f"a computed trait named {trait.name!r} exists already", code="name_taken") from None
    return _backfill(conn, tenant_id, trait_id)


def _update(conn: psycopg.Connection, tenant_id: str, trait_id: uuid.UUID, body: dict) -> tuple:
    current = trait_from_row(_load(conn, tenant_id, trait_id))
    merged = {"name": current.name, "function": current.function, "event": current.event,
              "property": current.property, "within_days": current.within_days, **body}
    trait = parse_computed_trait(merged)
    try:
        with conn.transaction():
            conn.execute("UPDATE computed_traits SET name = %s, function = %s, event_name = %s, property = %s,"
                         " within_days = %s, updated_at = now() WHERE tenant_id = %s AND id = %s",
                         (trait.name, trait.function, trait.event, trait.property, trait.within_days, tenant_id,
                          trait_id))
    except psycopg.errors.UniqueViolation:
        raise Conflict(f"a computed trait named {trait.name!r} exists already", code="name_taken") from None
    if trait.name != current.name:
        _forget_values(conn, tenant_id, current.name)
    return _backfill(conn, tenant_id, trait_id)


def _forget_values(conn: psycopg.Connection, tenant_id: str, name: str) -> None:
    conn.execute("UPDATE profiles SET computed = computed - %s, updated_at = now()"
                 " WHERE tenant_id = %s AND computed ? %s", (name, tenant_id, name))


def _delete(conn: psycopg.Connection, tenant_id: str, trait_id: uuid.UUID) -> tuple:
    row = _load(conn, tenant_id, trait_id)
    conn.execute("DELETE FROM computed_traits WHERE tenant_id = %s AND id = %s", (tenant_id, trait_id))
    _forget_values(conn, tenant_id, row[1])
    return row


@post("/api/v1/cdp/computed-traits", guards=[tenant_admin_key], status_code=201,
      summary="Define a computed trait (admin key)",
      description="Body `{\"name\", \"function\", \"event\", \"property\"?, \"within_days\"}`; backfilled from "
                  "stored events before the answer.",
      responses=errors_for(400, 401, 403, 409, 503))
async def create_computed_trait(request: Request, data: JSONBody[dict[str, Any]]) -> ComputedTraitOut:
    st: ReadState = request.app.state.read
    return _out(await run_admin(st, _create, principal_of(request).tenant_id, data))


@get("/api/v1/cdp/computed-traits", guards=[tenant_key], summary="The tenant's computed traits",
     responses=errors_for(401, 403, 503))
async def list_computed_traits(request: Request) -> ComputedTraitList:
    st: ReadState = request.app.state.read
    async with st.pool.connection() as conn:
        rows = await (await conn.execute(
            f"SELECT {TRAIT_COLUMNS} FROM computed_traits WHERE tenant_id = %s ORDER BY name",
            (principal_of(request).tenant_id,))).fetchall()
    return ComputedTraitList(computed_traits=[_out(r) for r in rows])


@get("/api/v1/cdp/computed-traits/{trait_id:str}", guards=[tenant_key], summary="A computed trait",
     responses=errors_for(401, 403, 404, 503))
async def get_computed_trait(request: Request, trait_id: FromPath[str]) -> ComputedTraitOut:
    st: ReadState = request.app.state.read
    tid = parse_trait_id(trait_id)
    async with st.pool.connection() as conn:
        row = await (await conn.execute(
            f"SELECT {TRAIT_COLUMNS} FROM computed_traits WHERE tenant_id = %s AND id = %s",
            (principal_of(request).tenant_id, tid))).fetchone()
    if row is None:
        raise NotFound(f"no computed trait {trait_id}")
    return _out(row)


@patch("/api/v1/cdp/computed-traits/{trait_id:str}", guards=[tenant_admin_key],
       summary="Change a computed trait (admin key)", description="Any field of the definition; backfilled again.",
       responses=errors_for(400, 401, 403, 404, 409, 503))
async def update_computed_trait(request: Request, trait_id: FromPath[str],
                                data: JSONBody[dict[str, Any]]) -> ComputedTraitOut:
    st: ReadState = request.app.state.read
    row = await run_admin(st, _update, principal_of(request).tenant_id, parse_trait_id(trait_id), data)
    return _out(row)


@delete("/api/v1/cdp/computed-traits/{trait_id:str}", guards=[tenant_admin_key], status_code=200,
        summary="Delete a computed trait (admin key)",
        description="Answers the definition as it was; the values leave every profile.",
        responses=errors_for(401, 403, 404, 503))
async def delete_computed_trait(request: Request, trait_id: FromPath[str]) -> ComputedTraitOut:
    st: ReadState = request.app.state.read
    return _out(await run_admin(st, _delete, principal_of(request).tenant_id, parse_trait_id(trait_id)))


COMPUTED_TRAIT_ROUTES = [create_computed_trait, list_computed_traits, get_computed_trait, update_computed_trait,
                         delete_computed_trait]
