"""Per-process state of the read API."""

from __future__ import annotations

from dataclasses import dataclass, field

from psycopg_pool import AsyncConnectionPool
from redis.asyncio import Redis

from read_api.auth import KeyDirectory
from read_api.metrics import ReadMetrics
from stratum.settings import Settings


@dataclass
class ReadState:
    settings: Settings
    pool: AsyncConnectionPool
    redis: Redis
    keys: KeyDirectory
    metrics: ReadMetrics = field(default_factory=ReadMetrics)
    # Streaming exports in flight in this process (each holds its own connection).
    exports_running: int = 0
