"""Profile lookups (CONTRACT 5) on data written by the real pipeline: never a stale answer
once a change has committed, whoever made it (races of writers against readers:
tests/test_read_lookup_races.py)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from litestar.testing import TestClient
from test_read_support import auth, event, hash_of, ingest_and_drain, profile_by

PROFILE_KEYS = {"id", "lifecycle", "traits", "identifiers", "consents", "counters", "first_seen", "last_seen",
                "merged_from", "computed"}


def _get(read_client, key: str, pid: str):
    return read_client.get(f"/api/v1/cdp/profiles/{pid}", headers=auth(key))


@pytest.fixture
def merged_pair(ingest_client, read_client, tenant, drain):
    """An anonymous profile and a known one, then an event that merges them (a real merge)."""
    ingest_and_drain(ingest_client, drain, tenant.write_key,
                     event("Viewed", ("anonymous_id", "anon-7")),
                     event("Signed Up", ("email", "ana@example.com"), traits={"plan": "pro"}))
    anon = profile_by(read_client, tenant.api_key, "anonymous_id", "anon-7").json()
    known = profile_by(read_client, tenant.api_key, "email", "ana@example.com").json()
    return anon, known


def test_profile_by_identifier_value_hash_and_id(ingest_client, read_client, tenant, drain):
    ingest_and_drain(ingest_client, drain, tenant.write_key,
                     event("Order Completed", ("email", " Ana@Example.com "), ("phone", "(650) 555-1212"),
                           properties={"revenue": 12.5}))
    p = profile_by(read_client, tenant.api_key, "email", "ANA@example.com")
    assert p.status_code == 200, p.text
    profile = p.json()
    assert set(profile) == PROFILE_KEYS
    assert profile["lifecycle"] == "customer" and profile["merged_from"] is None
    assert profile["counters"] == {"events": 1, "purchases": 1, "revenue": 12.5}
    assert {(i["type"], i["hash"]) for i in profile["identifiers"]} == {
        ("email", hash_of("email", "ana@example.com")), ("phone", hash_of("phone", "+16505551212"))}
    by_hash = read_client.get("/api/v1/cdp/profiles", headers=auth(tenant.api_key), params={
        "identifier_type": "phone", "identifier_hash": hash_of("phone", "+16505551212").upper()})
    assert by_hash.status_code == 200 and by_hash.json()["id"] == profile["id"]
    national = read_client.get("/api/v1/cdp/profiles", headers=auth(tenant.api_key), params={
        "identifier_type": "phone", "identifier_value": "650 555 1212", "phone_region": "US"})
    assert national.json()["id"] == profile["id"]
    by_id = _get(read_client, tenant.api_key, profile["id"])
    assert by_id.status_code == 200 and by_id.json() == profile


@pytest.mark.parametrize(("params", "code"), [
    ({}, "missing_parameter"),
    ({"identifier_type": "email"}, "missing_parameter"),
    ({"identifier_type": "fax", "identifier_value": "1"}, "unknown_identifier_type"),
    ({"identifier_type": "email", "identifier_value": "not-an-email"}, "invalid_identifier"),
    ({"identifier_type": "anonymous_id", "identifier_value": "undefined"}, "blocked_identifier"),
    ({"identifier_type": "email", "identifier_hash": "abc"}, "invalid_identifier_hash"),
])
def test_bad_identifier_queries_are_400(read_client, tenant, params, code):
    r = read_client.get("/api/v1/cdp/profiles", params=params, headers=auth(tenant.api_key))
    assert r.status_code == 400 and r.json()["code"] == code, r.text


def test_unknown_profiles_are_404(read_client, tenant):
    for pid in ("not-a-uuid", "00000000-0000-0000-0000-000000000000"):
        r = _get(read_client, tenant.api_key, pid)
        assert r.status_code == 404 and r.json()["code"] == "not_found"
    r = profile_by(read_client, tenant.api_key, "email", "nobody@example.com")
    assert r.status_code == 404 and r.json()["code"] == "not_found"


def test_merged_away_id_answers_with_the_survivor(ingest_client, read_client, tenant, drain, merged_pair):
    anon, known = merged_pair
    ingest_and_drain(ingest_client, drain, tenant.write_key,
                     event("Logged In", ("anonymous_id", "anon-7"), ("email", "ana@example.com")))
    r = _get(read_client, tenant.api_key, anon["id"])
    assert r.status_code == 200
    survivor = r.json()
    assert survivor["id"] == known["id"] and survivor["merged_from"] == anon["id"]
    assert survivor["counters"]["events"] == 3 and survivor["traits"] == {"plan": "pro"}
    assert _get(read_client, tenant.api_key, known["id"]).json()["merged_from"] is None


def test_no_stale_answer_after_a_merge_commits(ingest_client, read_client, tenant, drain, merged_pair):
    """Repeated lookups, then a real merge by the worker (which calls no invalidation):
    the next lookups answer the merged state."""
    anon, known = merged_pair
    for _ in range(2):
        assert profile_by(read_client, tenant.api_key, "anonymous_id", "anon-7").json() == anon
        assert _get(read_client, tenant.api_key, anon["id"]).json() == anon
        assert _get(read_client, tenant.api_key, known["id"]).json() == known

    ingest_and_drain(ingest_client, drain, tenant.write_key,
                     event("Logged In", ("anonymous_id", "anon-7"), ("email", "ana@example.com")))

    by_anon = profile_by(read_client, tenant.api_key, "anonymous_id", "anon-7").json()
    assert by_anon["id"] == known["id"] and by_anon["counters"]["events"] == 3
    assert len(by_anon["identifiers"]) == 2
    by_old_id = _get(read_client, tenant.api_key, anon["id"]).json()
    assert by_old_id["id"] == known["id"] and by_old_id["merged_from"] == anon["id"]
    assert _get(read_client, tenant.api_key, known["id"]).json()["counters"]["events"] == 3


def test_no_stale_answer_after_new_events(ingest_client, read_client, tenant, drain):
    ingest_and_drain(ingest_client, drain, tenant.write_key, event("A", ("external_id", "u-1")))
    first = profile_by(read_client, tenant.api_key, "external_id", "u-1").json()
    assert profile_by(read_client, tenant.api_key, "external_id", "u-1").json() == first
    ingest_and_drain(ingest_client, drain, tenant.write_key,
                     event("Purchase", ("external_id", "u-1"), ("device_id", "dev-1"), properties={"total": 3}))
    now = profile_by(read_client, tenant.api_key, "external_id", "u-1").json()
    assert now["counters"] == {"events": 2, "purchases": 1, "revenue": 3.0}
    assert now["lifecycle"] == "customer" and len(now["identifiers"]) == 2
    assert _get(read_client, tenant.api_key, first["id"]).json() == now


def test_lookups_are_per_tenant(ingest_client, read_client, tenant, new_tenant, drain):
    ingest_and_drain(ingest_client, drain, tenant.write_key, event("A", ("email", "same@example.com")))
    assert profile_by(read_client, tenant.api_key, "email", "same@example.com").status_code == 200
    other = new_tenant()
    assert profile_by(read_client, other.api_key, "email", "same@example.com").status_code == 404
    ingest_and_drain(ingest_client, drain, other.write_key, event("B", ("email", "same@example.com")))
    mine = profile_by(read_client, tenant.api_key, "email", "same@example.com").json()
    theirs = profile_by(read_client, other.api_key, "email", "same@example.com").json()
    assert mine["id"] != theirs["id"]


def test_lookups_work_without_redis(ingest_client, tenant, drain, settings, read_client):
    """Lookups need Postgres only: with Redis unreachable they still answer."""
    from read_api.app import create_app

    ingest_and_drain(ingest_client, drain, tenant.write_key, event("A", ("email", "nored@example.com")))
    expected = profile_by(read_client, tenant.api_key, "email", "nored@example.com").json()
    with TestClient(app=create_app(settings.replace(redis_url="redis://127.0.0.1:1/0"))) as client:
        r = profile_by(client, tenant.api_key, "email", "nored@example.com")
        assert r.status_code == 200 and r.json() == expected
        assert _get(client, tenant.api_key, expected["id"]).json() == expected


def test_lookups_render_a_profile_exactly_as_exports_do(ingest_client, read_client, tenant, drain, db):
    """Lookups have Postgres build the document; exports build it in Python from rows
    (read_api/profiles.py: profile_from_row). Both must agree to the character, timestamps
    included: whole seconds (no fraction), and fractions ending in zero."""
    import msgspec

    from read_api.profiles import PROFILE_COLUMNS, PROFILE_JOINS, profile_from_row

    ingest_and_drain(ingest_client, drain, tenant.write_key,
                     event("Viewed", ("email", "iso@example.com"), at=datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)),
                     event("Order Completed", ("email", "iso@example.com"), ("device_id", "iso-dev"),
                           at=datetime(2026, 1, 2, 3, 4, 6, 123450, tzinfo=UTC), properties={"revenue": 10.1},
                           traits={"plan": "pro", "n": 1}))
    profile = profile_by(read_client, tenant.api_key, "email", "iso@example.com").json()
    read_client.put(f"/api/v1/cdp/profiles/{profile['id']}/consents", json={"consents": {"email": True}},
                    headers=auth(tenant.api_key))
    profile = profile_by(read_client, tenant.api_key, "email", "iso@example.com").json()
    row = db.execute(f"SELECT false, {PROFILE_COLUMNS} FROM profiles p {PROFILE_JOINS} WHERE p.id = %s",
                     (profile["id"],)).fetchone()
    from_rows = msgspec.json.decode(msgspec.json.encode(profile_from_row(row).profile))
    assert profile == from_rows
    assert profile["consents"]["email"]["granted"] is True and len(profile["identifiers"]) == 2
    # To the byte, by identifier and by id: the routes encode the struct themselves.
    expected = msgspec.json.encode(profile_from_row(row).profile)
    for r in (profile_by(read_client, tenant.api_key, "email", "iso@example.com"),
              _get(read_client, tenant.api_key, profile["id"])):
        assert r.status_code == 200 and r.headers["content-type"] == "application/json"
        assert r.content == expected


def test_lookups_check_the_key_before_the_query(read_client, tenant):
    """The lookup routes authenticate in a before_request hook (cheaper than a guard):
    still before any parameter is looked at, so a bad query without a key is 401."""
    for params in ({"identifier_type": "fax", "identifier_value": "1"}, {"identifier_type": ["a", "b"]}, {}):
        r = read_client.get("/api/v1/cdp/profiles", params=params)
        assert r.status_code == 401 and r.json()["code"] == "missing_api_key", r.text
        r = read_client.get("/api/v1/cdp/profiles", params=params, headers=auth("sk_not-a-key"))
        assert r.status_code == 401 and r.json()["code"] == "invalid_api_key", r.text
    r = read_client.get("/api/v1/cdp/profiles/not-a-uuid")
    assert r.status_code == 401 and r.json()["code"] == "missing_api_key"
    assert _get(read_client, tenant.api_key, "not-a-uuid").status_code == 404


@pytest.mark.parametrize("session_zone", ["UTC", "America/St_Johns"])
def test_timestamps_from_postgres_json_reach_the_api_form(db, session_zone):
    """Lookups take timestamps as Postgres renders them in JSON (the fraction without its
    trailing zeros) and bring them to the API's form (read_api/profiles.py: api_time),
    the same text Python's isoformat gives for the value Postgres returns, outside UTC too."""
    from read_api.profiles import api_time
    from read_api.schemas import iso

    values = ["2026-01-02 03:04:05+00", "2026-01-02 03:04:06.12345+00", "2026-01-02 03:04:06.1+00",
              "2026-01-02 03:04:06.000001+00", "2026-01-02 03:04:06.999999+00", "2000-02-29 23:59:59.5+00",
              "1970-01-01 00:00:00+00", "9999-12-31 23:59:59.99999+00", "2026-07-01 12:00:00.25+02"]
    db.execute(f"SET LOCAL TimeZone = '{session_zone}'")
    rows = db.execute("SELECT t, to_json(t) #>> '{}' FROM unnest(%s::timestamptz[]) t", (values,)).fetchall()
    for value, rendered in rows:
        assert api_time(rendered) == iso(value), rendered
    # Postgres's rendering differs from the API's for some of these (so the test has teeth).
    assert any(rendered != iso(value) for value, rendered in rows)
