"""The identity decision log and explain (CONTRACT 9), on data from the real pipeline."""

from __future__ import annotations

from test_read_support import auth, event, hash_of, ingest_and_drain, profile_by


def ref(id_type: str, value: str) -> str:
    return f"{id_type}:{hash_of(id_type, value)}"


def decisions_of(read_client, api_key: str, pid: str, limit: int = 500) -> list[dict]:
    out, cursor = [], None
    while True:
        params = {"limit": limit, **({"cursor": cursor} if cursor else {})}
        r = read_client.get(f"/api/v1/cdp/profiles/{pid}/decisions", params=params, headers=auth(api_key))
        assert r.status_code == 200, r.text
        out += r.json()["decisions"]
        cursor = r.json()["next_cursor"]
        if cursor is None:
            return out


def explain(read_client, api_key: str, a: tuple[str, str], b: tuple[str, str]):
    return read_client.get("/api/v1/cdp/identity/explain", headers=auth(api_key), params={
        "a_type": a[0], "a_value": a[1], "b_type": b[0], "b_value": b[1]})


def test_links_and_merges_are_logged_per_profile_and_explained(ingest_client, read_client, new_tenant, drain):
    t = new_tenant(source_type="server")
    e1, e2 = ingest_and_drain(ingest_client, drain, t.write_key,
                              event("A", ("anonymous_id", "x-a1"), ("device_id", "x-d1")),
                              event("B", ("email", "x@example.com"), ("anonymous_id", "x-a2")))
    p_dev = profile_by(read_client, t.api_key, "device_id", "x-d1").json()["id"]
    (e3,) = ingest_and_drain(ingest_client, drain, t.write_key,
                             event("C", ("anonymous_id", "x-a1"), ("email", "x@example.com")))
    survivor = profile_by(read_client, t.api_key, "email", "x@example.com").json()["id"]
    assert survivor != p_dev

    log = decisions_of(read_client, t.api_key, survivor)
    kinds = [(d["kind"], d["event_id"]) for d in log]
    assert ("merge", e3) in kinds
    assert {e for k, e in kinds if k == "link"} == {e1, e2}
    assert [d["at"] for d in log] == sorted(d["at"] for d in log)  # oldest first
    merge = next(d for d in log if d["kind"] == "merge")
    assert merge["rule"] and merge["message"] and merge["identifiers"][0]["type"] in ("anonymous_id", "email")
    assert all(set(d) == {"at", "event_id", "kind", "identifiers", "rule", "message"} for d in log)
    # keyset pages of one walk the same list; a merged-away id reads the survivor's log
    assert decisions_of(read_client, t.api_key, survivor, limit=1) == log
    assert decisions_of(read_client, t.api_key, p_dev) == log

    r = explain(read_client, t.api_key, ("device_id", "x-d1"), ("anonymous_id", "x-a2"))
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["same_profile"] is True and body["blocking_decisions"] == []
    path = body["path"]
    assert path[0]["from"] == ref("device_id", "x-d1") and path[-1]["to"] == ref("anonymous_id", "x-a2")
    assert all(a["to"] == b["from"] for a, b in zip(path, path[1:], strict=False))
    assert "merge" in {s["link_type"] for s in path}
    assert {s["event_id"] for s in path} <= {e1, e2, e3} and all(s["at"] for s in path)


def test_refusals_are_logged_and_explain_why_apart(ingest_client, read_client, new_tenant, drain):
    """A public website key claims an email another known profile holds: left out, recorded."""
    tenant = new_tenant(source_type="website")
    ingest_and_drain(ingest_client, drain, tenant.write_key,
                     event("A", ("email", "held@example.com"), ("anonymous_id", "w-1")),
                     event("A", ("email", "own@example.com"), ("anonymous_id", "w-2")))
    (e2,) = ingest_and_drain(ingest_client, drain, tenant.write_key,
                             event("B", ("anonymous_id", "w-2"), ("email", "held@example.com")))
    p2 = profile_by(read_client, tenant.api_key, "anonymous_id", "w-2").json()["id"]
    p1 = profile_by(read_client, tenant.api_key, "email", "held@example.com").json()["id"]
    assert p2 != p1

    refusals = [d for pid in (p1, p2) for d in decisions_of(read_client, tenant.api_key, pid)
                if d["kind"] not in ("link", "merge")]
    assert [(d["kind"], d["event_id"]) for d in refusals] == [(refusals[0]["kind"], e2)]
    assert refusals[0]["kind"] in ("unverified_claim", "untrusted_merge") and refusals[0]["rule"]
    # under identity protection the unsigned claim of the other profile's email is left out
    assert refusals[0]["kind"] == "unverified_claim"
    assert refusals[0]["identifiers"] == [{"type": "email", "hash": hash_of("email", "held@example.com")}]

    r = explain(read_client, tenant.api_key, ("anonymous_id", "w-2"), ("email", "held@example.com"))
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["same_profile"] is False and body["path"] == []
    assert body["blocking_decisions"] == refusals


def test_errors_and_tenant_isolation(ingest_client, read_client, tenant, new_tenant, drain):
    ingest_and_drain(ingest_client, drain, tenant.write_key, event("A", ("anonymous_id", "iso-1")))
    pid = profile_by(read_client, tenant.api_key, "anonymous_id", "iso-1").json()["id"]
    other = new_tenant()
    r = read_client.get(f"/api/v1/cdp/profiles/{pid}/decisions", headers=auth(other.api_key))
    assert r.status_code == 404
    assert explain(read_client, other.api_key, ("anonymous_id", "iso-1"), ("anonymous_id", "iso-1")).status_code == 404
    r = read_client.get(f"/api/v1/cdp/profiles/{pid}/decisions", params={"cursor": "nope"},
                        headers=auth(tenant.api_key))
    assert r.status_code == 400 and r.json()["code"] == "invalid_cursor"
    r = explain(read_client, tenant.api_key, ("anonymous_id", "iso-1"), ("email", "not-an-email"))
    assert r.status_code == 400
    r = explain(read_client, tenant.api_key, ("anonymous_id", "iso-1"), ("anonymous_id", "iso-unknown"))
    assert r.status_code == 404 and "b" in r.json()["message"]
    r = explain(read_client, tenant.api_key, ("anonymous_id", "iso-1"), ("anonymous_id", "iso-1"))
    assert r.json() == {"same_profile": True, "path": [], "blocking_decisions": []}


def test_erasure_removes_the_profile_decisions(ingest_client, read_client, tenant, drain, db):
    ingest_and_drain(ingest_client, drain, tenant.write_key, event("A", ("anonymous_id", "er-1"), ("device_id", "er-d")))
    pid = profile_by(read_client, tenant.api_key, "anonymous_id", "er-1").json()["id"]
    count = "SELECT count(*) FROM identity_decisions WHERE tenant_id = %s AND profile_id = %s"
    assert db.execute(count, (tenant.id, pid)).fetchone()[0] == 2
    assert read_client.delete(f"/api/v1/cdp/profiles/{pid}", headers=auth(tenant.api_key)).status_code == 200
    assert db.execute(count, (tenant.id, pid)).fetchone()[0] == 0


def test_explain_an_identifier_left_out_everywhere(ingest_client, read_client, new_tenant, drain):
    """An erased person's email is suppressed: a later event's profile records why it is not there."""
    t = new_tenant(source_type="server")
    ingest_and_drain(ingest_client, drain, t.write_key, event("A", ("email", "gone@example.com")))
    gone = profile_by(read_client, t.api_key, "email", "gone@example.com").json()["id"]
    assert read_client.delete(f"/api/v1/cdp/profiles/{gone}", headers=auth(t.api_key)).status_code == 200
    (e2,) = ingest_and_drain(ingest_client, drain, t.write_key,
                             event("B", ("anonymous_id", "lo-1"), ("email", "gone@example.com")))
    r = explain(read_client, t.api_key, ("anonymous_id", "lo-1"), ("email", "gone@example.com"))
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["same_profile"] is False and body["path"] == []
    assert [(d["kind"], d["event_id"], d["rule"]) for d in body["blocking_decisions"]] == [("suppressed", e2, "erasure")]
