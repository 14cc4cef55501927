"""The baseline for the read benchmark: the least a lookup endpoint can do with the same
stack (Litestar + a psycopg pool): hash the email, run one indexed statement that returns
the same profile document (identifiers and consents included) built by Postgres as JSON,
and send those bytes unchanged, in autocommit (one round trip). No authentication, no
validation, no Python objects."""

from __future__ import annotations

import hashlib
import os
from contextlib import asynccontextmanager

from litestar import Litestar, Request, Response, get
from psycopg_pool import AsyncConnectionPool

_SQL = """
SELECT json_build_object(
  'id', p.id, 'lifecycle', p.lifecycle, 'traits', p.traits,
  'identifiers', (SELECT coalesce(json_agg(json_build_object('type', type, 'hash', hash, 'first_seen', first_seen,
                                                             'last_seen', last_seen) ORDER BY first_seen, type, hash),
                                  '[]') FROM profile_identifiers WHERE profile_id = p.id),
  'consents', (SELECT coalesce(json_object_agg(consent_type, json_build_object('granted', granted,
                                               'updated_at', updated_at, 'source_id', source_id)), '{}')
               FROM consents WHERE tenant_id = p.tenant_id AND profile_id = p.id),
  'counters', json_build_object('events', p.event_count, 'purchases', p.purchase_count, 'revenue', p.revenue),
  'first_seen', p.first_seen, 'last_seen', p.last_seen, 'merged_from', null)::text
FROM profile_identifiers k JOIN profiles p ON p.tenant_id = k.tenant_id AND p.id = k.profile_id
WHERE k.tenant_id = %s AND k.type = 'email' AND k.hash = %s
"""


@get("/lookup")
async def bare_lookup(request: Request, identifier_value: str) -> Response:
    digest = hashlib.sha256(identifier_value.strip().lower().encode()).hexdigest()
    async with request.app.state.pool.connection() as conn:
        row = await (await conn.execute(_SQL, (request.app.state.tenant_id, digest))).fetchone()
    if row is None:
        return Response(b'{"code":"not_found"}', status_code=404, media_type="application/json")
    return Response(row[0].encode(), media_type="application/json")


def create_app() -> Litestar:
    @asynccontextmanager
    async def lifespan(app: Litestar):
        app.state.tenant_id = os.environ["BENCH_TENANT_ID"]
        app.state.pool = AsyncConnectionPool(os.environ["BENCH_DATABASE_URL"], min_size=2, max_size=10, open=False,
                                             kwargs={"options": "-c TimeZone=UTC", "autocommit": True})
        await app.state.pool.open()
        yield
        await app.state.pool.close()

    return Litestar([bare_lookup], lifespan=[lifespan])
