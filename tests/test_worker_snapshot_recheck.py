"""The snapshot's second look: once the profiles are locked, a batch checks that every one
of its identifiers is still held by the profile it read (workers/identity_store.py, step 4
of the protocol). A move committed between the first read and the locks, which the
batch's advisory locks do not cover, must abort the snapshot (``SnapshotChanged``, the
transaction is retried); nothing moved, the snapshot stands."""

from __future__ import annotations

import uuid

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
    a, b = _profile(db, tenant.id), _profile(db, tenant.id)
    for pid, h in ((a, "h-email"), (a, "h-anon"), (b, "h-other")):
        db.execute("INSERT INTO profile_identifiers (tenant_id, type, hash, profile_id, first_seen, last_seen)"
                   " VALUES (%s, %s, %s, %s, now(), now())",
                   (tenant.id, "email" if h == "h-email" else "anonymous_id", h, pid))
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


@pytest.mark.parametrize("move", ["to_other_profile", "new_key_linked"])
def test_a_move_between_reading_and_locking_aborts_the_snapshot(settings, tenant, two_profiles, move):
    a, b = two_profiles

    def commit_move() -> None:
        with connect(settings.database_url) as other:
            if move == "to_other_profile":
                other.execute("UPDATE profile_identifiers SET profile_id = %s WHERE tenant_id = %s AND hash = 'h-anon'",
                              (b, tenant.id))
            else:  # a key the first read found unheld is now held
                other.execute("INSERT INTO profile_identifiers (tenant_id, type, hash, profile_id, first_seen, last_seen)"
                              " VALUES (%s, 'anonymous_id', 'h-new', %s, now(), now())", (tenant.id, b))
            other.commit()

    with pytest.raises(SnapshotChanged, match="moved while locking"):
        _load(settings, tenant.id, commit_move)
