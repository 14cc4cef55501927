"""The live stream (CONTRACT 7): a WebSocket client of the read API receives the messages a
worker commits, through Redis pub/sub; authentication by header or first message, topic
filter, and the close codes."""

from __future__ import annotations

import asyncio
import json
import time
import uuid

import pytest
from litestar.exceptions import WebSocketDisconnect
from litestar.testing import TestClient
from test_read_support import auth, event, ingest_and_drain
from test_reliability_support import wait_until

from stratum.admin import create_operator, create_tenant_key, revoke_key
from stratum.queue.deliveries import stream_channel, stream_clients_key

PATH = "/api/v1/cdp/stream"


@pytest.fixture
def client(settings, redis_conn, db):
    from read_api.app import create_app

    with TestClient(app=create_app(settings.replace(stream_max_clients_per_tenant=2))) as c:
        yield c


def _subscribed(redis_conn, tenant_id: str) -> bool:
    ((_, count),) = redis_conn.pubsub_numsub(stream_channel(tenant_id))
    return count > 0


def test_stream_pushes_committed_events(client, tenant, ingest_client, drain, redis_conn):
    with client.websocket_connect(f"{PATH}?topics=event.received,consent.updated",
                                  headers=auth(tenant.api_key)) as ws:
        assert wait_until(lambda: _subscribed(redis_conn, tenant.id), 5)
        (event_id,) = ingest_and_drain(ingest_client, drain, tenant.write_key,
                                       event("Ping", ("anonymous_id", "live-1"), consent={"analytics": True}))
        messages = [json.loads(ws.receive_text(timeout=5)) for _ in range(2)]
    assert sorted(m["type"] for m in messages) == ["consent.updated", "event.received"]
    (received,) = [m for m in messages if m["type"] == "event.received"]
    assert received["data"]["event_id"] == event_id and received["data"]["profile_id"]


def test_key_in_the_first_message_and_topic_filter(client, tenant, ingest_client, drain, redis_conn):
    with client.websocket_connect(f"{PATH}?topics=consent.updated") as ws:
        ws.send_text(json.dumps({"authorization": f"Bearer {tenant.api_key}"}))
        assert wait_until(lambda: _subscribed(redis_conn, tenant.id), 5)
        ingest_and_drain(ingest_client, drain, tenant.write_key, event("Ping", ("anonymous_id", "live-2")),
                         event("Ping", ("anonymous_id", "live-3"), consent={"ads": False}))
        message = json.loads(ws.receive_text(timeout=5))
    assert message["type"] == "consent.updated" and message["data"]["consents"] == {"ads": False}


def _close_code(client, path: str, headers: dict | None = None, first: dict | None = None) -> int:
    with pytest.raises(WebSocketDisconnect) as exc, client.websocket_connect(path, headers=headers or {}) as ws:
        if first is not None:
            ws.send_text(json.dumps(first))
        ws.receive_text(timeout=10)
    return exc.value.code


def test_close_codes(client, tenant, new_tenant, db, redis_conn):
    with db.transaction():
        operator = create_operator(db, "ops").key
    assert _close_code(client, PATH, auth("sk_not-a-key")) == 4401
    assert _close_code(client, PATH, first={"authorization": "Bearer sk_not-a-key"}) == 4401
    assert _close_code(client, PATH, first={"hello": 1}) == 4401
    assert _close_code(client, PATH, auth(operator)) == 4403
    assert _close_code(client, f"{PATH}?topics=event.received,nope", auth(tenant.api_key)) == 4400
    other = new_tenant()
    with client.websocket_connect(PATH, headers=auth(tenant.api_key)), \
            client.websocket_connect(PATH, headers=auth(tenant.api_key)):
        # a client counts once registered, just after the upgrade
        assert wait_until(lambda: redis_conn.zcard(stream_clients_key(tenant.id)) == 2, 5)
        assert _close_code(client, PATH, auth(tenant.api_key)) == 4429  # the cap is 2 here
        with client.websocket_connect(PATH, headers=auth(other.api_key)):
            pass  # another tenant's cap is its own


def test_revoked_key_is_closed_within_a_second(client, tenant, db):
    with db.transaction():
        created = create_tenant_key(db, uuid.UUID(tenant.id), "read")
    with pytest.raises(WebSocketDisconnect) as exc, \
            client.websocket_connect(PATH, headers=auth(created.key)) as ws:
        with db.transaction():
            revoke_key(db, created.key_id)
        revoked_at = time.monotonic()
        ws.receive_text(timeout=5)
    assert exc.value.code == 4401
    assert time.monotonic() - revoked_at < 3  # 1 s key cache + 0.5 s recheck, with slack for a loaded machine


def test_a_client_too_far_behind_is_dropped():
    from read_api.stream import MAX_BEHIND, StreamClient

    async def run() -> tuple[bool, int]:
        c = StreamClient(frozenset({"event.received"}))
        for _ in range(MAX_BEHIND + 1):
            c.offer("event.received", b"{}")
        c.offer("profile.created", b"{}")  # filtered out, never counted
        return c.overflow.is_set(), c.queue.qsize()

    assert asyncio.run(run()) == (True, MAX_BEHIND)


def test_bad_header_key_is_401_before_the_upgrade_on_a_real_server(settings, tmp_path, redis_conn, db):
    """Granian supports the ASGI WebSocket denial response: the refusal is a plain HTTP 401."""
    import base64
    import os
    import signal
    import socket
    import subprocess
    import sys

    from test_reliability_support import ROOT, stop_process, worker_env

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with open(tmp_path / "read-api.log", "wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "stratum.cli", "read-api", "--port", str(port)], cwd=ROOT,
                                env=worker_env(settings), stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
    try:
        def answer() -> bytes:
            with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
                key = base64.b64encode(os.urandom(16)).decode()
                s.sendall((f"GET {PATH} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                           f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
                           "Authorization: Bearer sk_not-a-key\r\n\r\n").encode())
                return s.recv(4096)

        def up() -> bool:
            try:
                return bool(answer())
            except OSError:
                return False

        assert wait_until(up, 30)
        reply = answer()
        assert reply.startswith(b"HTTP/1.1 401"), reply[:100]
        assert b'"code":"invalid_api_key"' in reply
    finally:
        stop_process(proc, signal.SIGTERM)
