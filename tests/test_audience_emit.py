"""segment.entered / segment.exited and anomaly.detected through the destinations outbox,
against real Postgres, Redis and a ``stratum deliver`` child process: signed messages verified
with ``standardwebhooks``, the consent gate, and nothing emitted twice on a rerun."""

from __future__ import annotations

from datetime import timedelta

from standardwebhooks import Webhook
from test_audience_jobs import END, _fill
from test_delivery import Receiver, admin, deliver, deliveries, make_destination, receivers  # noqa: F401 - fixtures
from test_read_support import auth, event, ingest_and_drain, profile_by
from test_reliability_support import wait_until

from stratum.db.partitions import ensure_partitions, month_start
from workers.audience_emit import emit_audience_messages, segment_message_id
from workers.audience_jobs import detect_anomalies, upkeep_audiences

SEGMENT_TOPICS = ["segment.entered", "segment.exited"]


def _outbox(db, tenant_id: str) -> list[tuple[str, str, str | None]]:
    return db.execute("SELECT message_id, topic, profile_id::text FROM deliveries WHERE tenant_id = %s ORDER BY id",
                      (tenant_id,)).fetchall()


def test_entries_and_exits_are_delivered_signed_once(admin, tenant, ingest_client, drain, deliver,  # noqa: F811
                                                     receivers, db, settings, redis_conn):  # noqa: F811
    rx = Receiver(200)
    receivers.append(rx)
    dest = make_destination(admin, tenant, rx.url, topics=SEGMENT_TOPICS)
    ingest_and_drain(ingest_client, drain, tenant.write_key,
                     event("Signed Up", ("external_id", "u-later"), traits={"plan": "free"}),
                     event("Signed Up", ("external_id", "u-leaver"), traits={"plan": "pro"}))
    later = profile_by(admin, tenant.api_key, "external_id", "u-later").json()["id"]
    leaver = profile_by(admin, tenant.api_key, "external_id", "u-leaver").json()["id"]
    upkeep_audiences(db, settings)  # the mark: changes from here on
    seg = admin.post("/api/v1/cdp/segments", headers=auth(tenant.api_key), json={
        "name": "Pro", "kind": "dynamic", "rules": {"all": [{"trait": "plan", "op": "eq", "value": "pro"}]}}).json()
    assert seg["size"] == 1

    # The later one qualifies, the leaver leaves.
    ingest_and_drain(ingest_client, drain, tenant.write_key,
                     event("Upgraded", ("external_id", "u-later"), traits={"plan": "pro"}),
                     event("Downgraded", ("external_id", "u-leaver"), traits={"plan": "free"}))
    upkeep_audiences(db, settings)
    emit_audience_messages(db, redis_conn)
    expected = [("segment.entered", leaver), ("segment.entered", later), ("segment.exited", leaver)]
    assert [(t, p) for _, t, p in _outbox(db, tenant.id)] == expected
    history = db.execute("SELECT id FROM segment_events WHERE tenant_id = %s ORDER BY id", (tenant.id,)).fetchall()
    assert [m for m, _, _ in _outbox(db, tenant.id)] == [segment_message_id(i) for (i,) in history]

    # Nothing twice: a rerun of upkeep and emission finds nothing pending.
    upkeep_audiences(db, settings)
    emit_audience_messages(db, redis_conn)
    assert len(_outbox(db, tenant.id)) == 3
    assert db.execute("SELECT count(*) FROM segment_events WHERE emitted_at IS NULL").fetchone()[0] == 0

    deliver()
    assert wait_until(lambda: len(rx.requests) == 3, 20)
    got = []
    for headers, body in rx.requests:
        payload = Webhook(dest["secret"]).verify(body, headers)
        data = payload["data"]
        assert data["segment_id"] == seg["id"] and data["segment_name"] == "Pro" and data["at"]
        got.append((headers["webhook-id"], payload["type"], data["profile_id"]))
    assert sorted(got) == sorted((segment_message_id(i), t, p) for (i,), (t, p) in zip(history, expected, strict=True))
    assert wait_until(lambda: {d["status"] for d in deliveries(admin, tenant, dest["id"])} == {"delivered"}, 10)


def test_segment_messages_are_consent_gated_and_tenants_apart(admin, tenant, new_tenant, ingest_client, drain,  # noqa: F811
                                                              db, settings, redis_conn):
    other = new_tenant()
    gated = make_destination(admin, tenant, "http://127.0.0.1:9/gated", topics=SEGMENT_TOPICS, consent="email")
    elsewhere = make_destination(admin, other, "http://127.0.0.1:9/other", topics=["segment.entered"])
    ingest_and_drain(ingest_client, drain, tenant.write_key,
                     event("Signed Up", ("external_id", "u-1"), traits={"vip": True}))
    seg = admin.post("/api/v1/cdp/segments", headers=auth(tenant.api_key), json={
        "name": "VIP", "rules": {"all": [{"trait": "vip", "op": "eq", "value": True}]}}).json()
    assert seg["size"] == 1
    emit_audience_messages(db, redis_conn)
    rows = db.execute("SELECT tenant_id::text, destination_id::text, topic, profile_id FROM deliveries").fetchall()
    assert [(t, d, topic) for t, d, topic, _ in rows] == [(tenant.id, gated["id"], "segment.entered")]
    assert rows[0][3] is not None  # the delivery process judges the profile's consent
    assert elsewhere["id"] not in {d for _, d, _, _ in rows}


def test_anomalies_are_delivered_once_ungated(admin, tenant, deliver, receivers, db, settings,  # noqa: F811
                                              redis_conn):
    rx = Receiver(200)
    receivers.append(rx)
    # Gated on consent: anomaly.detected carries no profile and is never gated.
    dest = make_destination(admin, tenant, rx.url, topics=["anomaly.detected"], consent="ads")
    ensure_partitions(db, {month_start(END - timedelta(weeks=w)) for w in range(6)})
    day = END - timedelta(hours=24)
    for week in range(1, 5):
        _fill(db, tenant.id, tenant.source_id, day - timedelta(weeks=week), 24, 20)
    _fill(db, tenant.id, tenant.source_id, day, 24, 20)
    spike_hour = day + timedelta(hours=5)
    _fill(db, tenant.id, tenant.source_id, spike_hour, 1, 40)

    detect_anomalies(db, settings, now=END + timedelta(minutes=7))
    emit_audience_messages(db, redis_conn)
    # A later run updates the figures and sends nothing new.
    detect_anomalies(db, settings, now=END + timedelta(minutes=9))
    emit_audience_messages(db, redis_conn)
    assert [t for _, t, _ in _outbox(db, tenant.id)] == ["anomaly.detected"]

    deliver()
    assert wait_until(lambda: len(rx.requests) == 1, 20)
    headers, body = rx.requests[0]
    payload = Webhook(dest["secret"]).verify(body, headers)
    assert payload["type"] == "anomaly.detected"
    assert payload["data"] == {"source_id": tenant.source_id, "hour": spike_hour.isoformat(), "observed": 60,
                               "expected": 20, "score": payload["data"]["score"], "kind": "spike"}
    assert payload["data"]["score"] >= settings.anomaly_threshold
    assert wait_until(lambda: [d["status"] for d in deliveries(admin, tenant, dest["id"])] == ["delivered"], 10)


def test_changes_nobody_hears_are_written_as_emitted(admin, tenant, ingest_client, drain, db, settings,  # noqa: F811
                                                     redis_conn):
    seg = admin.post("/api/v1/cdp/segments", headers=auth(tenant.api_key), json={
        "name": "VIP", "rules": {"all": [{"trait": "vip", "op": "eq", "value": True}]}}).json()
    ingest_and_drain(ingest_client, drain, tenant.write_key,
                     event("Signed Up", ("external_id", "q-1"), traits={"vip": True}))
    upkeep_audiences(db, settings, redis_conn)  # no destination, no stream listener
    rows = db.execute("SELECT kind, emitted_at IS NOT NULL FROM segment_events WHERE segment_id = %s",
                      (seg["id"],)).fetchall()
    assert rows == [("entered", True)]

    make_destination(admin, tenant, "http://127.0.0.1:9/hook", topics=["segment.exited"])
    ingest_and_drain(ingest_client, drain, tenant.write_key,
                     event("Changed", ("external_id", "q-1"), traits={"vip": False}))
    upkeep_audiences(db, settings, redis_conn)
    pending = db.execute("SELECT kind FROM segment_events WHERE segment_id = %s AND emitted_at IS NULL",
                         (seg["id"],)).fetchall()
    assert pending == [("exited",)]
    emit_audience_messages(db, redis_conn)
    assert [t for _, t, _ in _outbox(db, tenant.id)] == ["segment.exited"]
