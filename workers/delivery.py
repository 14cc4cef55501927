"""The delivery process (``stratum deliver``): sends the outbox's messages to webhooks.

Protocol (what a crash means):

- Rows of ``deliveries`` in ``pending`` or ``failed`` whose ``next_attempt_at`` has come are
  due. A lane claims many of its destination's due rows with ``FOR UPDATE SKIP LOCKED``
  and moves their ``next_attempt_at`` forward by a lease in the same statement, so no other
  process claims them meanwhile (workers/delivery_claims.py, which also builds the bodies of
  lean ``event.received`` rows). The lease covers the claim: (requests / in-flight + 1)
  request timeouts plus a margin of two more; a claimed row not started while a timeout and
  a half-margin of its lease remain is dropped (it is due again, for whoever claims it
  next), so a row is never sent by two processes at once. Outcomes are written back in batches (workers/delivery_attempt.py). A
  process that dies leaves its rows due again when their lease ends: those messages are sent
  again with the same ``webhook-id`` (at-least-once; the receiver dedupes), never lost.
- A request carries one message, or up to the destination's ``batch_size`` messages when it
  opted in to batching (one signed body, core/webhooks.py ``batch_body``); the answer
  settles every row it carried. Each destination has its own HTTP client (a keep-alive pool
  of ``delivery_max_in_flight`` connections), so connections are reused between requests
  and one destination's connections never wait on another's.
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
import collections
import contextlib
import logging
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

from core.webhooks import UNGATED_TOPICS, batch_body, batch_message_id
from stratum.queue.deliveries import LANES_PUBLISH_S, LANES_TTL_S, lanes_key
from stratum.settings import Settings, libpq_url
from workers.delivery_attempt import (
    Claimed,
    Outcome,
    OutcomeRecorder,
    Target,
    consented_profiles,
    send,
    settle,
    signing_secrets,
)
from workers.delivery_claims import CLAIM_SQL, LEASE_MARGIN_TIMEOUTS, claim_plan
from workers.replay import advance_replays

log = logging.getLogger(__name__)

_DUE_DESTINATIONS_SQL = """
SELECT d.id::text, d.tenant_id::text, d.url, d.active, d.consent, d.secret, d.previous_secret, d.secret_rotated_at,
       d.batch_size
FROM destinations d
WHERE EXISTS (SELECT 1 FROM deliveries x WHERE x.destination_id = d.id AND x.status IN ('pending', 'failed')
              AND x.next_attempt_at <= now())
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


class DestinationClients:
    """One HTTP client per destination: a keep-alive pool of at most ``max_in_flight``
    connections, so requests reuse connections and destinations share none."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.clients: dict[str, httpx.AsyncClient] = {}

    def __call__(self, destination_id: str) -> httpx.AsyncClient:
        client = self.clients.get(destination_id)
        if client is None:
            client = self.clients[destination_id] = new_http_client(self.settings)
        return client

    async def aclose(self) -> None:
        for client in self.clients.values():
            await client.aclose()
        self.clients.clear()


def new_http_client(settings: Settings) -> httpx.AsyncClient:
    """An HTTP client as the SSRF guard needs it: no redirects, no proxy variables."""
    slots = max(1, settings.delivery_max_in_flight)
    limits = httpx.Limits(max_connections=slots, max_keepalive_connections=slots)
    # TCP_NODELAY: a request goes out as two writes (head, body); with Nagle's algorithm the
    # second waits for the receiver's delayed ACK (~40 ms), which capped a lane at ~100/s.
    transport = httpx.AsyncHTTPTransport(limits=limits, socket_options=[(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)])
    # trust_env=False: proxy variables must not route webhooks (SSRF guard, CONTRACT 7).
    return httpx.AsyncClient(timeout=settings.delivery_timeout_s, follow_redirects=False, trust_env=False,
                             transport=transport)


class DeliveryService:
    """Runs the lanes of every destination with due deliveries, until ``stop`` is set."""

    def __init__(self, settings: Settings, pool: AsyncConnectionPool, clients: DestinationClients,
                 metrics: DeliveryMetrics | None = None, redis: Redis | None = None) -> None:
        self.settings = settings
        self.redis = redis
        self.lanes_key = lanes_key(f"{socket.gethostname()}:{os.getpid()}")
        self.published_at = 0.0
        self.pool = pool
        self.clients = clients
        self.metrics = metrics or DeliveryMetrics()
        self.recorder = OutcomeRecorder(pool)
        self.lanes: dict[str, Lane] = {}
        self.targets: dict[str, Target] = {}
        self.tasks: set[asyncio.Task] = set()
        self.stop = asyncio.Event()
        self.lease_margin_s = LEASE_MARGIN_TIMEOUTS * settings.delivery_timeout_s

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
        for did, tenant_id, url, active, consent, secret, previous, rotated_at, batch_size in rows:
            try:
                secrets = signing_secrets(did, secret, previous, rotated_at, self.settings.secret_key, now)
            except Exception:  # noqa: BLE001 - a secret sealed with another key: say so, keep other lanes going
                log.error("destination %s: its secret cannot be opened with STRATUM_SECRET_KEY", did)
                continue
            self.targets[did] = Target(did, tenant_id, url, active, consent, secrets, batch_size)
            await self._fill(did)

    def _start_waiting(self, did: str, lane: Lane) -> None:
        target = self.targets[did]
        while lane.waiting and lane.capacity(self.settings.delivery_max_in_flight, time.monotonic()) > 0:
            rows: list[Claimed] = []
            while lane.waiting and len(rows) < target.batch_size:
                start_by, row = lane.waiting.popleft()
                if time.monotonic() <= start_by:  # else its lease is nearly over: left for the next claim
                    rows.append(row)
            if not rows:
                continue
            lane.in_flight += 1
            task = asyncio.create_task(self._attempt(target, lane, rows))
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)

    async def _fill(self, did: str) -> None:
        """Start waiting rows while the lane has room; claim more when it runs low. Called by
        the tick and by every finished attempt, so a busy lane refills without waiting."""
        lane = self.lanes.setdefault(did, Lane())
        self._start_waiting(did, lane)
        claim_rows, lease_s = claim_plan(self.targets[did].batch_size, self.settings.delivery_max_in_flight,
                                         self.settings.delivery_timeout_s)
        # Claim ahead while fewer than half a claim wait; never while the breaker is open.
        if lane.claiming or self.stop.is_set() or len(lane.waiting) >= claim_rows // 2 \
                or lane.open_until > time.monotonic():
            return
        lane.claiming = True
        try:
            async with self.pool.connection() as conn:
                claimed = await (await conn.execute(CLAIM_SQL, {
                    "d": did, "n": claim_rows - len(lane.waiting), "lease": lease_s})).fetchall()
        finally:
            lane.claiming = False
        # A row must start early enough to finish (timeout) before its lease ends.
        start_by = time.monotonic() + lease_s - self.settings.delivery_timeout_s - self.lease_margin_s / 2
        lane.waiting.extend((start_by, Claimed(*row)) for row in claimed)
        self._start_waiting(did, lane)

    async def _attempt(self, target: Target, lane: Lane, rows: list[Claimed]) -> None:
        try:
            outcomes = await self._decide(target, rows)
            answers = [o for o in outcomes if o.status != "skipped"]
            if answers and answers[0].status in ("failed", "dead") and not answers[0].gone:
                lane.consecutive_failures += 1
                if lane.consecutive_failures >= self.settings.delivery_breaker_threshold:
                    lane.open_until = time.monotonic() + self.settings.delivery_breaker_cooldown_s
                    lane.waiting.clear()  # due again when their lease ends; the breaker decides then
            elif answers and answers[0].status == "delivered":
                lane.consecutive_failures, lane.open_until = 0, 0.0
            for d, outcome in zip(rows, outcomes, strict=True):
                self.recorder.add(target, d, outcome)
            for status, n in collections.Counter(o.status for o in outcomes).items():  # one label lookup per status
                self.metrics.attempts.labels(target.id, status).inc(n)
        except Exception:  # noqa: BLE001 - the lease makes the rows due again
            log.exception("deliveries %s.. of destination %s: attempt not recorded", rows[0].id, target.id)
        finally:
            lane.in_flight -= 1
        try:
            await self._fill(target.id)
        except Exception:  # noqa: BLE001 - the next tick fills the lane instead
            log.exception("destination %s: refilling the lane failed", target.id)

    async def _decide(self, target: Target, rows: list[Claimed]) -> list[Outcome]:
        """The outcome of each row: skipped (erased, inactive, consent), or settled by the
        answer to the one request that carries the others."""
        gated = bool(target.consent)
        granted = await consented_profiles(self.pool, target, [d for d in rows if d.topic not in UNGATED_TOPICS]) \
            if gated else set()
        outcomes: list[Outcome | None] = []
        for d in rows:
            if d.body is None:
                outcomes.append(Outcome("skipped", skip_reason="erased"))
            elif not target.active:
                outcomes.append(Outcome("skipped", skip_reason="inactive"))
            elif gated and d.topic not in UNGATED_TOPICS and d.profile_id not in granted:
                outcomes.append(Outcome("skipped", skip_reason="consent"))
            else:
                outcomes.append(None)
        # Rows without a body were skipped above.
        sending = [(d, d.body) for d, o in zip(rows, outcomes, strict=True) if o is None and d.body is not None]
        if not sending:
            return [o for o in outcomes if o is not None]  # every row was skipped
        if target.batch_size > 1:
            message_id = batch_message_id(d.message_id for d, _ in sending)
            body = batch_body(((d.message_id, text.encode()) for d, text in sending), datetime.now(UTC))
        else:
            message_id, body = sending[0][0].message_id, sending[0][1].encode()
        answer = await send(self.clients(target.id), target, message_id, body, self.settings.destinations_allow_private,
                            self.metrics.seconds.labels(target.id).observe)
        return [o if o is not None else settle(d, answer) for d, o in zip(rows, outcomes, strict=True)]


async def serve(settings: Settings, stop: asyncio.Event) -> None:
    """Run a DeliveryService with its own pool and HTTP clients until ``stop`` is set."""
    clients = DestinationClients(settings)
    async with AsyncConnectionPool(libpq_url(settings.database_url), min_size=2, max_size=settings.db_pool_max,
                                   kwargs={"options": "-c TimeZone=UTC", "autocommit": True}) as pool:
        metrics = DeliveryMetrics()
        if settings.deliver_metrics_port:
            start_http_server(settings.deliver_metrics_port, settings.deliver_metrics_host, registry=metrics.registry)
        redis = Redis.from_url(settings.redis_url, socket_timeout=2.0, socket_connect_timeout=2.0)
        try:
            await DeliveryService(settings, pool, clients, metrics, redis).run(stop)
        finally:
            await clients.aclose()
            await redis.aclose()


def run_deliver(settings: Settings) -> None:
    """``stratum deliver``: until SIGINT or SIGTERM, then finish the attempts in flight."""
    import signal

    logging.basicConfig(level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await serve(settings, stop)

    asyncio.run(main())
