"""Raw email and phone never rest anywhere (CONTRACT 6), checked end to end: a run full of
PII in every shape (key variants, nested objects and arrays, URLs with ``?email=`` and
``%40``, free text, event names, Segment and native routes, dead-lettered events, an
identify with traits, failed jobs) through the real ingest app, Redis and worker; then every
Postgres table and every Redis value is dumped and searched for each raw value."""

from __future__ import annotations

import base64
import contextlib
import json
import logging
import uuid
import zlib
from datetime import UTC, datetime

import msgspec
import pytest
from redis import Redis
from rq.registry import FailedJobRegistry

from core.identifiers import normalize_identifier
from core.schemas import (
    QUEUE_FORMAT_VERSION,
    QueuedBatch,
    QueuedEvent,
    QueuedSegmentEvent,
    decode_batch,
)
from stratum.queue import PROCESS_BATCH, MsgpackSerializer, events_queue

# One distinct address per place, so a failure names the place that leaked.
E = {name: f"{name}.person@Example-Mail.com" for name in (
    "ident", "Email", "e_mail", "user_email", "contacts", "billing", "url_query", "url_pct", "free_text",
    "ctx_traits", "ctx_page", "ua", "traits", "trait_contacts", "event_name",
    "seg_traits", "seg_addr", "seg_ctx_traits", "seg_url_pct", "seg_search", "seg_event", "seg_contact",
    "seg_list1", "seg_list2", "seg_page_name", "seg_page_url", "seg_anon", "seg_batch_ctx",
    "dl_props", "dl_text", "dl_type", "dl_big", "dl_single",
    "job_ident", "job_props", "job_seg", "bad_version",
    "grp_traits", "grp_id", "alias_prev", "screen_name", "key_name",
)}
# Valid US numbers (555-01xx is reserved for fiction but parses as valid in phonenumbers).
P = {name: f"+1 212 555 01{i:02d}" for i, name in enumerate((
    "ident", "phone_number", "mobile", "cell_phone", "ctx_traits", "traits",
    "seg_traits", "seg_mobile", "job_ident", "bad_version"), start=10)}


def _variants(raw: str) -> set[str]:
    out = {raw, raw.lower(), raw.upper(), raw.replace("@", "%40"), raw.lower().replace("@", "%40"),
           raw.lower().replace("@", "%2540")}
    if raw.startswith("+"):
        digits = "".join(c for c in raw if c.isdigit())
        out |= {digits, digits[1:], raw.replace(" ", ""), f"({digits[1:4]}) {digits[4:7]}-{digits[7:]}"}
    return out


RAW_VALUES = {v.lower() for raw in [*E.values(), *P.values()] for v in _variants(raw)}


def _auth(write_key: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{write_key}:".encode()).decode()}


def _now() -> str:
    return datetime.now(UTC).isoformat()


def _native_batch() -> dict:
    return {"events": [
        {"event_name": f"Signed up {E['event_name']}", "event_time": _now(),
         "identifiers": [{"type": "email", "value": E["ident"]}, {"type": "phone", "value": P["ident"]}],
         "properties": {
             "Email": E["Email"], "e-mail": E["e_mail"], "phone_number": P["phone_number"],
             "user": {"email": E["user_email"]}, "contacts": [{"email": E["contacts"]}, {"mobile": P["mobile"]}],
             "billing": {"address": {"email": E["billing"], "city": "Oslo"}},
             "url": f"https://shop.example/checkout?email={E['url_query']}&step=2",
             "referrer": "https://shop.example/?e=" + E["url_pct"].replace("@", "%40"),
             "note": f"please call back, mail {E['free_text']} or ring", "Cell Phone": P["cell_phone"],
             "revenue": 12.5},
         "context": {"traits": {"email": E["ctx_traits"], "phone": P["ctx_traits"]},
                     "page": {"url": "https://a.example/?u=" + E["ctx_page"].replace("@", "%40")},
                     "user_agent": f"Mozilla/5.0 (contact {E['ua']})", "ip": "10.1.2.3"},
         "traits": {"email": E["traits"], "phone": P["traits"], "contacts": [{"work_email": E["trait_contacts"]}],
                    "name": "Jane"},
         "consent": {"email": True, "analytics": True}},
    ]}


def _segment_requests(write_key: str) -> list[tuple[str, dict, bool]]:
    """(path, body, expected ok) for the Segment routes; single events carry ``writeKey``."""
    msg_id = lambda: str(uuid.uuid4())  # noqa: E731
    return [
        ("/v1/identify", {"writeKey": write_key, "type": "identify", "messageId": msg_id(), "userId": "u-42",
                          "timestamp": _now(),
                          "traits": {"email": E["seg_traits"], "phone": P["seg_traits"],
                                     "Mobile Number": P["seg_mobile"], "address": {"email": E["seg_addr"]}},
                          "context": {"traits": {"email": E["seg_ctx_traits"]},
                                      "page": {"url": "https://b.example/?email=" + E["seg_url_pct"].replace("@", "%40"),
                                               "search": "?email=" + E["seg_search"]}}}, True),
        ("/v1/track", {"writeKey": write_key, "messageId": msg_id(), "userId": "u-42", "timestamp": _now(),
                       "event": f"Ordered by {E['seg_event']}",
                       "properties": {"contact": {"Email": E["seg_contact"]},
                                      "emails": [E["seg_list1"], E["seg_list2"]]}}, True),
        ("/v1/page", {"writeKey": write_key, "messageId": msg_id(), "anonymousId": "anon-7", "timestamp": _now(),
                      "name": f"Profile of {E['seg_page_name']}",
                      "properties": {"url": f"https://c.example/u/{E['seg_page_url']}"}}, True),
        ("/v1/group", {"writeKey": write_key, "messageId": msg_id(), "userId": "u-42", "timestamp": _now(),
                       "groupId": E["grp_id"], "traits": {"billing_email": E["grp_traits"], "seats": 5}}, True),
        ("/v1/alias", {"writeKey": write_key, "messageId": msg_id(), "userId": "u-42", "timestamp": _now(),
                       "previousId": E["alias_prev"]}, True),
        ("/v1/screen", {"writeKey": write_key, "messageId": msg_id(), "anonymousId": "anon-7", "timestamp": _now(),
                        "name": f"Inbox of {E['screen_name']}", "properties": {E["key_name"]: "opened"}}, True),
        ("/v1/track", {"writeKey": write_key, "messageId": msg_id(), "userId": None, "anonymousId": "undefined",
                       "timestamp": _now(), "event": "Lost", "properties": {"email": E["dl_single"]}}, False),
        ("/v1/batch", {"writeKey": write_key, "sentAt": _now(), "context": {"traits": {"email": E["seg_batch_ctx"]}},
                       "batch": [
                           {"type": "track", "messageId": msg_id(), "anonymousId": E["seg_anon"], "event": "Viewed",
                            "timestamp": _now()},
                           {"type": "track", "messageId": msg_id(), "userId": None, "anonymousId": "undefined",
                            "event": "No id", "properties": {"email": E["dl_props"], "text": f"hi {E['dl_text']}"}},
                           {"type": "purchase", "messageId": msg_id(), "userId": "u-1",
                            "properties": {"mail": E["dl_type"]}},
                           {"type": "track", "messageId": msg_id(), "userId": "u-1", "event": "Big",
                            "properties": {"email": E["dl_big"], "blob": "x" * (33 * 1024)}},
                       ]}, True),
    ]


def _failing_jobs(redis_conn: Redis, settings, tenant) -> None:
    """Two jobs that fail as a whole: one whose batch cannot be stored (a source id that is
    not a UUID), one whose payload cannot be decoded (an unknown format version)."""
    seg_raw = json.dumps({"type": "identify", "userId": "u-9", "traits": {"email": E["job_seg"]}}).encode()
    now = datetime.now(UTC)
    events = [
        QueuedEvent(str(uuid.uuid4()), "job-k1", "track", "Job", now,
                    [("email", E["job_ident"].lower()), ("phone", "+12125550118")],
                    {"email": E["job_props"]}, {}, {}, None, 40, []),
        QueuedSegmentEvent(str(uuid.uuid4()), "job-k2", "identify", now, seg_raw),
    ]
    bad_source = QueuedBatch(QUEUE_FORMAT_VERSION, tenant.id, "not-a-uuid", "server", "US", now, "req-1",
                             None, None, events)
    bad_version = msgspec.structs.replace(bad_source, version=99, events=[msgspec.structs.replace(
        events[0], properties={"email": E["bad_version"], "phone": P["bad_version"]})])
    q = events_queue(redis_conn, settings.queue_name)
    for batch in (bad_source, bad_version):
        # as the ingest API's job writer does: no result kept, so a finished job is deleted
        q.enqueue(PROCESS_BATCH, msgspec.msgpack.encode(batch), description="process_batch",
                  failure_ttl=settings.failed_job_ttl_s, result_ttl=0)


def _dump_postgres(db) -> str:
    tables = [r[0] for r in db.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'").fetchall()]
    parts = []
    for table in tables:
        rows = db.execute(f'SELECT t::text FROM "{table}" t').fetchall()  # noqa: S608 - catalog names
        parts.extend(r[0] for r in rows)
    return "\n".join(parts)


def _redis_values(redis_conn: Redis) -> list[bytes]:
    out: list[bytes] = []
    for key in redis_conn.scan_iter(count=1000):
        out.append(key)
        kind = redis_conn.type(key).decode()
        if kind == "string":
            out.append(redis_conn.get(key))
        elif kind == "hash":
            for k, v in redis_conn.hgetall(key).items():
                out.extend((k, v))
        elif kind == "list":
            out.extend(redis_conn.lrange(key, 0, -1))
        elif kind == "set":
            out.extend(redis_conn.smembers(key))
        elif kind == "zset":
            out.extend(m for m, _ in redis_conn.zrange(key, 0, -1, withscores=True))
        elif kind == "stream":
            for _id, fields in redis_conn.xrange(key):
                for k, v in fields.items():
                    out.extend((k, v))
        else:
            pytest.fail(f"unexpected Redis type {kind} for {key!r}")
    # RQ may compress job data: search the decompressed bytes too
    for value in list(out):
        with contextlib.suppress(zlib.error):
            out.append(zlib.decompress(value))
    return out


def _leaks(text: str, forbidden: set[str]) -> set[str]:
    low = text.lower()
    return {v for v in forbidden if v in low}


def test_no_raw_email_phone_or_write_key_rests_after_a_run(ingest_client, new_tenant, drain, db, redis_conn,
                                                           settings, caplog):
    caplog.set_level(logging.DEBUG)
    tenant = new_tenant(source_type="server", phone_region="US")
    r = ingest_client.post("/api/v1/cdp/events", json=_native_batch(), headers=_auth(tenant.write_key))
    assert r.status_code == 202, r.text
    assert r.json()["accepted"] == 1
    for path, body, ok in _segment_requests(tenant.write_key):
        r = ingest_client.post(path, content=json.dumps(body).encode(), headers={"Content-Type": "text/plain"})
        assert r.status_code == (200 if ok else 400), (path, r.text)
    rejected = r.json()["rejected"]
    assert [x["code"] for x in rejected] == ["no_usable_identifier", "invalid_type", "event_too_large"]
    # Queued jobs may hold raw PII until processed, but never a write key.
    queued = "\n".join(v.decode("utf-8", "replace") for v in _redis_values(redis_conn))
    assert "person@example-mail.com" in queued.lower()
    assert tenant.write_key not in queued
    _failing_jobs(redis_conn, settings, tenant)

    assert drain() >= 2  # the unreadable job, and the bad-source events (isolated one by one)

    # The run did what it should: events stored, dead letters and failed jobs kept.
    assert db.execute("SELECT count(*) FROM events WHERE tenant_id = %s", (tenant.id,)).fetchone()[0] == 8
    assert db.execute("SELECT count(*) FROM consent_history").fetchone()[0] == 2
    assert redis_conn.llen(f"stratum:deadletter:{tenant.id}") == 4

    forbidden = RAW_VALUES | {tenant.write_key.lower()}
    pg = _dump_postgres(db)
    assert not _leaks(pg, forbidden), "raw values in Postgres"
    redis_text = "\n".join(v.decode("utf-8", "replace") for v in _redis_values(redis_conn))
    assert not _leaks(redis_text, forbidden), "raw values in Redis"
    assert not _leaks(caplog.text, forbidden), "raw values in the logs"

    # What is kept is the hash, under the renamed key / as sha256:<hex> in text.
    email_hash = normalize_identifier("email", E["Email"]).hash
    props = db.execute("SELECT properties FROM events WHERE tenant_id = %s AND event_name LIKE 'Signed up %%'",
                       (tenant.id,)).fetchone()[0]
    assert props["Email_sha256"] == email_hash
    assert "sha256:" + normalize_identifier("email", E["url_query"]).hash in props["url"]


def _failed_payloads(redis_conn: Redis, settings) -> list[bytes]:
    registry = FailedJobRegistry(queue=events_queue(redis_conn, settings.queue_name))
    out = []
    for job_id in registry.get_job_ids():
        data = redis_conn.hget(f"rq:job:{job_id}", "data")
        with contextlib.suppress(zlib.error):  # RQ compresses the data it writes itself
            data = zlib.decompress(data)
        _func, _inst, args, _kw = MsgpackSerializer.loads(data)
        out.append(args[0])
    return out


def test_failed_jobs_keep_a_scrubbed_batch_that_replays_to_the_same_result(new_tenant, drain, db, redis_conn,
                                                                              settings, worker_runtime):
    from workers.jobs import persist_payloads

    tenant = new_tenant(source_type="server", phone_region="US")
    _failing_jobs(redis_conn, settings, tenant)
    assert drain() >= 2
    payloads = _failed_payloads(redis_conn, settings)
    assert b"" in payloads, "an undecodable payload is dropped"
    kept = [decode_batch(p) for p in payloads if p]
    events = sorted((e for b in kept for e in b.events), key=lambda e: e.dedupe_key)
    assert [e.dedupe_key for e in events] == ["job-k1", "job-k2"]
    assert all(isinstance(e, QueuedEvent) for e in events)
    assert events[0].identifiers[0][1].startswith("sha256:")
    scrubbed = msgspec.structs.replace(kept[0], events=events)

    # The same batch with a usable source id: the original and the scrubbed form store the same.
    original = _original_of(scrubbed, tenant)
    results = []
    for batch in (original, msgspec.structs.replace(scrubbed, source_id=tenant.source_id)):
        persist_payloads([msgspec.msgpack.encode(batch)])
        results.append(_stored(db, tenant.id))
        db.execute("TRUNCATE events, event_keys, event_outcomes, consent_history, consents, profile_merges,"
                   " identity_links, profile_identifiers, profiles CASCADE")
    assert results[0] == results[1]
    assert results[0]["events"], "something was stored"


def test_a_job_rq_fails_as_a_whole_keeps_its_batch_scrubbed(new_tenant, redis_conn, settings, worker_runtime):
    """What the worker's RQ exception handler does to a job that fails as a whole (a job
    timeout, an error that is not the data's): its data becomes the scrubbed batch."""
    from rq.job import Job

    from workers.failed_jobs import scrub_failed_job

    tenant = new_tenant(source_type="server", phone_region="US")
    _failing_jobs(redis_conn, settings, tenant)
    q = events_queue(redis_conn, settings.queue_name)
    for job_id in q.get_job_ids():
        job = Job.fetch(job_id, connection=redis_conn, serializer=MsgpackSerializer)
        assert scrub_failed_job(job, TimeoutError, TimeoutError(), None) is True
    redis_text = "\n".join(v.decode("utf-8", "replace") for v in _redis_values(redis_conn))
    assert not _leaks(redis_text, RAW_VALUES)
    payloads = [Job.fetch(j, connection=redis_conn, serializer=MsgpackSerializer).args[0] for j in q.get_job_ids()]
    assert sorted(len(decode_batch(p).events) if p else 0 for p in payloads) == [0, 2]


def _original_of(scrubbed: QueuedBatch, tenant) -> QueuedBatch:
    """The batch ``_failing_jobs`` queued (same event ids), with a usable source id."""
    seg_raw = json.dumps({"type": "identify", "userId": "u-9", "traits": {"email": E["job_seg"]}}).encode()
    first, second = scrubbed.events
    events = [
        QueuedEvent(first.event_id, "job-k1", "track", "Job", first.event_time,
                    [("email", E["job_ident"].lower()), ("phone", "+12125550118")],
                    {"email": E["job_props"]}, {}, {}, None, 40, []),
        QueuedSegmentEvent(second.event_id, "job-k2", "identify", second.event_time, seg_raw),
    ]
    return msgspec.structs.replace(scrubbed, source_id=tenant.source_id, events=events)


def _stored(db, tenant_id: str) -> dict:
    events = db.execute(
        "SELECT event_id::text, event_name, event_type, dedupe_key, properties, context, identifiers, emq, decisions"
        " FROM events WHERE tenant_id = %s ORDER BY event_id", (tenant_id,)).fetchall()
    identifiers = db.execute("SELECT type, hash FROM profile_identifiers WHERE tenant_id = %s ORDER BY type, hash",
                             (tenant_id,)).fetchall()
    profiles = db.execute("SELECT traits, event_count, lifecycle FROM profiles WHERE tenant_id = %s"
                          " ORDER BY 2, 3, traits::text",
                          (tenant_id,)).fetchall()
    return {"events": events, "identifiers": identifiers, "profiles": profiles}


def test_signed_claims_verify_and_their_signatures_never_rest(ingest_client, new_tenant, drain, db, redis_conn,
                                                               caplog):
    """Website events with identity signatures: the worker checks them before it scrubs, so
    verified claims still verify, and neither the signatures nor the raw values rest."""
    from core.identity_signature import identity_signature

    caplog.set_level(logging.DEBUG)
    tenant = new_tenant(source_type="website", phone_region="US")
    email, user = E["ident"], "user-77"
    sig_email = identity_signature(tenant.identity_secret, "email", email)
    sig_user = identity_signature(tenant.identity_secret, "external_id", user)
    r = ingest_client.post("/api/v1/cdp/events", headers=_auth(tenant.write_key), json={"events": [
        {"event_name": "Signed in", "event_time": _now(),
         "identifiers": [{"type": "email", "value": email, "signature": sig_email},
                         {"type": "anonymous_id", "value": "anon-w1"}]}]})
    assert r.status_code == 202, r.text
    for body, ok in (
        ({"writeKey": tenant.write_key, "messageId": str(uuid.uuid4()), "userId": user, "timestamp": _now(),
          "event": "Paid", "context": {"identity_signature": sig_user, "traits": {"email": E["traits"]}}}, True),
        ({"writeKey": tenant.write_key, "messageId": str(uuid.uuid4()), "userId": None, "anonymousId": "undefined",
          "timestamp": _now(), "event": "Lost", "context": {"identity_signature": sig_user}}, False),
    ):
        r = ingest_client.post("/v1/track", content=json.dumps(body).encode(), headers={"Content-Type": "text/plain"})
        assert r.status_code == (200 if ok else 400), r.text
    assert drain() == 0

    decisions = dict(db.execute("SELECT event_name, coalesce(decisions::text, '') FROM events WHERE tenant_id = %s",
                                (tenant.id,)).fetchall())
    assert "unverified" not in decisions["Signed in"], "the signed email verified"
    assert "unverified external_id" not in decisions["Paid"], "the signed userId verified"
    assert "unverified email claim: no signature" in decisions["Paid"]  # traits.email was not signed
    forbidden = RAW_VALUES | {tenant.write_key.lower(), sig_email, sig_user}
    assert not _leaks(_dump_postgres(db), forbidden), "raw values or signatures in Postgres"
    redis_text = "\n".join(v.decode("utf-8", "replace") for v in _redis_values(redis_conn))
    assert not _leaks(redis_text, forbidden), "raw values or signatures in Redis"
    assert not _leaks(caplog.text, forbidden), "raw values or signatures in the logs"


def test_an_isolated_event_that_cannot_be_mapped_keeps_no_raw_value(tenant, drain, redis_conn, settings):
    """A Segment event the worker cannot map goes to the failed registry alone, scrubbed as a
    document when it is JSON, emptied when it is not."""
    now = datetime.now(UTC)
    good = QueuedEvent(str(uuid.uuid4()), "k-good", "track", "Viewed", now, [("external_id", "u-1")], {}, {}, {},
                       None, 0, [])
    broken = [QueuedSegmentEvent(str(uuid.uuid4()), "k-bad1", "track", now, raw) for raw in (
        json.dumps({"type": "track", "event": "x", "userId": 5, "traits": ["not", "an", "object",
                                                                         E["job_seg"]]}).encode(),
        b'{"userId": "u", "email": "' + E["job_props"].encode() + b'", not json')]
    batch = QueuedBatch(QUEUE_FORMAT_VERSION, tenant.id, tenant.source_id, "server", "US", now, "req-x",
                        {"traits": {"email": E["job_ident"]}}, None, [good, *broken])
    events_queue(redis_conn, settings.queue_name).enqueue(PROCESS_BATCH, msgspec.msgpack.encode(batch), result_ttl=0)
    assert drain() == 2
    kept = [decode_batch(p) for p in _failed_payloads(redis_conn, settings)]
    assert sorted(e.event_id for b in kept for e in b.events) == sorted(e.event_id for e in broken)
    redis_text = "\n".join(v.decode("utf-8", "replace") for v in _redis_values(redis_conn))
    assert not _leaks(redis_text, RAW_VALUES)
