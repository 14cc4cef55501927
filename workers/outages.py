"""Telling a service that blinked from a batch that cannot be stored.

A worker treats the two in opposite ways. A transient error (a lost connection, a server
restarting, a serialization failure, a deadlock, a lock timeout, or our own "the graph
moved under us") says nothing about the data: the transaction is retried, and when the
retries run out the job goes back on the queue (``ServiceUnavailable``) while the worker
waits for the service. Any other error is the data's: persistence splits the batch until
the one event that causes it is found (workers/isolation.py).

``psycopg.OperationalError`` is not a test of "transient": it is the parent of disk full,
out of memory, query cancelled and more. What decides is the SQLSTATE: class 08
(connection exception), the server shutting down or starting (57P01..57P03), 40001,
40P01 and 55P03; an error with no SQLSTATE at all is raised by the client library itself
when the connection broke or could not be opened.
"""

from __future__ import annotations

import psycopg
import redis.exceptions

from workers.identity_store import SnapshotChanged

# serialization failure, deadlock, lock not available (lock_timeout)
_RETRY_SQLSTATES = frozenset({"40001", "40P01", "55P03"})
# admin shutdown, crash shutdown, cannot connect now: the connection is gone
_SERVER_GONE_SQLSTATES = frozenset({"57P01", "57P02", "57P03"})

REDIS_OUTAGE = (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError)


class ServiceUnavailable(Exception):
    """Postgres or Redis did not answer within the retries. Not the batch's fault: the
    worker puts the job back on the queue and waits for the service (workers/worker.py)."""


def connection_lost(exc: BaseException) -> bool:
    """The database connection that raised ``exc`` cannot be used again."""
    if not isinstance(exc, psycopg.Error):
        return False
    state = exc.sqlstate
    if state is None:
        return isinstance(exc, psycopg.OperationalError | psycopg.InterfaceError)
    return state.startswith("08") or state in _SERVER_GONE_SQLSTATES


def is_transient(exc: BaseException) -> bool:
    """Worth another attempt of the same transaction, unchanged."""
    if isinstance(exc, (SnapshotChanged, ServiceUnavailable, *REDIS_OUTAGE)):
        return True
    if not isinstance(exc, psycopg.Error):
        return False
    return connection_lost(exc) or exc.sqlstate in _RETRY_SQLSTATES
