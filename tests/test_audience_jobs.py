"""Computed traits, churn, anomalies and ``stratum scheduler --once`` against real Postgres
and Redis: values backfilled on create, kept current by the upkeep, recounted when the window
slides; churn moves and comes back; drops, spikes and silent sources on constructed history."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from test_read_support import auth, event, ingest_and_drain, profile_by

from stratum.db.connect import connect
from stratum.db.partitions import ensure_partitions, month_start
from workers.audience_jobs import (
    churn_profiles,
    detect_anomalies,
    refresh_audiences,
    upkeep_audiences,
)
from workers.scheduler import JOBS, run_periodic_jobs

NOW = datetime.now(UTC)
TRAITS = {
    "orders_90d": {"function": "count", "event": "Order Completed", "within_days": 90},
    "spend_90d": {"function": "sum", "event": "Order Completed", "property": "total", "within_days": 90},
    "avg_order": {"function": "avg", "event": "Order Completed", "property": "total", "within_days": 90},
    "min_order": {"function": "min", "event": "Order Completed", "property": "total", "within_days": 90},
    "max_order": {"function": "max", "event": "Order Completed", "property": "total", "within_days": 90},
    "first_sku": {"function": "first", "event": "Order Completed", "property": "sku", "within_days": 90},
    "last_sku": {"function": "last", "event": "Order Completed", "property": "sku", "within_days": 90},
    "skus": {"function": "unique", "event": "Order Completed", "property": "sku", "within_days": 90},
    "ordered": {"function": "exists", "event": "Order Completed", "within_days": 90},
}


def _order(ext: str, days_ago: float, total: float, sku: str) -> dict:
    return event("Order Completed", ("external_id", ext), at=NOW - timedelta(days=days_ago),
                 properties={"total": total, "sku": sku})


def _computed(read_client, tenant, ext: str) -> dict:
    r = profile_by(read_client, tenant.api_key, "external_id", ext)
    assert r.status_code == 200, r.text
    return r.json()["computed"]


def test_computed_traits_backfill_upkeep_and_window_slide(read_client, ingest_client, drain, db, tenant, settings):
    ingest_and_drain(ingest_client, drain, tenant.write_key,
                     _order("c-1", 91, 1000, "old"), _order("c-1", 30, 10, "a"), _order("c-1", 20, 30, "b"),
                     _order("c-1", 10, 20, "a"), event("Page Viewed", ("external_id", "c-2")))
    upkeep_audiences(db, settings)  # the mark: profiles changed from here on
    for name, body in TRAITS.items():
        r = read_client.post("/api/v1/cdp/computed-traits", headers=auth(tenant.api_key), json={"name": name, **body})
        assert r.status_code == 201, r.text
        assert r.json()["name"] == name and r.json()["event"] == body["event"]
    assert _computed(read_client, tenant, "c-1") == {
        "orders_90d": 3, "spend_90d": 60, "avg_order": 20, "min_order": 10, "max_order": 30, "first_sku": "a",
        "last_sku": "a", "skus": 2, "ordered": True}
    assert _computed(read_client, tenant, "c-2") == {
        "orders_90d": 0, "spend_90d": None, "avg_order": None, "min_order": None, "max_order": None,
        "first_sku": None, "last_sku": None, "skus": 0, "ordered": False}

    seg = read_client.post("/api/v1/cdp/segments", headers=auth(tenant.api_key), json={
        "name": "Buyers", "rules": {"all": [{"computed": "orders_90d", "op": "gte", "value": 1}]}}).json()
    recent = read_client.post("/api/v1/cdp/segments", headers=auth(tenant.api_key), json={
        "name": "Recent", "rules": {"all": [{"event": "Order Completed", "within_days": 25}]}}).json()
    none = read_client.post("/api/v1/cdp/segments", headers=auth(tenant.api_key), json={
        "name": "No orders", "rules": {"all": [{"computed": "orders_90d", "op": "eq", "value": 0}]}}).json()
    assert (seg["size"], recent["size"], none["size"]) == (1, 1, 1)

    # A new order for c-2: kept current by the upkeep, and the segment follows.
    ingest_and_drain(ingest_client, drain, tenant.write_key, _order("c-2", 0, 5, "z"))
    upkeep_audiences(db, settings)
    assert _computed(read_client, tenant, "c-2")["orders_90d"] == 1
    assert _computed(read_client, tenant, "c-2")["last_sku"] == "z"
    assert read_client.get(f"/api/v1/cdp/segments/{seg['id']}", headers=auth(tenant.api_key)).json()["size"] == 2
    assert read_client.get(f"/api/v1/cdp/segments/{none['id']}", headers=auth(tenant.api_key)).json()["size"] == 0

    # The window slides: c-1's orders of 20 and 30 days ago become 95 days old.
    ensure_partitions(db, {month_start(NOW - timedelta(days=d)) for d in (50, 95)})
    pid = profile_by(read_client, tenant.api_key, "external_id", "c-1").json()["id"]
    db.execute("UPDATE events SET event_time = now() - interval '95 days' WHERE profile_id = %s"
               " AND event_name = 'Order Completed' AND event_time BETWEEN now() - interval '40 days'"
               " AND now() - interval '15 days'", (pid,))
    refresh_audiences(db, settings)
    after = _computed(read_client, tenant, "c-1")
    assert (after["orders_90d"], after["spend_90d"], after["first_sku"], after["skus"]) == (1, 20, "a", 1)

    # Time alone takes c-1 out of "ordered within 25 days" when its last order turns 50 days old.
    c2 = profile_by(read_client, tenant.api_key, "external_id", "c-2").json()["id"]
    members = f"/api/v1/cdp/segments/{recent['id']}/members"
    assert sorted(read_client.get(members, headers=auth(tenant.api_key)).json()["profiles"]) == sorted([pid, c2])
    db.execute("UPDATE events SET event_time = now() - interval '50 days' WHERE profile_id = %s"
               " AND event_name = 'Order Completed' AND event_time > now() - interval '15 days'", (pid,))
    refresh_audiences(db, settings)
    assert read_client.get(members, headers=auth(tenant.api_key)).json()["profiles"] == [c2]
    assert _computed(read_client, tenant, "c-1")["orders_90d"] == 1

    r = read_client.post("/api/v1/cdp/computed-traits", headers=auth(tenant.api_key),
                         json={"name": "orders_90d", **TRAITS["orders_90d"]})
    assert r.status_code == 409 and r.json()["code"] == "name_taken"


@pytest.mark.parametrize(("body", "field"), [
    ({"name": "x", "function": "median", "event": "E", "within_days": 1}, "function"),
    ({"name": "x", "function": "sum", "event": "E", "within_days": 1}, "property"),
    ({"name": "x", "function": "count", "event": "E", "within_days": 0}, "within_days"),
    ({"name": "", "function": "count", "event": "E", "within_days": 1}, "name"),
    ({"name": "x", "function": "count", "event": "", "within_days": 1}, "event"),
    ({"name": "x", "function": "count", "event": "E", "within_days": 1, "extra": 1}, "extra"),
])
def test_bad_computed_traits_are_400(read_client, tenant, body, field):
    r = read_client.post("/api/v1/cdp/computed-traits", headers=auth(tenant.api_key), json=body)
    assert r.status_code == 400 and r.json()["code"] == "invalid_computed_trait", r.text
    assert r.json()["errors"][0]["field"] == field


def test_churn_moves_idle_profiles_and_a_new_event_brings_them_back(read_client, ingest_client, drain, db,
                                                                     new_tenant, settings):
    tenant, patient = new_tenant(source_type="server"), new_tenant(source_type="server")
    db.execute("UPDATE tenants SET settings = settings || '{\"churn_after_days\": 200}'::jsonb WHERE id = %s",
               (patient.id,))
    ensure_partitions(db, {month_start(NOW - timedelta(days=100))})
    ingest_and_drain(ingest_client, drain, tenant.write_key,
                     event("Order Completed", ("external_id", "idle"), at=NOW - timedelta(days=100),
                           properties={"total": 5}),
                     event("Page Viewed", ("external_id", "active")))
    ingest_and_drain(ingest_client, drain, patient.write_key,
                     event("Page Viewed", ("external_id", "idle"), at=NOW - timedelta(days=100)))
    churn_profiles(db, settings)
    assert profile_by(read_client, tenant.api_key, "external_id", "idle").json()["lifecycle"] == "churned"
    assert profile_by(read_client, tenant.api_key, "external_id", "active").json()["lifecycle"] == "known"
    assert profile_by(read_client, patient.api_key, "external_id", "idle").json()["lifecycle"] == "known"
    stats = read_client.get("/api/v1/cdp/stats", headers=auth(tenant.api_key)).json()
    assert stats["profiles_by_lifecycle"]["churned"] == 1

    ingest_and_drain(ingest_client, drain, tenant.write_key, event("Page Viewed", ("external_id", "idle")))
    assert profile_by(read_client, tenant.api_key, "external_id", "idle").json()["lifecycle"] == "customer"


END = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)  # the judged window is the 24 hours before


def _fill(db, tenant_id: str, source_id: str, start: datetime, hours: int, per_hour: int) -> None:
    db.execute(
        "INSERT INTO events (tenant_id, event_id, event_time, received_at, source_id, dedupe_key, event_type,"
        " event_name, properties, context, identifiers, emq)"
        " SELECT %s, gen_random_uuid(), t, t, %s, gen_random_uuid()::text, 'track', 'Ping', '{}', '{}', '[]', 0"
        " FROM generate_series(%s::timestamptz, %s::timestamptz - interval '1 second', interval '1 hour') h,"
        " LATERAL (SELECT h + (n * interval '1 minute') AS t FROM generate_series(1, %s) n) x",
        (tenant_id, source_id, start, start + timedelta(hours=hours), per_hour))


def test_anomalies_spikes_drops_and_silent_sources(read_client, db, new_tenant, settings):
    tenant = new_tenant()
    quiet = str(uuid.uuid4())  # a source that goes silent
    young = str(uuid.uuid4())  # too little history to judge
    with db.transaction():
        for sid, name in ((quiet, "quiet"), (young, "young")):
            db.execute("INSERT INTO sources (id, tenant_id, name, type, write_key_hash) VALUES (%s, %s, %s,"
                       " 'server', %s)", (sid, tenant.id, name, uuid.uuid4().hex))
    ensure_partitions(db, {month_start(END - timedelta(weeks=w)) for w in range(6)})
    day = END - timedelta(hours=24)
    for week in range(1, 5):
        _fill(db, tenant.id, tenant.source_id, day - timedelta(weeks=week), 24, 20)
        _fill(db, tenant.id, quiet, day - timedelta(weeks=week), 24, 20)
    for week in range(1, 3):
        _fill(db, tenant.id, young, day - timedelta(weeks=week), 24, 20)
    _fill(db, tenant.id, tenant.source_id, day, 24, 20)
    spike_hour = day + timedelta(hours=5)
    _fill(db, tenant.id, tenant.source_id, spike_hour, 1, 40)  # 60 in that hour instead of 20

    detect_anomalies(db, settings, now=END + timedelta(minutes=7))
    detect_anomalies(db, settings, now=END + timedelta(minutes=9))  # recorded once per (source, hour, kind)
    r = read_client.get("/api/v1/cdp/anomalies", headers=auth(tenant.api_key))
    assert r.status_code == 200, r.text
    found = r.json()["anomalies"]
    spikes = [a for a in found if a["kind"] == "spike"]
    drops = [a for a in found if a["kind"] == "drop"]
    assert [(a["source_id"], a["hour"], a["observed"], a["expected"]) for a in spikes] == [
        (tenant.source_id, spike_hour.isoformat(), 60, 20)]
    assert spikes[0]["score"] >= settings.anomaly_threshold
    assert {a["source_id"] for a in drops} == {quiet} and len(drops) == 24
    assert all(a["observed"] == 0 and a["expected"] == 20 and a["score"] < 0 for a in drops)
    assert db.execute("SELECT count(*) FROM anomalies WHERE tenant_id = %s", (tenant.id,)).fetchone()[0] == 25

    window = read_client.get("/api/v1/cdp/anomalies", headers=auth(tenant.api_key), params={
        "from": spike_hour.isoformat(), "to": (spike_hour + timedelta(hours=1)).isoformat()}).json()["anomalies"]
    assert {(a["source_id"], a["kind"]) for a in window} == {(tenant.source_id, "spike"), (quiet, "drop")}
    bad = read_client.get("/api/v1/cdp/anomalies", headers=auth(tenant.api_key), params={"from": "soon"})
    assert bad.status_code == 400 and bad.json()["code"] == "invalid_parameter"
    other = new_tenant()
    assert read_client.get("/api/v1/cdp/anomalies", headers=auth(other.api_key)).json()["anomalies"] == []


def test_scheduler_once_runs_every_job_and_skips_a_locked_one(settings, redis_conn, db):
    with connect(settings.database_url, autocommit=True) as holder:
        holder.execute("SELECT pg_advisory_lock(hashtextextended('stratum-scheduler:churn', 0))")
        results = run_periodic_jobs(settings, redis_conn)
    assert results == {**{job.name: "ok" for job in JOBS}, "churn": "skipped"}

    env = {**os.environ, "STRATUM_DATABASE_URL": settings.database_url, "STRATUM_REDIS_URL": settings.redis_url,
           "STRATUM_QUEUE_NAME": settings.queue_name}
    out = subprocess.run([sys.executable, "-m", "stratum.cli", "scheduler", "--once"], env=env, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    last = json.loads(out.stdout.strip().splitlines()[-1])
    assert last == {"jobs": {job.name: "ok" for job in JOBS}}


def _volume_history(db, tenant, quiet: str) -> datetime:
    """Four past weeks of 20 events an hour for the tenant's source and ``quiet``; in the
    last 48 hours the tenant's source keeps its pace and ``quiet`` sends nothing."""
    end = NOW.replace(minute=0, second=0, microsecond=0) + timedelta(hours=1)
    start = end - timedelta(hours=48)
    ensure_partitions(db, {month_start(start - timedelta(weeks=w)) for w in range(6)} | {month_start(end)})
    for week in range(1, 5):
        _fill(db, tenant.id, tenant.source_id, start - timedelta(weeks=week), 48, 20)
        _fill(db, tenant.id, quiet, start - timedelta(weeks=week), 48, 20)
    _fill(db, tenant.id, tenant.source_id, start, 48, 20)
    return start


def test_ops_volume_shows_baseline_band_and_anomalies(read_client, db, new_tenant, settings):
    tenant = new_tenant()
    quiet = str(uuid.uuid4())
    db.execute("INSERT INTO sources (id, tenant_id, name, type, write_key_hash) VALUES (%s, %s, 'quiet', 'server', %s)",
               (quiet, tenant.id, uuid.uuid4().hex))
    _volume_history(db, tenant, quiet)
    detect_anomalies(db, settings)
    with db.transaction():
        from stratum.admin import create_operator

        operator = create_operator(db, "ops").key
    assert read_client.get("/api/v1/ops/volume", headers=auth(tenant.api_key)).status_code == 403
    r = read_client.get("/api/v1/ops/volume", headers=auth(operator))
    assert r.status_code == 200, r.text
    by_id = {s["source_id"]: s for s in r.json()["sources"]}
    assert set(by_id) == {tenant.source_id, quiet}
    silent = by_id[quiet]
    assert len(silent["points"]) == 48 and all(p["observed"] == 0 for p in silent["points"])
    assert all(p["expected"] == 20 and p["low"] < 20 < p["high"] for p in silent["points"])
    assert len(silent["anomalies"]) == 24 and {a["kind"] for a in silent["anomalies"]} == {"drop"}
    assert by_id[tenant.source_id]["anomalies"] == []
    assert read_client.get("/api/v1/ops/volume", params={"hours": 0},
                           headers=auth(operator)).json()["code"] == "invalid_parameter"


def test_changing_or_deleting_a_computed_trait_rewrites_the_values(read_client, ingest_client, drain, tenant):
    ingest_and_drain(ingest_client, drain, tenant.write_key, _order("d-1", 40, 7, "a"), _order("d-1", 5, 3, "b"))
    created = read_client.post("/api/v1/cdp/computed-traits", headers=auth(tenant.api_key), json={
        "name": "orders", "function": "count", "event": "Order Completed", "within_days": 30}).json()
    assert _computed(read_client, tenant, "d-1") == {"orders": 1}
    path = f"/api/v1/cdp/computed-traits/{created['id']}"
    r = read_client.patch(path, headers=auth(tenant.api_key), json={"name": "orders_60d", "within_days": 60})
    assert r.status_code == 200 and r.json()["within_days"] == 60, r.text
    assert _computed(read_client, tenant, "d-1") == {"orders_60d": 2}
    assert read_client.delete(path, headers=auth(tenant.api_key)).json()["name"] == "orders_60d"
    assert _computed(read_client, tenant, "d-1") == {}
    assert read_client.get(path, headers=auth(tenant.api_key)).status_code == 404
