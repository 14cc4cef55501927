"""Verified identity for public write keys (CONTRACT 6), played end to end against the real
ingest API, Redis, a worker runtime and Postgres: identity secrets shown once, stored
encrypted, rotated with a 24 h overlap; signed claims verified, bad ones only warned about;
signatures never stored."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid

import pytest
from conftest import Tenant, make_tenant
from rq.job import Job
from test_read_support import auth, event, hash_of

from core.identity_signature import identity_signature
from core.schemas import decode_batch
from stratum import admin
from stratum.queue import MsgpackSerializer
from stratum.secret_storage import SecretUnreadable, decrypt_secret
from workers.prepare import PreparedEvent, prepare_batch
from workers.runtime import WorkerRuntime

SECRET_KEY = "test-secret-key-0123456789abcdefghijklmnopqrstuvwxyz"


@pytest.fixture
def tenant(db) -> Tenant:
    """This module is about website sources: the default tenant here has one."""
    return make_tenant(db, source_type="website")


def _queued(redis_conn, settings, rt: WorkerRuntime) -> list[PreparedEvent]:
    """What a worker would make of the queued jobs (without persisting them)."""
    out: list[PreparedEvent] = []
    for job_id in redis_conn.lrange(f"rq:queue:{settings.queue_name}", 0, -1):
        job = Job.fetch(job_id.decode(), connection=redis_conn, serializer=MsgpackSerializer)
        batch = decode_batch(job.args[0])
        config = rt.tenant_config(batch.tenant_id, batch.source_id)
        out += prepare_batch(batch, config.extra_blocked, config.source_identity(batch.source_id, batch.source_type))
    return out


def _fresh_runtime(settings, **changes) -> WorkerRuntime:
    return WorkerRuntime(settings.replace(**changes))


def _signed(secret: str, id_type: str, value: str, signature: object = None) -> dict:
    return {"type": id_type, "value": value,
            "signature": identity_signature(secret, id_type, value) if signature is None else signature}


def _text_of_stored_events(db, tenant_id: str) -> str:
    return json.dumps([r[0] for r in db.execute("SELECT to_jsonb(e)::text FROM events e WHERE tenant_id = %s",
                                                 (tenant_id,))])


def test_signed_claims_are_verified_and_bad_signatures_only_warn(ingest_client, tenant, settings, redis_conn,
                                                                  drain, db):
    secret = tenant.identity_secret
    wrong = identity_signature("ids_someone_else", "phone", "(650) 555-1212")
    body = {"events": [{
        "event_name": "Logged In", "event_time": event("x")["event_time"],
        "identifiers": [
            {"type": "anonymous_id", "value": "browser-1"},
            _signed(secret, "email", " Ada@Example.COM "),  # signed as sent, before trimming
            _signed(secret, "phone", "(650) 555-1212", wrong),
            _signed(secret, "external_id", "user-1", 12345),  # malformed: a number
        ]}]}
    r = ingest_client.post("/api/v1/cdp/events", json=body, headers=auth(tenant.write_key))
    assert r.status_code == 202 and r.json()["accepted"] == 1, r.text  # a bad signature never rejects

    rt = _fresh_runtime(settings)
    (prepared,) = _queued(redis_conn, settings, rt)
    assert prepared.protect is True
    assert prepared.verified == {("email", hash_of("email", "ada@example.com"))}
    warnings = [d["message"] for d in prepared.decisions if d["kind"] == "warning"]
    assert warnings == ["unverified phone claim: signature does not match",
                        "unverified external_id claim: signature is not 64 hex characters"]
    assert prepared.event.claims == []

    assert drain() == 0
    stored = _text_of_stored_events(db, tenant.id)
    assert "unverified phone claim" in stored
    for sig in (identity_signature(secret, "email", " Ada@Example.COM "), wrong):
        assert sig not in stored and sig.upper() not in stored


def test_segment_identity_signature_verifies_user_id_as_sent_and_is_not_stored(ingest_client, tenant, settings,
                                                                               redis_conn, drain, db):
    secret = tenant.identity_secret
    sig_text = identity_signature(secret, "external_id", " User-7 ")
    sig_number = identity_signature(secret, "external_id", "1e3")  # a number: its JSON text
    raw = (b'{"batch": ['
           b'{"type": "identify", "userId": " User-7 ", "traits": {"email": "u7@example.com"},'
           b' "context": {"identity_signature": "' + sig_text.upper().encode() + b'", "ip": "203.0.113.9"}},'
           b'{"type": "track", "event": "Paid", "userId": 1e3, "context": {"identity_signature": "'
           + sig_number.encode() + b'"}},'
           b'{"type": "track", "event": "Paid", "userId": "user-8", "context": {"identity_signature": "'
           + sig_text.encode() + b'"}}'
           b']}')
    r = ingest_client.post("/v1/batch", content=raw, headers={**auth(tenant.write_key), "Content-Type": "text/plain"})
    assert r.status_code == 200 and r.json() == {"success": True}, r.text

    first, number, mismatched = _queued(redis_conn, settings, _fresh_runtime(settings))
    assert first.verified == {("external_id", hash_of("external_id", "User-7"))}
    assert number.verified == {("external_id", hash_of("external_id", "1000"))}
    assert mismatched.verified == frozenset()
    assert "identity_signature" not in first.context and first.context["ip"] == "203.0.113.9"
    unverified = [d["message"] for e in (first, mismatched) for d in e.decisions if d["kind"] == "warning"]
    assert unverified == ["unverified email claim: no signature", "unverified external_id claim: signature does not match"]

    assert drain() == 0
    stored = _text_of_stored_events(db, tenant.id)
    assert "identity_signature" not in stored and sig_text not in stored and sig_text.upper() not in stored


@pytest.mark.parametrize("source_type", ["server", "crm"])
def test_server_side_sources_are_not_protected_and_not_warned(ingest_client, new_tenant, settings, redis_conn,
                                                             source_type):
    server = new_tenant(source_type=source_type)
    assert server.identity_secret is None
    ingest_client.post("/api/v1/cdp/events", headers=auth(server.write_key),
                       json={"events": [event("Paid", ("email", "s@example.com"))]})
    (prepared,) = _queued(redis_conn, settings, _fresh_runtime(settings))
    assert (prepared.protect, prepared.verified) == (False, frozenset())
    assert not [d for d in prepared.decisions if d["kind"] == "warning"]


def test_identity_verification_off_is_not_protected(ingest_client, read_client, tenant, settings, redis_conn):
    r = read_client.patch(f"/api/v1/cdp/sources/{tenant.source_id}", headers=auth(tenant.api_key),
                          json={"identity_verification": "off"})
    assert r.status_code == 200 and r.json()["identity_verification"] == "off", r.text
    body = {"events": [{**event("Seen", ("anonymous_id", "b-2")),
                        "identifiers": [_signed(tenant.identity_secret, "email", "v@example.com")]}]}
    ingest_client.post("/api/v1/cdp/events", json=body, headers=auth(tenant.write_key))
    (prepared,) = _queued(redis_conn, settings, _fresh_runtime(settings))
    assert prepared.protect is False
    assert prepared.verified == {("email", hash_of("email", "v@example.com"))}  # still known to be verified


@pytest.mark.parametrize(("body", "code"), [
    ({"identity_verification": "strict"}, "invalid_identity_verification"),
    ({"identity_verification": None}, "invalid_identity_verification"),
    ({"type": "server"}, "immutable_field"),
])
def test_patch_validates_identity_verification_and_keeps_type(read_client, tenant, body, code):
    r = read_client.patch(f"/api/v1/cdp/sources/{tenant.source_id}", headers=auth(tenant.api_key), json=body)
    assert r.status_code == 400 and r.json()["code"] == code, r.text
    r = read_client.patch(f"/api/v1/cdp/sources/{tenant.source_id}", headers=auth(tenant.api_key),
                          json={"type": "website", "name": "site"})  # the same type is no change
    assert r.status_code == 200 and r.json()["type"] == "website"


def test_server_sources_cannot_protect(read_client, new_tenant):
    server = new_tenant(source_type="server")
    r = read_client.patch(f"/api/v1/cdp/sources/{server.source_id}", headers=auth(server.api_key),
                          json={"identity_verification": "protect"})
    assert r.status_code == 400 and r.json()["code"] == "invalid_identity_verification"
    r = read_client.post(f"/api/v1/cdp/sources/{server.source_id}/rotate-identity-secret", headers=auth(server.api_key))
    assert r.status_code == 400 and r.json()["code"] == "not_a_website_source"


def test_rotation_keeps_the_previous_secret_for_24_hours(ingest_client, read_client, tenant, new_tenant, settings,
                                                         redis_conn, db):
    old = tenant.identity_secret
    r = read_client.post(f"/api/v1/cdp/sources/{tenant.source_id}/rotate-identity-secret",
                         headers=auth(tenant.api_key))
    assert r.status_code == 200, r.text
    new = r.json()["identity_secret"]
    assert new != old and new.startswith("ids_") and "write_key" not in r.json()
    other = new_tenant()
    r = read_client.post(f"/api/v1/cdp/sources/{tenant.source_id}/rotate-identity-secret",
                         headers=auth(other.api_key))
    assert r.status_code == 404  # another tenant's source

    def verified_by(secret: str) -> frozenset:
        redis_conn.delete(f"rq:queue:{settings.queue_name}")
        ingest_client.post("/api/v1/cdp/events", headers=auth(tenant.write_key), json={"events": [{
            **event("Seen"), "identifiers": [_signed(secret, "external_id", "rot-1")]}]})
        (prepared,) = _queued(redis_conn, settings, _fresh_runtime(settings))
        return prepared.verified

    assert verified_by(new) == verified_by(old) == {("external_id", hash_of("external_id", "rot-1"))}
    db.execute("UPDATE sources SET identity_secret_rotated_at = now() - interval '25 hours' WHERE id = %s",
               (tenant.source_id,))
    db.commit()
    assert verified_by(old) == frozenset()
    assert verified_by(new) == {("external_id", hash_of("external_id", "rot-1"))}


def test_a_new_sources_secret_verifies_from_its_first_event(ingest_client, tenant, db, settings, redis_conn):
    rt = _fresh_runtime(settings)
    rt.tenant_config(tenant.id)  # cached before the new source exists
    with db.transaction():
        created = admin.create_source(db, uuid.UUID(tenant.id), "new site", "website")
    ingest_client.post("/api/v1/cdp/events", headers=auth(created.key), json={"events": [{
        **event("Seen"), "identifiers": [_signed(created.identity_secret, "email", "new@example.com")]}]})
    (prepared,) = _queued(redis_conn, settings, rt)
    assert prepared.verified == {("email", hash_of("email", "new@example.com"))}


def test_identity_secrets_are_stored_encrypted_with_the_secret_key(db, settings, redis_conn, ingest_client):
    with db.transaction():
        t = admin.create_tenant(db, "enc")
        created = admin.create_source(db, t.owner_id, "site", "website", secret_key=SECRET_KEY)
    stored = db.execute("SELECT identity_secret FROM sources WHERE id = %s", (created.owner_id,)).fetchone()[0]
    assert stored.startswith("aesgcm:v1:") and created.identity_secret not in stored
    context = admin.identity_secret_context(created.owner_id)
    assert decrypt_secret(SECRET_KEY, stored, context) == created.identity_secret
    for key, ctx in ((None, context), ("another-key", context), (SECRET_KEY, admin.identity_secret_context(uuid.uuid4()))):
        with pytest.raises(SecretUnreadable):
            decrypt_secret(key, stored, ctx)

    source = Tenant(str(t.owner_id), t.key, str(created.owner_id), created.key, created.identity_secret)
    ingest_client.post("/api/v1/cdp/events", headers=auth(source.write_key), json={"events": [{
        **event("Seen"), "identifiers": [_signed(created.identity_secret, "email", "enc@example.com")]}]})
    # A worker with the key verifies; one without it cannot read the secret: nothing verifies.
    (with_key,) = _queued(redis_conn, settings, _fresh_runtime(settings, secret_key=SECRET_KEY))
    assert with_key.verified == {("email", hash_of("email", "enc@example.com"))}
    (without,) = _queued(redis_conn, settings, _fresh_runtime(settings))
    assert without.verified == frozenset()
    assert [d["message"] for d in without.decisions] == [
        "unverified email claim: the source has no usable identity secret"]


def _cli(settings, *args: str, secret_key: str | None = None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "STRATUM_SECRET_KEY"}
    env.update(STRATUM_DATABASE_URL=settings.database_url, STRATUM_REDIS_URL=settings.redis_url)
    if secret_key:
        env["STRATUM_SECRET_KEY"] = secret_key
    return subprocess.run([sys.executable, "-m", "stratum.cli", *args], env=env, capture_output=True, text=True,
                          timeout=60)


def test_cli_source_create_prints_the_identity_secret_of_website_sources(settings, db):
    tenant = make_tenant(db, source_type="server")
    out = _cli(settings, "source", "create", "--tenant", tenant.id, "--name", "shop", secret_key=SECRET_KEY)
    assert out.returncode == 0, out.stderr
    created = json.loads(out.stdout.strip().splitlines()[-1])
    assert set(created) == {"source_id", "write_key", "identity_secret"}
    assert "STRATUM_SECRET_KEY" not in out.stderr
    stored = db.execute("SELECT identity_secret FROM sources WHERE id = %s", (created["source_id"],)).fetchone()[0]
    assert stored.startswith("aesgcm:v1:") and created["identity_secret"] not in stored

    out = _cli(settings, "source", "create", "--tenant", tenant.id, "--name", "api", "--type", "server")
    assert out.returncode == 0, out.stderr
    assert set(json.loads(out.stdout.strip().splitlines()[-1])) == {"source_id", "write_key"}
    assert "STRATUM_SECRET_KEY is not set" in out.stderr  # every process warns without a key


def test_stratum_dev_generates_one_secret_key_and_keeps_it(tmp_path):
    from stratum.dev import dev_secret_key

    first = dev_secret_key(tmp_path)
    assert len(first) >= 40 and dev_secret_key(tmp_path) == first  # kept for the next run
    assert (tmp_path / "secret_key").stat().st_mode & 0o077 == 0  # owner-only
