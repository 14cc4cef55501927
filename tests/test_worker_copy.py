"""Events written with COPY keep every character: tabs, line breaks, backslashes, quotes,
unicode, in names and JSON properties; dedupe keys hash exactly as sent."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

from conftest import stored_dedupe_key

TRICKY = 'tab\there, line\nbreak, cr\r, back\\slash \\N, "quotes", ünïcødé ✓, \\t literal'


def test_tricky_text_round_trips(ingest_client, tenant, drain, db):
    event = {"event_name": TRICKY[:200], "event_time": datetime.now(UTC).isoformat(),
             "identifiers": [{"type": "external_id", "value": "copy-1"}], "idempotency_key": "k\t\\1\n",
             "properties": {"note": TRICKY, "nested": {"k\\ey": ["a\tb", "c\\nd"]}}}
    r = ingest_client.post("/api/v1/cdp/events", json={"events": [event]},
                           headers={"Authorization": f"Bearer {tenant.write_key}"})
    assert r.status_code == 202, r.text
    assert drain() == 0
    name, key, props = db.execute("SELECT event_name, dedupe_key, properties FROM events").fetchone()
    assert name == TRICKY[:200]
    assert key == stored_dedupe_key(tenant, "k\t\\1\n")  # tricky keys hash exactly as sent
    assert props == event["properties"]


def test_binary_rows_keep_every_value_exactly(ingest_client, tenant, drain, db):
    """The events and event_keys rows travel in COPY's binary format (workers/event_rows.py):
    times to the microsecond (before and after 2000, with an offset), ids, the score, the
    dedupe key and its hash, JSON with unicode and large numbers. (Times before 2000, a
    negative count on the wire, are older than any retention: tests/unit/test_copy_binary.py.)"""
    now = datetime.now(UTC)
    sent = [((now - timedelta(days=3)).replace(microsecond=999_999).astimezone(timezone(timedelta(hours=2)))
             .isoformat(), "bin-1"),
            ((now - timedelta(minutes=5)).replace(microsecond=1).isoformat().replace("+00:00", "Z"), "bin-2")]
    events = [{"event_name": "Günther’s ✓ order", "event_time": t, "idempotency_key": k,
               "identifiers": [{"type": "external_id", "value": f"copy-{k}"}],
               "properties": {"big": 2**62, "neg": -1.25, "text": "日本語 \\ \" \t"}} for t, k in sent]
    r = ingest_client.post("/api/v1/cdp/events", json={"events": events},
                           headers={"Authorization": f"Bearer {tenant.write_key}"})
    assert r.status_code == 202, r.text
    assert drain() == 0
    rows = db.execute(
        "SELECT e.event_id, e.event_time, e.received_at, e.source_id::text, e.dedupe_key, e.event_name,"
        " e.properties, e.emq, e.profile_id, k.key_hash, k.event_time FROM events e"
        " JOIN event_keys k ON k.tenant_id = e.tenant_id AND k.event_id = e.event_id"
        " WHERE e.tenant_id = %s ORDER BY e.event_time", (tenant.id,)).fetchall()
    assert len(rows) == 2
    by_key = {row[4]: row for row in rows}
    for when, key in sent:
        event_id, event_time, received_at, source_id, dedupe_key, name, props, emq, profile, key_hash, key_time = \
            by_key[stored_dedupe_key(tenant, key)]
        assert event_time == datetime.fromisoformat(when.replace("Z", "+00:00"))
        assert key_time == event_time
        assert key_hash.hex() == dedupe_key
        assert source_id == tenant.source_id
        assert name == "Günther’s ✓ order"
        assert props == events[0]["properties"]
        assert 0 <= emq <= 100 and profile is not None
        assert abs((received_at - datetime.now(UTC)).total_seconds()) < 600
