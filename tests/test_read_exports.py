"""Streamed exports (HTTP and ``stratum export``) of pipeline-written data."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta

import pytest
from test_read_support import auth, event, ingest_and_drain, profile_by

from read_api import exports
from stratum.cli import build_parser

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PROFILE_KEYS = ["id", "lifecycle", "traits", "identifiers", "consents", "counters", "first_seen", "last_seen",
                "merged_from", "computed"]
OLD = datetime.now(UTC) - timedelta(days=65)


@pytest.fixture
def data(ingest_client, read_client, tenant, drain):
    """Three people (one built from a merge) and seven events, two of them 65 days old."""
    ingest_and_drain(ingest_client, drain, tenant.write_key,
                     event("Old", ("anonymous_id", "x-anon"), at=OLD),
                     event("Old", ("device_id", "x-dev"), at=OLD + timedelta(seconds=1)),
                     event("Signed Up", ("email", "x1@example.com"), traits={"name": "X"}, properties={"a": [1]}),
                     event("Signed Up", ("email", "x2@example.com")),
                     event("Viewed", ("external_id", "x3")),
                     event("Viewed", ("external_id", "x3"), properties={"page": "/a,\"b\"\n"}))
    ingest_and_drain(ingest_client, drain, tenant.write_key,
                     event("Linked", ("anonymous_id", "x-anon"), ("email", "x1@example.com")))
    people = {k: profile_by(read_client, tenant.api_key, t, v).json()
              for k, t, v in (("x1", "email", "x1@example.com"), ("x2", "email", "x2@example.com"),
                              ("x3", "external_id", "x3"), ("dev", "device_id", "x-dev"))}
    return people


def _export(read_client, key: str, kind: str, **params):
    return read_client.get(f"/api/v1/cdp/export/{kind}", params=params, headers=auth(key))


def test_profiles_jsonl_are_live_profiles_as_profile_objects(read_client, tenant, data, monkeypatch):
    monkeypatch.setattr(exports, "FETCH_ROWS", 2)  # several round trips of the server-side cursor
    r = _export(read_client, tenant.api_key, "profiles")
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("application/x-ndjson")
    lines = [json.loads(line) for line in r.text.splitlines()]
    assert sorted(p["id"] for p in lines) == sorted(p["id"] for p in data.values())
    by_id = {p["id"]: p for p in lines}
    for person in data.values():
        assert by_id[person["id"]] == person  # the same PROFILE as the lookup answers
    assert all(list(p) == PROFILE_KEYS for p in lines)


def test_profiles_csv_has_a_header_and_json_cells(read_client, tenant, data):
    r = _export(read_client, tenant.api_key, "profiles", format="csv")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(r.text)))
    assert list(rows[0]) == PROFILE_KEYS and len(rows) == 4
    x1 = next(row for row in rows if row["id"] == data["x1"]["id"])
    assert json.loads(x1["traits"]) == {"name": "X"}
    assert json.loads(x1["identifiers"]) == data["x1"]["identifiers"]
    assert json.loads(x1["counters"]) == data["x1"]["counters"]
    assert x1["merged_from"] == "" and x1["first_seen"] == data["x1"]["first_seen"]


def test_profiles_from_filters_on_last_change(read_client, tenant, data, db):
    db.execute("UPDATE profiles SET updated_at = now() - interval '3 days' WHERE id <> %s", (data["x2"]["id"],))
    since = (datetime.now(UTC) - timedelta(days=1)).isoformat()
    lines = _export(read_client, tenant.api_key, "profiles", **{"from": since}).text.splitlines()
    assert [json.loads(line)["id"] for line in lines] == [data["x2"]["id"]]
    until = _export(read_client, tenant.api_key, "profiles", to=since).text.splitlines()
    assert len(until) == 3


def test_events_jsonl_oldest_first_with_time_window(read_client, tenant, data, monkeypatch):
    monkeypatch.setattr(exports, "FETCH_ROWS", 3)
    lines = [json.loads(line) for line in _export(read_client, tenant.api_key, "events").text.splitlines()]
    assert len(lines) == 7
    assert [e["event_time"] for e in lines] == sorted(e["event_time"] for e in lines)
    assert lines[0]["event_name"] == "Old" and lines[0]["profile_id"] == data["x1"]["id"]  # merged into x1
    assert set(lines[0]) == {"event_id", "event_name", "event_type", "event_time", "received_at", "source_id",
                             "properties", "context", "emq", "identifiers", "decisions", "profile_id"}
    cut = (OLD + timedelta(days=1)).date().isoformat()  # a date: midnight UTC
    old = _export(read_client, tenant.api_key, "events", to=cut).text.splitlines()
    recent = _export(read_client, tenant.api_key, "events", **{"from": cut}).text.splitlines()
    assert len(old) == 2 and len(recent) == 5


def test_events_csv_round_trips_awkward_values(read_client, tenant, data):
    rows = list(csv.DictReader(io.StringIO(_export(read_client, tenant.api_key, "events", format="csv").text)))
    assert len(rows) == 7
    awkward = next(r for r in rows if r["properties"] != "{}" and "page" in r["properties"])
    assert json.loads(awkward["properties"]) == {"page": "/a,\"b\"\n"}
    assert json.loads(awkward["identifiers"])[0]["type"] == "external_id"
    assert awkward["decisions"] == "[]" and awkward["emq"].isdigit()


def test_exports_are_per_tenant(read_client, new_tenant, data):
    other = new_tenant()
    for kind in ("profiles", "events"):
        r = _export(read_client, other.api_key, kind)
        assert r.status_code == 200 and r.text == ""
        assert _export(read_client, other.api_key, kind, format="csv").text.count("\n") == 1  # header only


@pytest.mark.parametrize(("params", "code"), [
    ({"format": "xml"}, "invalid_format"), ({"from": "yesterday"}, "invalid_time"), ({"to": "2025-13-01"}, "invalid_time"),
])
def test_bad_export_parameters_are_400(read_client, tenant, params, code):
    r = _export(read_client, tenant.api_key, "events", **params)
    assert r.status_code == 400 and r.json()["code"] == code


def test_too_many_exports_is_429(read_client, tenant):
    state = read_client.app.state.read
    state.exports_running = exports.MAX_CONCURRENT_EXPORTS
    try:
        r = _export(read_client, tenant.api_key, "profiles")
    finally:
        state.exports_running = 0
    assert r.status_code == 429 and r.json()["code"] == "too_many_exports" and r.headers["retry-after"]
    assert _export(read_client, tenant.api_key, "profiles").status_code == 200
    assert state.exports_running == 0  # the finished export gave its slot back


def test_cli_export_to_a_file_with_progress(tenant, data, settings, tmp_path, capsys):
    out = tmp_path / "events.csv"
    args = build_parser().parse_args(["export", "events", "--tenant", tenant.id, "--format", "csv", "--out", str(out)])
    args.func(args, settings)
    captured = capsys.readouterr()
    assert json.loads(captured.out.strip().splitlines()[-1]) == {"exported": 7, "kind": "events", "format": "csv",
                                                                  "out": str(out)}
    assert "7/7 rows" in captured.err and "100%" in captured.err
    rows = list(csv.DictReader(out.open()))
    assert len(rows) == 7 and rows[0]["event_name"] == "Old"


def test_cli_export_to_stdout(tenant, data, settings):
    env = {**os.environ, "STRATUM_DATABASE_URL": settings.database_url, "STRATUM_REDIS_URL": settings.redis_url}
    done = subprocess.run([sys.executable, "-m", "stratum.cli", "export", "profiles", "--tenant", tenant.id],
                          cwd=ROOT, env=env, capture_output=True, timeout=60)
    assert done.returncode == 0, done.stderr.decode()
    lines = [json.loads(line) for line in done.stdout.decode().splitlines()]
    assert sorted(p["id"] for p in lines) == sorted(p["id"] for p in data.values())
    assert b"4/4 rows" in done.stderr

    missing = subprocess.run([sys.executable, "-m", "stratum.cli", "export", "events", "--tenant",
                              "00000000-0000-0000-0000-000000000000"], cwd=ROOT, env=env, capture_output=True,
                             timeout=60)
    assert missing.returncode == 2 and b"no tenant" in missing.stderr


def test_a_client_leaving_early_frees_the_export(read_client, tenant, data, monkeypatch, db):
    monkeypatch.setattr(exports, "FETCH_ROWS", 1)
    state = read_client.app.state.read
    with read_client.stream("GET", "/api/v1/cdp/export/events", headers=auth(tenant.api_key)) as r:
        assert r.status_code == 200
        first = next(r.iter_lines())
        assert json.loads(first)["event_name"] == "Old"
    deadline = datetime.now(UTC) + timedelta(seconds=5)
    while state.exports_running and datetime.now(UTC) < deadline:
        read_client.get("/health")
    assert state.exports_running == 0
    # No export connection is left behind in the database.
    assert db.execute("SELECT count(*) FROM pg_stat_activity WHERE query LIKE '%%stratum_export%%'"
                      " AND pid <> pg_backend_pid()").fetchone()[0] == 0
