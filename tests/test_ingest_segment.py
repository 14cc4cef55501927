"""Segment/RudderStack-compatible ingest (CONTRACT 4.2, 4.4, 4.5) through the real app,
real Redis and real Postgres."""

from __future__ import annotations

import base64
import gzip
import json
import time
import uuid
from datetime import UTC, datetime

import pytest
import redis.exceptions
from conftest import STORED_KEY_SQL, make_tenant

from core.cache_keys import deadletter_key
from core.identifiers import hash_normalized
from ingest_api.enqueue import BatchEnqueuer

SUCCESS = {"success": True}


def basic(write_key: str, password: str = "") -> dict[str, str]:
    token = base64.b64encode(f"{write_key}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


def bearer(write_key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {write_key}"}


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def msg(type_: str = "track", **fields) -> dict:
    base: dict = {"type": type_, "messageId": str(uuid.uuid4()), "timestamp": now_iso(),
                  "context": {"library": {"name": "test"}}, "integrations": {}}
    if type_ == "track":
        base["event"] = "Clicked"
    base.update(fields)
    return base


def batch(*messages: dict, **extra) -> dict:
    return {"batch": list(messages), "sentAt": now_iso(), **extra}


def post_json(client, path: str, body, headers: dict | None = None, content_type: str = "application/json"):
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return client.post(path, content=raw, headers={"Content-Type": content_type, **(headers or {})})


def assert_success(r) -> None:
    assert r.status_code == 200, r.text
    assert r.json() == SUCCESS


def assert_error(r, status: int, code: str | None = None) -> dict:
    assert r.status_code == status, r.text
    body = r.json()
    assert isinstance(body, dict), body
    assert isinstance(body.get("code"), str) and body["code"], body
    assert isinstance(body.get("message"), str) and body["message"], body
    if code is not None:
        assert body["code"] == code, body
    return body


def count_events(db, tenant_id: str, dedupe: str | None = None) -> int:
    if dedupe is None:
        return db.execute("SELECT count(*) FROM events WHERE tenant_id = %s", (tenant_id,)).fetchone()[0]
    return db.execute("SELECT count(*) FROM events WHERE tenant_id = %s AND dedupe_key = " + STORED_KEY_SQL,
                      (tenant_id, dedupe)).fetchone()[0]


def profile_of(db, tenant_id: str, id_type: str, value: str) -> str | None:
    row = db.execute("SELECT profile_id::text FROM profile_identifiers WHERE tenant_id = %s AND type = %s AND hash = %s",
                     (tenant_id, id_type, hash_normalized(id_type, value))).fetchone()
    return row[0] if row else None


def dedupe_marks(redis_conn, tenant_id: str) -> int:
    """How many dedupe marks the tenant has in Redis, whatever their layout (a key per
    mark, or hashes of marks) under ``stratum:dedupe:<tenant>:``."""
    n = 0
    for key in redis_conn.scan_iter(match=f"stratum:dedupe:{tenant_id}:*", count=1000):
        kind = redis_conn.type(key)
        n += {b"hash": redis_conn.hlen, b"set": redis_conn.scard, b"zset": redis_conn.zcard}.get(
            kind, lambda _k: 1)(key)
    return n


def queue_len(redis_conn, settings) -> int:
    return redis_conn.llen(f"rq:queue:{settings.queue_name}")


# --------------------------------------------------------------------------- authentication

def test_batch_with_basic_auth(ingest_client, tenant, drain, db, redis_conn, settings):
    m = msg(userId="u-basic")
    r = post_json(ingest_client, "/v1/batch", batch(m), basic(tenant.write_key))
    assert_success(r)
    assert queue_len(redis_conn, settings) == 1
    assert drain() == 0
    assert count_events(db, tenant.id, m["messageId"]) == 1


def test_basic_auth_without_password_separator(ingest_client, tenant):
    token = base64.b64encode(tenant.write_key.encode()).decode()
    r = post_json(ingest_client, "/v1/batch", batch(msg(userId="u")), {"Authorization": f"Basic {token}"})
    assert_success(r)


def test_batch_with_body_write_key_and_no_header(ingest_client, tenant, drain, db):
    m = msg(userId="u-body")
    r = post_json(ingest_client, "/v1/batch", batch(m, writeKey=tenant.write_key))
    assert_success(r)
    assert drain() == 0
    assert count_events(db, tenant.id, m["messageId"]) == 1


def test_batch_with_bearer(ingest_client, tenant, drain, db):
    m = msg(userId="u-bearer")
    r = post_json(ingest_client, "/v1/batch", batch(m), bearer(tenant.write_key))
    assert_success(r)
    assert drain() == 0
    assert count_events(db, tenant.id, m["messageId"]) == 1


@pytest.mark.parametrize("path", ["/v1/import", "/v1/b"])
def test_batch_aliases(ingest_client, tenant, path):
    assert_success(post_json(ingest_client, path, batch(msg(userId="u")), basic(tenant.write_key)))


def test_unknown_write_key_is_401(ingest_client, tenant):
    assert_error(post_json(ingest_client, "/v1/batch", batch(msg(userId="u")), basic("wk_nope")), 401)
    assert_error(post_json(ingest_client, "/v1/batch", batch(msg(userId="u")), bearer("wk_nope")), 401)
    assert_error(post_json(ingest_client, "/v1/batch", batch(msg(userId="u"), writeKey="wk_nope")), 401)


def test_missing_write_key_is_401(ingest_client, tenant):
    assert_error(post_json(ingest_client, "/v1/batch", batch(msg(userId="u"))), 401)


def test_malformed_authorization_header_is_401(ingest_client, tenant):
    assert_error(post_json(ingest_client, "/v1/batch", batch(msg(userId="u")),
                           {"Authorization": "Basic !!!not-base64!!!"}), 401)
    assert_error(post_json(ingest_client, "/v1/batch", batch(msg(userId="u")),
                           {"Authorization": "Digest abc"}), 401)


def test_header_key_is_checked_before_the_body_is_parsed(ingest_client, tenant):
    r = post_json(ingest_client, "/v1/batch", b"{this is not json", basic("wk_nope"))
    assert_error(r, 401)


def test_disabled_source_is_403(ingest_client, db):
    t = make_tenant(db, "disabled")  # fresh: nothing about its key is cached yet
    db.execute("UPDATE sources SET active = false WHERE id = %s", (t.source_id,))
    assert_error(post_json(ingest_client, "/v1/batch", batch(msg(userId="u")), basic(t.write_key)), 403)
    assert_error(post_json(ingest_client, "/v1/batch", batch(msg(userId="u"), writeKey=t.write_key)), 403)
    assert_error(post_json(ingest_client, "/v1/track", msg(userId="u"), bearer(t.write_key)), 403)


# --------------------------------------------------------------------------- body forms

def test_gzip_body_is_accepted(ingest_client, tenant, drain, db):
    m = msg(userId="u-gzip")
    raw = gzip.compress(json.dumps(batch(m)).encode())
    r = ingest_client.post("/v1/batch", content=raw, headers={"Content-Type": "application/json",
                                                               "Content-Encoding": "gzip", **basic(tenant.write_key)})
    assert_success(r)
    assert drain() == 0
    assert count_events(db, tenant.id, m["messageId"]) == 1


def test_text_plain_content_type_is_read_as_json(ingest_client, tenant, drain, db):
    m = msg(userId="u-text")
    r = post_json(ingest_client, "/v1/batch", batch(m, writeKey=tenant.write_key), content_type="text/plain")
    assert_success(r)
    r = post_json(ingest_client, "/v1/track", msg(userId="u-text", writeKey=tenant.write_key),
                  content_type="text/plain;charset=UTF-8")
    assert_success(r)
    assert drain() == 0
    assert count_events(db, tenant.id, m["messageId"]) == 1


def test_missing_content_type_is_read_as_json(ingest_client, tenant):
    raw = json.dumps(batch(msg(userId="u"))).encode()
    r = ingest_client.post("/v1/batch", content=raw, headers=basic(tenant.write_key))
    assert_success(r)


def test_invalid_json_is_400(ingest_client, tenant):
    assert_error(post_json(ingest_client, "/v1/batch", b'{"batch": [', basic(tenant.write_key)), 400)
    assert_error(post_json(ingest_client, "/v1/track", b"not json", basic(tenant.write_key)), 400)


def test_request_over_the_limit_is_413(ingest_client, tenant, settings, redis_conn):
    pad = "x" * (settings.max_request_bytes + 1024)
    body = json.dumps(batch(msg(userId="u", properties={"pad": pad}))).encode()
    assert len(body) > settings.max_request_bytes
    r = post_json(ingest_client, "/v1/batch", body, basic(tenant.write_key))
    assert_error(r, 413)
    assert queue_len(redis_conn, settings) == 0


def test_gzip_bomb_is_413(ingest_client, tenant, settings, redis_conn):
    head = b'{"batch": [{"type": "track", "event": "x", "userId": "u", "properties": {"pad": "'
    inflated = head + b"0" * (settings.max_request_bytes * 4) + b'"}}]}'
    bomb = gzip.compress(inflated, compresslevel=9)
    assert len(bomb) < settings.max_request_bytes // 50
    r = ingest_client.post("/v1/batch", content=bomb, headers={"Content-Type": "application/json",
                                                                "Content-Encoding": "gzip", **basic(tenant.write_key)})
    assert_error(r, 413)
    assert queue_len(redis_conn, settings) == 0


def test_corrupt_gzip_is_400(ingest_client, tenant):
    r = ingest_client.post("/v1/batch", content=b"\x1f\x8b\x08\x00garbage", headers={
        "Content-Encoding": "gzip", **basic(tenant.write_key)})
    assert_error(r, 400)


# --------------------------------------------------------------------------- single-event paths

@pytest.mark.parametrize("path, body", [
    ("/v1/track", {"event": "Signed Up", "userId": "s-1", "properties": {"plan": "pro"}}),
    ("/v1/identify", {"userId": "s-1", "traits": {"email": "s1@example.com", "name": "S"}}),
    ("/v1/page", {"anonymousId": "a-1", "name": "Home", "properties": {"path": "/"}}),
    ("/v1/screen", {"anonymousId": "a-1", "name": "Settings"}),
    ("/v1/group", {"userId": "s-1", "groupId": "g-1", "traits": {"name": "Acme"}}),
    ("/v1/alias", {"userId": "s-1", "previousId": "a-1"}),
])
def test_single_event_paths(ingest_client, tenant, drain, db, path, body):
    message_id = str(uuid.uuid4())
    payload = {**body, "messageId": message_id, "timestamp": now_iso(), "sentAt": now_iso()}
    assert_success(post_json(ingest_client, path, payload, basic(tenant.write_key)))
    assert_success(post_json(ingest_client, path, {**payload, "messageId": str(uuid.uuid4()),
                                                    "writeKey": tenant.write_key}))
    assert drain() == 0
    row = db.execute("SELECT event_type, event_name FROM events WHERE tenant_id = %s"
                     " AND dedupe_key = " + STORED_KEY_SQL,
                     (tenant.id, message_id)).fetchone()
    assert row is not None
    assert row[0] == path.rsplit("/", 1)[1]


def test_single_event_path_type_wins_over_body_type(ingest_client, tenant, drain, db):
    m = msg("identify", userId="u-x")  # a "type" in the body of /v1/track
    m["event"] = "Ordered"
    assert_success(post_json(ingest_client, "/v1/track", m, basic(tenant.write_key)))
    assert drain() == 0
    row = db.execute("SELECT event_type, event_name FROM events WHERE dedupe_key = " + STORED_KEY_SQL,
                     (m["messageId"],)).fetchone()
    assert row == ("track", "Ordered")


def test_single_track_without_identifier_is_400(ingest_client, tenant, redis_conn):
    r = post_json(ingest_client, "/v1/track", {"event": "x", "userId": None}, basic(tenant.write_key))
    body = assert_error(r, 400)
    assert body["rejected"][0]["code"] == "no_usable_identifier"


# --------------------------------------------------------------------------- partial and total rejection

def test_partial_rejection_is_200_with_rejected_list_and_dead_letter(ingest_client, tenant, drain, db, redis_conn):
    good = msg(userId="u-good")
    bad_no_id = msg(userId=None, anonymousId="undefined")
    bad_type = msg("purchase", userId="u")
    r = post_json(ingest_client, "/v1/batch", batch(good, bad_no_id, bad_type), basic(tenant.write_key))
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["success"] is True
    rejected = {item["index"]: item for item in body["rejected"]}
    assert set(rejected) == {1, 2}
    assert rejected[1]["code"] == "no_usable_identifier"
    assert rejected[2]["code"] == "invalid_type"
    assert all(isinstance(item["message"], str) and item["message"] for item in body["rejected"])

    stored = [json.loads(x) for x in redis_conn.lrange(deadletter_key(tenant.id), 0, -1)]
    assert {e["index"] for e in stored} == {1, 2}
    by_index = {e["index"]: e for e in stored}
    assert json.loads(by_index[1]["event"])["messageId"] == bad_no_id["messageId"]
    assert by_index[1]["code"] == "no_usable_identifier"
    assert by_index[1]["source_id"] == tenant.source_id
    ttl = redis_conn.ttl(deadletter_key(tenant.id))
    assert 0 < ttl <= 7 * 24 * 3600

    assert drain() == 0
    assert count_events(db, tenant.id) == 1
    assert count_events(db, tenant.id, good["messageId"]) == 1


def test_event_over_32kb_is_rejected_alone(ingest_client, tenant, drain, db, redis_conn):
    good = msg(userId="u")
    big = msg(userId="u", properties={"blob": "x" * (33 * 1024)})
    r = post_json(ingest_client, "/v1/batch", batch(good, big), basic(tenant.write_key))
    assert r.status_code == 200, r.text
    assert [(x["index"], x["code"]) for x in r.json()["rejected"]] == [(1, "event_too_large")]
    assert drain() == 0
    assert count_events(db, tenant.id) == 1


def test_nul_character_is_rejected_per_event(ingest_client, tenant, drain, db):
    good = msg(userId="u")
    bad = msg(userId="u", properties={"note": "a\u0000b"})
    r = post_json(ingest_client, "/v1/batch", batch(good, bad), basic(tenant.write_key))
    assert r.status_code == 200, r.text
    assert [(x["index"], x["code"]) for x in r.json()["rejected"]] == [(1, "nul_character")]
    assert drain() == 0
    assert count_events(db, tenant.id) == 1


def test_all_unusable_is_400_with_code(ingest_client, tenant, redis_conn, settings):
    r = post_json(ingest_client, "/v1/batch", batch(msg(userId=None), msg("track", event=None, userId="u")),
                  basic(tenant.write_key))
    body = assert_error(r, 400)
    assert [x["index"] for x in body["rejected"]] == [0, 1]
    assert redis_conn.llen(deadletter_key(tenant.id)) == 2
    assert queue_len(redis_conn, settings) == 0
    assert dedupe_marks(redis_conn, tenant.id) == 0


def test_empty_batch_is_400(ingest_client, tenant):
    assert_error(post_json(ingest_client, "/v1/batch", {"batch": []}, basic(tenant.write_key)), 400)


def test_batch_context_merges_into_items(ingest_client, tenant, drain, db):
    m = msg(userId="u", context={"locale": "de-DE"})
    body = batch(m, context={"locale": "en-US", "campaign": {"name": "spring"}})
    assert_success(post_json(ingest_client, "/v1/batch", body, basic(tenant.write_key)))
    assert drain() == 0
    ctx = db.execute("SELECT context FROM events WHERE dedupe_key = " + STORED_KEY_SQL, (m["messageId"],)).fetchone()[0]
    assert ctx["locale"] == "de-DE"
    assert ctx["campaign"] == {"name": "spring"}


def test_clock_skew_is_corrected_end_to_end(ingest_client, tenant, drain, db):
    # A client whose clock is 2 days behind: timestamp and sentAt agree with each other.
    m = msg(userId="u", timestamp="2020-01-01T00:00:00.000Z")
    body = {"batch": [m], "sentAt": "2020-01-01T00:00:03.000Z"}
    before = datetime.now(UTC)
    assert_success(post_json(ingest_client, "/v1/batch", body, basic(tenant.write_key)))
    after = datetime.now(UTC)
    assert drain() == 0
    event_time = db.execute("SELECT event_time FROM events WHERE dedupe_key = " + STORED_KEY_SQL,
                            (m["messageId"],)).fetchone()[0]
    assert (before - event_time).total_seconds() <= 3.5
    assert (after - event_time).total_seconds() >= 2.5


# --------------------------------------------------------------------------- dedupe and linkage

def test_duplicate_message_id_is_queued_once(ingest_client, tenant, drain, db, redis_conn, settings):
    m = msg(userId="u-dup")
    assert_success(post_json(ingest_client, "/v1/batch", batch(m), basic(tenant.write_key)))
    assert_success(post_json(ingest_client, "/v1/batch", batch(m), basic(tenant.write_key)))
    assert_success(post_json(ingest_client, "/v1/track", m, basic(tenant.write_key)))
    assert queue_len(redis_conn, settings) == 1
    assert drain() == 0
    assert count_events(db, tenant.id, m["messageId"]) == 1
    assert count_events(db, tenant.id) == 1


def test_duplicate_message_id_within_one_batch_is_stored_once(ingest_client, tenant, drain, db):
    m = msg(userId="u-dup")
    other = msg(userId="u-dup")
    assert_success(post_json(ingest_client, "/v1/batch", batch(m, dict(m), other), basic(tenant.write_key)))
    assert drain() == 0
    assert count_events(db, tenant.id, m["messageId"]) == 1
    assert count_events(db, tenant.id) == 2


def test_message_ids_are_scoped_per_tenant(ingest_client, tenant, drain, db):
    other = make_tenant(db, "other")
    m = msg(userId="u")
    assert_success(post_json(ingest_client, "/v1/batch", batch(m), basic(tenant.write_key)))
    assert_success(post_json(ingest_client, "/v1/batch", batch(m), basic(other.write_key)))
    assert drain() == 0
    assert count_events(db, tenant.id, m["messageId"]) == 1
    assert count_events(db, other.id, m["messageId"]) == 1


def test_messages_without_message_id_are_never_deduplicated(ingest_client, tenant, drain, db):
    m = msg(userId="u")
    del m["messageId"]
    assert_success(post_json(ingest_client, "/v1/batch", batch(m, dict(m)), basic(tenant.write_key)))
    assert_success(post_json(ingest_client, "/v1/batch", batch(m), basic(tenant.write_key)))
    assert drain() == 0
    assert count_events(db, tenant.id) == 3


def test_identify_links_user_id_anonymous_id_and_email_on_one_profile(ingest_client, tenant, drain, db):
    m = msg("identify", userId="user-77", anonymousId="anon-77", traits={"email": "Pat@Example.com", "name": "Pat"})
    assert_success(post_json(ingest_client, "/v1/batch", batch(m), basic(tenant.write_key)))
    assert drain() == 0
    p_ext = profile_of(db, tenant.id, "external_id", "user-77")
    p_anon = profile_of(db, tenant.id, "anonymous_id", "anon-77")
    p_email = profile_of(db, tenant.id, "email", "pat@example.com")
    assert p_ext is not None
    assert p_ext == p_anon == p_email
    ev = db.execute("SELECT profile_id::text, event_type FROM events WHERE dedupe_key = " + STORED_KEY_SQL,
                    (m["messageId"],)).fetchone()
    assert ev == (p_ext, "identify")
    # raw email never reaches Postgres
    dump = db.execute("SELECT string_agg(t::text, ' ') FROM (SELECT * FROM events) t").fetchone()[0]
    assert "pat@example.com" not in dump.lower()


def test_anonymous_events_then_identify_land_on_one_profile(ingest_client, tenant, drain, db):
    page = msg("page", anonymousId="anon-88", name="Home")
    assert_success(post_json(ingest_client, "/v1/batch", batch(page), basic(tenant.write_key)))
    assert drain() == 0
    ident = msg("identify", userId="user-88", anonymousId="anon-88", traits={"email": "q@example.com"})
    assert_success(post_json(ingest_client, "/v1/batch", batch(ident), basic(tenant.write_key)))
    assert drain() == 0
    p = profile_of(db, tenant.id, "anonymous_id", "anon-88")
    assert p is not None
    assert profile_of(db, tenant.id, "external_id", "user-88") == p
    assert profile_of(db, tenant.id, "email", "q@example.com") == p


def test_alias_links_previous_id_with_user_id(ingest_client, tenant, drain, db):
    track = msg(anonymousId="anon-99")
    assert_success(post_json(ingest_client, "/v1/batch", batch(track), basic(tenant.write_key)))
    assert drain() == 0
    alias = {"type": "alias", "previousId": "anon-99", "userId": "user-99", "messageId": str(uuid.uuid4())}
    assert_success(post_json(ingest_client, "/v1/alias", alias, basic(tenant.write_key)))
    assert drain() == 0
    p = profile_of(db, tenant.id, "anonymous_id", "anon-99")
    assert p is not None and profile_of(db, tenant.id, "external_id", "user-99") == p


# --------------------------------------------------------------------------- failure consistency (4.4, 4.5)

def test_enqueue_failure_is_503_and_leaves_no_marks_then_retry_goes_through(
        ingest_client, tenant, drain, db, redis_conn, settings, monkeypatch):
    original = BatchEnqueuer.enqueue
    calls = {"n": 0}

    async def flaky(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 1:
            raise redis.exceptions.ConnectionError("injected: connection reset")
        return await original(self, *args, **kwargs)

    monkeypatch.setattr(BatchEnqueuer, "enqueue", flaky)
    m = msg(userId="u-retry")
    body = batch(m)
    r = post_json(ingest_client, "/v1/batch", body, basic(tenant.write_key))
    assert_error(r, 503)
    assert int(r.headers["Retry-After"]) > 0
    assert dedupe_marks(redis_conn, tenant.id) == 0
    assert queue_len(redis_conn, settings) == 0

    monkeypatch.setattr(BatchEnqueuer, "enqueue", original)
    r = post_json(ingest_client, "/v1/batch", body, basic(tenant.write_key))
    assert_success(r)
    assert queue_len(redis_conn, settings) == 1
    assert dedupe_marks(redis_conn, tenant.id) == 1
    assert drain() == 0
    assert count_events(db, tenant.id, m["messageId"]) == 1


def test_redis_timeout_during_enqueue_is_503(ingest_client, tenant, redis_conn, monkeypatch):
    async def timeout(self, *args, **kwargs):
        raise redis.exceptions.TimeoutError("injected")

    monkeypatch.setattr(BatchEnqueuer, "enqueue", timeout)
    r = post_json(ingest_client, "/v1/batch", batch(msg(userId="u")), basic(tenant.write_key))
    assert_error(r, 503)
    assert "Retry-After" in r.headers


def test_script_failing_half_way_leaves_no_marks(settings, redis_conn, db):
    """CONTRACT 4.5 / stratum/queue/writer.py: marks and job "either all happen or none do".

    Failure injected inside the Redis script: with the high-water check off, the queue key
    is only touched by the final RPUSH, so a queue key of the wrong type makes the script
    fail after it has already written the dedupe marks. Redis does not roll a script back.
    """
    from litestar.testing import TestClient

    from ingest_api.app import create_app

    t = make_tenant(db, "halfway")
    s = settings.replace(queue_high_water=0)
    qkey = f"rq:queue:{s.queue_name}"
    m = msg(userId="u-halfway")
    with TestClient(app=create_app(s)) as client:
        redis_conn.set(qkey, "not a list")
        r = post_json(client, "/v1/batch", batch(m), basic(t.write_key))
        assert r.status_code == 503, r.text
        redis_conn.delete(qkey)
        marks_left = dedupe_marks(redis_conn, t.id)
        r = post_json(client, "/v1/batch", batch(m), basic(t.write_key))
        assert_success(r)
        queued_after_retry = redis_conn.llen(qkey)
    assert (marks_left, queued_after_retry) == (0, 1), (
        f"a failed enqueue left dedupe marks {marks_left}; the retry was answered 200 and "
        f"queued {queued_after_retry} job(s)")


def test_queue_above_high_water_is_503_without_marks(settings, redis_conn, db, drain):
    from litestar.testing import TestClient

    from ingest_api.app import create_app

    t = make_tenant(db, "full")
    s = settings.replace(queue_high_water=1)
    qkey = f"rq:queue:{s.queue_name}"
    redis_conn.rpush(qkey, "dummy-job-id")
    m = msg(userId="u-full")
    with TestClient(app=create_app(s)) as client:
        r = post_json(client, "/v1/batch", batch(m), basic(t.write_key))
        assert_error(r, 503)
        assert int(r.headers["Retry-After"]) > 0
        assert dedupe_marks(redis_conn, t.id) == 0
        assert redis_conn.lrange(qkey, 0, -1) == [b"dummy-job-id"]

        ready = client.get("/ready")
        assert ready.status_code == 503 and "Retry-After" in ready.headers

        redis_conn.delete(qkey)
        r = post_json(client, "/v1/batch", batch(m), basic(t.write_key))
        assert_success(r)
        assert redis_conn.llen(qkey) == 1
    assert drain() == 0
    assert count_events(db, t.id, m["messageId"]) == 1


def test_rate_limit_is_429_with_retry_after(ingest_client, db, redis_conn, settings):
    t = make_tenant(db, "limited")  # fresh: its source is not cached yet
    limit, size = 5, 4
    db.execute("UPDATE sources SET rate_limit = %s WHERE id = %s", (limit, t.source_id))
    accepted_events = 0
    limited = []
    first_second = int(time.time())
    for _ in range(12):
        r = post_json(ingest_client, "/v1/batch", batch(*[msg(userId="u") for _ in range(size)]), basic(t.write_key))
        if r.status_code == 429:
            limited.append(r)
        else:
            assert_success(r)
            accepted_events += size
        if len(limited) >= 2:
            break
    last_second = int(time.time())
    assert limited, "no 429 for a source sending over its rate limit"
    for r in limited:
        body = assert_error(r, 429)
        assert body["code"] == "rate_limited"
        assert int(r.headers["Retry-After"]) >= 1
    windows = last_second - first_second + 1
    assert accepted_events <= windows * (limit + size)
    # nothing of a rate-limited request was queued or marked
    assert dedupe_marks(redis_conn, t.id) == accepted_events


def test_rate_limited_request_leaves_no_marks_and_retry_goes_through(ingest_client, db, redis_conn, drain):
    t = make_tenant(db, "limited2")
    db.execute("UPDATE sources SET rate_limit = 1 WHERE id = %s", (t.source_id,))
    accepted: list[str] = []
    limited = None
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and limited is None:
        # fill this second's budget, then send the message that should be limited
        for _ in range(2):
            m = msg(userId="u")
            r = post_json(ingest_client, "/v1/batch", batch(m), basic(t.write_key))
            if r.status_code == 429:
                limited = m
                break
            assert_success(r)
            accepted.append(m["messageId"])
    assert limited is not None, "no 429 for a source over its limit of 1 event/s"
    assert dedupe_marks(redis_conn, t.id) == len(accepted)  # the limited request marked nothing

    deadline = time.monotonic() + 3
    while True:
        r = post_json(ingest_client, "/v1/batch", batch(limited), basic(t.write_key))
        if r.status_code != 429 or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert_success(r)
    assert dedupe_marks(redis_conn, t.id) == len(accepted) + 1
    assert drain() == 0
    assert count_events(db, t.id, limited["messageId"]) == 1
    assert count_events(db, t.id) == len(accepted) + 1
