"""The steady-state fast path (workers/identity_store.py, ``load_batch``): events whose
identifiers already sit on one live profile skip the advisory locks and the planner, and
stay correct against a merge that commits while they wait for the profile's row lock."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime

import pytest

from core.identity import IdentityRules
from core.schemas import QueuedBatch, QueuedEvent
from stratum.db.connect import connect
from workers.identity_store import SnapshotChanged, load_batch
from workers.persist import persist_tenant_events
from workers.prepare import prepare_batch

_n = iter(range(1, 10_000))


def _events(tenant, *identifier_sets):
    now = datetime.now(UTC)
    queued = []
    for ids in identifier_sets:
        n = next(_n)
        queued.append(QueuedEvent(f"0190a000-0000-7000-8000-{n:012d}", f"fast-{n}", "track", "Viewed", now,
                                  list(ids), {}, {}, {}, None, 0, []))
    return prepare_batch(QueuedBatch(1, tenant.id, tenant.source_id, "server", "US", now, f"req-{n}", None, None,
                                     queued))


def _persist(conn, tenant, events):
    with conn.transaction():
        return persist_tenant_events(conn, tenant.id, events, IdentityRules())


def _owner(db, tenant, id_type, value):
    from core.identifiers import normalize_identifier

    h = normalize_identifier(id_type, value, default_region="US").hash
    return db.execute("SELECT profile_id::text FROM profile_identifiers WHERE tenant_id = %s AND type = %s"
                      " AND hash = %s", (tenant.id, id_type, h)).fetchone()[0]


def _keys(events):
    return [[(i.type, i.hash) for i in e.identifiers] for e in events]


def test_steady_events_are_found_and_planned_ones_demote_their_profile(settings, tenant, db):
    conn = connect(settings.database_url)
    try:
        _persist(conn, tenant, _events(tenant, [("anonymous_id", "a-1")], [("anonymous_id", "b-1")]))
        p, q = _owner(db, tenant, "anonymous_id", "a-1"), _owner(db, tenant, "anonymous_id", "b-1")
        events = _events(tenant, [("anonymous_id", "a-1")], [("anonymous_id", "b-1")],
                         [("anonymous_id", "b-1"), ("email", "new@example.com")], [("anonymous_id", "c-1")])
        with conn.transaction():
            snap = load_batch(conn, tenant.id, _keys(events), [True] * 4, [False] * 4)
            # a-1 is steady; b-1's profile gains an email in the same batch, so both of its
            # events are planned; c-1 is new
            assert snap.steady == {0: p}
            assert snap.profiles[p].steady_identifiers == 1 and snap.profiles[q].steady_identifiers is None
            advisory = conn.execute("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'"
                                    " AND pid = pg_backend_pid()").fetchone()[0]
            assert advisory == 3  # b-1, the email and c-1; never a-1
        out = _persist(conn, tenant, events)
        assert out.stored == 4 and out.profiles_created == 1
        assert db.execute("SELECT event_count, identifier_count FROM profiles WHERE id = %s", (p,)).fetchone() == (2, 1)
        assert db.execute("SELECT event_count, identifier_count FROM profiles WHERE id = %s", (q,)).fetchone() == (3, 2)
    finally:
        conn.close()


def _wait_for_lock_wait(db, pid: int, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        row = db.execute("SELECT wait_event_type FROM pg_stat_activity WHERE pid = %s", (pid,)).fetchone()
        if row and row[0] == "Lock":
            return
        time.sleep(0.02)
    raise AssertionError("the fast path never waited for the profile lock")


def test_fast_path_racing_a_merge_retries_and_lands_on_the_survivor(settings, tenant, db):
    """A steady event reads its profile P, then waits for P's row lock while another
    transaction merges P into Q; once the merge commits, the fast path must not write to the
    absorbed P: it raises SnapshotChanged, and its retry stores the event on Q."""
    merger, fast = connect(settings.database_url), connect(settings.database_url)
    try:
        _persist(merger, tenant, _events(tenant, [("anonymous_id", "a-1")], [("email", "q@example.com")]))
        p, q = _owner(db, tenant, "anonymous_id", "a-1"), _owner(db, tenant, "email", "q@example.com")
        steady = _events(tenant, [("anonymous_id", "a-1")], [("anonymous_id", "a-1")])
        outcome: list[object] = []

        def run_fast() -> None:
            try:
                outcome.append(_persist(fast, tenant, steady))
            except Exception as exc:  # noqa: BLE001 - handed to the test thread
                outcome.append(exc)

        with merger.transaction():
            merged = persist_tenant_events(merger, tenant.id, _events(
                tenant, [("email", "q@example.com"), ("anonymous_id", "a-1")]), IdentityRules())
            assert merged.merges == 1
            thread = threading.Thread(target=run_fast)
            thread.start()
            _wait_for_lock_wait(db, fast.info.backend_pid)
        thread.join(30)
        assert len(outcome) == 1 and isinstance(outcome[0], SnapshotChanged), outcome

        assert _persist(fast, tenant, steady).stored == 2  # the retry
        assert db.execute("SELECT merged_into::text FROM profiles WHERE id = %s", (p,)).fetchone()[0] == q
        assert {r[0] for r in db.execute("SELECT DISTINCT profile_id::text FROM events WHERE tenant_id = %s",
                                         (tenant.id,))} == {q}
        assert db.execute("SELECT event_count, identifier_count FROM profiles WHERE id = %s",
                          (q,)).fetchone() == (5, 2)
        # the absorbed profile's counters were not written after the merge
        assert db.execute("SELECT event_count FROM profiles WHERE id = %s", (p,)).fetchone()[0] == 1
    finally:
        merger.close()
        fast.close()


@pytest.mark.parametrize("steady_first", [True, False])
def test_fast_path_and_merge_in_either_order_keep_one_live_profile(settings, tenant, db, steady_first):
    """Without forcing the interleaving: whichever commits first, every identifier ends on
    one live profile and every event is counted once on it."""
    a, b = connect(settings.database_url), connect(settings.database_url)
    try:
        _persist(a, tenant, _events(tenant, [("anonymous_id", "a-1")], [("email", "q@example.com")]))
        steady = _events(tenant, *[[("anonymous_id", "a-1")]] * 20)
        merge = _events(tenant, [("email", "q@example.com"), ("anonymous_id", "a-1")])
        first, second = (steady, merge) if steady_first else (merge, steady)
        errors: list[Exception] = []

        def run(conn, events):
            for _attempt in range(5):
                try:
                    _persist(conn, tenant, events)
                    return
                except SnapshotChanged:
                    continue
                except Exception as exc:  # noqa: BLE001
                    errors.append(exc)
                    return

        threads = [threading.Thread(target=run, args=(a, first)), threading.Thread(target=run, args=(b, second))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert not errors
        live = db.execute("SELECT id::text, event_count FROM profiles WHERE tenant_id = %s AND merged_into IS NULL",
                          (tenant.id,)).fetchall()
        assert len(live) == 1 and live[0][1] == 23
        assert db.execute("SELECT count(DISTINCT profile_id) FROM profile_identifiers").fetchone()[0] == 1
        assert db.execute("SELECT count(*) FROM events WHERE profile_id = %s", (live[0][0],)).fetchone()[0] == 23
    finally:
        a.close()
        b.close()
