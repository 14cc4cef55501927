"""The /ops JSON endpoints (read_api/ops.py) and the page shells, without a browser."""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime

import pytest

from read_api.pages import STATIC_DIR
from stratum.queue import events_queue

OPS_GETS = ["/api/v1/ops/status", "/api/v1/ops/failed"]
OPS_POSTS = ["/api/v1/ops/failed/some-job/replay", "/api/v1/ops/failed/replay-all"]


@pytest.fixture
def operator_key(db) -> str:
    from stratum.admin import create_operator

    with db.transaction():
        return create_operator(db, "ops-test").key


def _auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def _poison_job(settings, redis_conn, drain) -> str:
    job = events_queue(redis_conn, settings.queue_name).enqueue("workers.jobs.process_batch", b"\x93bad")
    assert drain() == 1
    return job.id


@pytest.mark.parametrize("path", OPS_GETS + OPS_POSTS)
def test_ops_endpoints_need_an_operator_key(read_client, tenant, path):
    call = read_client.get if path in OPS_GETS else read_client.post
    assert call(path).status_code == 401
    assert call(path, headers=_auth("not-a-key")).status_code == 401
    r = call(path, headers=_auth(tenant.api_key))
    assert r.status_code == 403, r.text
    assert r.json()["code"] == "operator_key_required"


def test_status_reports_queue_workers_throughput_and_dead_letters(read_client, ingest_client, tenant, operator_key,
                                                                   drain, redis_conn, settings):
    now = datetime.now(UTC).isoformat()
    events = [{"event_name": "Viewed", "event_time": now, "identifiers": [{"type": "anonymous_id", "value": f"a-{i}"}]}
              for i in range(6)]
    r = ingest_client.post("/api/v1/cdp/events", json={"events": events}, headers=_auth(tenant.write_key))
    assert r.status_code == 202, r.text
    # One Segment event with no usable identifier goes to the dead letters.
    r = ingest_client.post("/v1/batch", json={"batch": [
        {"type": "track", "event": "ok", "userId": "u-1", "messageId": "m-1"},
        {"type": "track", "event": "no id", "messageId": "m-2"},
    ]}, headers=_auth(tenant.write_key))
    assert r.status_code == 200, r.text

    body = read_client.get("/api/v1/ops/status", headers=_auth(operator_key)).json()
    queue = body["queues"][settings.queue_name]
    assert queue["queued"] == 2 and queue["oldest_queued_age_s"] >= 0
    assert body["workers"] == []
    assert [(d["tenant_id"], d["count"]) for d in body["dead_letters"]] == [(tenant.id, 1)]
    assert body["dead_letters"][0]["latest_at"]

    assert drain() == 0
    body = read_client.get("/api/v1/ops/status", headers=_auth(operator_key)).json()
    assert body["queues"][settings.queue_name]["queued"] == 0
    # 7 events stored, all received within the last minute.
    assert body["throughput"]["events_in_per_s"] == pytest.approx(7 / 60, abs=0.01)
    assert body["throughput"]["window_s"] == 60


def test_status_lists_a_registered_worker(read_client, operator_key, redis_conn, settings):
    from workers.worker import build_worker

    worker = build_worker(settings, redis_conn)
    worker.register_birth()
    try:
        workers = read_client.get("/api/v1/ops/status", headers=_auth(operator_key)).json()["workers"]
        assert [w["name"] for w in workers] == [worker.name]
        assert workers[0]["queues"] == [settings.queue_name, settings.import_queue]  # the import lane last
        assert workers[0]["alive"] is False  # no heartbeat thread in this test
    finally:
        worker.register_death()


def test_failed_job_is_listed_with_its_reason_and_replayed(read_client, operator_key, settings, redis_conn, drain):
    job_id = _poison_job(settings, redis_conn, drain)
    body = read_client.get("/api/v1/ops/failed", headers=_auth(operator_key)).json()
    assert body["total"] == 1
    [failed] = body["failed"]
    assert failed["job_id"] == job_id
    assert failed["reason"] not in ("", "unknown")
    assert "Error" in failed["reason"]  # the exception, e.g. msgspec.ValidationError: ...
    assert failed["ended_at"] and failed["worker_name"]

    r = read_client.post(f"/api/v1/ops/failed/{job_id}/replay", headers=_auth(operator_key))
    assert r.status_code == 200, r.text
    assert r.json() == {"replayed": 1, "not_replayed": []}
    queue = events_queue(redis_conn, settings.queue_name)
    assert queue.job_ids == [job_id]
    assert read_client.get("/api/v1/ops/failed", headers=_auth(operator_key)).json()["total"] == 0

    # Already replayed: nothing to do, and it says so.
    r = read_client.post(f"/api/v1/ops/failed/{job_id}/replay", headers=_auth(operator_key))
    assert r.status_code == 404 and r.json()["code"] == "no_such_failed_job"


def test_replay_all_and_unknown_ids(read_client, operator_key, settings, redis_conn, drain):
    first = _poison_job(settings, redis_conn, drain)
    second = events_queue(redis_conn, settings.queue_name).enqueue("workers.jobs.process_batch", b"\x93bad").id
    assert drain() == 2
    r = read_client.post("/api/v1/ops/failed/replay-all", headers=_auth(operator_key))
    assert r.status_code == 200 and r.json()["replayed"] == 2
    assert sorted(events_queue(redis_conn, settings.queue_name).job_ids) == sorted([first, second])
    assert read_client.post("/api/v1/ops/failed/replay-all", headers=_auth(operator_key)).json()["replayed"] == 0
    assert read_client.post("/api/v1/ops/failed/no-such-job/replay", headers=_auth(operator_key)).status_code == 404
    r = read_client.get("/api/v1/ops/failed", params={"limit": 0}, headers=_auth(operator_key))
    assert r.status_code == 400 and r.json()["code"] == "invalid_limit"


@pytest.mark.parametrize("path", ["/cdp-calculator", "/profiles", "/profiles/any-id", "/ops"])
def test_page_shells_are_public_and_locked_down(read_client, path):
    r = read_client.get(path)
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/html")
    csp = r.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "connect-src 'self'" in csp
    # A shell carries no data: just markup and same-origin module scripts.
    scripts = re.findall(r"<script[^>]*>", r.text)
    assert scripts and all('src="/pages/static/' in s for s in scripts)


def test_static_assets_are_served_and_never_load_from_the_internet(read_client):
    names = sorted(p.name for p in STATIC_DIR.iterdir())
    assert {"roi.js", "graph.js", "common.js", "style.css"} <= set(names)
    for name in names:
        text = (STATIC_DIR / name).read_text()
        # The SVG namespace is a name, not a fetch; anything else absolute would need the internet.
        urls = set(re.findall(r"https?://[^\s\"'`)]+", text)) - {"http://www.w3.org/2000/svg"}
        assert not urls, f"{name} references {urls}"
        if name.endswith(".js"):
            r = read_client.get(f"/pages/static/{name}")
            assert r.status_code == 200 and "javascript" in r.headers["content-type"]


def test_events_out_per_s_is_measured_between_samples(read_client, ingest_client, tenant, operator_key, drain):
    def out_rate():
        return read_client.get("/api/v1/ops/status", headers=_auth(operator_key)).json()["throughput"]["events_out_per_s"]

    out_rate()  # first sample of this process
    now = datetime.now(UTC).isoformat()
    r = ingest_client.post("/api/v1/cdp/events", json={"events": [
        {"event_name": "Viewed", "event_time": now, "identifiers": [{"type": "anonymous_id", "value": f"o-{i}"}]}
        for i in range(50)]}, headers=_auth(tenant.write_key))
    assert r.status_code == 202, r.text
    assert drain() == 0
    # Postgres publishes a busy backend's table counters about once a second, an idle one's
    # after about 10 s (PGSTAT_IDLE_INTERVAL): a later sample sees the inserts.
    deadline = time.monotonic() + 25
    rates = []
    while time.monotonic() < deadline:
        time.sleep(1.1)
        rates.append(out_rate())
        if rates[-1]:
            break
    assert rates[-1] and rates[-1] > 0, rates
