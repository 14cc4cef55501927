"""Sources of a tenant: list, create, change, rotate the write key and the identity secret.

Changes go through ``stratum.admin`` (the same functions as the CLI), run on a short-lived
synchronous connection in a worker thread: they are rare, and this keeps one implementation
of the rules. Write keys are returned once, by create and rotate, and stored only as hashes;
identity secrets of website sources are returned once, by create and rotate-identity-secret,
and stored encrypted (stratum/secret_storage.py).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from typing import Any, TypeVar

from litestar import Request, get, patch, post
from litestar.params import FromPath, JSONBody

from read_api.auth import principal_of, tenant_admin_key, tenant_key
from read_api.errors import NotFound
from read_api.openapi import errors_for
from read_api.schemas import (
    Source,
    SourceCreate,
    SourceList,
    SourcePatch,
    SourceWithIdentitySecret,
    SourceWithKey,
    iso,
)
from read_api.state import ReadState
from stratum import admin
from stratum.db.connect import connect

T = TypeVar("T")


def source_from_record(rec: admin.SourceRecord) -> Source:
    return Source(id=rec.id, name=rec.name, type=rec.type, active=rec.active, phone_region=rec.phone_region,
                  rate_limit=rec.rate_limit, allowed_origins=list(rec.allowed_origins),
                  identity_verification=rec.identity_verification, created_at=iso(rec.created_at))


def with_key(source: Source, write_key: str, identity_secret: str | None = None) -> SourceWithKey:
    extra = {"identity_secret": identity_secret} if identity_secret else {}
    return SourceWithKey(**{f: getattr(source, f) for f in Source.__struct_fields__}, write_key=write_key, **extra)


async def run_admin(st: ReadState, fn: Callable[..., T], *args: Any) -> T:
    """Run a ``stratum.admin`` function in its own transaction, off the event loop."""

    def call() -> T:
        with connect(st.settings.database_url) as conn:
            result = fn(conn, *args)
            conn.commit()
            return result

    return await asyncio.to_thread(call)


def parse_source_id(value: str) -> uuid.UUID:
    try:
        return uuid.UUID(value)
    except ValueError:
        raise NotFound(f"no source {value}") from None


@get("/api/v1/cdp/sources", guards=[tenant_key], summary="The tenant's sources",
     responses=errors_for(401, 403, 503))
async def list_sources(request: Request) -> SourceList:
    st: ReadState = request.app.state.read
    async with st.pool.connection() as conn:
        rows = await (await conn.execute(
            f"SELECT {admin.SOURCE_COLUMNS} FROM sources WHERE tenant_id = %s ORDER BY created_at, id",
            (principal_of(request).tenant_id,))).fetchall()
    return SourceList(sources=[source_from_record(admin.SourceRecord(*r)) for r in rows])


@post("/api/v1/cdp/sources", guards=[tenant_admin_key], status_code=201, summary="Create a source (admin key)",
      description="Answers the SOURCE with its `write_key` and, for a website source, its `identity_secret`, "
                  "both shown this once. `identity_verification`: `protect` (website default) or `off`.",
      responses=errors_for(400, 401, 403, 503))
async def create_source(request: Request, data: JSONBody[SourceCreate]) -> SourceWithKey:
    st: ReadState = request.app.state.read
    tenant_id = uuid.UUID(principal_of(request).tenant_id)
    origins = admin.validate_allowed_origins(data.allowed_origins)

    def create(conn):
        created = admin.create_source(conn, tenant_id, data.name, data.type, data.phone_region, data.rate_limit,
                                      origins, identity_verification=data.identity_verification,
                                      secret_key=st.settings.secret_key)
        return admin.get_source(conn, tenant_id, created.owner_id), created.key, created.identity_secret

    record, key, identity_secret = await run_admin(st, create)
    return with_key(source_from_record(record), key, identity_secret)


@patch("/api/v1/cdp/sources/{source_id:str}", guards=[tenant_admin_key], summary="Change a source (admin key)",
       description="Any of `name`, `active`, `phone_region`, `rate_limit`, `allowed_origins`, "
                   "`identity_verification` (`protect` or `off`, website sources only); fields left out keep their "
                   "value, `null` clears `phone_region` and `rate_limit`. `type` cannot change (400 "
                   "`immutable_field`). Ingest and workers see changes within 1 s.",
       responses=errors_for(400, 401, 403, 404, 503))
async def update_source(request: Request, source_id: FromPath[str], data: JSONBody[SourcePatch]) -> Source:
    st: ReadState = request.app.state.read
    sid = parse_source_id(source_id)
    record = await run_admin(st, admin.update_source, principal_of(request).tenant_id, sid, data.changes())
    return source_from_record(record)


@post("/api/v1/cdp/sources/{source_id:str}/rotate-key", guards=[tenant_admin_key], status_code=200,
      summary="Rotate a source's write key (admin key)",
      description="Answers the SOURCE with its new `write_key`, shown this once. The old key stops working "
                  "within one second.",
      responses=errors_for(401, 403, 404, 503))
async def rotate_key(request: Request, source_id: FromPath[str]) -> SourceWithKey:
    st: ReadState = request.app.state.read
    sid = parse_source_id(source_id)
    record, key = await run_admin(st, admin.rotate_source_key, principal_of(request).tenant_id, sid)
    return with_key(source_from_record(record), key)


@post("/api/v1/cdp/sources/{source_id:str}/rotate-identity-secret", guards=[tenant_admin_key], status_code=200,
      summary="Rotate a website source's identity secret (admin key)",
      description="Answers the SOURCE with its new `identity_secret`, shown this once. Signatures made with the "
                  "previous secret stay valid for 24 hours; the one before that stops at once. 400 "
                  "`not_a_website_source` for server-side sources (they are trusted and have none).",
      responses=errors_for(400, 401, 403, 404, 503))
async def rotate_identity_secret(request: Request, source_id: FromPath[str]) -> SourceWithIdentitySecret:
    st: ReadState = request.app.state.read
    sid = parse_source_id(source_id)
    record, secret = await run_admin(st, admin.rotate_identity_secret, principal_of(request).tenant_id, sid,
                                     st.settings.secret_key)
    source = source_from_record(record)
    return SourceWithIdentitySecret(**{f: getattr(source, f) for f in Source.__struct_fields__},
                                    identity_secret=secret)
