"""Event time bounds and state time (CONTRACT 6) through the real ingest API, workers,
Postgres and the read API.

- Door: an event older than the retention cut-off is ``event_too_old``, one more than 24 h
  ahead ``event_in_future`` (native: per-event error on ``event_time``; Segment: a
  ``rejected`` entry), after the Segment skew correction.
- A public-key batch spread over 27 years creates no partition outside retention.
- A worker finding an event past the cut-off stores nothing, counts nothing and records the
  event ``rejected``.
- State time ``min(event_time, received_at)``: an event dated ahead cannot freeze traits,
  consents or ``last_seen`` against later updates.
"""

from __future__ import annotations

import base64
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from litestar.testing import TestClient

from core.event_time import retention_cutoff
from stratum.db.partitions import add_months, existing_partitions, month_start, partition_name

RETENTION = 13  # the default, as the test settings use it


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def basic(key: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{key}:".encode()).decode()}


def native(name: str, at: datetime, *identifiers: tuple[str, str], **extra) -> dict:
    return {"event_name": name, "event_time": at.isoformat(),
            "identifiers": [{"type": t, "value": v} for t, v in identifiers], **extra}


def cutoff() -> datetime:
    c = retention_cutoff(datetime.now(UTC), RETENTION)
    assert c is not None
    return c


def results_by_index(body: dict) -> dict[int, dict]:
    return {r["index"]: r for r in body["results"]}


# --------------------------------------------------------------------------- door, native

def test_native_door_rejects_too_old_and_far_future_per_event(ingest_client, tenant, settings):
    assert settings.retention_months == RETENTION
    now = datetime.now(UTC)
    events = [
        native("AtCutoff", cutoff(), ("anonymous_id", "t-1")),
        native("JustTooOld", cutoff() - timedelta(seconds=1), ("anonymous_id", "t-1")),
        native("Ancient", now - timedelta(days=27 * 365), ("anonymous_id", "t-1")),
        native("SoonEnough", now + timedelta(hours=23), ("anonymous_id", "t-1")),
        native("TooFarAhead", now + timedelta(hours=25), ("anonymous_id", "t-1")),
    ]
    r = ingest_client.post("/api/v1/cdp/events", json={"events": events}, headers=bearer(tenant.write_key))
    assert r.status_code == 202, r.text
    res = results_by_index(r.json())
    assert res[0]["status"] == "accepted" and res[3]["status"] == "accepted"
    for i, code in ((1, "event_too_old"), (2, "event_too_old"), (4, "event_in_future")):
        assert res[i]["status"] == "rejected"
        assert res[i]["error"]["code"] == code and res[i]["error"]["field"] == "event_time"
    assert r.json()["rejected"] == 3


def test_native_batch_of_only_old_events_is_400(ingest_client, tenant):
    old = native("Old", cutoff() - timedelta(days=40), ("anonymous_id", "t-2"))
    r = ingest_client.post("/api/v1/cdp/events", json={"events": [old]}, headers=bearer(tenant.write_key))
    assert r.status_code == 400
    assert r.json()["code"] == "all_events_rejected"
    assert r.json()["results"][0]["error"]["code"] == "event_too_old"


# --------------------------------------------------------------------------- door, Segment

def _seg(message_id: str, **fields) -> dict:
    return {"type": "track", "event": "Clicked", "messageId": message_id, "anonymousId": "seg-anon", **fields}


def test_segment_door_rejects_too_old_and_far_future_after_skew_correction(ingest_client, tenant):
    now = datetime.now(UTC)
    old = (cutoff() - timedelta(days=3)).isoformat()
    body = {"batch": [
        _seg("ok", timestamp=now.isoformat()),
        _seg("old", timestamp=old),
        _seg("future", timestamp=(now + timedelta(hours=30)).isoformat()),
        # The client clock is years behind but says so (sentAt): corrected to now, accepted.
        _seg("skewed-ok", originalTimestamp=old, sentAt=old),
        # Sent "now" about an event the corrected clock places before retention.
        _seg("skewed-old", originalTimestamp=old, sentAt=now.isoformat()),
    ]}
    r = ingest_client.post("/v1/batch", json=body, headers=basic(tenant.write_key))
    assert r.status_code == 200, r.text
    assert r.json()["success"] is True
    rejected = {e["index"]: e["code"] for e in r.json()["rejected"]}
    assert rejected == {1: "event_too_old", 2: "event_in_future", 4: "event_too_old"}


def test_segment_single_event_too_old_is_400(ingest_client, tenant):
    r = ingest_client.post("/v1/track", json=_seg("one", timestamp="1996-01-01T00:00:00Z"),
                           headers=basic(tenant.write_key))
    assert r.status_code == 400
    assert [e["code"] for e in r.json()["rejected"]] == ["event_too_old"]


# --------------------------------------------------------------------------- partitions

def _allowed_months(now: datetime) -> set[str]:
    """Partitions events within bounds may need: cut-off month .. month of now + 24 h."""
    last = month_start(now + timedelta(hours=25))
    out, m = set(), cutoff().date()
    while m <= last:
        out.add(partition_name(m))
        m = add_months(m, 1)
    return out


def test_27_year_public_key_batch_creates_no_partition_outside_retention(ingest_client, new_tenant, drain, db):
    tenant = new_tenant(source_type="website")
    before = existing_partitions(db)
    now = datetime.now(UTC)
    start = month_start(now - timedelta(days=27 * 365))
    # One event per month for 27 years, plus some from the far future, from a public key.
    times = [datetime(m.year, m.month, 10, 12, tzinfo=UTC) for m in (add_months(start, i) for i in range(27 * 12))]
    times += [now + timedelta(days=d) for d in (2, 40, 400, 4000)]
    events = [native("Tick", t, ("anonymous_id", "time-traveller")) for t in times]
    r = ingest_client.post("/api/v1/cdp/events", json={"events": events}, headers=bearer(tenant.write_key))
    assert r.status_code == 202, r.text
    body = r.json()
    in_window = [t for t in times if cutoff() <= t <= now + timedelta(hours=24)]
    assert body["accepted"] == len(in_window) and 0 < len(in_window) <= RETENTION
    codes = {res["error"]["code"] for res in body["results"] if res["status"] == "rejected"}
    assert codes == {"event_too_old", "event_in_future"}
    assert drain() == 0
    created = existing_partitions(db) - before
    assert created <= _allowed_months(now), sorted(created - _allowed_months(now))
    assert db.execute("SELECT count(*) FROM events WHERE event_time < %s", (cutoff(),)).fetchone()[0] == 0
    counted = db.execute("SELECT sum(event_count) FROM profiles WHERE tenant_id = %s", (tenant.id,)).fetchone()[0]
    assert counted == len(in_window) == db.execute("SELECT count(*) FROM events").fetchone()[0]


# --------------------------------------------------------------------------- worker side

@pytest.fixture
def lenient_ingest(settings, redis_conn, db):
    """An ingest API with retention off: events it accepts may be past the workers' cut-off,
    as when a job queued on the last day of a month is processed after it rolled out."""
    from ingest_api.app import create_app

    with TestClient(app=create_app(settings.replace(retention_months=0))) as client:
        yield client


def test_worker_rejects_event_past_the_cutoff_and_counts_nothing(lenient_ingest, read_client, tenant, drain, db):
    before = existing_partitions(db)
    stale = cutoff() - timedelta(days=20)
    fresh = datetime.now(UTC) - timedelta(minutes=5)
    r = lenient_ingest.post("/api/v1/cdp/events", headers=bearer(tenant.write_key), json={"events": [
        native("Purchase", stale, ("anonymous_id", "late-1"), properties={"revenue": 50}),
        native("Purchase", fresh, ("anonymous_id", "late-1"), properties={"revenue": 7}),
    ]})
    assert r.status_code == 202 and r.json()["accepted"] == 2, r.text
    stale_id, fresh_id = (res["event_id"] for res in r.json()["results"])
    assert drain() == 0

    auth = bearer(tenant.api_key)
    s = read_client.get(f"/api/v1/cdp/events/{stale_id}", headers=auth)
    assert s.status_code == 200 and s.json() == {"event_id": stale_id, "status": "rejected", "profile_id": None}
    f = read_client.get(f"/api/v1/cdp/events/{fresh_id}", headers=auth).json()
    assert f["status"] == "processed"
    reason = db.execute("SELECT status, reason FROM event_outcomes WHERE event_id = %s", (stale_id,)).fetchone()
    assert reason == ("rejected", "event_too_old")
    assert db.execute("SELECT count(*) FROM events").fetchone()[0] == 1
    assert partition_name(stale.date()) not in existing_partitions(db) - before
    profile = read_client.get(f"/api/v1/cdp/profiles/{f['profile_id']}", headers=auth).json()
    assert profile["counters"]["events"] == 1 and profile["counters"]["purchases"] == 1
    assert float(profile["counters"]["revenue"]) == 7
    assert datetime.fromisoformat(profile["first_seen"]) >= cutoff()


def test_worker_rejection_is_idempotent_on_replay(lenient_ingest, tenant, drain, db, redis_conn, settings):
    from stratum.queue.layout import payload_of
    from workers.jobs import persist_payloads

    stale = cutoff() - timedelta(days=2)
    r = lenient_ingest.post("/api/v1/cdp/events", headers=bearer(tenant.write_key), json={"events": [
        native("Old", stale, ("anonymous_id", "late-2")), native("New", datetime.now(UTC), ("anonymous_id", "late-2"))]})
    assert r.status_code == 202, r.text
    (job_id,) = redis_conn.lrange(f"rq:queue:{settings.queue_name}", 0, -1)
    payload = payload_of(redis_conn.hget(b"rq:job:" + job_id, "data"))
    assert drain() == 0
    again = persist_payloads([payload])  # a replayed job (worker_runtime installed by drain)
    assert again["stored"] == 0 and again["duplicates"] == 1
    assert db.execute("SELECT status, reason FROM event_outcomes").fetchall() == [("rejected", "event_too_old")]
    assert db.execute("SELECT count(*) FROM events").fetchone()[0] == 1
    assert db.execute("SELECT event_count FROM profiles").fetchall() == [(1,)]


# --------------------------------------------------------------------------- state time

def test_future_dated_website_event_cannot_freeze_traits_consents_or_last_seen(
        ingest_client, read_client, new_tenant, drain, db):
    from stratum.admin import create_source

    tenant = new_tenant(source_type="website")
    website_key = tenant.write_key
    with db.transaction():
        server_source = create_source(db, uuid.UUID(tenant.id), "backend", "server", "US")
    ahead = datetime.now(UTC) + timedelta(hours=23)
    r = ingest_client.post("/api/v1/cdp/events", headers=bearer(website_key), json={"events": [
        native("Signed Up", ahead, ("anonymous_id", "visitor-9"), traits={"plan": "free", "name": "Hacked"},
               consent={"email": True, "ads": True})]})
    assert r.status_code == 202 and r.json()["accepted"] == 1, r.text
    assert drain() == 0

    # Later, the server (earlier event_time than the website's claim, later receipt).
    later = datetime.now(UTC)
    assert later < ahead
    r = ingest_client.post("/api/v1/cdp/events", headers=bearer(server_source.key), json={"events": [
        native("Plan Changed", later, ("anonymous_id", "visitor-9"), ("external_id", "cust-9"),
               traits={"plan": "pro", "name": "Ada"}, consent={"email": False})]})
    assert r.status_code == 202 and r.json()["accepted"] == 1, r.text
    assert drain() == 0

    auth = bearer(tenant.api_key)
    p = read_client.get("/api/v1/cdp/profiles", params={"identifier_type": "external_id",
                                                        "identifier_value": "cust-9"}, headers=auth)
    assert p.status_code == 200, p.text
    profile = p.json()
    assert profile["traits"]["plan"] == "pro" and profile["traits"]["name"] == "Ada"
    assert profile["consents"]["email"]["granted"] is False
    assert profile["consents"]["ads"]["granted"] is True  # nobody updated it since
    now = datetime.now(UTC)
    assert datetime.fromisoformat(profile["last_seen"]) <= now
    for ident in profile["identifiers"]:
        assert datetime.fromisoformat(ident["last_seen"]) <= now
        assert datetime.fromisoformat(ident["first_seen"]) <= now
    for c in profile["consents"].values():
        assert datetime.fromisoformat(c["updated_at"]) <= now
    # The events keep the time their sender gave them.
    stored = db.execute("SELECT event_time FROM events WHERE event_name = 'Signed Up'").fetchone()[0]
    assert abs((stored - ahead).total_seconds()) < 0.001
