"""The delivery process (``stratum deliver``): sends the outbox's messages to webhooks.

Protocol (what a crash means):

- Rows of ``deliveries`` in ``pending`` or ``failed`` whose ``next_attempt_at`` has come are
  due. A lane claims due rows of its destination with ``FOR UPDATE SKIP LOCKED`` and moves
  their ``next_attempt_at`` forward by a lease (timeout + margin) in the same statement, so
  no other process claims them while they are in flight. The attempt's outcome is then
  written on the row. A process that dies mid-attempt leaves the row due again when the
  lease ends: the message is sent again with the same ``webhook-id`` (at-least-once; the
  receiver dedupes), never lost.
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
import random
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from urllib.parse import urlsplit, urlunsplit

import httpx
from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server
from psycopg_pool import AsyncConnectionPool

from core.secrets import open_secret
from core.webhooks import (
    PREVIOUS_SECRET_GRACE_S,
    UNGATED_TOPICS,
    consent_granted,
    retry_delay_s,
    webhook_headers,
)
from stratum.netguard import DestinationNotAllowed, resolve_checked, url_port
from stratum.settings import Settings, libpq_url
from workers.replay import advance_replays

log = logging.getLogger(__name__)

# Margin of the claim lease over the request timeout (resolution, consent check, bookkeeping).
LEASE_MARGIN_S = 20.0
# Longest error text kept on a delivery row.
MAX_ERROR_CHARS = 200

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
_CONSENTS_SQL = """
SELECT c.consent_type, c.granted, c.updated_at FROM consents c
WHERE c.profile_id = (SELECT coalesce(p.merged_into, p.id) FROM profiles p WHERE p.id = %s AND p.tenant_id = %s)
  AND c.consent_type IN (%s, 'all')
"""


@dataclass
class Target:
    """A destination as one attempt sees it."""

    id: str
    tenant_id: str
    url: str
    active: bool
    consent: str | None
    secrets: list[str]


@dataclass
class Claimed:
    tenant_id: str
    id: int
    message_id: str
    topic: str
    profile_id: str | None
    body: str | None
    attempts: int


@dataclass
class Lane:
    """One destination's share of this process: in-flight count and circuit breaker."""

    in_flight: int = 0
    consecutive_failures: int = 0
    open_until: float = 0.0

    def capacity(self, max_in_flight: int, now: float) -> int:
        if self.open_until > now:
            return 0
        if self.open_until:  # half-open after the cool-down: one probe at a time
            return 1 if self.in_flight == 0 else 0
        return max_in_flight - self.in_flight


@dataclass
class Outcome:
    status: str  # delivered | failed | dead | skipped
    code: int | None = None
    error: str | None = None
    retry_after_s: float | None = None
    skip_reason: str | None = None
    gone: bool = False


def signing_secrets(stored: str, previous: str | None, rotated_at: datetime | None, secret_key: str,
                    now: datetime) -> list[str]:
    """The secrets that sign now: the current one, and the previous one within 24 h of a rotation."""
    out = [open_secret(stored, secret_key)]
    if previous and rotated_at and now - rotated_at < timedelta(seconds=PREVIOUS_SECRET_GRACE_S):
        out.append(open_secret(previous, secret_key))
    return out


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        from email.utils import parsedate_to_datetime

        return max(0.0, (parsedate_to_datetime(value) - datetime.now(UTC)).total_seconds())
    except (TypeError, ValueError):
        return None


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
                 metrics: DeliveryMetrics | None = None) -> None:
        self.settings = settings
        self.pool = pool
        self.client = client
        self.metrics = metrics or DeliveryMetrics()
        self.lanes: dict[str, Lane] = {}
        self.targets: dict[str, Target] = {}
        self.stop = asyncio.Event()
        self.tasks: set[asyncio.Task] = set()

    async def run(self, stop: asyncio.Event) -> None:
        self.stop = stop
        while not stop.is_set():
            try:
                await advance_replays(self.pool)
                await self.tick()
            except Exception:  # noqa: BLE001 - a database hiccup must not end the process
                log.exception("delivery tick failed; retrying")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.settings.delivery_poll_interval_s)
        if self.tasks:
            await asyncio.wait(self.tasks, timeout=self.settings.delivery_timeout_s + 1)

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

    async def _fill(self, did: str) -> None:
        """Claim as many due deliveries as the lane has room for, and start them. Called by
        the tick and by every finished attempt, so a busy lane refills without waiting."""
        lane = self.lanes.setdefault(did, Lane())
        room = lane.capacity(self.settings.delivery_max_in_flight, time.monotonic())
        if room <= 0 or self.stop.is_set():
            return
        lane.in_flight += room  # reserved while the claim runs, so a concurrent fill cannot overfill
        try:
            async with self.pool.connection() as conn:
                claimed = await (await conn.execute(_CLAIM_SQL, {
                    "d": did, "n": room, "lease": self.settings.delivery_timeout_s + LEASE_MARGIN_S})).fetchall()
        finally:
            lane.in_flight -= room
        target = self.targets[did]
        for row in claimed:
            lane.in_flight += 1
            task = asyncio.create_task(self._attempt(target, lane, Claimed(*row)))
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)

    async def _attempt(self, target: Target, lane: Lane, d: Claimed) -> None:
        try:
            outcome = await self._decide(target, d)
            if outcome.status in ("failed", "dead") and not outcome.gone:
                lane.consecutive_failures += 1
                if lane.consecutive_failures >= self.settings.delivery_breaker_threshold:
                    lane.open_until = time.monotonic() + self.settings.delivery_breaker_cooldown_s
            elif outcome.status == "delivered":
                lane.consecutive_failures, lane.open_until = 0, 0.0
            await self._record(target, d, outcome)
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
        if target.consent and d.topic not in UNGATED_TOPICS and not await self._consented(target, d):
            return Outcome("skipped", skip_reason="consent")
        return await self._send(target, d)

    async def _consented(self, target: Target, d: Claimed) -> bool:
        if d.profile_id is None:
            return False
        async with self.pool.connection() as conn:
            rows = await (await conn.execute(_CONSENTS_SQL, (d.profile_id, d.tenant_id, target.consent))).fetchall()
        return consent_granted({t: (g, at) for t, g, at in rows}, target.consent)

    async def _send(self, target: Target, d: Claimed) -> Outcome:
        host, port = url_port(target.url)
        try:
            address = await asyncio.to_thread(resolve_checked, host, port, self.settings.destinations_allow_private)
        except DestinationNotAllowed:
            return self._failure(d, None, "destination_not_allowed")
        parts = urlsplit(target.url)
        ip_host = f"[{address}]" if ":" in address else address
        url = urlunsplit((parts.scheme, f"{ip_host}:{port}", parts.path or "/", parts.query, ""))
        body = d.body.encode()
        headers = webhook_headers(d.message_id, int(time.time()), body, target.secrets)
        headers["host"] = parts.netloc.rpartition("@")[2]
        headers["user-agent"] = "Stratum-Webhooks/1"
        extensions = {"sni_hostname": host} if parts.scheme == "https" else {}
        started = time.perf_counter()
        try:
            r = await self.client.post(url, content=body, headers=headers, extensions=extensions)
        except httpx.TimeoutException:
            return self._failure(d, None, "timeout")
        except httpx.HTTPError as exc:
            return self._failure(d, None, f"{type(exc).__name__}: {exc}"[:MAX_ERROR_CHARS])
        finally:
            self.metrics.seconds.labels(target.id).observe(time.perf_counter() - started)
        if 200 <= r.status_code < 300:
            return Outcome("delivered", code=r.status_code)
        if r.status_code == 410:
            return Outcome("dead", code=410, error="gone: destination deactivated", gone=True)
        error = "redirect not followed" if 300 <= r.status_code < 400 else f"HTTP {r.status_code}"
        return self._failure(d, r.status_code, error, _retry_after(r.headers.get("retry-after")))

    @staticmethod
    def _failure(d: Claimed, code: int | None, error: str, retry_after_s: float | None = None) -> Outcome:
        if retry_delay_s(d.attempts + 1, 0.0) is None:
            return Outcome("dead", code=code, error=error)
        return Outcome("failed", code=code, error=error, retry_after_s=retry_after_s)

    async def _record(self, target: Target, d: Claimed, o: Outcome) -> None:
        attempted = o.status != "skipped"
        attempts = d.attempts + (1 if attempted else 0)
        delay = retry_delay_s(attempts, random.random(), o.retry_after_s) if o.status == "failed" else None
        async with self.pool.connection() as conn, conn.transaction():
            await conn.execute(
                "UPDATE deliveries SET status = %(s)s, attempts = %(a)s,"
                " last_status_code = CASE WHEN %(att)s THEN %(c)s ELSE last_status_code END,"
                " last_error = CASE WHEN %(att)s THEN %(e)s ELSE last_error END, skip_reason = %(k)s,"
                " next_attempt_at = now() + make_interval(secs => %(delay)s),"
                " delivered_at = CASE WHEN %(s)s = 'delivered' THEN now() END,"
                " body = CASE WHEN %(s)s = 'skipped' AND %(k)s = 'consent' THEN NULL ELSE body END"
                # an erasure during the attempt wins: the row stays skipped
                " WHERE tenant_id = %(t)s AND id = %(id)s AND status IN ('pending', 'failed')",
                {"s": o.status, "a": attempts, "c": o.code, "att": attempted, "e": o.error, "k": o.skip_reason,
                 "delay": delay or 0.0, "t": d.tenant_id, "id": d.id})
            if o.gone:
                await conn.execute("UPDATE destinations SET active = false, updated_at = now() WHERE id = %s",
                                   (target.id,))


async def serve(settings: Settings, stop: asyncio.Event) -> None:
    """Run a DeliveryService with its own pool and HTTP client until ``stop`` is set."""
    # trust_env=False: proxy variables must not route webhooks (SSRF guard, CONTRACT 7).
    limits = httpx.Limits(max_connections=None, max_keepalive_connections=100)
    async with AsyncConnectionPool(libpq_url(settings.database_url), min_size=2, max_size=settings.db_pool_max,
                                   kwargs={"options": "-c TimeZone=UTC", "autocommit": True}) as pool, \
            httpx.AsyncClient(timeout=settings.delivery_timeout_s, follow_redirects=False, trust_env=False,
                              limits=limits) as client:
        metrics = DeliveryMetrics()
        if settings.deliver_metrics_port:
            start_http_server(settings.deliver_metrics_port, settings.deliver_metrics_host, registry=metrics.registry)
        await DeliveryService(settings, pool, client, metrics).run(stop)


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
