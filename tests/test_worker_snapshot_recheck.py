"""The snapshot's second look: once the profiles are locked, a batch checks that each of
its identifiers that was provisional when read is still held by the profile it read
(workers/identity_store.py, step 4 of the protocol). A provisional identifier displaced
between the first read and the locks, which the batch's advisory locks do not cover, must
abort the snapshot (``SnapshotChanged``, the transaction is retried); nothing moved, the
snapshot stands. Any other identifier changes hands only under its advisory lock, which
the batch holds from before its first read: that premise is checked here too."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import psycopg
import pytest

from stratum.db.connect import connect
from workers.identity_store import _LOCK_PROFILES_SQL, SnapshotChanged, load_snapshot


class _MoveBeforeLocking:
    """A connection that runs ``move`` (on another connection, committed) just before the
    profile locks are taken: the race the second look exists for."""

    def __init__(self, conn: psycopg.Connection, move) -> None:
        self._conn, self._move = conn, move

    def execute(self, query, params=None):
        if query == _LOCK_PROFILES_SQL and self._move is not None:
            self._move()
            self._move = None
        return self._conn.execute(query, params)


def _profile(db: psycopg.Connection, tenant_id: str) -> str:
    pid = str(uuid.uuid4())
    db.execute("INSERT INTO profiles (id, tenant_id, first_seen, last_seen) VALUES (%s, %s, now(), now())",
               (pid, tenant_id))
    return pid


@pytest.fixture
def two_profiles(db, tenant):
    """Profile a holds an email and a provisional anonymous id (linked by an unverified
    website claim, so a trusted event elsewhere may displace it); b holds another."""
    a, b = _profile(db, tenant.id), _profile(db, tenant.id)
    for pid, h in ((a, "h-email"), (a, "h-anon"), (b, "h-other")):
        db.execute("INSERT INTO profile_identifiers (tenant_id, type, hash, profile_id, first_seen, last_seen,"
                   " provisional_since) VALUES (%s, %s, %s, %s, now(), now(), %s)",
                   (tenant.id, "email" if h == "h-email" else "anonymous_id", h, pid,
                    datetime.now(UTC) if h == "h-anon" else None))
    return a, b


def _load(settings, tenant_id: str, move=None):
    with connect(settings.database_url) as conn, conn.transaction():
        return load_snapshot(_MoveBeforeLocking(conn, move), tenant_id,  # type: ignore[arg-type]
                             {("email", "h-email"), ("anonymous_id", "h-anon"), ("anonymous_id", "h-new")})


def test_snapshot_stands_when_nothing_moved(settings, tenant, two_profiles):
    a, _ = two_profiles
    snap = _load(settings, tenant.id)
    assert snap.graph == {("email", "h-email"): a, ("anonymous_id", "h-anon"): a}
    assert set(snap.profiles) == {a}


@pytest.mark.parametrize("move", ["displaced", "erased"])
def test_a_provisional_key_leaving_between_reading_and_locking_aborts_the_snapshot(settings, tenant, two_profiles,
                                                                                    move):
    a, b = two_profiles

    def commit_move() -> None:
        with connect(settings.database_url) as other:
            if move == "displaced":
                other.execute("UPDATE profile_identifiers SET profile_id = %s WHERE tenant_id = %s AND hash = 'h-anon'",
                              (b, tenant.id))
            else:
                other.execute("DELETE FROM profile_identifiers WHERE tenant_id = %s AND hash = 'h-anon'", (tenant.id,))
            other.commit()

    with pytest.raises(SnapshotChanged, match="moved while locking"):
        _load(settings, tenant.id, commit_move)


@pytest.mark.parametrize("key", [("email", "h-email"), ("anonymous_id", "h-new")], ids=["held", "unheld"])
def test_other_keys_cannot_change_hands_while_the_batch_holds_them(settings, tenant, two_profiles, key):
    """Linking an unheld key, or moving a held one that is not provisional, takes the key's
    advisory lock (workers and unmerge alike): between the batch's two looks it is taken."""
    from stratum.identity_locks import advisory_key

    tried: list[bool] = []

    def try_the_lock() -> None:
        with connect(settings.database_url) as other:
            got = other.execute("SELECT pg_try_advisory_xact_lock(%s)", (advisory_key(tenant.id, *key),)).fetchone()
            tried.append(got[0])
            other.rollback()

    _load(settings, tenant.id, try_the_lock)
    assert tried == [False]
