"""The delivery process (``stratum deliver``): sends the outbox's messages to webhooks.

Protocol (what a crash means):

- Rows of ``deliveries`` in ``pending`` or ``failed`` whose ``next_attempt_at`` has come are
  due. A lane claims a batch of its destination's due rows with ``FOR UPDATE SKIP LOCKED``
  and moves their ``next_attempt_at`` forward by a lease in the same statement, so no other
  process claims them meanwhile. The lease covers the batch: (batch / in-flight + 1)
  request timeouts plus a margin of two more; a claimed row not started while a timeout and
  a half-margin of its lease remain is dropped (it is due again, for whoever claims it
  next), so a row is never sent by two processes at once. Outcomes are written back in batches (workers/delivery_attempt.py). A
  process that dies leaves its rows due again when their lease ends: those messages are sent
  again with the same ``webhook-id`` (at-least-once; the receiver dedupes), never lost.
- Each destination has its own lane: at most ``delivery_max_in_flight`` requests in flight
  and a circuit breaker that opens after ``delivery_breaker_threshold`` consecutive failures
  (then lets one probe through after the cool-down). Lanes never wait on each other, so a
  receiver that hangs holds only its own lane, for at most the 10 s timeout per request.
- Every attempt re-checks, against the current state: the destination is active (else
  ``skipped``/``inactive``), the profile's consent (CONTRACT 7; else ``skipped``/``consent``)
  and the SSRF guard (the name is resolved once, all addresses must be allowed, and the
  request goes to the checked address with the original Host and TLS server name).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import socket
import time
from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, datetime

import httpx
import msgspec
from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server
from psycopg_pool import AsyncConnectionPool
from redis.asyncio import Redis
from redis.exceptions import RedisError
from redis.typing import EncodableT, FieldT

from core.webhooks import UNGATED_TOPICS
from stratum.queue.deliveries import LANES_PUBLISH_S, LANES_TTL_S, lanes_key
from stratum.settings import Settings, libpq_url
from workers.delivery_attempt import (
    Claimed,
    Outcome,
    OutcomeRecorder,
    Target,
    consented,
    send,
    signing_secrets,
)
from workers.replay import advance_replays

log = logging.getLogger(__name__)

# Margin of the claim lease over the time its batch may take (resolution, bookkeeping),
# in request timeouts: 20 s with the default 10 s timeout.
LEASE_MARGIN_TIMEOUTS = 2
# Rows a lane claims at once, per request it may have in flight.
CLAIM_PER_SLOT = 16

_DUE_DESTINATIONS_SQL = """
SELECT d.id::text, d.tenant_id::text, d.url, d.active, d.consent, d.secret, d.previous_secret, d.secret_rotated_at
FROM destinations d
WHERE EXISTS (SELECT 1 FROM deliveries x WHERE x.destination_id = d.id AND x.status IN ('pending', 'failed')
              AND x.next_attempt_at <= now())
"""
_CLAIM_SQL = """
UPDATE deliveries d SET next_attempt_at = now() + make_interval(secs => %(lease)s)
FROM (SELECT tenant_id, id FROM deliveries
      WHERE destination_id = %(d)s AND status IN ('pending', 'failed') AND next_attempt_at <= now()
      ORDER BY next_attempt_at, id LIMIT %(n)s FOR UPDATE SKIP LOCKED) c
WHERE d.tenant_id = c.tenant_id AND d.id = c.id
RETURNING d.tenant_id::text, d.id, d.message_id, d.topic, d.profile_id::text, d.body, d.attempts
"""


@dataclass
class Lane:
    """One destination's share of this process: claimed rows waiting, requests in flight,
    and the circuit breaker."""

    waiting: deque[tuple[float, Claimed]] = field(default_factory=deque)  # (start-by monotonic time, row)
    in_flight: int = 0
    claiming: bool = False
    consecutive_failures: int = 0
    open_until: float = 0.0

    def capacity(self, max_in_flight: int, now: float) -> int:
        if self.open_until > now:
            return 0
        if self.open_until:  # half-open after the cool-down: one probe at a time
            return 1 if self.in_flight == 0 else 0
        return max_in_flight - self.in_flight


class DeliveryMetrics:
    """Prometheus metrics of one delivery process, per destination id."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.attempts = Counter("stratum_webhook_attempts", "Delivery outcomes", ["destination", "outcome"],
                                registry=self.registry)
        self.seconds = Histogram("stratum_webhook_attempt_seconds", "Time of one webhook request", ["destination"],
                                 registry=self.registry, buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10))


class DeliveryService:
    """Runs the lanes of every destination with due deliveries, until ``stop`` is set."""

    def __init__(self, settings: Settings, pool: AsyncConnectionPool, client: httpx.AsyncClient,
                 metrics: DeliveryMetrics | None = None, redis: Redis | None = None) -> None:
        self.settings = settings
        self.redis = redis
        self.lanes_key = lanes_key(f"{socket.gethostname()}:{os.getpid()}")
        self.published_at = 0.0
        self.pool = pool
        self.client = client
        self.metrics = metrics or DeliveryMetrics()
        self.recorder = OutcomeRecorder(pool)
        self.lanes: dict[str, Lane] = {}
        self.targets: dict[str, Target] = {}
        self.tasks: set[asyncio.Task] = set()
        self.stop = asyncio.Event()
        slots = max(1, settings.delivery_max_in_flight)
        self.claim_size = slots * CLAIM_PER_SLOT
        self.lease_margin_s = LEASE_MARGIN_TIMEOUTS * settings.delivery_timeout_s
        self.lease_s = (math.ceil(self.claim_size / slots) + 1) * settings.delivery_timeout_s + self.lease_margin_s

    async def run(self, stop: asyncio.Event) -> None:
        self.stop = stop
        recorder = asyncio.create_task(self.recorder.run(stop))
        while not stop.is_set():
            try:
                await advance_replays(self.pool)
                await self.tick()
                await self.publish_lanes()
            except Exception:  # noqa: BLE001 - a database hiccup must not end the process
                log.exception("delivery tick failed; retrying")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.settings.delivery_poll_interval_s)
        if self.tasks:
            await asyncio.wait(self.tasks, timeout=self.settings.delivery_timeout_s + 1)
        await recorder
        await self.recorder.flush()

    def lane_states(self) -> dict[FieldT, EncodableT]:
        """This process's lanes as /ops shows them: destination id -> JSON."""
        now = time.monotonic()
        out: dict[FieldT, EncodableT] = {}
        for did, lane in self.lanes.items():
            breaker = "open" if lane.open_until > now else "half_open" if lane.open_until else "closed"
            out[did] = msgspec.json.encode({"breaker": breaker, "consecutive_failures": lane.consecutive_failures,
                                            "in_flight": lane.in_flight, "waiting": len(lane.waiting)})
        return out

    async def publish_lanes(self) -> None:
        """Publish the lane states for /ops (stratum/queue/deliveries.py); best effort."""
        if self.redis is None or time.monotonic() - self.published_at < LANES_PUBLISH_S:
            return
        self.published_at = time.monotonic()
        states = self.lane_states()
        try:
            async with self.redis.pipeline(transaction=True) as pipe:
                pipe.delete(self.lanes_key)
                if states:
                    pipe.hset(self.lanes_key, mapping=states)
                    pipe.expire(self.lanes_key, LANES_TTL_S)
                await pipe.execute()
        except RedisError as exc:
            log.warning("publishing lane states failed: %s", exc)

    async def tick(self) -> None:
        """Refresh the destinations that have due deliveries and fill their lanes."""
        async with self.pool.connection() as conn:
            rows = await (await conn.execute(_DUE_DESTINATIONS_SQL)).fetchall()
        now = datetime.now(UTC)
        for did, tenant_id, url, active, consent, secret, previous, rotated_at in rows:
            try:
                secrets = signing_secrets(secret, previous, rotated_at, self.settings.secret_key, now)
            except Exception:  # noqa: BLE001 - a secret sealed with another key: say so, keep other lanes going
                log.error("destination %s: its secret cannot be opened with STRATUM_SECRET_KEY", did)
                continue
            self.targets[did] = Target(did, tenant_id, url, active, consent, secrets)
            await self._fill(did)

    def _start_waiting(self, did: str, lane: Lane) -> None:
        target = self.targets[did]
        while lane.waiting and lane.capacity(self.settings.delivery_max_in_flight, time.monotonic()) > 0:
            start_by, row = lane.waiting.popleft()
            if time.monotonic() > start_by:
                continue  # its lease is nearly over: left for the next claim
            lane.in_flight += 1
            task = asyncio.create_task(self._attempt(target, lane, row))
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)

    async def _fill(self, did: str) -> None:
        """Start waiting rows while the lane has room; claim more when it runs low. Called by
        the tick and by every finished attempt, so a busy lane refills without waiting."""
        lane = self.lanes.setdefault(did, Lane())
        self._start_waiting(did, lane)
        # Claim ahead while fewer than half a batch wait; never while the breaker is open.
        if lane.claiming or self.stop.is_set() or len(lane.waiting) >= self.claim_size // 2 \
                or lane.open_until > time.monotonic():
            return
        lane.claiming = True
        try:
            async with self.pool.connection() as conn:
                claimed = await (await conn.execute(_CLAIM_SQL, {
                    "d": did, "n": self.claim_size - len(lane.waiting), "lease": self.lease_s})).fetchall()
        finally:
            lane.claiming = False
        # A row must start early enough to finish (timeout) before its lease ends.
        start_by = time.monotonic() + self.lease_s - self.settings.delivery_timeout_s - self.lease_margin_s / 2
        lane.waiting.extend((start_by, Claimed(*row)) for row in claimed)
        self._start_waiting(did, lane)

    async def _attempt(self, target: Target, lane: Lane, d: Claimed) -> None:
        try:
            outcome = await self._decide(target, d)
            if outcome.status in ("failed", "dead") and not outcome.gone:
                lane.consecutive_failures += 1
                if lane.consecutive_failures >= self.settings.delivery_breaker_threshold:
                    lane.open_until = time.monotonic() + self.settings.delivery_breaker_cooldown_s
                    lane.waiting.clear()  # due again when their lease ends; the breaker decides then
            elif outcome.status == "delivered":
                lane.consecutive_failures, lane.open_until = 0, 0.0
            self.recorder.add(target, d, outcome)
            self.metrics.attempts.labels(target.id, outcome.status).inc()
        except Exception:  # noqa: BLE001 - the lease makes the row due again
            log.exception("delivery %s of destination %s: attempt not recorded", d.id, target.id)
        finally:
            lane.in_flight -= 1
        try:
            await self._fill(target.id)
        except Exception:  # noqa: BLE001 - the next tick fills the lane instead
            log.exception("destination %s: refilling the lane failed", target.id)

    async def _decide(self, target: Target, d: Claimed) -> Outcome:
        if d.body is None:
            return Outcome("skipped", skip_reason="erased")
        if not target.active:
            return Outcome("skipped", skip_reason="inactive")
        if target.consent and d.topic not in UNGATED_TOPICS and not await consented(self.pool, target, d):
            return Outcome("skipped", skip_reason="consent")
        return await send(self.client, target, d, self.settings.destinations_allow_private,
                          self.metrics.seconds.labels(target.id).observe)


async def serve(settings: Settings, stop: asyncio.Event) -> None:
    """Run a DeliveryService with its own pool and HTTP client until ``stop`` is set."""
    # trust_env=False: proxy variables must not route webhooks (SSRF guard, CONTRACT 7).
    limits = httpx.Limits(max_connections=None, max_keepalive_connections=100)
    # TCP_NODELAY: a request goes out as two writes (head, body); with Nagle's algorithm the
    # second waits for the receiver's delayed ACK (~40 ms), which capped a lane at ~100/s.
    transport = httpx.AsyncHTTPTransport(limits=limits, socket_options=[(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)])
    async with AsyncConnectionPool(libpq_url(settings.database_url), min_size=2, max_size=settings.db_pool_max,
                                   kwargs={"options": "-c TimeZone=UTC", "autocommit": True}) as pool, \
            httpx.AsyncClient(timeout=settings.delivery_timeout_s, follow_redirects=False, trust_env=False,
                              transport=transport) as client:
        metrics = DeliveryMetrics()
        if settings.deliver_metrics_port:
            start_http_server(settings.deliver_metrics_port, settings.deliver_metrics_host, registry=metrics.registry)
        redis = Redis.from_url(settings.redis_url, socket_timeout=2.0, socket_connect_timeout=2.0)
        try:
            await DeliveryService(settings, pool, client, metrics, redis).run(stop)
        finally:
            await redis.aclose()


def run_deliver(settings: Settings) -> None:
    """``stratum deliver``: until SIGINT or SIGTERM, then finish the attempts in flight."""
    import signal

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if not settings.secret_key:
        log.warning("STRATUM_SECRET_KEY is not set: webhook secrets are stored in plain text")

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await serve(settings, stop)

    asyncio.run(main())
