"""A profile's events (keyset pagination, newest first) and event status, on events
written by the real pipeline across monthly partitions."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest
from test_read_support import auth, event, ingest_and_drain, profile_by

from read_api.events import PAGE_AFTER_CURSOR_SQL, PAGE_SQL, decode_cursor, encode_cursor
from stratum.db.partitions import partition_name

EVENT_KEYS = {"event_id", "event_name", "event_type", "event_time", "received_at", "source_id", "properties",
              "context", "emq", "identifiers", "decisions"}


def _month_start(months_back: int) -> datetime:
    now = datetime.now(UTC)
    y, m = divmod(now.month - 1 - months_back, 12)
    return datetime(now.year + y, m + 1, 1, 12, tzinfo=UTC)


def _pages(read_client, key: str, pid: str, limit: int) -> list[dict]:
    pages, cursor = [], None
    while True:
        params = {"limit": limit, **({"cursor": cursor} if cursor else {})}
        r = read_client.get(f"/api/v1/cdp/profiles/{pid}/events", params=params, headers=auth(key))
        assert r.status_code == 200, r.text
        pages.append(r.json())
        cursor = r.json()["next_cursor"]
        if cursor is None:
            return pages


@pytest.fixture
def timeline(ingest_client, read_client, tenant, drain):
    """One person with 9 events over three months, three of them at the same instant."""
    same = datetime.now(UTC) - timedelta(hours=1)
    times = [_month_start(2), _month_start(2) + timedelta(days=3), _month_start(1), _month_start(1) + timedelta(hours=5),
             same, same, same, datetime.now(UTC) - timedelta(minutes=1), datetime.now(UTC)]
    events = [event(f"E{i}", ("external_id", "tl-user"), at=t, properties={"i": i}) for i, t in enumerate(times)]
    ids = ingest_and_drain(ingest_client, drain, tenant.write_key, *events)
    pid = profile_by(read_client, tenant.api_key, "external_id", "tl-user").json()["id"]
    expected = [eid for _, eid in sorted(zip(times, [uuid.UUID(i) for i in ids], strict=True), reverse=True)]
    return pid, [str(e) for e in expected]


def test_pages_walk_every_event_newest_first_without_gaps(read_client, tenant, timeline):
    pid, expected = timeline
    for limit in (1, 2, 3, 4, 9, 500):
        pages = _pages(read_client, tenant.api_key, pid, limit)
        seen = [e["event_id"] for p in pages for e in p["events"]]
        assert seen == expected, limit
        assert all(len(p["events"]) == limit for p in pages[:-1])
    first = read_client.get(f"/api/v1/cdp/profiles/{pid}/events", headers=auth(tenant.api_key)).json()
    assert len(first["events"]) == 9 and first["next_cursor"] is None  # default limit 50
    e = first["events"][0]
    assert set(e) == EVENT_KEYS
    assert e["event_type"] == "track" and e["source_id"] == tenant.source_id
    assert e["decisions"] == []
    assert e["identifiers"] == [{"type": "external_id", "hash": e["identifiers"][0]["hash"]}]
    assert e["properties"] == {"i": 8} and isinstance(e["emq"], int)


def test_events_of_a_merged_away_id_are_the_survivors(ingest_client, read_client, tenant, drain):
    ingest_and_drain(ingest_client, drain, tenant.write_key, event("A", ("anonymous_id", "m-anon")),
                     event("B", ("email", "m@example.com")))
    anon = profile_by(read_client, tenant.api_key, "anonymous_id", "m-anon").json()["id"]
    ingest_and_drain(ingest_client, drain, tenant.write_key,
                     event("C", ("anonymous_id", "m-anon"), ("email", "m@example.com")))
    r = read_client.get(f"/api/v1/cdp/profiles/{anon}/events", headers=auth(tenant.api_key))
    assert [e["event_name"] for e in r.json()["events"]] == ["C", "B", "A"]


@pytest.mark.parametrize(("params", "code"), [
    ({"limit": 0}, "invalid_limit"), ({"limit": 501}, "invalid_limit"), ({"limit": "ten"}, "invalid_parameter"),
    ({"cursor": "not-a-cursor"}, "invalid_cursor"), ({"cursor": "AAAA"}, "invalid_cursor"),
    ({"cursor": encode_cursor(datetime.now(UTC), str(uuid.uuid4()))[:-2]}, "invalid_cursor"),
])
def test_bad_limit_or_cursor_is_400(read_client, tenant, timeline, params, code):
    pid, _ = timeline
    r = read_client.get(f"/api/v1/cdp/profiles/{pid}/events", params=params, headers=auth(tenant.api_key))
    assert r.status_code == 400 and r.json()["code"] == code, r.text


def test_unknown_profile_events_are_404(read_client, tenant):
    r = read_client.get(f"/api/v1/cdp/profiles/{uuid.uuid4()}/events", headers=auth(tenant.api_key))
    assert r.status_code == 404


def test_cursor_round_trips_exactly():
    at, eid = datetime(2025, 3, 1, 12, 0, 0, 123456, tzinfo=UTC), str(uuid.uuid4())
    cursor = encode_cursor(at, eid)
    assert "=" not in cursor and "/" not in cursor and "+" not in cursor
    assert decode_cursor(cursor) == (at, uuid.UUID(eid))


def test_pages_use_the_profile_index_with_a_row_comparison(db, tenant, timeline):
    """The keyset condition is an index condition (not a filter), there is no sort below
    the LIMIT, and partitions newer than the cursor are not read."""
    pid, _ = timeline
    cursor_time = _month_start(1) - timedelta(days=1)  # inside the month two months back
    db.execute("SET enable_seqscan = off")
    try:
        plan = "\n".join(r[0] for r in db.execute("EXPLAIN " + PAGE_AFTER_CURSOR_SQL, {
            "tenant_id": tenant.id, "profile_id": pid, "limit": 51, "cursor_time": cursor_time,
            "cursor_id": uuid.uuid4()}).fetchall())
        first_page = "\n".join(r[0] for r in db.execute("EXPLAIN " + PAGE_SQL, {
            "tenant_id": tenant.id, "profile_id": pid, "limit": 51}).fetchall())
    finally:
        db.execute("RESET enable_seqscan")
    index_conds = [line for line in plan.splitlines() if "Index Cond" in line and "ROW(event_time, event_id) <" in line]
    assert index_conds, plan
    assert "_tenant_id_profile_id_event_time_event_id_idx" in plan
    limit_at = plan.index("Limit")
    assert "Sort  " not in plan[limit_at:] and "Sort (" not in plan[limit_at:], plan
    assert partition_name(_month_start(2).date()) in plan
    assert partition_name(_month_start(0).date()) not in plan, plan
    assert partition_name(_month_start(0).date()) in first_page


def test_event_status_reports_processed_with_the_profile(ingest_client, read_client, tenant, drain):
    ids = ingest_and_drain(ingest_client, drain, tenant.write_key, event("A", ("anonymous_id", "s-anon"),
                                                                          at=_month_start(2)),
                           event("B", ("email", "s@example.com")))
    anon = profile_by(read_client, tenant.api_key, "anonymous_id", "s-anon").json()["id"]
    r = read_client.get(f"/api/v1/cdp/events/{ids[0]}", headers=auth(tenant.api_key))
    assert r.status_code == 200
    assert r.json() == {"event_id": ids[0], "status": "processed", "profile_id": anon}
    # After a merge the event belongs to the survivor.
    ingest_and_drain(ingest_client, drain, tenant.write_key,
                     event("C", ("anonymous_id", "s-anon"), ("email", "s@example.com")))
    survivor = profile_by(read_client, tenant.api_key, "email", "s@example.com").json()["id"]
    assert read_client.get(f"/api/v1/cdp/events/{ids[0]}", headers=auth(tenant.api_key)).json()["profile_id"] == survivor


def test_event_status_of_a_door_duplicate_is_the_original(ingest_client, read_client, tenant, drain):
    (first,) = ingest_and_drain(ingest_client, drain, tenant.write_key,
                                event("A", ("email", "d@example.com"), idempotency_key="order-1"))
    (again,) = ingest_and_drain(ingest_client, drain, tenant.write_key,
                                event("A", ("email", "d@example.com"), idempotency_key="order-1"))
    assert again == first
    assert read_client.get(f"/api/v1/cdp/events/{first}", headers=auth(tenant.api_key)).json()["status"] == "processed"


def test_unknown_or_queued_events_are_404(ingest_client, read_client, tenant):
    from test_read_support import ingest

    (queued,) = ingest(ingest_client, tenant.write_key, event("A", ("email", "q@example.com")))
    for eid in (queued, str(uuid.uuid4()), "nope"):
        r = read_client.get(f"/api/v1/cdp/events/{eid}", headers=auth(tenant.api_key))
        assert r.status_code == 404 and r.json()["code"] == "not_found"
