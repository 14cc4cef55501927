"""Identifier ``first_seen``/``last_seen`` upkeep: new identifiers get their batch's exact
span; a stored identifier's ``last_seen`` is rewritten only when it moves by more than
``STRATUM_IDENTIFIER_TOUCH_GRANULARITY_S`` (default 1 h), ``first_seen`` always exactly;
the profile's own times stay exact."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from workers.identity_store import stale_identifiers

BASE = datetime.now(UTC).replace(microsecond=0) - timedelta(days=2)


def _send(client, tenant, *minutes: int) -> None:
    events = [{"event_name": "Viewed", "event_time": (BASE + timedelta(minutes=m)).isoformat(),
               "identifiers": [{"type": "external_id", "value": "touch-1"}], "idempotency_key": f"touch-{m}"}
              for m in minutes]
    r = client.post("/api/v1/cdp/events", json={"events": events},
                    headers={"Authorization": f"Bearer {tenant.write_key}"})
    assert r.status_code == 202, r.text


def _times(db):
    ident = db.execute("SELECT first_seen, last_seen FROM profile_identifiers").fetchone()
    profile = db.execute("SELECT first_seen, last_seen FROM profiles").fetchone()
    return ident, profile


def test_identifier_times_follow_the_granularity(ingest_client, tenant, drain, db):
    m = lambda n: BASE + timedelta(minutes=n)  # noqa: E731
    _send(ingest_client, tenant, 0, 5)
    assert drain() == 0
    assert _times(db) == ((m(0), m(5)), (m(0), m(5)))  # linked in this batch: the exact span

    _send(ingest_client, tenant, 30)  # within the hour: the identifier row is left alone
    assert drain() == 0
    assert _times(db) == ((m(0), m(5)), (m(0), m(30)))

    _send(ingest_client, tenant, 70)  # 65 minutes past the stored last_seen: rewritten
    assert drain() == 0
    assert _times(db) == ((m(0), m(70)), (m(0), m(70)))

    _send(ingest_client, tenant, -1)  # earlier than first_seen: always exact
    assert drain() == 0
    assert _times(db) == ((m(-1), m(70)), (m(-1), m(70)))


def test_stale_identifiers_with_no_granularity_is_exact():
    t = BASE
    stored = {("email", "a"): (t, t), ("email", "b"): (t, t)}
    spans = {("email", "a"): (t, t + timedelta(seconds=1)), ("email", "b"): (t, t), ("email", "new"): (t, t)}
    assert stale_identifiers(spans, stored, timedelta(0)) == {("email", "a"): (t, t + timedelta(seconds=1))}
    assert stale_identifiers(spans, stored, timedelta(hours=1)) == {}
    early = {("email", "b"): (t - timedelta(seconds=1), t)}
    assert stale_identifiers(early, stored, timedelta(hours=1)) == early


def test_touch_reports_the_owners_whose_identifier_times_changed(ingest_client, tenant, drain, db):
    """The owners are written back by the batch's profile UPDATE (their updated_at moves)
    rather than by a second UPDATE of the same rows."""
    from workers.identity_store import touch_identifiers

    _send(ingest_client, tenant, 0)
    assert drain() == 0
    (owner,), (h,) = db.execute("SELECT profile_id::text FROM profile_identifiers").fetchone(), \
        db.execute("SELECT hash FROM profile_identifiers").fetchone()
    t = BASE
    with db.transaction():
        assert touch_identifiers(db, tenant.id, {("external_id", h): (t, t)}) == set()  # nothing moves
        assert touch_identifiers(db, tenant.id, {("external_id", h): (t, t + timedelta(hours=2))}) == {owner}
