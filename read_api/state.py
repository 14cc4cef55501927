"""Per-process state of the read API."""

from __future__ import annotations

from dataclasses import dataclass, field

from psycopg_pool import AsyncConnectionPool
from redis.asyncio import Redis

from read_api.auth import KeyDirectory
from read_api.export_slots import ExportSlots
from read_api.metrics import ReadMetrics
from stratum.settings import Settings


@dataclass
class ReadState:
    settings: Settings
    pool: AsyncConnectionPool  # transactions (psycopg's default mode)
    # Single statements in autocommit mode: lookups, timelines, event status, API keys
    # (read_api/autocommit.py).
    statements: AsyncConnectionPool
    redis: Redis
    keys: KeyDirectory
    metrics: ReadMetrics = field(default_factory=ReadMetrics)
    # Per-tenant export limit, shared by every read process (set by create_app's lifespan).
    export_slots: ExportSlots | None = None
    # Streaming exports in flight in this process (each holds its own connection).
    exports_running: int = 0
