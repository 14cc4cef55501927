"""Work run while a connection waits for Postgres (stratum/db/overlap.py), over a real
connection: steps run during the wait, the statement's result is untouched, a step's
error waits for ``result``, and a step's own statements run as usual."""

from __future__ import annotations

import time

import psycopg
import pytest

from stratum.db.connect import connect
from stratum.db.overlap import (
    FirstThen,
    Overlap,
    OverlapConnection,
    current_work,
    run_all,
    while_waiting,
)


@pytest.fixture
def conn(settings):
    with connect(settings.database_url, OverlapConnection, autocommit=True) as c:
        yield c


def _counting(done: list[float], n: int):
    """``n`` steps; ``done`` holds the times of the first and of the latest step."""
    for _ in range(n):
        now = time.monotonic()
        if not done:
            done.extend((now, now))
        done[1] = now
        yield
    return n


def test_steps_run_while_a_statement_waits(conn):
    done: list[float] = []
    work = Overlap(_counting(done, 10**9))
    start = time.monotonic()
    with while_waiting(work):
        assert conn.execute("SELECT 41 + 1 FROM pg_sleep(0.2)").fetchone() == (42,)
    answered = time.monotonic()
    assert done, "no step ran during the wait"
    assert all(start <= t <= answered for t in done)
    assert done[1] - done[0] > 0.1, "steps ran for most of the 0.2 s the server took"
    assert work.pending, "the steps go on only while the statement waits"
    work.close()


def test_without_work_or_after_it_the_connection_waits_as_usual(conn):
    done: list[float] = []
    work = Overlap(_counting(done, 3))
    with while_waiting(work):
        conn.execute("SELECT pg_sleep(0.05)")
        assert work.result() == 3
        conn.execute("SELECT pg_sleep(0.01)")  # nothing pending: a plain wait
    with while_waiting(None):
        assert conn.execute("SELECT 1").fetchone() == (1,)
    assert len(done) == 2


def test_a_step_error_is_raised_by_result_not_by_the_statement(conn):
    def failing():
        yield
        raise ValueError("bad step")

    work = Overlap(failing())
    with while_waiting(work):
        assert conn.execute("SELECT 7 FROM pg_sleep(0.1)").fetchone() == (7,)
    with pytest.raises(ValueError, match="bad step"):
        work.result()
    with conn.transaction():  # the connection is unharmed
        assert conn.execute("SELECT 8").fetchone() == (8,)


def test_an_exit_signal_in_a_step_propagates_at_once(conn):
    class Stop(BaseException):
        pass

    def stopping():
        yield
        raise Stop

    work = Overlap(stopping())
    with pytest.raises(Stop), while_waiting(work):
        conn.execute("SELECT pg_sleep(0.1)")
    assert not work.pending
    # the statement was cut short, as by a job timeout: the caller drops that connection
    assert conn.info.transaction_status == psycopg.pq.TransactionStatus.ACTIVE
    conn.close()


def test_a_step_may_use_another_connection(conn, settings):
    with connect(settings.database_url, OverlapConnection, autocommit=True) as side:
        def querying():
            got = []
            for i in range(3):
                got.append(side.execute("SELECT %s::int", (i,)).fetchone()[0])
                yield
            return got

        work = Overlap(querying())
        with while_waiting(work):
            conn.execute("SELECT pg_sleep(0.2)")
        assert work.result() == [0, 1, 2]


def test_copy_and_transactions_are_unchanged_by_overlapping_work(conn):
    done: list[float] = []
    conn.execute("CREATE TEMP TABLE overlap_rows (n int, t text)")
    rows = "".join(f"{i}\trow {i}\n" for i in range(50_000)).encode()
    with while_waiting(Overlap(_counting(done, 10**9))):
        with conn.transaction(), conn.cursor().copy("COPY overlap_rows (n, t) FROM STDIN") as copy:
            copy.write(rows)
        total = conn.execute("SELECT count(*), sum(n) FROM overlap_rows").fetchone()
    assert total == (50_000, sum(range(50_000)))
    assert done


def test_run_all_and_close():
    assert run_all(_counting([], 5)) == 5
    closed = []

    def with_cleanup():
        try:
            yield
            yield
        finally:
            closed.append(True)

    work = Overlap(with_cleanup())
    work.step()
    work.close()
    assert closed == [True] and not work.pending


def test_a_plain_connection_is_not_an_overlap_connection(settings):
    with connect(settings.database_url, autocommit=True) as plain:
        assert type(plain) is psycopg.Connection


def _logging(log: list[str], name: str, n: int):
    for i in range(n):
        log.append(f"{name}{i}")
        yield
    return name


def test_first_then_runs_the_first_work_before_what_was_waiting(conn):
    """A round's own work (workers/profile_writeback.py) goes ahead of the next round's
    preparation in a statement's wait, which then goes on with the preparation."""
    log: list[str] = []
    ahead = Overlap(_logging(log, "ahead", 10**6))
    with while_waiting(ahead):
        assert current_work() is ahead
        own = Overlap(_logging(log, "own", 3))
        with while_waiting(FirstThen(own, current_work())):
            conn.execute("SELECT pg_sleep(0.1)")
        assert current_work() is ahead
        assert own.result() == "own"
    assert log[:4] == ["own0", "own1", "own2", "ahead0"], log[:6]
    assert len(log) > 10, "the wait went on with the work that was waiting"
    assert current_work() is None
    ahead.close()


def test_first_then_without_anything_waiting_and_while_a_step_runs():
    own = Overlap(_logging([], "own", 2))
    chain = FirstThen(own, None)
    assert chain.pending and not chain.running
    chain.step()
    chain.step()
    chain.step()  # the generator's return
    assert not chain.pending
    assert own.result() == "own"

    log: list[str] = []

    def reentrant():
        # while this step runs, neither work may be started again from inside it
        assert not chain2.pending and chain2.running
        log.append("step")
        yield
    first = Overlap(reentrant())
    then = Overlap(_logging(log, "then", 1))
    chain2 = FirstThen(first, then)
    chain2.step()
    assert log == ["step"]
    assert chain2.pending and not chain2.running
