"""Events written with COPY keep every character: tabs, line breaks, backslashes, quotes,
unicode, in names and JSON properties; dedupe keys hash exactly as sent."""

from __future__ import annotations

from datetime import UTC, datetime

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
