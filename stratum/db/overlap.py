"""Python work done while this thread waits for Postgres.

A worker's job thread spends most of a round waiting for its transaction's statements
(workers/jobs.py). The next round's preparation (decoding, mapping, normalizing, hashing)
used to run on a second thread in those waits, but two Python threads share one
interpreter lock: each time a statement's result arrived, the job thread waited for the
lock, up to the switch interval (5 ms) per wake-up, while the other thread held it. A
5,000-row result read in 20 ms alone took 70-126 ms beside the preparing thread, and
preparing ahead bought one worker 3-7% instead of the ~20% its share of the work allows.

Here the job thread does that work itself, in steps, while it waits: a connection of
``OverlapConnection`` runs steps of this thread's current ``Overlap`` (``while_waiting``)
for as long as the server has not answered, then goes on at once. No lock changes hands;
a result that arrives during a step waits for that step only (keep steps well under a
millisecond). What the waits leave undone is finished by ``Overlap.result``.
"""

from __future__ import annotations

import contextlib
import select
import threading
from collections.abc import Generator, Iterator
from typing import Any, Generic, TypeVar

import psycopg
from psycopg.waiting import Wait

T = TypeVar("T")
RV = TypeVar("RV")

_POLL_MASKS = {Wait.R: select.POLLIN, Wait.W: select.POLLOUT, Wait.RW: select.POLLIN | select.POLLOUT}
_local = threading.local()


class Overlap(Generic[T]):
    """Work in steps: ``steps`` yields between steps and returns the result. An exception
    (an ``Exception``: a timeout or exit signal propagates at once) raised by a step is
    kept and raised by ``result``, not by the statement whose wait it ran in."""

    def __init__(self, steps: Generator[None, None, T]) -> None:
        self._steps = steps
        self._done = False
        self._running = False
        self._value: T | None = None
        self._error: Exception | None = None

    @property
    def pending(self) -> bool:
        """Steps remain, and none is running (a step's own database waits run no other)."""
        return not self._done and not self._running

    @property
    def running(self) -> bool:
        return self._running

    def step(self) -> None:
        self._running = True
        try:
            next(self._steps)
        except StopIteration as stop:
            self._done, self._value = True, stop.value
        except Exception as exc:  # noqa: BLE001 - kept for result()
            self._done, self._error = True, exc
        except BaseException:
            self._done = True
            raise
        finally:
            self._running = False

    def result(self) -> T:
        """Run the remaining steps; the value, or the exception a step raised."""
        while not self._done:
            self.step()
        if self._error is not None:
            raise self._error
        return self._value  # type: ignore[return-value]

    def close(self) -> None:
        """Abandon the remaining steps (the generator's ``finally`` blocks run)."""
        self._done = True
        self._steps.close()


class FirstThen:
    """``first``'s steps, then ``then``'s: work a statement's own round needs after it (run
    in its wait ahead of what was already waiting there, the next round's preparation)."""

    def __init__(self, first: Overlap[Any], then: Overlap[Any] | FirstThen | None) -> None:
        self._first = first
        self._then = then

    @property
    def pending(self) -> bool:
        if self._first.pending:
            return True
        return not self._first.running and self._then is not None and self._then.pending

    @property
    def running(self) -> bool:
        return self._first.running or (self._then is not None and self._then.running)

    def step(self) -> None:
        if self._first.pending:
            self._first.step()
        elif self._then is not None:
            self._then.step()


def current_work() -> Overlap[Any] | FirstThen | None:
    """What this thread's waits run now (``while_waiting``), or None."""
    return getattr(_local, "work", None)


def run_all(steps: Generator[None, None, T]) -> T:
    """The steps' result, run here and now."""
    return Overlap(steps).result()


@contextlib.contextmanager
def while_waiting(work: Overlap[Any] | FirstThen | None) -> Iterator[None]:
    """Run steps of ``work`` whenever an ``OverlapConnection`` of this thread waits (None:
    nothing to run)."""
    previous = getattr(_local, "work", None)
    _local.work = work
    try:
        yield
    finally:
        _local.work = previous


class OverlapConnection(psycopg.Connection):  # type: ignore[type-arg]
    """A connection whose waits run this thread's current ``Overlap`` (``while_waiting``)."""

    def wait(self, gen: Any, interval: float = 0.1, timeout: float | None = None) -> Any:
        work: Overlap[Any] | FirstThen | None = getattr(_local, "work", None)
        if work is None or not work.pending:
            return super().wait(gen, interval, timeout)
        return super().wait(_interleaved(gen, self.pgconn.socket, work), interval, timeout)


def _interleaved(gen: Generator[Any, Any, RV], fileno: int, work: Overlap[Any] | FirstThen
                 ) -> Generator[Any, Any, RV]:
    """``gen`` (psycopg's protocol: it yields what it waits for, is sent what is ready),
    with steps of ``work`` run before each wait for as long as the socket is not ready.
    psycopg's own wait function still does the waiting (and its cancel on interrupt)."""
    try:
        state = next(gen)
    except StopIteration as stop:
        return stop.value  # type: ignore[no-any-return]
    poller = select.poll()
    poller.register(fileno, _POLL_MASKS[state])
    while True:
        while work.pending and not poller.poll(0):
            work.step()
        ready = yield state
        try:
            state = gen.send(ready)
        except StopIteration as stop:
            return stop.value  # type: ignore[no-any-return]
        poller.modify(fileno, _POLL_MASKS[state])
