"""Per-process state of the ingest API: settings, pools, and the operations routes share."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from litestar import Request
from psycopg_pool import AsyncConnectionPool
from redis.asyncio import Redis

from ingest_api.auth import Source, SourceDirectory, key_from_headers
from ingest_api.enqueue import BatchEnqueuer, PendingEvent
from ingest_api.metrics import IngestMetrics
from ingest_api.pipeline import QueueOutcome, queue_events
from stratum.settings import Settings


@dataclass
class IngestState:
    settings: Settings
    pool: AsyncConnectionPool
    redis: Redis
    enqueuer: BatchEnqueuer
    sources: SourceDirectory
    metrics: IngestMetrics
    # The import lane (PostHog historical_migration): same dedupe marks and rate limits,
    # its own lower-priority queue. None: imports share the events queue.
    import_enqueuer: BatchEnqueuer | None = None

    async def header_key(self, request: Request) -> str | None:
        """The write key of the Authorization header, checked before the body is read."""
        key = key_from_headers(request.headers.get("authorization"))
        if key is not None:
            await self.sources.authenticate(key)
        return key

    async def queue(self, source: Source, pending: list[PendingEvent], received_at: datetime, request_id: str,
                    context: dict | None = None, integrations: dict | None = None,
                    *, import_lane: bool = False) -> QueueOutcome:
        s = self.settings
        enqueuer = self.import_enqueuer if import_lane and self.import_enqueuer is not None else self.enqueuer
        return await queue_events(enqueuer, source, pending, received_at, request_id,
                                  s.retry_after_s, s.default_rate_limit_per_s, context, integrations)


async def authenticate_request(st: IngestState, header_key: str | None, body_key: str | None) -> Source:
    return await st.sources.authenticate(header_key or body_key)
