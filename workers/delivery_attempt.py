"""One delivery attempt, from claimed rows to their recorded outcomes (used by
workers/delivery.py): the consent gate (one query per request), the SSRF-checked request
(one message, or a batch for destinations that opt in), and the batched write of outcomes
back onto the rows."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from urllib.parse import urlsplit, urlunsplit

import httpx
from psycopg_pool import AsyncConnectionPool

from core.webhooks import (
    PREVIOUS_SECRET_GRACE_S,
    address_allowed,
    consent_granted,
    retry_delay_s,
    webhook_headers,
)
from stratum.db.params import json_rows
from stratum.netguard import DestinationNotAllowed, resolve_checked, url_port
from stratum.secret_storage import decrypt_secret, destination_secret_context

log = logging.getLogger(__name__)

# Longest error text kept on a delivery row.
MAX_ERROR_CHARS = 200
# Outcomes are written in batches: at most this many per statement, at least this often.
RECORD_BATCH = 500
RECORD_INTERVAL_S = 0.02

# The consent states that decide for each requested profile (of its survivor when merged).
_CONSENTS_SQL = """
SELECT p.id::text, c.consent_type, c.granted, c.updated_at
FROM profiles p JOIN consents c ON c.tenant_id = p.tenant_id AND c.profile_id = coalesce(p.merged_into, p.id)
WHERE p.tenant_id = %s AND p.id = ANY(%s::uuid[]) AND c.consent_type IN (%s, 'all')
"""
_RECORD_SQL = """
UPDATE deliveries d SET status = u.s, attempts = u.a,
    last_status_code = CASE WHEN u.att THEN u.c ELSE d.last_status_code END,
    last_error = CASE WHEN u.att THEN u.e ELSE d.last_error END,
    skip_reason = u.k,
    next_attempt_at = now() + make_interval(secs => u.delay),
    delivered_at = CASE WHEN u.s = 'delivered' THEN now() END,
    body = CASE WHEN u.s = 'skipped' AND u.k = 'consent' THEN NULL ELSE d.body END,
    event_time = CASE WHEN u.s = 'skipped' AND u.k = 'consent' THEN NULL ELSE d.event_time END
FROM json_to_recordset(%s::json) AS u(t uuid, id bigint, s text, a int, c int, att boolean, e text, k text,
                                      delay float8)
-- an erasure during the attempt wins: the row stays skipped
WHERE d.tenant_id = u.t AND d.id = u.id AND d.status IN ('pending', 'failed')
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
    batch_size: int = 1


@dataclass
class Claimed:
    """A claimed row; ``body`` is None when there is nothing left to send (erased)."""

    tenant_id: str
    id: int
    message_id: str
    topic: str
    profile_id: str | None
    body: str | None
    attempts: int


@dataclass
class Outcome:
    status: str  # delivered | failed | dead | skipped
    code: int | None = None
    error: str | None = None
    retry_after_s: float | None = None
    skip_reason: str | None = None
    gone: bool = False


def signing_secrets(destination_id: str, stored: str, previous: str | None, rotated_at: datetime | None,
                    secret_key: str | None, now: datetime) -> list[str]:
    """The secrets that sign now: the current one, and the previous one within 24 h of a
    rotation. Raises SecretUnreadable when one does not open with ``secret_key``."""
    context = destination_secret_context(destination_id)
    out = [decrypt_secret(secret_key, stored, context)]
    if previous and rotated_at and now - rotated_at < timedelta(seconds=PREVIOUS_SECRET_GRACE_S):
        out.append(decrypt_secret(secret_key, previous, context))
    return out


def retry_after_s(value: str | None) -> float | None:
    """A ``Retry-After`` header in seconds (delta-seconds or an HTTP date); None if absent or bad."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(0.0, (parsedate_to_datetime(value) - datetime.now(UTC)).total_seconds())
    except (TypeError, ValueError):
        return None


def settle(d: Claimed, answer: Outcome) -> Outcome:
    """The outcome of one row from the answer to the request that carried it: a failure is
    ``failed`` with a retry to come, or ``dead`` when the row's retries are used up."""
    if answer.status != "failed" or retry_delay_s(d.attempts + 1, 0.0) is not None:
        return answer
    return Outcome("dead", code=answer.code, error=answer.error)


def _failed(code: int | None, error: str, retry_after: float | None = None) -> Outcome:
    return Outcome("failed", code=code, error=error, retry_after_s=retry_after)


async def consented_profiles(pool: AsyncConnectionPool, target: Target, rows: list[Claimed]) -> set[str]:
    """The consent gate of CONTRACT 7 for the rows of one request, against the profiles'
    current state: the ids of those whose ``target.consent`` is granted."""
    ids = sorted({d.profile_id for d in rows if d.profile_id is not None})
    if not ids or target.consent is None:
        return set()
    async with pool.connection() as conn:
        found = await (await conn.execute(_CONSENTS_SQL, (rows[0].tenant_id, ids, target.consent))).fetchall()
    states: dict[str, dict] = {}
    for pid, consent_type, granted, at in found:
        states.setdefault(pid, {})[consent_type] = (granted, at)
    return {pid for pid, st in states.items() if consent_granted(st, target.consent)}


async def checked_address(host: str, port: int, allow_private: bool) -> str:
    """The SSRF guard for one attempt: the address to connect to (raises DestinationNotAllowed)."""
    try:
        literal = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        literal = None
    if literal is not None:  # nothing to resolve
        if not address_allowed(str(literal), allow_private):
            raise DestinationNotAllowed("the destination is a private address")
        return str(literal)
    return await asyncio.to_thread(resolve_checked, host, port, allow_private)


async def send(client: httpx.AsyncClient, target: Target, message_id: str, body: bytes, allow_private: bool,
               observe: Callable[[float], None]) -> Outcome:
    """POST one request (a message, or a batch) to the checked address with its signatures.
    Returns ``delivered``, ``failed`` (retry to come; ``settle`` decides per row whether it is
    dead) or ``dead`` with ``gone`` (410)."""
    host, port = url_port(target.url)
    try:
        address = await checked_address(host, port, allow_private)
    except DestinationNotAllowed:
        return _failed(None, "destination_not_allowed")
    parts = urlsplit(target.url)
    ip_host = f"[{address}]" if ":" in address else address
    url = urlunsplit((parts.scheme, f"{ip_host}:{port}", parts.path or "/", parts.query, ""))
    headers = webhook_headers(message_id, int(time.time()), body, target.secrets)
    headers["host"] = parts.netloc.rpartition("@")[2]
    headers["user-agent"] = "Stratum-Webhooks/1"
    # TLS still verifies the destination's own name while the connection goes to the checked address.
    extensions = {"sni_hostname": host} if parts.scheme == "https" else {}
    started = time.perf_counter()
    try:
        r = await client.post(url, content=body, headers=headers, extensions=extensions)
    except httpx.TimeoutException:
        return _failed(None, "timeout")
    except httpx.HTTPError as exc:
        return _failed(None, f"{type(exc).__name__}: {exc}"[:MAX_ERROR_CHARS])
    finally:
        observe(time.perf_counter() - started)
    if 200 <= r.status_code < 300:
        return Outcome("delivered", code=r.status_code)
    if r.status_code == 410:
        return Outcome("dead", code=410, error="gone: destination deactivated", gone=True)
    error = "redirect not followed" if 300 <= r.status_code < 400 else f"HTTP {r.status_code}"
    return _failed(r.status_code, error, retry_after_s(r.headers.get("retry-after")))


class OutcomeRecorder:
    """Writes attempt outcomes onto their rows, many per statement.

    A process that dies with outcomes not yet written leaves those rows due again when their
    lease ends, so the messages are sent again (same ``webhook-id``): at-least-once."""

    def __init__(self, pool: AsyncConnectionPool) -> None:
        self.pool = pool
        self.rows: list[dict] = []
        self.deactivate: set[str] = set()
        self.wake = asyncio.Event()

    def add(self, target: Target, d: Claimed, o: Outcome) -> None:
        attempted = o.status != "skipped"
        attempts = d.attempts + (1 if attempted else 0)
        delay = retry_delay_s(attempts, random.random(), o.retry_after_s) if o.status == "failed" else None
        self.rows.append({"t": d.tenant_id, "id": d.id, "s": o.status, "a": attempts, "c": o.code, "att": attempted,
                          "e": o.error, "k": o.skip_reason, "delay": delay or 0.0})
        if o.gone:
            self.deactivate.add(target.id)
        if len(self.rows) >= RECORD_BATCH:
            self.wake.set()

    async def flush(self) -> None:
        rows, self.rows = self.rows, []
        gone, self.deactivate = self.deactivate, set()
        if not rows and not gone:
            return
        try:
            async with self.pool.connection() as conn, conn.transaction():
                for i in range(0, len(rows), RECORD_BATCH):
                    await conn.execute(_RECORD_SQL, (json_rows(rows[i:i + RECORD_BATCH]),))
                if gone:
                    await conn.execute("UPDATE destinations SET active = false, updated_at = now()"
                                       " WHERE id = ANY(%s::uuid[])", (sorted(gone),))
        except Exception:
            self.rows[:0], self.deactivate = rows, self.deactivate | gone  # try again on the next flush
            raise

    async def run(self, stop: asyncio.Event) -> None:
        """Flush every RECORD_INTERVAL_S (or when a batch is full) until ``stop``, then once more."""
        while not stop.is_set():
            self.wake.clear()
            try:
                await self.flush()
            except Exception:  # noqa: BLE001 - kept for the next flush
                log.exception("recording delivery outcomes failed; retrying")
                await asyncio.sleep(1)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.wake.wait(), RECORD_INTERVAL_S)
