"""The read API's request metrics (read_api/metrics.py): every request to a route is
counted by route template, method and status, errors included, and timed."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families
from test_read_support import auth, event, ingest_and_drain, profile_by

LOOKUP = "/api/v1/cdp/profiles"


def _samples(read_client) -> dict[tuple[str, tuple], float]:
    text = read_client.get("/metrics").text
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def _requests(samples, route: str, status: str) -> float:
    return samples.get(("stratum_read_requests_total",
                        (("method", "GET"), ("route", route), ("status", status))), 0.0)


def test_requests_are_counted_by_route_template_and_status(ingest_client, read_client, tenant, drain):
    ingest_and_drain(ingest_client, drain, tenant.write_key, event("A", ("email", "metrics@example.com")))
    before = _samples(read_client)
    assert profile_by(read_client, tenant.api_key, "email", "metrics@example.com").status_code == 200
    assert profile_by(read_client, tenant.api_key, "email", "nobody@example.com").status_code == 404
    assert read_client.get(LOOKUP, params={"identifier_type": "email", "identifier_value": "a@b.co"}).status_code == 401
    pid = profile_by(read_client, tenant.api_key, "email", "metrics@example.com").json()["id"]
    assert read_client.get(f"{LOOKUP}/{pid}", headers=auth(tenant.api_key)).status_code == 200
    after = _samples(read_client)

    def delta(route: str, status: str) -> float:
        return _requests(after, route, status) - _requests(before, route, status)

    assert delta(LOOKUP, "200") == 2 and delta(LOOKUP, "404") == 1 and delta(LOOKUP, "401") == 1
    assert delta("/api/v1/cdp/profiles/{profile_id}", "200") == 1
    count = ("stratum_read_request_seconds_count", (("method", "GET"), ("route", LOOKUP)))
    assert after[count] - before.get(count, 0.0) == 4
