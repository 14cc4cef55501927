"""The outbox: messages for a tenant's destinations, written in the transaction that stores
the events, so a crash between commit and sending loses nothing and a retried transaction
writes nothing twice (its rows roll back with it).

Each row of ``deliveries`` is one message for one destination; the delivery process
(workers/delivery.py) claims due rows with ``FOR UPDATE SKIP LOCKED``. Topics written here:
``event.received`` (per stored event, filtered by the destination's ``event_names``; a lean
row without body, which the delivery process builds from the stored event, so the per-event
cost here is one short COPY line),
``consent.updated`` (per event that carried a consent object), ``profile.created``,
``profile.updated`` and ``profile.merged`` (a PROFILE each, queried only when subscribed).

Tenants without an active destination cost one dictionary lookup per batch: the tenant's
routing is cached in-process for ``ROUTES_CACHE_TTL_S``.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

import psycopg

from core.identity import Merge
from core.webhooks import TOPICS, event_message_id, event_received_data, message_body
from workers import stream
from workers.copy_rows import NULL, copy_lines
from workers.prepare import PreparedEvent

# PROFILE (CONTRACT 5) of profiles this transaction touched; ``created_at = now()`` holds
# exactly for the profiles it inserted (now() is the transaction's start time).
_PROFILES_SQL = """
SELECT p.id::text, p.created_at = now(), jsonb_build_object(
    'id', p.id, 'lifecycle', p.lifecycle, 'traits', p.traits, 'computed', '{}'::jsonb,
    'identifiers', coalesce((SELECT jsonb_agg(jsonb_build_object('type', i.type, 'hash', i.hash,
                                 'first_seen', i.first_seen, 'last_seen', i.last_seen) ORDER BY i.type, i.hash)
                             FROM profile_identifiers i WHERE i.profile_id = p.id), '[]'::jsonb),
    'consents', coalesce((SELECT jsonb_object_agg(c.consent_type, jsonb_build_object(
                              'granted', c.granted, 'updated_at', c.updated_at, 'source_id', c.source_id))
                          FROM consents c WHERE c.tenant_id = p.tenant_id AND c.profile_id = p.id), '{}'::jsonb),
    'counters', jsonb_build_object('events', p.event_count, 'purchases', p.purchase_count,
                                   'revenue', p.revenue::float8),
    'first_seen', p.first_seen, 'last_seen', p.last_seen, 'merged_from', NULL)
FROM profiles p WHERE p.tenant_id = %s AND p.id = ANY(%s::uuid[]) AND p.merged_into IS NULL
"""

# A new or changed destination receives messages of batches stored this long after the change.
ROUTES_CACHE_TTL_S = 1.0


@dataclass(frozen=True)
class Route:
    destination_id: str
    topics: frozenset[str]
    event_names: frozenset[str] | None


_routes: dict[str, tuple[float, list[Route]]] = {}
# The live stream as a pseudo-destination that takes every topic; its messages are published
# after commit (workers/stream.py) instead of being written to the outbox.
STREAM_ROUTE = Route("stream", frozenset(TOPICS), None)


def forget_routes() -> None:
    """Drop the cache (tests that create a destination and store right away)."""
    _routes.clear()


def routes_of(conn: psycopg.Connection, tenant_id: str) -> list[Route]:
    """The tenant's active destinations (cached for ROUTES_CACHE_TTL_S)."""
    now = time.monotonic()
    hit = _routes.get(tenant_id)
    if hit is not None and hit[0] > now:
        return hit[1]
    rows = conn.execute("SELECT id::text, topics, event_names FROM destinations WHERE tenant_id = %s AND active",
                        (tenant_id,)).fetchall()
    routes = [Route(d, frozenset(t), frozenset(n) if n is not None else None) for d, t, n in rows]
    if len(_routes) > 10_000:
        _routes.clear()
    _routes[tenant_id] = (now + ROUTES_CACHE_TTL_S, routes)
    return routes


def _event_messages(routes: list[Route], events: list[PreparedEvent], profile_ids: list[str | None],
                    created_at: datetime) -> list[dict]:
    """``event.received`` rows. Webhook rows are lean (no body: ``event_time`` and the message
    id locate the stored event, from which the delivery process builds the body); only the
    live stream, which publishes after commit, needs the body encoded here."""
    subscribed = [r for r in routes if "event.received" in r.topics]
    if not subscribed:
        return []
    rows: list[dict] = []
    for e, pid in zip(events, profile_ids, strict=True):
        ev = e.event
        targets = [r for r in subscribed if r.event_names is None or ev.event_name in r.event_names]
        if not targets:
            continue
        message_id = event_message_id(ev.event_id)
        for r in targets:
            if r is STREAM_ROUTE:
                rows.append({"d": r.destination_id, "b": _event_body(e, pid, created_at)})
            else:
                rows.append({"d": r.destination_id, "m": message_id, "t": "event.received", "p": pid, "b": None,
                             "et": ev.event_time})
    return rows


def _event_body(e: PreparedEvent, profile_id: str | None, created_at: datetime) -> str:
    ev = e.event
    return message_body("event.received", created_at, event_received_data(
        event_id=ev.event_id, event_name=ev.event_name, event_type=ev.event_type, event_time=ev.event_time,
        received_at=e.received_at, source_id=e.source_id, profile_id=profile_id, properties=e.properties,
        context=e.context, emq=ev.emq, identifiers=[(i.type, i.hash) for i in e.identifiers])).decode()


def _consent_messages(routes: list[Route], events: list[PreparedEvent], profile_ids: list[str | None],
                      created_at: datetime) -> list[dict]:
    subscribed = [r for r in routes if "consent.updated" in r.topics]
    rows: list[dict] = []
    for e, pid in zip(events, profile_ids, strict=True):
        if not subscribed or pid is None or not e.event.consent:
            continue
        body = message_body("consent.updated", created_at, {
            "profile_id": pid, "event_id": e.event.event_id, "source_id": e.source_id,
            "updated_at": e.event.event_time.isoformat(), "consents": dict(e.event.consent)}).decode()
        rows.extend({"d": r.destination_id, "m": f"msg_consent_{e.event.event_id}", "t": "consent.updated",
                     "p": pid, "b": body} for r in subscribed)
    return rows


def _profile_messages(conn: psycopg.Connection, tenant_id: str, routes: list[Route],
                      profile_ids: list[str | None], merges: list[Merge], created_at: datetime) -> list[dict]:
    """``profile.created`` (profiles inserted by this transaction), ``profile.updated`` (the
    other profiles it touched) and ``profile.merged`` (the survivor, ``merged_from`` the
    absorbed id); ``data`` is the PROFILE as it stands at commit."""
    wanted = {t for r in routes for t in r.topics} & {"profile.created", "profile.updated", "profile.merged"}
    if not wanted:
        return []
    ids = {p for p in profile_ids if p is not None} | {m.survivor for m in merges}
    survivors = {m.survivor: m.absorbed for m in merges}
    rows: list[dict] = []
    for pid, created, profile in conn.execute(_PROFILES_SQL, (tenant_id, sorted(ids))).fetchall():
        topics = ["profile.created" if created else "profile.updated"]
        if pid in survivors:
            topics.append("profile.merged")
        for topic in topics:
            subscribed = [r for r in routes if topic in r.topics]
            if not subscribed:
                continue
            data = {**profile, "merged_from": survivors[pid]} if topic == "profile.merged" else profile
            body = message_body(topic, created_at, data).decode()
            message_id = f"msg_{uuid.uuid4().hex}"
            rows.extend({"d": r.destination_id, "m": message_id, "t": topic, "p": pid, "b": body} for r in subscribed)
    return rows


def _copy_line(tenant_id: str, row: dict) -> str:
    """A row in COPY's text format. Bodies are JSON text, whose only character COPY needs
    escaped is the backslash (JSON has no raw tabs or line breaks); ids, topics and ISO
    times need none."""
    body, event_time = row["b"], row.get("et")
    return "\t".join((tenant_id, row["d"], row["m"], row["t"], row["p"] or NULL,
                      body.replace("\\", "\\\\") if body is not None else NULL,
                      event_time.isoformat() if event_time is not None else NULL))


def write_outbox(conn: psycopg.Connection, tenant_id: str, events: list[PreparedEvent],
                 profile_ids: list[str | None], merges: list[Merge]) -> int:
    """Write the messages of one stored batch into ``deliveries`` (inside the caller's
    transaction), and stash the live stream's; returns how many rows were written. No
    destination and no stream listener: no work."""
    routes = routes_of(conn, tenant_id)
    if stream.listening(tenant_id):
        routes = [*routes, STREAM_ROUTE]
    if not routes:
        return 0
    now = datetime.now(UTC)
    rows = (_event_messages(routes, events, profile_ids, now) + _consent_messages(routes, events, profile_ids, now)
            + _profile_messages(conn, tenant_id, routes, profile_ids, merges, now))
    if routes[-1] is STREAM_ROUTE:
        stream.stash(tenant_id, [r["b"].encode() for r in rows if r["d"] == STREAM_ROUTE.destination_id])
        rows = [r for r in rows if r["d"] != STREAM_ROUTE.destination_id]
    return insert_messages(conn, tenant_id, rows)


def insert_messages(conn: psycopg.Connection, tenant_id: str, rows: list[dict]) -> int:
    """Write prepared messages (dicts with ``d`` destination id, ``m`` message id, ``t``
    topic, ``p`` profile id or None, ``b`` body text or None, optional ``et`` event time of a
    lean ``event.received`` row) into ``deliveries`` inside the caller's transaction; returns
    how many were written."""
    if not rows:
        return 0
    copy_lines(conn, "deliveries", "tenant_id, destination_id, message_id, topic, profile_id, body, event_time",
               [_copy_line(tenant_id, r) for r in rows])
    return len(rows)


# Delivery records are kept this long after they were created (CONTRACT 7).
DELIVERY_RECORD_DAYS = 7
DEAD_DELIVERY_RECORD_DAYS = 30


# Rows of a deleted destination written this recently are looked for (a worker's routing
# cache may write some for a second after the delete; the scheduler runs far more often).
ORPHAN_LOOKBACK_HOURS = 24


def purge_expired_deliveries(conn: psycopg.Connection) -> int:
    """Delete finished delivery records past their keeping time (7 days, 30 when dead), and
    rows written for a destination deleted meanwhile (``deliveries`` has no foreign key);
    returns how many went. Pending and failed ones stay until they finish."""
    expired = conn.execute(
        "DELETE FROM deliveries WHERE (status IN ('delivered', 'skipped') AND created_at < now() - make_interval(days"
        " => %s)) OR (status = 'dead' AND created_at < now() - make_interval(days => %s))",
        (DELIVERY_RECORD_DAYS, DEAD_DELIVERY_RECORD_DAYS)).rowcount
    orphans = conn.execute(
        "DELETE FROM deliveries d WHERE d.created_at > now() - make_interval(hours => %s)"
        " AND NOT EXISTS (SELECT 1 FROM destinations x WHERE x.id = d.destination_id)",
        (ORPHAN_LOOKBACK_HOURS,)).rowcount
    return expired + orphans
