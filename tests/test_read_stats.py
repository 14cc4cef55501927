"""Tenant statistics over pipeline-written events from two sources."""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, datetime, timedelta

from test_read_support import auth, event, ingest_and_drain


def test_stats_volumes_emq_match_rate_lifecycles(ingest_client, read_client, tenant, new_tenant, drain):
    server = read_client.post("/api/v1/cdp/sources", json={"name": "backend", "type": "server"},
                              headers=auth(tenant.api_key)).json()
    now = datetime.now(UTC)
    ingest_and_drain(ingest_client, drain, tenant.write_key,
                     event("Signed Up", ("email", "s1@example.com"), properties={"plan": "pro"}),        # 85
                     event("Viewed", ("anonymous_id", "s-anon")),                                        # 20
                     event("Viewed", ("device_id", "s-dev"), properties={"p": 1},
                           context={"ip": "203.0.113.9", "user_agent": "ua", "campaign": {"name": "c"}}))  # 60
    ingest_and_drain(ingest_client, drain, server["write_key"],
                     event("Synced", ("external_id", "s-ext"), at=now - timedelta(days=3), properties={"x": 1}),  # 25
                     event("Synced", ("phone", "+16505551212"), at=now - timedelta(days=40)))  # outside the window
    other = new_tenant()
    ingest_and_drain(ingest_client, drain, other.write_key, event("Noise", ("email", "n@example.com")))

    r = read_client.get("/api/v1/cdp/stats", headers=auth(tenant.api_key))
    assert r.status_code == 200, r.text
    stats = r.json()

    hourly, daily = defaultdict(int), defaultdict(int)
    for v in stats["volume"]["hourly"]:
        assert set(v) == {"source_id", "hour", "events"} and v["hour"].endswith(":00:00+00:00")
        hourly[v["source_id"]] += v["events"]
    for v in stats["volume"]["daily"]:
        assert set(v) == {"source_id", "day", "events"}
        daily[v["source_id"]] += v["events"]
    assert dict(hourly) == {tenant.source_id: 3}
    assert dict(daily) == {tenant.source_id: 3, server["id"]: 1}
    three_days_ago = (now - timedelta(days=3)).date().isoformat()
    assert {"source_id": server["id"], "day": three_days_ago, "events": 1} in stats["volume"]["daily"]

    assert stats["emq"] == {"mean": 47.5, "bands": {"excellent": 1, "good": 1, "fair": 0, "poor": 2}}
    assert stats["identity_match_rate"] == 0.5  # the email's and the external id's events
    assert stats["profiles_by_lifecycle"] == {"anonymous": 2, "known": 3, "customer": 0, "churned": 0}
    assert stats["window"]["basis"] == "event_time"


def test_stats_of_an_empty_tenant(read_client, tenant):
    stats = read_client.get("/api/v1/cdp/stats", headers=auth(tenant.api_key)).json()
    assert stats["volume"] == {"hourly": [], "daily": []}
    assert stats["emq"] == {"mean": 0.0, "bands": {"excellent": 0, "good": 0, "fair": 0, "poor": 0}}
    assert stats["identity_match_rate"] == 0.0
    assert stats["profiles_by_lifecycle"] == {"anonymous": 0, "known": 0, "customer": 0, "churned": 0}
