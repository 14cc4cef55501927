"""Per-process resources of a worker: settings, one database connection, caches.

RQ calls job functions with their arguments only, so a worker process installs its
``WorkerRuntime`` once at start-up (``install``); tests install one pointing at the test
database. Nothing here reads the environment.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import date

import msgspec
import psycopg
from psycopg.types.json import set_json_loads

from core.identity import IdentityRules
from stratum.db.connect import connect
from stratum.settings import Settings, global_blocked_values

TENANT_CACHE_TTL_S = 1.0


@dataclass
class TenantConfig:
    rules: IdentityRules
    extra_blocked: frozenset[str]


@dataclass
class WorkerRuntime:
    settings: Settings
    _conn: psycopg.Connection | None = None
    known_partitions: set[date] = field(default_factory=set)
    _tenants: dict[str, tuple[float, TenantConfig]] = field(default_factory=dict)

    def connection(self) -> psycopg.Connection:
        if self._conn is None or self._conn.closed or self._conn.broken:
            # autocommit: each unit of work opens its own explicit transaction block
            self._conn = connect(self.settings.database_url, autocommit=True)
            # jsonb columns (profile traits) decoded by msgspec: several times faster
            set_json_loads(msgspec.json.decode, self._conn)
        return self._conn

    def reset_connection(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            finally:
                self._conn = None

    def tenant_config(self, tenant_id: str) -> TenantConfig:
        now = time.monotonic()
        hit = self._tenants.get(tenant_id)
        if hit and hit[0] > now:
            return hit[1]
        conn = self.connection()
        row = conn.execute("SELECT settings FROM tenants WHERE id = %s", (tenant_id,)).fetchone()
        settings = row[0] if row else {}
        config = TenantConfig(
            IdentityRules.from_tenant_settings(settings),
            global_blocked_values(self.settings) | {str(v).strip().lower() for v in settings.get("blocked_values", [])},
        )
        self._tenants[tenant_id] = (now + TENANT_CACHE_TTL_S, config)
        return config


_runtime: WorkerRuntime | None = None


def install(runtime: WorkerRuntime) -> WorkerRuntime:
    global _runtime
    if _runtime is not None and _runtime is not runtime:
        _runtime.reset_connection()
    _runtime = runtime
    return runtime


def current() -> WorkerRuntime:
    if _runtime is None:
        from stratum.settings import get_settings

        return install(WorkerRuntime(get_settings()))
    return _runtime
