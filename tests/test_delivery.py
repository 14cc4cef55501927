"""Webhook delivery against real processes (CONTRACT 7): a ``stratum deliver`` child process
sends to receivers listening on loopback in this process; events go through the real ingest
API and an in-process worker. Signatures are checked with ``standardwebhooks`` as a receiver
would check them."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest
from litestar.testing import TestClient
from standardwebhooks import Webhook
from test_read_support import auth, event, ingest_and_drain
from test_reliability_support import ROOT, stop_process, wait_until, worker_env

from workers.delivery_claims import BODIES_SQL
from workers.outbox import forget_routes

SECRET_KEY = "delivery-test-secret-key"


class Receiver:
    """A loopback webhook receiver: answers each request with the next of ``replies``
    (the last one repeats); ``"hang"`` holds the request until the receiver closes."""

    def __init__(self, *replies: int | str, retry_after: str | None = None) -> None:
        self.replies = list(replies) or [200]
        self.retry_after = retry_after
        self.requests: list[tuple[dict[str, str], bytes]] = []
        self.released = threading.Event()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                receiver.requests.append(({k.lower(): v for k, v in self.headers.items()}, body))
                reply = receiver.replies[min(len(receiver.requests), len(receiver.replies)) - 1]
                if reply == "hang":
                    receiver.released.wait(30)
                    return
                self.send_response(int(reply))
                if receiver.retry_after and int(reply) >= 400:
                    self.send_header("Retry-After", receiver.retry_after)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.released.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receivers() -> Iterator[list[Receiver]]:
    made: list[Receiver] = []
    yield made
    for r in made:
        r.close()


@pytest.fixture
def admin(settings, redis_conn, db):
    from read_api.app import create_app

    app = create_app(settings.replace(destinations_allow_private=True, secret_key=SECRET_KEY))
    with TestClient(app=app) as client:
        yield client


@pytest.fixture
def deliver(settings, tmp_path):
    """Start ``stratum deliver`` child processes; all are stopped (SIGTERM) after the test."""
    procs: list[subprocess.Popen] = []

    def start(allow_private: bool = True, **env: str) -> subprocess.Popen:
        with open(tmp_path / f"deliver-{len(procs)}.log", "ab") as log:
            proc = subprocess.Popen(
                [sys.executable, "-m", "stratum.cli", "deliver"], cwd=ROOT, stdin=subprocess.DEVNULL, stdout=log,
                stderr=subprocess.STDOUT, env=worker_env(
                    settings, STRATUM_DESTINATIONS_ALLOW_PRIVATE=str(allow_private).lower(),
                    STRATUM_SECRET_KEY=SECRET_KEY, STRATUM_DELIVERY_POLL_INTERVAL_S="0.05", **env))
        procs.append(proc)
        return proc

    yield start
    for p in procs:
        stop_process(p, signal.SIGTERM)


def make_destination(admin, tenant, url: str, **fields) -> dict:
    body = {"name": f"d-{url[-10:]}-{len(fields)}", "url": url, "topics": ["event.received"], **fields}
    r = admin.post("/api/v1/cdp/destinations", json=body, headers=auth(tenant.api_key))
    assert r.status_code == 201, r.text
    forget_routes()  # the in-process worker sees it at once
    return r.json()


def deliveries(admin, tenant, destination_id: str, **query) -> list[dict]:
    r = admin.get(f"/api/v1/cdp/destinations/{destination_id}/deliveries", params=query, headers=auth(tenant.api_key))
    assert r.status_code == 200, r.text
    return r.json()["deliveries"]


def test_delivered_messages_verify_with_standardwebhooks(admin, tenant, ingest_client, drain, deliver, receivers):
    rx = Receiver(200)
    receivers.append(rx)
    dest = make_destination(admin, tenant, rx.url)
    (event_id,) = ingest_and_drain(ingest_client, drain, tenant.write_key,
                                   event("Order Completed", ("email", "ana@example.com"), properties={"total": 5}))
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        metrics_port = probe.getsockname()[1]
    deliver(STRATUM_DELIVER_METRICS_PORT=str(metrics_port))
    assert wait_until(lambda: len(rx.requests) == 1, 20)
    headers, body = rx.requests[0]
    payload = Webhook(dest["secret"]).verify(body, headers)
    assert headers["webhook-id"] == f"msg_{event_id}"
    assert payload["type"] == "event.received"
    assert payload["data"]["event_id"] == event_id and payload["data"]["profile_id"]
    assert payload["data"]["properties"] == {"total": 5}
    assert "ana@example.com" not in body.decode()
    with pytest.raises(Exception):  # noqa: B017 - any verification failure
        Webhook(dest["secret"]).verify(body + b" ", headers)
    assert wait_until(lambda: deliveries(admin, tenant, dest["id"])[0]["status"] == "delivered", 10)
    (d,) = deliveries(admin, tenant, dest["id"])
    assert (d["message_id"], d["attempts"], d["last_status_code"], d["topic"]) == (
        f"msg_{event_id}", 1, 200, "event.received")
    assert d["delivered_at"] and d["next_attempt_at"] is None
    metrics = httpx.get(f"http://127.0.0.1:{metrics_port}/metrics").text
    assert f'stratum_webhook_attempts_total{{destination="{dest["id"]}",outcome="delivered"}} 1.0' in metrics


def test_batched_destination_gets_one_signed_request_with_each_message_and_its_id(
        admin, tenant, ingest_client, drain, deliver, receivers, db):
    """A destination that opts in (batch_size) gets its messages in one signed request; the
    consent gate still applies per message (one consent query per request)."""
    rx = Receiver(200)
    receivers.append(rx)
    dest = make_destination(admin, tenant, rx.url, batch_size=10, consent="analytics")
    ids = ingest_and_drain(ingest_client, drain, tenant.write_key,
                           event("Ping", ("anonymous_id", "b-1"), consent={"analytics": True}),
                           event("Ping", ("anonymous_id", "b-2"), consent={"analytics": True}, properties={"n": 2}),
                           event("Ping", ("anonymous_id", "b-3")))
    deliver()
    assert wait_until(lambda: len(rx.requests) == 1, 20)
    headers, body = rx.requests[0]
    payload = Webhook(dest["secret"]).verify(body, headers)
    assert payload["type"] == "batch" and headers["webhook-id"].startswith("msg_batch_")
    items = payload["data"]["messages"]
    assert sorted(m["id"] for m in items) == sorted(f"msg_{e}" for e in ids[:2])
    assert all(m["type"] == "event.received" and m["id"] == f"msg_{m['data']['event_id']}" for m in items)
    assert {"n": 2} in [m["data"]["properties"] for m in items]
    assert wait_until(lambda: sorted(d["status"] for d in deliveries(admin, tenant, dest["id"]))
                      == ["delivered", "delivered", "skipped"], 10)
    skipped = [d for d in deliveries(admin, tenant, dest["id"]) if d["status"] == "skipped"]
    assert [(d["message_id"], d["skip_reason"]) for d in skipped] == [(f"msg_{ids[2]}", "consent")]
    time.sleep(0.5)
    assert len(rx.requests) == 1


def test_legacy_sealed_secret_still_signs_and_is_resealed(admin, tenant, ingest_client, drain, deliver, receivers,
                                                          settings,
                                                          db):
    """A webhook secret stored by an earlier release (Fernet) keeps signing; ``stratum
    secrets reseal`` rewrites it in the current form, which signs the same."""
    import base64
    import hashlib

    from cryptography.fernet import Fernet

    rx = Receiver(200)
    receivers.append(rx)
    dest = make_destination(admin, tenant, rx.url)
    fernet = Fernet(base64.urlsafe_b64encode(hashlib.sha256(SECRET_KEY.encode()).digest()))
    db.execute("UPDATE destinations SET secret = %s WHERE id = %s",
               ("fernet:" + fernet.encrypt(dest["secret"].encode()).decode(), dest["id"]))
    ingest_and_drain(ingest_client, drain, tenant.write_key, event("Ping", ("anonymous_id", "legacy-1")))
    deliver()
    assert wait_until(lambda: len(rx.requests) == 1, 20)
    Webhook(dest["secret"]).verify(rx.requests[0][1], rx.requests[0][0])
    out = subprocess.run([sys.executable, "-m", "stratum.cli", "secrets", "reseal"], cwd=ROOT, capture_output=True,
                         text=True, timeout=60, env=worker_env(settings,
                                                               STRATUM_SECRET_KEY=SECRET_KEY))
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout.strip().splitlines()[-1])["destinations"] >= 1
    stored = db.execute("SELECT secret FROM destinations WHERE id = %s", (dest["id"],)).fetchone()[0]
    assert stored.startswith("aesgcm:v1:")
    ingest_and_drain(ingest_client, drain, tenant.write_key, event("Ping", ("anonymous_id", "legacy-2")))
    assert wait_until(lambda: len(rx.requests) == 2, 20)
    Webhook(dest["secret"]).verify(rx.requests[1][1], rx.requests[1][0])


def test_both_secrets_sign_after_rotation(admin, tenant, ingest_client, drain, deliver, receivers):
    rx = Receiver(200)
    receivers.append(rx)
    dest = make_destination(admin, tenant, rx.url)
    new = admin.post(f"/api/v1/cdp/destinations/{dest['id']}/rotate-secret", headers=auth(tenant.api_key)).json()
    ingest_and_drain(ingest_client, drain, tenant.write_key, event("Ping", ("anonymous_id", "rot-1")))
    deliver()
    assert wait_until(lambda: len(rx.requests) == 1, 20)
    headers, body = rx.requests[0]
    assert len(headers["webhook-signature"].split(" ")) == 2
    Webhook(dest["secret"]).verify(body, headers)
    Webhook(new["secret"]).verify(body, headers)


def test_failure_is_retried_with_the_same_id_and_body(admin, tenant, ingest_client, drain, deliver, receivers):
    rx = Receiver(503, 200, retry_after="1")
    receivers.append(rx)
    dest = make_destination(admin, tenant, rx.url)
    ingest_and_drain(ingest_client, drain, tenant.write_key, event("Ping", ("anonymous_id", "retry-1")))
    deliver()
    assert wait_until(lambda: len(rx.requests) == 1, 20)
    assert wait_until(lambda: deliveries(admin, tenant, dest["id"])[0]["status"] == "failed", 5)
    (failed,) = deliveries(admin, tenant, dest["id"])
    assert (failed["attempts"], failed["last_status_code"], failed["last_error"]) == (1, 503, "HTTP 503")
    assert wait_until(lambda: len(rx.requests) == 2, 20)  # the first retry comes within 10 s
    (h1, b1), (h2, b2) = rx.requests
    assert b1 == b2 and h1["webhook-id"] == h2["webhook-id"]
    Webhook(dest["secret"]).verify(b2, h2)
    assert wait_until(lambda: deliveries(admin, tenant, dest["id"])[0]["status"] == "delivered", 10)
    assert deliveries(admin, tenant, dest["id"])[0]["attempts"] == 2


def test_gone_deactivates_the_destination(admin, tenant, ingest_client, drain, deliver, receivers):
    rx = Receiver(410)
    receivers.append(rx)
    dest = make_destination(admin, tenant, rx.url)
    ingest_and_drain(ingest_client, drain, tenant.write_key, event("Ping", ("anonymous_id", "gone-1")))
    deliver()
    assert wait_until(lambda: deliveries(admin, tenant, dest["id"])[0]["status"] == "dead", 20)
    d = admin.get(f"/api/v1/cdp/destinations/{dest['id']}", headers=auth(tenant.api_key)).json()
    assert d["active"] is False
    assert deliveries(admin, tenant, dest["id"])[0]["last_status_code"] == 410
    assert len(rx.requests) == 1


def test_private_address_refused_at_attempt(admin, tenant, ingest_client, drain, deliver, receivers):
    rx = Receiver(200)
    receivers.append(rx)
    dest = make_destination(admin, tenant, rx.url)  # created while private addresses were allowed
    ingest_and_drain(ingest_client, drain, tenant.write_key, event("Ping", ("anonymous_id", "ssrf-1")))
    deliver(allow_private=False)
    assert wait_until(lambda: deliveries(admin, tenant, dest["id"])[0]["attempts"] >= 1, 20)
    d = deliveries(admin, tenant, dest["id"])[0]
    assert (d["status"], d["last_error"]) == ("failed", "destination_not_allowed")
    assert rx.requests == []


def test_a_hanging_receiver_does_not_delay_another(admin, tenant, ingest_client, drain, deliver, receivers):
    hang, good = Receiver("hang"), Receiver(200)
    receivers.extend([hang, good])
    slow = make_destination(admin, tenant, hang.url)
    make_destination(admin, tenant, good.url)
    ingest_and_drain(ingest_client, drain, tenant.write_key,
                     *(event("Ping", ("anonymous_id", f"iso-{i}")) for i in range(20)))
    deliver(STRATUM_DELIVERY_TIMEOUT_S="30")
    # All 20 reach the good receiver while the hanging one holds at most its 4 lanes' requests.
    assert wait_until(lambda: len(good.requests) == 20, 20)
    assert len(hang.requests) <= 4
    statuses = [d["status"] for d in deliveries(admin, tenant, slow["id"])]
    assert statuses.count("pending") == 20


def test_consent_gate_skips_without_consent(admin, tenant, ingest_client, drain, deliver, receivers, db):
    rx = Receiver(200)
    receivers.append(rx)
    dest = make_destination(admin, tenant, rx.url, consent="ads")
    ingest_and_drain(ingest_client, drain, tenant.write_key,
                     event("Ping", ("anonymous_id", "c-no"), consent={"ads": False}),
                     event("Ping", ("anonymous_id", "c-all"), consent={"all": True}),
                     event("Ping", ("anonymous_id", "c-none")))
    deliver()
    assert wait_until(lambda: all(d["status"] in ("delivered", "skipped")
                                  for d in deliveries(admin, tenant, dest["id"])), 20)
    got = {d["status"]: d for d in deliveries(admin, tenant, dest["id"])}
    statuses = sorted(d["status"] for d in deliveries(admin, tenant, dest["id"]))
    assert statuses == ["delivered", "skipped", "skipped"]
    assert got["skipped"]["skip_reason"] == "consent"
    assert len(rx.requests) == 1
    assert json.loads(rx.requests[0][1])["data"]["identifiers"][0]["type"] == "anonymous_id"


def test_outbox_rows_are_written_once_per_stored_event(admin, tenant, ingest_client, drain, redis_conn, settings, db):
    """A job run again after its transaction committed (a worker killed before RQ recorded
    the job as finished) stores nothing twice, and so queues no message twice."""
    from stratum.queue import layout
    from workers.jobs import persist_payloads

    dest = make_destination(admin, tenant, "http://127.0.0.1:9/never")
    r = ingest_client.post("/api/v1/cdp/events", headers=auth(tenant.write_key), json={"events": [
        event("Ping", ("anonymous_id", "once-1"), properties={"path": "C:\\new\ttab\nline \\N"}),
        event("Ping", ("anonymous_id", "once-2"))]})
    assert r.status_code == 202
    (job_id,) = redis_conn.lrange(layout.queue_key(settings.queue_name), 0, -1)
    payload = layout.payload_of(redis_conn.hget(layout.job_key(job_id.decode()), "data"))
    assert drain() == 0
    assert persist_payloads([payload])["stored"] == 0
    rows = db.execute("SELECT message_id FROM deliveries WHERE destination_id = %s ORDER BY 1",
                      (dest["id"],)).fetchall()
    assert sorted(m for (m,) in rows) == sorted(f"msg_{x['event_id']}" for x in r.json()["results"])
    bodies = [json.loads(b) for (_, b) in db.execute(BODIES_SQL, {"d": dest["id"], "ids": None}).fetchall()]
    assert {"path": "C:\\new\ttab\nline \\N"} in [b["data"]["properties"] for b in bodies]


def test_event_names_filter_and_inactive_destinations(admin, tenant, ingest_client, drain, db):
    only = make_destination(admin, tenant, "http://127.0.0.1:9/a", event_names=["Order Completed"])
    off = make_destination(admin, tenant, "http://127.0.0.1:9/b", active=False)
    ingest_and_drain(ingest_client, drain, tenant.write_key, event("Ping", ("anonymous_id", "f-1")),
                     event("Order Completed", ("anonymous_id", "f-1")))
    (d,) = deliveries(admin, tenant, only["id"])
    [(_, body)] = db.execute(BODIES_SQL, {"d": only["id"], "ids": [int(d["id"])]}).fetchall()
    assert json.loads(body)["data"]["event_name"] == "Order Completed"
    assert deliveries(admin, tenant, off["id"]) == []


def test_erasure_skips_undelivered_messages_and_drops_payloads(admin, tenant, ingest_client, drain, db):
    dest = make_destination(admin, tenant, "http://127.0.0.1:9/never")
    ingest_and_drain(ingest_client, drain, tenant.write_key, event("Ping", ("email", "erase-me@example.com")),
                     event("Ping", ("email", "keep-me@example.com")))
    pid = db.execute("SELECT profile_id FROM deliveries d WHERE destination_id = %s ORDER BY id LIMIT 1",
                     (dest["id"],)).fetchone()[0]
    assert admin.delete(f"/api/v1/cdp/profiles/{pid}", headers=auth(tenant.api_key)).status_code == 200
    # event.received rows carry no body: their payload is the stored event, which erasure deletes
    rows = db.execute("SELECT profile_id, status, skip_reason, body IS NULL AND event_time IS NULL FROM deliveries"
                      " WHERE destination_id = %s", (dest["id"],)).fetchall()
    assert sorted((r[0] == pid, r[1], r[2], r[3]) for r in rows) == [
        (False, "pending", None, False), (True, "skipped", "erased", True)]


def test_bulk_retry_of_dead_deliveries(admin, tenant, ingest_client, drain, deliver, receivers, db):
    rx = Receiver(200)
    receivers.append(rx)
    dest = make_destination(admin, tenant, rx.url)
    ingest_and_drain(ingest_client, drain, tenant.write_key, event("Ping", ("anonymous_id", "dead-1")),
                     event("Ping", ("anonymous_id", "dead-2")))
    # As if every retry had failed: dead, and not due.
    db.execute("UPDATE deliveries SET status = 'dead', attempts = 10, next_attempt_at = now() + interval '1 day'"
               " WHERE destination_id = %s", (dest["id"],))
    deliver()
    first = deliveries(admin, tenant, dest["id"], status="dead")
    assert len(first) == 2
    path = f"/api/v1/cdp/destinations/{dest['id']}/deliveries/retry"
    r = admin.post(path, json={"ids": [first[0]["id"]]}, headers=auth(tenant.api_key))
    assert r.json() == {"requeued": 1}
    assert wait_until(lambda: len(rx.requests) == 1, 20)
    assert admin.post(path, json={"status": "dead"}, headers=auth(tenant.api_key)).json() == {"requeued": 1}
    assert wait_until(lambda: len(deliveries(admin, tenant, dest["id"], status="delivered")) == 2, 20)
    r = admin.post(path, json={"status": "delivered"}, headers=auth(tenant.api_key))
    assert (r.status_code, r.json()["code"]) == (400, "invalid_status")


def test_replay_resends_stored_events_with_their_ids(admin, tenant, ingest_client, drain, deliver, receivers):
    from datetime import UTC, datetime, timedelta

    t0 = datetime.now(UTC) - timedelta(hours=2)
    ids = ingest_and_drain(ingest_client, drain, tenant.write_key,
                           *(event("Ping", ("anonymous_id", f"rp-{i}"), at=t0 + timedelta(minutes=i)) for i in range(5)),
                           event("Later", ("anonymous_id", "rp-late")))
    rx = Receiver(200)
    receivers.append(rx)
    dest = make_destination(admin, tenant, rx.url)  # created after the events: nothing queued for it
    assert deliveries(admin, tenant, dest["id"]) == []
    path = f"/api/v1/cdp/destinations/{dest['id']}/replay"
    window = {"from": (t0 - timedelta(seconds=1)).isoformat(), "to": (t0 + timedelta(minutes=30)).isoformat()}
    r = admin.post(path, json=window, headers=auth(tenant.api_key))
    assert (r.status_code, r.json()) == (202, {"queued": 5})
    r = admin.post(path, json=window, headers=auth(tenant.api_key))
    assert (r.status_code, r.json()["code"]) == (409, "replay_in_progress")
    deliver()
    assert wait_until(lambda: len(rx.requests) == 5, 20)
    assert sorted(h["webhook-id"] for h, _ in rx.requests) == sorted(f"msg_{i}" for i in ids[:5])
    for headers, body in rx.requests:
        Webhook(dest["secret"]).verify(body, headers)
    assert wait_until(lambda: admin.post(path, json=window, headers=auth(tenant.api_key)).status_code == 202, 10)


def test_delivery_queue_counts_and_retention(admin, tenant, ingest_client, drain, db):
    from stratum.queue.deliveries import delivery_queue_status
    from workers.outbox import purge_expired_deliveries

    dest = make_destination(admin, tenant, "http://127.0.0.1:9/never")
    ingest_and_drain(ingest_client, drain, tenant.write_key,
                     *(event("Ping", ("anonymous_id", f"q-{i}")) for i in range(4)))
    ids = [int(d["id"]) for d in deliveries(admin, tenant, dest["id"])]
    db.execute("UPDATE deliveries SET status = 'failed', next_attempt_at = now() + interval '1 minute' WHERE id = %s",
               (ids[0],))
    db.execute("UPDATE deliveries SET status = 'dead', created_at = now() - interval '31 days' WHERE id = %s",
               (ids[1],))
    db.execute("UPDATE deliveries SET status = 'delivered', created_at = now() - interval '8 days' WHERE id = %s",
               (ids[2],))
    counts = delivery_queue_status(db)
    assert (counts["queued"], counts["started"], counts["scheduled"], counts["failed"]) == (1, 0, 1, 1)
    assert purge_expired_deliveries(db) == 2
    assert sorted(int(d["id"]) for d in deliveries(admin, tenant, dest["id"])) == sorted([ids[0], ids[3]])


def test_deleting_a_destination_deletes_its_deliveries_and_retention_removes_stragglers(
        admin, tenant, ingest_client, drain, db):
    """``deliveries`` has no foreign keys: the delete removes the rows itself, and rows a
    worker wrote under a stale routing cache are purged by the retention job."""
    import uuid

    from workers.outbox import purge_expired_deliveries

    gone, kept = (make_destination(admin, tenant, f"http://127.0.0.1:9/{n}") for n in ("gone", "kept"))
    ingest_and_drain(ingest_client, drain, tenant.write_key, event("Ping", ("anonymous_id", "del-1")))
    assert admin.delete(f"/api/v1/cdp/destinations/{gone['id']}", headers=auth(tenant.api_key)).status_code == 200
    count = "SELECT count(*) FROM deliveries WHERE destination_id = %s"
    assert db.execute(count, (gone["id"],)).fetchone()[0] == 0
    assert db.execute(count, (kept["id"],)).fetchone()[0] == 1
    straggler = str(uuid.uuid4())
    db.execute("INSERT INTO deliveries (tenant_id, destination_id, message_id, topic) VALUES (%s, %s, 'msg_x',"
               " 'event.received')", (tenant.id, straggler))
    assert purge_expired_deliveries(db) == 1
    assert db.execute(count, (straggler,)).fetchone()[0] == 0
    assert db.execute(count, (kept["id"],)).fetchone()[0] == 1


def test_profile_topics_carry_a_profile(admin, tenant, ingest_client, drain, db, new_tenant):
    server = new_tenant(source_type="server")
    topics = ["profile.created", "profile.updated", "profile.merged", "consent.updated"]
    dest = make_destination(admin, server, "http://127.0.0.1:9/p", topics=topics)
    ingest_and_drain(ingest_client, drain, server.write_key,
                     event("Signed Up", ("email", "pa@example.com"), consent={"email": True}),
                     event("Ping", ("external_id", "u-9")))
    ingest_and_drain(ingest_client, drain, server.write_key,
                     event("Login", ("email", "pa@example.com"), ("external_id", "u-9")))

    def bodies(topic: str) -> list[dict]:
        rows = db.execute("SELECT body FROM deliveries WHERE destination_id = %s AND topic = %s ORDER BY id",
                          (dest["id"], topic)).fetchall()
        return [json.loads(b)["data"] for (b,) in rows]

    created = bodies("profile.created")
    assert len(created) == 2
    assert {"id", "lifecycle", "traits", "identifiers", "consents", "counters", "first_seen", "last_seen",
            "merged_from"} <= set(created[0])
    (merged,) = bodies("profile.merged")
    assert merged["merged_from"] in {c["id"] for c in created} and merged["id"] in {c["id"] for c in created}
    assert {i["type"] for i in merged["identifiers"]} == {"email", "external_id"}
    assert merged["consents"]["email"]["granted"] is True and merged["counters"]["events"] == 3
    (consent,) = bodies("consent.updated")
    assert consent["consents"] == {"email": True}
    assert [p["id"] for p in bodies("profile.updated")] == [merged["id"]]  # the survivor, in the second batch


def test_ops_shows_destination_health_and_the_breaker(admin, tenant, ingest_client, drain, deliver, receivers, db):
    from stratum.admin import create_operator

    rx = Receiver(500)
    receivers.append(rx)
    dest = make_destination(admin, tenant, rx.url)
    ingest_and_drain(ingest_client, drain, tenant.write_key,
                     *(event("Ping", ("anonymous_id", f"br-{i}")) for i in range(3)))
    with db.transaction():
        operator = create_operator(db, "ops").key
    deliver(STRATUM_DELIVERY_BREAKER_THRESHOLD="2", STRATUM_DELIVERY_MAX_IN_FLIGHT="1")

    def health() -> dict:
        r = admin.get("/api/v1/ops/destinations", headers=auth(operator))
        assert r.status_code == 200, r.text
        (row,) = [d for d in r.json()["destinations"] if d["id"] == dest["id"]]
        return {**row, "per_minute": r.json()["per_minute"]}

    assert wait_until(lambda: health()["breaker"] == "open", 20)
    assert len(rx.requests) == 2  # the breaker stopped the third request
    row = health()
    assert row["success_rate_1h"] == 0.0 and row["undelivered"] == 3 and row["tenant_name"]
    assert sum(m["failed"] for m in row["per_minute"]) == 2
    assert admin.get("/api/v1/ops/destinations", headers=auth(tenant.api_key)).status_code == 403
    db.execute("UPDATE deliveries SET status = 'dead' WHERE destination_id = %s", (dest["id"],))
    r = admin.post(f"/api/v1/ops/destinations/{dest['id']}/retry", headers=auth(operator))
    assert r.json() == {"requeued": 3}


def test_a_killed_delivery_process_loses_nothing(admin, tenant, ingest_client, drain, deliver, receivers):
    """kill -9 while a request is in flight: after the claim's lease another process sends the
    message again, with the same webhook-id, and records it delivered."""
    rx = Receiver("hang", 200)
    receivers.append(rx)
    dest = make_destination(admin, tenant, rx.url)
    (event_id,) = ingest_and_drain(ingest_client, drain, tenant.write_key, event("Ping", ("anonymous_id", "k9")))
    # 1 s timeout, 1 request in flight: the first process's claim is leased for
    # (16 + 1) x 1 s + 2 s = 19 s. (Should the kill come after the timeout, the row is failed
    # and retried instead: the same two requests either way.)
    fast = {"STRATUM_DELIVERY_TIMEOUT_S": "1", "STRATUM_DELIVERY_MAX_IN_FLIGHT": "1"}
    first = deliver(**fast)
    assert wait_until(lambda: len(rx.requests) == 1, 20, 0.01)
    stop_process(first)  # SIGKILL mid-request
    deliver(**fast)
    assert wait_until(lambda: len(rx.requests) == 2, 90)
    assert [h["webhook-id"] for h, _ in rx.requests] == [f"msg_{event_id}"] * 2
    assert wait_until(lambda: deliveries(admin, tenant, dest["id"])[0]["status"] == "delivered", 10)
