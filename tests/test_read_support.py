"""Helpers shared by the read API tests (no tests here): building native events, sending
them through the real ingest API and draining the queue with a real worker."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from core.identifiers import normalize_identifier


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def event(name: str, *identifiers: tuple[str, str], at: datetime | None = None, **extra: Any) -> dict:
    """A native event (CONTRACT 4.1); ``identifiers`` are (type, raw value) pairs."""
    return {"event_name": name, "event_time": (at or datetime.now(UTC)).isoformat(),
            "identifiers": [{"type": t, "value": v} for t, v in identifiers], **extra}


def ingest(ingest_client, write_key: str, *events: dict) -> list[str]:
    """POST the events; return their event ids (all must be accepted or duplicates)."""
    r = ingest_client.post("/api/v1/cdp/events", json={"events": list(events)}, headers=auth(write_key))
    assert r.status_code == 202, r.text
    results = r.json()["results"]
    assert all(res["status"] in ("accepted", "duplicate") for res in results), results
    return [res["event_id"] for res in results]


def ingest_and_drain(ingest_client, drain, write_key: str, *events: dict) -> list[str]:
    ids = ingest(ingest_client, write_key, *events)
    assert drain() == 0, "a worker job failed"
    return ids


def hash_of(id_type: str, value: str, region: str | None = "US") -> str:
    return normalize_identifier(id_type, value, default_region=region).hash


def profile_by(read_client, api_key: str, id_type: str, value: str):
    return read_client.get("/api/v1/cdp/profiles", params={"identifier_type": id_type, "identifier_value": value},
                           headers=auth(api_key))
