"""Consents from events: history rows with time, source, IP and user agent; current state
per type where the newest event time wins, whatever the arrival order; merges carry them."""

from __future__ import annotations


def _post(client, tenant, events):
    r = client.post("/api/v1/cdp/events", json={"events": events},
                    headers={"Authorization": f"Bearer {tenant.write_key}"})
    assert r.status_code == 202, r.text


def test_consent_state_and_history(ingest_client, tenant, drain, db):
    ident = [{"type": "external_id", "value": "c-1"}]
    _post(ingest_client, tenant, [
        {"event_name": "Consent", "event_time": "2026-01-02T10:00:00Z", "identifiers": ident,
         "consent": {"email": False, "ads": True},
         "context": {"ip": "198.51.100.4", "user_agent": "Mozilla/5.0 (newer)"}},
        {"event_name": "Consent", "event_time": "2026-01-01T10:00:00Z", "identifiers": ident,
         "consent": {"email": True, "analytics": True}, "context": {"userAgent": "Mozilla/5.0 (older)"}},
    ])
    assert drain() == 0
    state = dict(db.execute("SELECT consent_type, granted FROM consents").fetchall())
    # email: the 2nd event arrived later but happened earlier: the newer decision (False) stands
    assert state == {"email": False, "ads": True, "analytics": True}
    history = db.execute("SELECT consent_type, granted, ip, user_agent, source_id::text FROM consent_history"
                         " ORDER BY recorded_at, consent_type").fetchall()
    assert len(history) == 4
    assert ("ads", True, "198.51.100.4", "Mozilla/5.0 (newer)", tenant.source_id) in history
    assert ("email", True, None, "Mozilla/5.0 (older)", tenant.source_id) in history


def test_consents_follow_a_merge(ingest_client, new_tenant, drain, db):
    t = new_tenant(source_type="server")
    _post(ingest_client, t, [{"event_name": "A", "event_time": "2026-01-01T00:00:00Z",
                              "identifiers": [{"type": "anonymous_id", "value": "anon-c"}], "consent": {"sms": True}}])
    _post(ingest_client, t, [{"event_name": "B", "event_time": "2026-01-02T00:00:00Z",
                              "identifiers": [{"type": "email", "value": "c@example.com"}], "consent": {"email": True}}])
    assert drain() == 0
    _post(ingest_client, t, [{"event_name": "Login", "event_time": "2026-01-03T00:00:00Z",
                              "identifiers": [{"type": "email", "value": "c@example.com"},
                                              {"type": "anonymous_id", "value": "anon-c"}]}])
    assert drain() == 0
    live = db.execute("SELECT id FROM profiles WHERE merged_into IS NULL").fetchall()
    assert len(live) == 1
    rows = db.execute("SELECT profile_id, consent_type FROM consents ORDER BY consent_type").fetchall()
    assert [r[1] for r in rows] == ["email", "sms"] and {r[0] for r in rows} == {live[0][0]}
    assert db.execute("SELECT count(DISTINCT profile_id) FROM consent_history").fetchone()[0] == 1
