"""The unchanged official SDKs against a real ingest server process (CONTRACT 4.2, 4.3).

segment-analytics-python (``segment.analytics``) and rudder-sdk-python
(``rudderstack.analytics``) post to ``http://127.0.0.1:PORT/v1/batch`` of a
``stratum ingest-api`` subprocess, and ``posthog`` to its ``/batch/``; the in-process worker (``drain``) then stores the
events in Postgres, where each must appear exactly once.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import STORED_KEY_SQL

from core.identifiers import hash_normalized

segment_analytics = pytest.importorskip("segment.analytics")
rudder_analytics = pytest.importorskip("rudderstack.analytics")
posthog_sdk = pytest.importorskip("posthog")

ROOT = Path(__file__).resolve().parent.parent
START_DEADLINE_S = 30.0


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str, timeout: float = 1.0) -> int:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status
    except urllib.error.HTTPError as exc:
        return exc.code


@dataclass
class Server:
    base: str
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


@pytest.fixture(scope="module")
def ingest_server(settings):
    """``python -m stratum.cli ingest-api`` on a free port, configured like the test settings."""
    port = _free_port()
    env = {
        **os.environ,
        "STRATUM_DATABASE_URL": settings.database_url,
        "STRATUM_REDIS_URL": settings.redis_url,
        "STRATUM_QUEUE_NAME": settings.queue_name,
        "STRATUM_DEFAULT_RATE_LIMIT_PER_S": "0",
    }
    log = tempfile.NamedTemporaryFile(prefix="stratum-ingest-", suffix=".log", delete=False)  # noqa: SIM115
    proc = subprocess.Popen(
        [sys.executable, "-m", "stratum.cli", "ingest-api", "--host", "127.0.0.1", "--port", str(port)],
        cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"

    def output() -> str:
        log.flush()
        return Path(log.name).read_text(errors="replace")[-4000:]

    try:
        deadline = time.monotonic() + START_DEADLINE_S
        while True:
            if proc.poll() is not None:
                pytest.fail(f"ingest server exited with {proc.returncode}:\n{output()}")
            try:
                if _get(f"{base}/health") == 200:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"ingest server not healthy within {START_DEADLINE_S} s:\n{output()}")
            time.sleep(0.1)
        yield Server(base, Path(log.name))
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)  # the server and the workers it forked
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=5)
        log.close()
        os.unlink(log.name)


def _count(db, tenant_id: str, dedupe: str) -> int:
    return db.execute("SELECT count(*) FROM events WHERE tenant_id = %s AND dedupe_key = " + STORED_KEY_SQL,
                      (tenant_id, dedupe)).fetchone()[0]


def _event(db, tenant_id: str, dedupe: str):
    return db.execute("SELECT event_type, event_name, profile_id::text FROM events"
                      " WHERE tenant_id = %s AND dedupe_key = " + STORED_KEY_SQL, (tenant_id, dedupe)).fetchone()


def _profile_of(db, tenant_id: str, id_type: str, value: str) -> str | None:
    row = db.execute("SELECT profile_id::text FROM profile_identifiers WHERE tenant_id = %s AND type = %s AND hash = %s",
                     (tenant_id, id_type, hash_normalized(id_type, value))).fetchone()
    return row[0] if row else None


def _flush_within(client, seconds: float) -> None:
    """``client.flush()`` blocks until the consumer thread has sent everything; bound it."""
    t = threading.Thread(target=client.flush, daemon=True)
    t.start()
    t.join(seconds)
    assert not t.is_alive(), f"SDK flush did not finish within {seconds} s"


def _assert_stored_once(db, tenant_id: str, sent: dict[str, tuple[str, str]]) -> None:
    for message_id, (etype, name) in sent.items():
        assert _count(db, tenant_id, message_id) == 1, (message_id, etype)
        row = _event(db, tenant_id, message_id)
        assert row[:2] == (etype, name), (message_id, row)


# --------------------------------------------------------------------------- Segment

def test_segment_sdk_sync_mode(ingest_server, tenant, drain, db):
    errors: list = []
    client = segment_analytics.Client(tenant.write_key, host=ingest_server.base, sync_mode=True,
                                      on_error=lambda e, batch: errors.append(e), max_retries=0, timeout=10)
    user, anon = f"seg-user-{uuid.uuid4().hex[:8]}", f"seg-anon-{uuid.uuid4().hex[:8]}"
    sent: dict[str, tuple[str, str]] = {}

    ok, m = client.identify(user, {"email": "Seg.User@Example.com", "name": "Seg"}, anonymous_id=anon)
    assert ok
    sent[m["messageId"]] = ("identify", "identify")
    ok, m = client.track(user, "Order Completed", {"revenue": 12.5, "currency": "EUR"})
    assert ok
    sent[m["messageId"]] = ("track", "Order Completed")
    ok, m = client.page(user, category="Docs", name="Pricing", properties={"url": "https://x.test/pricing"})
    assert ok
    sent[m["messageId"]] = ("page", "Pricing")
    ok, m = client.screen(user, name="Settings")
    assert ok
    sent[m["messageId"]] = ("screen", "Settings")
    ok, m = client.alias(anon, user)
    assert ok
    sent[m["messageId"]] = ("alias", "alias")
    ok, m = client.group(user, "group-1", {"name": "Acme Inc", "plan": "enterprise"})
    assert ok
    sent[m["messageId"]] = ("group", "group")
    ok, m = client.track(anonymous_id=anon, event="Anonymous Click", message_id="seg-custom-message-id")
    assert ok
    sent["seg-custom-message-id"] = ("track", "Anonymous Click")
    client.flush()
    assert errors == []

    assert drain() == 0
    _assert_stored_once(db, tenant.id, sent)
    profile = _profile_of(db, tenant.id, "external_id", user)
    assert profile is not None
    assert _profile_of(db, tenant.id, "email", "seg.user@example.com") == profile
    assert _profile_of(db, tenant.id, "anonymous_id", anon) == profile


def test_segment_sdk_retry_of_the_same_message_is_stored_once(ingest_server, tenant, drain, db):
    client = segment_analytics.Client(tenant.write_key, host=ingest_server.base, sync_mode=True, max_retries=0,
                                      timeout=10)
    for _ in range(3):  # an SDK retrying after a lost answer resends the same messageId
        client.track("u-retry", "Retried", message_id="seg-retry-1")
    assert drain() == 0
    assert _count(db, tenant.id, "seg-retry-1") == 1


def test_segment_sdk_background_consumer_with_gzip(ingest_server, tenant, drain, db):
    errors: list = []
    client = segment_analytics.Client(tenant.write_key, host=ingest_server.base, gzip=True, upload_interval=0.05,
                                      max_retries=0, timeout=10, on_error=lambda e, batch: errors.append(e))
    try:
        sent = {}
        for i in range(150):  # more than one upload batch (100 per request)
            ok, m = client.track(f"bg-user-{i % 7}", "Bulk Event", {"i": i},
                                 context={"traits": {"email": f"bg{i % 7}@example.com"}})
            assert ok
            sent[m["messageId"]] = ("track", "Bulk Event")
        _flush_within(client, 20)
    finally:
        for consumer in client.consumers:
            consumer.pause()
    assert errors == []
    assert drain() == 0
    _assert_stored_once(db, tenant.id, sent)
    assert _profile_of(db, tenant.id, "external_id", "bg-user-3") == _profile_of(db, tenant.id, "email",
                                                                               "bg3@example.com")


def test_segment_sdk_reports_a_bad_write_key_as_an_api_error(ingest_server, tenant):
    client = segment_analytics.Client("wk_not_a_key", host=ingest_server.base, sync_mode=True, max_retries=0, timeout=10)
    from segment.analytics.request import APIError

    with pytest.raises(APIError) as info:
        client.track("u", "x")
    # the SDK parsed our error body: a code and a message, not "unknown"
    assert info.value.status == 401
    assert info.value.code == "invalid_write_key"
    assert info.value.message


# --------------------------------------------------------------------------- RudderStack

def test_rudder_sdk_sync_mode(ingest_server, tenant, drain, db):
    errors: list = []
    client = rudder_analytics.Client(tenant.write_key, host=ingest_server.base, sync_mode=True,
                                     on_error=lambda e, batch: errors.append(e), max_retries=0, timeout=10)
    assert client.gzip is True  # the default: Basic auth + gzip body
    user, anon = f"rs-user-{uuid.uuid4().hex[:8]}", f"rs-anon-{uuid.uuid4().hex[:8]}"
    sent: dict[str, tuple[str, str]] = {}

    # rudder-sdk-python moves identify traits to context.traits
    ok, m = client.identify(user, {"email": "RS.User@Example.com", "phone": "+1 650 555 1212"}, anonymous_id=anon)
    assert ok
    sent[m["messageId"]] = ("identify", "identify")
    ok, m = client.track(user, "Product Viewed", {"sku": "A-1"})
    assert ok
    sent[m["messageId"]] = ("track", "Product Viewed")
    ok, m = client.page(user, category="Shop", name="Product", properties={"path": "/p/a-1"})
    assert ok
    sent[m["messageId"]] = ("page", "Product")
    ok, m = client.alias(anon, user)
    assert ok
    sent[m["messageId"]] = ("alias", "alias")
    ok, m = client.group(user, "rs-group", {"name": "Rudder Co"})
    assert ok
    sent[m["messageId"]] = ("group", "group")
    assert errors == []

    assert drain() == 0
    _assert_stored_once(db, tenant.id, sent)
    profile = _profile_of(db, tenant.id, "external_id", user)
    assert profile is not None
    assert _profile_of(db, tenant.id, "email", "rs.user@example.com") == profile
    assert _profile_of(db, tenant.id, "phone", "+16505551212") == profile
    assert _profile_of(db, tenant.id, "anonymous_id", anon) == profile


def test_rudder_sdk_without_gzip(ingest_server, tenant, drain, db):
    client = rudder_analytics.Client(tenant.write_key, host=ingest_server.base, sync_mode=True, gzip=False,
                                     max_retries=0, timeout=10)
    ok, m = client.track("rs-plain", "Plain Event")
    assert ok
    assert drain() == 0
    assert _count(db, tenant.id, m["messageId"]) == 1


def test_rudder_sdk_background_consumer(ingest_server, tenant, drain, db):
    errors: list = []
    client = rudder_analytics.Client(tenant.write_key, host=ingest_server.base, upload_interval=0.05, max_retries=0,
                                     timeout=10, on_error=lambda e, batch: errors.append(e))
    try:
        sent = {}
        for i in range(120):
            ok, m = client.track(f"rbg-{i % 5}", "Rudder Bulk", {"i": i})
            assert ok
            sent[m["messageId"]] = ("track", "Rudder Bulk")
        _flush_within(client, 20)
    finally:
        for consumer in client.consumers:
            consumer.pause()
    assert errors == []
    assert drain() == 0
    _assert_stored_once(db, tenant.id, sent)


def test_rudder_sdk_reports_a_disabled_source(ingest_server, db):
    from conftest import make_tenant
    from rudderstack.analytics.request import APIError

    t = make_tenant(db, "rs-disabled")
    db.execute("UPDATE sources SET active = false WHERE id = %s", (t.source_id,))
    client = rudder_analytics.Client(t.write_key, host=ingest_server.base, sync_mode=True, max_retries=0, timeout=10)
    with pytest.raises(APIError) as info:
        client.track("u", "x")
    assert info.value.status == 403
    assert info.value.code == "source_disabled"


def test_server_logs_hold_no_keys_or_personal_data(ingest_server, tenant):
    """CONTRACT 4.4: logs never contain raw email, phone, write keys or Authorization headers."""
    import base64
    import json

    email, phone = "log.secret@example.com", "+16505550123"
    basic = "Basic " + base64.b64encode(f"{tenant.write_key}:".encode()).decode()
    bodies = [
        json.dumps({"batch": [{"type": "identify", "userId": "u", "traits": {"email": email, "phone": phone}}]}),
        json.dumps({"batch": [{"type": "identify", "userId": None, "traits": {"email": email}}]}),
        '{"batch": [{"type": "track", "event": "x", "userId": "' + email + '", "properties": {"x": 1e400}}]}',
        '{"batch": [{"type": "track", "event": "x", "userId": "u", "properties": {"p": "' + phone + '", "x": '
        + "[" * 5000 + "]" * 5000 + "}}]}",
        '{"batch": [{"type": "track", "event": "x", "userId": "' + email + '", "properties": {"x": ' + str(2**70) + "}}]}",
        "not json " + email,
    ]
    for body in bodies:
        for headers in ({"Authorization": basic}, {"Authorization": f"Bearer {tenant.write_key}x"}):
            req = urllib.request.Request(f"{ingest_server.base}/v1/batch", data=body.encode(), method="POST",
                                         headers={"Content-Type": "application/json", **headers})
            try:
                urllib.request.urlopen(req, timeout=10).close()
            except urllib.error.HTTPError as exc:
                exc.close()
    time.sleep(0.3)  # let the server's log lines reach the file
    text = ingest_server.log()
    for secret in (tenant.write_key, basic.split()[1], email, phone, phone.lstrip("+")):
        assert secret not in text, f"server log contains {secret!r}"


# --------------------------------------------------------------------------- PostHog

def _posthog_client(key: str, base: str, errors: list, **kwargs):
    return posthog_sdk.Posthog(key, host=base, sync_mode=True, max_retries=0, timeout=10,
                               enable_local_evaluation=False, on_error=lambda e, batch: errors.append(e), **kwargs)


@pytest.mark.parametrize("use_gzip", [False, True])
def test_posthog_sdk_identify_alias_set_and_uuid_dedupe(ingest_server, tenant, drain, db, use_gzip):
    errors: list = []
    client = _posthog_client(tenant.write_key, ingest_server.base, errors, gzip=use_gzip)
    try:
        anon, user = f"ph-anon-{uuid.uuid4().hex[:8]}", f"ph-user-{uuid.uuid4().hex[:8]}"
        other = f"ph-alias-{uuid.uuid4().hex[:8]}"
        sent: dict[str, tuple[str, str]] = {}
        for name in ("$pageview", "Clicked"):
            sent[client.capture(name, distinct_id=anon, properties={"n": 1})] = (
                "page" if name == "$pageview" else "track", name)
        identify = client.capture("$identify", distinct_id=user,
                                  properties={"$anon_distinct_id": anon, "$set": {"plan": "pro"}})
        sent[identify] = ("identify", "$identify")
        sent[client.alias(previous_id=user, distinct_id=other)] = ("alias", "$create_alias")
        client.set(distinct_id=user, properties={"name": "Hog"})
        client.set_once(distinct_id=user, properties={"first_source": "sdk"})
        client.set_once(distinct_id=user, properties={"first_source": "later"})
        fixed = str(uuid.uuid4())
        for _ in range(3):  # a retry resends the same uuid
            client.capture("Retried", distinct_id=user, uuid=fixed)
        sent[fixed] = ("track", "Retried")
        client.flush()
    finally:
        client.shutdown()
    assert errors == []

    assert drain() == 0
    _assert_stored_once(db, tenant.id, sent)
    profile = _profile_of(db, tenant.id, "external_id", user)
    assert profile is not None
    for id_type, value in (("anonymous_id", anon), ("anonymous_id", user), ("anonymous_id", other)):
        assert _profile_of(db, tenant.id, id_type, value) == profile
    traits = db.execute("SELECT traits FROM profiles WHERE id = %s", (profile,)).fetchone()[0]
    assert {k: traits.get(k) for k in ("plan", "name", "first_source")} == {
        "plan": "pro", "name": "Hog", "first_source": "sdk"}


def test_posthog_sdk_historical_migration_lands(ingest_server, tenant, drain, db):
    errors: list = []
    client = _posthog_client(tenant.write_key, ingest_server.base, errors, historical_migration=True)
    try:
        event_uuid = client.capture("Old Order", distinct_id="ph-import-user", timestamp="2026-01-01T00:00:00Z")
        client.flush()
    finally:
        client.shutdown()
    assert errors == []
    assert drain() == 0
    assert _count(db, tenant.id, event_uuid) == 1
