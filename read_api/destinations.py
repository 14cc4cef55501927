"""Webhook destinations of a tenant (CONTRACT 7): create, list, get, change, delete and
rotate the signing secret. Admin key for changes; any tenant key reads.

Secrets are shown once (create, rotate) and stored encrypted with STRATUM_SECRET_KEY, bound
to the destination (stratum/secret_storage.py). The SSRF guard runs on create and on every ``url`` change, unless
STRATUM_DESTINATIONS_ALLOW_PRIVATE; the delivery process checks again at every attempt.
Workers see changes within their destination cache time (1 s by default).
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any
from urllib.parse import urlsplit

import psycopg
from litestar import Request, delete, get, patch, post
from litestar.params import FromPath, JSONBody

from core.webhooks import CONSENT_TYPES, MAX_BATCH_SIZE, TOPICS, new_secret
from read_api.auth import principal_of, tenant_admin_key, tenant_key
from read_api.destination_schemas import (
    Destination,
    DestinationCreate,
    DestinationList,
    DestinationPatch,
    DestinationWithSecret,
)
from read_api.errors import ApiError, BadRequest, NotFound
from read_api.openapi import errors_for
from read_api.schemas import iso
from read_api.state import ReadState
from stratum.netguard import resolve_checked, url_port
from stratum.secret_storage import destination_secret_context, encrypt_secret

MAX_NAME_CHARS = 100
MAX_URL_CHARS = 2048
MAX_EVENT_NAMES = 100
MAX_EVENT_NAME_CHARS = 255

COLUMNS = "id::text, name, type, url, topics, event_names, consent, active, created_at, batch_size"


class NameTaken(ApiError):
    status = 409
    code = "name_taken"


def destination_from_row(row: tuple) -> Destination:
    id_, name, type_, url, topics, event_names, consent, active, created_at, batch_size = row
    return Destination(id=id_, name=name, type=type_, url=url, topics=list(topics),
                       event_names=list(event_names) if event_names is not None else None,
                       consent=consent, active=active, created_at=iso(created_at), batch_size=batch_size)


def parse_destination_id(value: str) -> uuid.UUID:
    try:
        return uuid.UUID(value)
    except ValueError:
        raise NotFound(f"no destination {value}") from None


def _name(value: str) -> str:
    name = value.strip()
    if not 1 <= len(name) <= MAX_NAME_CHARS:
        raise BadRequest(f"name must be 1..{MAX_NAME_CHARS} characters", code="invalid_name")
    return name


def _url(value: str) -> str:
    url = value.strip()
    try:
        parts = urlsplit(url)
        port_ok = parts.port is None or parts.port > 0
    except ValueError:
        port_ok = False
        parts = None
    if (len(url) > MAX_URL_CHARS or parts is None or not port_ok or parts.scheme not in ("http", "https")
            or not parts.hostname):
        raise BadRequest("url must be an absolute http:// or https:// URL with a host", code="invalid_url")
    return url


def _topics(value: list[str]) -> list[str]:
    unknown = [t for t in value if t not in TOPICS]
    if not value or unknown:
        raise BadRequest(f"topics must be a non-empty list of: {', '.join(TOPICS)}", code="invalid_topic")
    return list(dict.fromkeys(value))


def _event_names(value: list[str] | None) -> list[str] | None:
    if value is None:
        return None
    if len(value) > MAX_EVENT_NAMES or any(not 1 <= len(n) <= MAX_EVENT_NAME_CHARS for n in value):
        raise BadRequest(f"event_names: at most {MAX_EVENT_NAMES} names of 1..{MAX_EVENT_NAME_CHARS} characters",
                         code="invalid_event_names")
    return list(dict.fromkeys(value))


def _consent(value: str | None) -> str | None:
    if value is not None and value not in CONSENT_TYPES:
        raise BadRequest(f"consent must be null or one of: {', '.join(CONSENT_TYPES)}", code="invalid_consent")
    return value


def _batch_size(value: int) -> int:
    if not 1 <= value <= MAX_BATCH_SIZE:
        raise BadRequest(f"batch_size must be an integer from 1 (one message per request) to {MAX_BATCH_SIZE}",
                         code="invalid_batch_size")
    return value


_VALIDATORS = {"name": _name, "url": _url, "topics": _topics, "event_names": _event_names, "consent": _consent,
               "active": bool, "batch_size": _batch_size}


async def _guard_url(st: ReadState, url: str) -> None:
    """The SSRF guard on create and url change (raises DestinationNotAllowed, a 400)."""
    if st.settings.destinations_allow_private:
        return
    host, port = url_port(url)
    await asyncio.to_thread(resolve_checked, host, port, False)


@get("/api/v1/cdp/destinations", guards=[tenant_key], summary="The tenant's destinations",
     responses=errors_for(401, 403, 503))
async def list_destinations(request: Request) -> DestinationList:
    st: ReadState = request.app.state.read
    async with st.pool.connection() as conn:
        rows = await (await conn.execute(
            f"SELECT {COLUMNS} FROM destinations WHERE tenant_id = %s ORDER BY created_at, id",
            (principal_of(request).tenant_id,))).fetchall()
    return DestinationList(destinations=[destination_from_row(r) for r in rows])


@post("/api/v1/cdp/destinations", guards=[tenant_admin_key], status_code=201,
      summary="Create a webhook destination (admin key)",
      description="Answers the DESTINATION with its signing `secret` (`whsec_...`), shown this once.",
      responses=errors_for(400, 401, 403, 409, 503))
async def create_destination(request: Request, data: JSONBody[DestinationCreate]) -> DestinationWithSecret:
    st: ReadState = request.app.state.read
    if data.type != "webhook":
        raise BadRequest("type must be \"webhook\"", code="invalid_destination_type")
    fields = {f: _VALIDATORS[f](getattr(data, f)) for f in _VALIDATORS}
    await _guard_url(st, fields["url"])
    did, secret = uuid.uuid4(), new_secret()
    try:
        async with st.pool.connection() as conn:
            row = await (await conn.execute(
                "INSERT INTO destinations (id, tenant_id, name, type, url, topics, event_names, consent, active,"
                " batch_size, secret) VALUES (%s, %s, %s, 'webhook', %s, %s, %s, %s, %s, %s, %s) RETURNING " + COLUMNS,
                (did, principal_of(request).tenant_id, fields["name"], fields["url"], fields["topics"],
                 fields["event_names"], fields["consent"], fields["active"], fields["batch_size"],
                 encrypt_secret(st.settings.secret_key, secret, destination_secret_context(did))))).fetchone()
    except psycopg.errors.UniqueViolation:
        raise NameTaken(f"a destination named {fields['name']!r} exists; choose another name") from None
    d = destination_from_row(row)
    return DestinationWithSecret(**{f: getattr(d, f) for f in Destination.__struct_fields__}, secret=secret)


@get("/api/v1/cdp/destinations/{destination_id:str}", guards=[tenant_key], summary="One destination",
     responses=errors_for(401, 403, 404, 503))
async def get_destination(request: Request, destination_id: FromPath[str]) -> Destination:
    st: ReadState = request.app.state.read
    did = parse_destination_id(destination_id)
    async with st.pool.connection() as conn:
        row = await (await conn.execute(f"SELECT {COLUMNS} FROM destinations WHERE id = %s AND tenant_id = %s",
                                        (did, principal_of(request).tenant_id))).fetchone()
    if row is None:
        raise NotFound(f"no destination {destination_id}")
    return destination_from_row(row)


@patch("/api/v1/cdp/destinations/{destination_id:str}", guards=[tenant_admin_key],
       summary="Change a destination (admin key)",
       description="Any of `name`, `url`, `topics`, `event_names`, `consent`, `active`, `batch_size`; fields left "
                   "out keep their value, `null` clears `event_names` and `consent`. A new `url` passes the SSRF guard again.",
       responses=errors_for(400, 401, 403, 404, 409, 503))
async def update_destination(request: Request, destination_id: FromPath[str],
                             data: JSONBody[DestinationPatch]) -> Destination:
    st: ReadState = request.app.state.read
    did = parse_destination_id(destination_id)
    changes: dict[str, Any] = {f: _VALIDATORS[f](v) for f, v in data.changes().items()}
    if "url" in changes:
        await _guard_url(st, changes["url"])
    sets = "".join(f", {f} = %({f})s" for f in changes)
    try:
        async with st.pool.connection() as conn:
            row = await (await conn.execute(
                f"UPDATE destinations SET updated_at = now(){sets} WHERE id = %(id)s AND tenant_id = %(tenant_id)s"
                f" RETURNING {COLUMNS}", {**changes, "id": did, "tenant_id": principal_of(request).tenant_id},
            )).fetchone()
    except psycopg.errors.UniqueViolation:
        raise NameTaken(f"a destination named {changes.get('name')!r} exists; choose another name") from None
    if row is None:
        raise NotFound(f"no destination {destination_id}")
    return destination_from_row(row)


@delete("/api/v1/cdp/destinations/{destination_id:str}", guards=[tenant_admin_key], status_code=200,
        summary="Delete a destination and its delivery records (admin key)",
        description="Answers the DESTINATION as it was; its undelivered messages are not sent.",
        responses=errors_for(401, 403, 404, 503))
async def delete_destination(request: Request, destination_id: FromPath[str]) -> Destination:
    st: ReadState = request.app.state.read
    did = parse_destination_id(destination_id)
    tenant_id = principal_of(request).tenant_id
    async with st.pool.connection() as conn, conn.transaction():
        row = await (await conn.execute(f"DELETE FROM destinations WHERE id = %s AND tenant_id = %s RETURNING {COLUMNS}",
                                        (did, tenant_id))).fetchone()
        if row is not None:  # deliveries carry no foreign key (stratum/db/models.py)
            await conn.execute("DELETE FROM deliveries WHERE tenant_id = %s AND destination_id = %s", (tenant_id, did))
    if row is None:
        raise NotFound(f"no destination {destination_id}")
    return destination_from_row(row)


@post("/api/v1/cdp/destinations/{destination_id:str}/rotate-secret", guards=[tenant_admin_key], status_code=200,
      summary="Rotate a destination's signing secret (admin key)",
      description="Answers the DESTINATION with its new `secret`, shown this once. For 24 h messages carry "
                  "signatures by both the new and the previous secret.",
      responses=errors_for(401, 403, 404, 503))
async def rotate_secret(request: Request, destination_id: FromPath[str]) -> DestinationWithSecret:
    st: ReadState = request.app.state.read
    did = parse_destination_id(destination_id)
    secret = new_secret()
    async with st.pool.connection() as conn:
        row = await (await conn.execute(
            "UPDATE destinations SET previous_secret = secret, secret = %s, secret_rotated_at = now(),"
            f" updated_at = now() WHERE id = %s AND tenant_id = %s RETURNING {COLUMNS}",
            (encrypt_secret(st.settings.secret_key, secret, destination_secret_context(did)), did,
             principal_of(request).tenant_id))).fetchone()
    if row is None:
        raise NotFound(f"no destination {destination_id}")
    d = destination_from_row(row)
    return DestinationWithSecret(**{f: getattr(d, f) for f in Destination.__struct_fields__}, secret=secret)


DESTINATION_ROUTES = [list_destinations, create_destination, get_destination, update_destination,
                      delete_destination, rotate_secret]
