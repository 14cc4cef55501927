"""The webhook delivery queue as ``stratum status`` and ``/ops`` show it.

Deliveries are queued in Postgres (the ``deliveries`` table is the outbox, see
workers/delivery.py), not in RQ, so their counts come from there, under the queue name
``stratum-deliveries``: ``queued`` are due now, ``started`` are first attempts in flight
(claimed under a lease), ``scheduled`` are failed attempts waiting for their retry (a retry
in flight counts here too), ``failed`` are dead.
"""

from __future__ import annotations

import psycopg

DELIVERY_QUEUE_NAME = "stratum-deliveries"
# Each delivery process publishes its lanes (breaker state, failures, in flight) as a hash
# destination id -> JSON under its own key, refreshed every LANES_PUBLISH_S and expiring
# after LANES_TTL_S, so /ops sees live processes only.
LANES_KEY_PREFIX = "stratum:delivery-lanes:"
LANES_PUBLISH_S = 2.0
LANES_TTL_S = 10


def lanes_key(process_name: str) -> str:
    """The hash of one delivery process's lane states."""
    return LANES_KEY_PREFIX + process_name

_STATUS_SQL = """
SELECT count(*) FILTER (WHERE status IN ('pending', 'failed') AND next_attempt_at <= now()),
       count(*) FILTER (WHERE status = 'pending' AND next_attempt_at > now()),
       count(*) FILTER (WHERE status = 'failed' AND next_attempt_at > now()),
       count(*) FILTER (WHERE status = 'dead'),
       coalesce(extract(epoch FROM now() - min(next_attempt_at)
                        FILTER (WHERE status IN ('pending', 'failed') AND next_attempt_at <= now())), 0)
FROM deliveries
"""


def delivery_queue_status(conn: psycopg.Connection) -> dict:
    """``{"queued", "started", "scheduled", "failed", "oldest_queued_age_s"}`` of the delivery queue."""
    queued, started, scheduled, dead, age = conn.execute(_STATUS_SQL).fetchone()
    return {"queued": queued, "started": started, "scheduled": scheduled, "failed": dead,
            "oldest_queued_age_s": round(float(age), 3)}


# The live stream (CONTRACT 7): workers publish each tenant's messages on its channel after
# commit, when a read process is subscribed; read processes fan them out to WebSocket clients.
STREAM_CHANNEL_PREFIX = "stratum:stream:"
# Sorted set of a tenant's connected stream clients (member: client id, score: expiry time),
# shared by every read process to enforce the per-tenant cap.
STREAM_CLIENTS_PREFIX = "stratum:stream-clients:"


def stream_channel(tenant_id: str) -> str:
    """The pub/sub channel of a tenant's live messages."""
    return STREAM_CHANNEL_PREFIX + tenant_id


def stream_clients_key(tenant_id: str) -> str:
    return STREAM_CLIENTS_PREFIX + tenant_id
