"""Lookups raced against writers: readers (each its own read API app, as separate
processes would be) look a person up in a loop while a worker merges, a consent update
commits or the person is erased. Every answer must be a whole state, the one before or
the one after the change, and every lookup that started after the writer returned must
show the change: no stale answer, no half-applied one. Lookups are not cached, and one
statement sees one snapshot; these tests keep it that way."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from litestar.testing import TestClient
from test_read_support import auth, event, ingest_and_drain, profile_by

READERS = 3
LOOKUPS_EACH_SIDE = 15  # per reader, before the writer starts and after it returned


class Reader(threading.Thread):
    """Runs ``paths`` in a loop against its own app; logs (started, path, status, body, finished)."""

    def __init__(self, settings, api_key: str, paths: list[str]) -> None:
        from read_api.app import create_app

        super().__init__(daemon=True)
        # Built here, on the test's thread: apps built on three threads at once imported
        # Litestar's lazily loaded plugins concurrently, and one thread could find a module
        # half initialized (ImportError of PydanticDIPlugin, seen once in CI).
        self.app = create_app(settings)
        self.api_key, self.paths = api_key, paths
        self.log: list[tuple[float, str, int, dict, float]] = []
        self.stop = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            with TestClient(app=self.app) as client:
                while not self.stop.is_set():
                    for path in self.paths:
                        started = time.monotonic()
                        r = client.get(path, headers=auth(self.api_key))
                        self.log.append((started, path, r.status_code, r.json(), time.monotonic()))
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            self.error = exc

    def count(self, after: float = 0.0) -> int:
        return sum(1 for started, *_ in list(self.log) if started > after)


def _race(settings, api_key: str, paths: list[str], write: Callable[[], None]) -> tuple[list, float, float]:
    """Readers on ``paths``; ``write()`` once they are all running. Returns every logged
    answer, the time the write started and the time it returned (committed)."""
    readers = [Reader(settings, api_key, paths) for _ in range(READERS)]
    for r in readers:
        r.start()
    try:
        _wait(readers, lambda r: r.count() >= LOOKUPS_EACH_SIDE)
        write_started = time.monotonic()
        write()
        committed = time.monotonic()
        _wait(readers, lambda r: r.count(after=committed) >= LOOKUPS_EACH_SIDE)
    finally:
        for r in readers:
            r.stop.set()
        for r in readers:
            r.join(30)
    for r in readers:
        assert r.error is None, r.error
    return [entry for r in readers for entry in r.log], write_started, committed


def _wait(readers: list[Reader], done: Callable[[Reader], bool]) -> None:
    while not all(done(r) or r.error is not None or not r.is_alive() for r in readers):
        time.sleep(0.01)


def _check(log: list, write_started: float, committed: float, before: dict, after: dict) -> None:
    """Each answer is exactly the state before or after; after the commit, always after;
    before the write started, always before (judged by when the answer arrived: a request
    stamped earlier may still reach the server after the commit on a busy machine)."""
    for started, path, status, body, finished in log:
        answer = (status, body)
        assert answer in (before[path], after[path]), f"{path}: half-applied answer {answer}"
        if started > committed:
            assert answer == after[path], f"{path}: stale answer after the commit: {answer}"
        if finished < write_started and before[path] != after[path]:
            assert answer == before[path], f"{path}: answered the future {answer}"


def _snapshot(client, api_key: str, paths: list[str]) -> dict:
    out = {}
    for path in paths:
        r = client.get(path, headers=auth(api_key))
        out[path] = (r.status_code, r.json())
    return out


def _paths(*lookups: tuple[str, str], ids: tuple[str, ...] = ()) -> list[str]:
    return ([f"/api/v1/cdp/profiles?identifier_type={t}&identifier_value={v}" for t, v in lookups]
            + [f"/api/v1/cdp/profiles/{pid}" for pid in ids])


def test_a_merge_is_never_seen_stale_or_half_applied(settings, ingest_client, read_client, tenant, drain):
    ingest_and_drain(ingest_client, drain, tenant.write_key,
                     event("Viewed", ("anonymous_id", "race-anon"), ("device_id", "race-dev")),
                     event("Signed Up", ("email", "race@example.com"), traits={"plan": "pro"}))
    anon = profile_by(read_client, tenant.api_key, "anonymous_id", "race-anon").json()
    known = profile_by(read_client, tenant.api_key, "email", "race@example.com").json()
    assert anon["id"] != known["id"]
    paths = _paths(("anonymous_id", "race-anon"), ("device_id", "race-dev"), ("email", "race@example.com"),
                   ids=(anon["id"], known["id"]))
    before = _snapshot(read_client, tenant.api_key, paths)

    log, started, committed = _race(settings, tenant.api_key, paths, lambda: ingest_and_drain(
        ingest_client, drain, tenant.write_key,
        event("Logged In", ("anonymous_id", "race-anon"), ("email", "race@example.com"))))

    after = _snapshot(read_client, tenant.api_key, paths)
    survivor = after[paths[0]][1]
    assert {after[p][1]["id"] for p in paths} == {survivor["id"]}
    assert len(survivor["identifiers"]) == 3 and survivor["counters"]["events"] == 3
    _check(log, started, committed, before, after)


def test_a_consent_update_is_never_seen_stale(settings, ingest_client, read_client, tenant, drain):
    ingest_and_drain(ingest_client, drain, tenant.write_key, event("Viewed", ("email", "consent-race@example.com")))
    pid = profile_by(read_client, tenant.api_key, "email", "consent-race@example.com").json()["id"]
    paths = _paths(("email", "consent-race@example.com"), ids=(pid,))
    before = _snapshot(read_client, tenant.api_key, paths)

    def write() -> None:
        r = read_client.put(f"/api/v1/cdp/profiles/{pid}/consents", json={"consents": {"email": True, "ads": False}},
                            headers=auth(tenant.api_key))
        assert r.status_code == 200, r.text

    log, started, committed = _race(settings, tenant.api_key, paths, write)
    after = _snapshot(read_client, tenant.api_key, paths)
    assert set(after[paths[0]][1]["consents"]) == {"email", "ads"}
    _check(log, started, committed, before, after)


def test_an_erasure_is_never_seen_stale_or_half_applied(settings, ingest_client, read_client, tenant, drain):
    ingest_and_drain(ingest_client, drain, tenant.write_key,
                     event("Viewed", ("anonymous_id", "gone-anon")),
                     event("Signed Up", ("email", "gone@example.com"), traits={"name": "Eve"}))
    ingest_and_drain(ingest_client, drain, tenant.write_key,
                     event("Logged In", ("anonymous_id", "gone-anon"), ("email", "gone@example.com")))
    pid = profile_by(read_client, tenant.api_key, "email", "gone@example.com").json()["id"]
    paths = _paths(("email", "gone@example.com"), ("anonymous_id", "gone-anon"), ids=(pid,))
    before = _snapshot(read_client, tenant.api_key, paths)

    def write() -> None:
        r = read_client.delete(f"/api/v1/cdp/profiles/{pid}", headers=auth(tenant.api_key))
        assert r.status_code == 200, r.text

    log, started, committed = _race(settings, tenant.api_key, paths, write)
    after = _snapshot(read_client, tenant.api_key, paths)
    assert {status for status, _ in after.values()} == {404}
    _check(log, started, committed, before, after)


def test_a_timeline_is_never_seen_stale_or_half_merged(settings, ingest_client, read_client, tenant, drain):
    """The timeline's first page is one autocommit statement (id -> survivor -> page): during
    a merge, a merged-away id's page is the old profile's events or the survivor's, never a
    mix and never the old one after the merge committed."""
    ingest_and_drain(ingest_client, drain, tenant.write_key,
                     event("Viewed", ("anonymous_id", "tl-race-anon")),
                     event("Signed Up", ("email", "tl-race@example.com")))
    anon = profile_by(read_client, tenant.api_key, "anonymous_id", "tl-race-anon").json()["id"]
    known = profile_by(read_client, tenant.api_key, "email", "tl-race@example.com").json()["id"]
    paths = [f"/api/v1/cdp/profiles/{pid}/events?limit=2" for pid in (anon, known)]
    before = _snapshot(read_client, tenant.api_key, paths)

    log, started, committed = _race(settings, tenant.api_key, paths, lambda: ingest_and_drain(
        ingest_client, drain, tenant.write_key,
        event("Logged In", ("anonymous_id", "tl-race-anon"), ("email", "tl-race@example.com"))))

    after = _snapshot(read_client, tenant.api_key, paths)
    assert after[paths[0]] == after[paths[1]]  # both ids list the survivor's events
    assert len(after[paths[0]][1]["events"]) == 2 and after[paths[0]][1]["next_cursor"] is not None
    assert before[paths[0]] != after[paths[0]]
    _check(log, started, committed, before, after)
