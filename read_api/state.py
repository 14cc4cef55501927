"""Per-process state of the read API."""

from __future__ import annotations

from dataclasses import dataclass

from psycopg_pool import AsyncConnectionPool
from redis.asyncio import Redis

from read_api.auth import KeyDirectory
from stratum.settings import Settings


@dataclass
class ReadState:
    settings: Settings
    pool: AsyncConnectionPool
    redis: Redis
    keys: KeyDirectory
