"""Per-process resources of a worker: settings, one database connection, caches.

RQ calls job functions with their arguments only, so a worker process installs its
``WorkerRuntime`` once at start-up (``install``); tests install one pointing at the test
database. Nothing here reads the environment.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta

import msgspec
import psycopg
from psycopg.types.json import set_json_loads

from core.identity import IdentityRules
from stratum.admin import IDENTITY_SECRET_GRACE_S
from stratum.db.connect import connect
from stratum.db.overlap import OverlapConnection
from stratum.secret_storage import SecretUnreadable, decrypt_secret, identity_secret_context
from stratum.settings import Settings, global_blocked_values

log = logging.getLogger(__name__)

TENANT_CACHE_TTL_S = 1.0


@dataclass(frozen=True)
class SourceIdentity:
    """What a worker needs to check a source's identity claims (CONTRACT 6)."""

    protect: bool  # a website source with identity_verification = protect
    secrets: tuple[str, ...] = ()  # the current identity secret, and the previous one within 24 h

    # A source the worker cannot find (deleted meanwhile): website sources stay protected.
    @classmethod
    def unknown(cls, source_type: str) -> SourceIdentity:
        return cls(protect=source_type == "website")


@dataclass
class TenantConfig:
    rules: IdentityRules
    extra_blocked: frozenset[str]
    sources: dict[str, SourceIdentity] = field(default_factory=dict)

    def source_identity(self, source_id: str, source_type: str) -> SourceIdentity:
        return self.sources.get(source_id) or SourceIdentity.unknown(source_type)


_SOURCES_SQL = """
SELECT id::text, type, identity_verification, identity_secret, previous_identity_secret,
       identity_secret_rotated_at
FROM sources WHERE tenant_id = %s
"""


@dataclass
class WorkerRuntime:
    """``connection()`` is the job's own (its transactions); a job's next round, prepared
    while the current one's statements wait for Postgres (workers/jobs.py), reads tenant
    settings on ``side_connection()``, opened on first use. Both are ``OverlapConnection``s
    (stratum/db/overlap.py)."""

    settings: Settings
    _conn: psycopg.Connection | None = None
    _side: psycopg.Connection | None = None
    known_partitions: set[date] = field(default_factory=set)
    # A warm shutdown was asked for: a running job starts no further round
    stop_requested: bool = False
    _tenants: dict[str, tuple[float, TenantConfig]] = field(default_factory=dict)

    def connection(self) -> psycopg.Connection:
        if self._conn is None or self._conn.closed or self._conn.broken:
            self._conn = self._connect()
        return self._conn

    def side_connection(self) -> psycopg.Connection:
        if self._side is None or self._side.closed or self._side.broken:
            self._side = self._connect()
        return self._side

    def _connect(self) -> psycopg.Connection:
        # autocommit: each unit of work opens its own explicit transaction block
        conn = connect(self.settings.database_url, OverlapConnection, autocommit=True)
        # jsonb columns (profile traits) decoded by msgspec: several times faster
        set_json_loads(msgspec.json.decode, conn)
        return conn

    def reset_connection(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()

    def reset_side_connection(self) -> None:
        side, self._side = self._side, None
        if side is not None:
            side.close()

    def tenant_config(self, tenant_id: str, source_id: str | None = None, *,
                      side: bool = False) -> TenantConfig:
        """The tenant's identity rules and its sources' identity settings, cached for
        ``TENANT_CACHE_TTL_S``. A ``source_id`` the cached copy does not know (a source
        created since) reloads it, so a new source's secret verifies from its first event.
        ``side``: read on the side connection (a round prepared ahead)."""
        now = time.monotonic()
        hit = self._tenants.get(tenant_id)
        if hit and hit[0] > now and (source_id is None or source_id in hit[1].sources):
            return hit[1]
        conn = self.side_connection() if side else self.connection()
        row = conn.execute("SELECT settings FROM tenants WHERE id = %s", (tenant_id,)).fetchone()
        settings = row[0] if row else {}
        config = TenantConfig(
            IdentityRules.from_tenant_settings(settings),
            global_blocked_values(self.settings) | {str(v).strip().lower() for v in settings.get("blocked_values", [])},
            self._source_identities(conn, tenant_id),
        )
        self._tenants[tenant_id] = (now + TENANT_CACHE_TTL_S, config)
        return config

    def _source_identities(self, conn: psycopg.Connection, tenant_id: str) -> dict[str, SourceIdentity]:
        """Each source's verification mode and readable identity secrets (cached with the
        tenant's config, so a rotation or a PATCH is seen within a second)."""
        grace_start = datetime.now(UTC) - timedelta(seconds=IDENTITY_SECRET_GRACE_S)
        out: dict[str, SourceIdentity] = {}
        for source_id, source_type, mode, current, previous, rotated_at in conn.execute(_SOURCES_SQL, (tenant_id,)):
            stored = [current]
            if previous is not None and rotated_at is not None and rotated_at > grace_start:
                stored.append(previous)
            out[source_id] = SourceIdentity(
                protect=source_type == "website" and mode == "protect",
                secrets=tuple(self._readable_secrets(source_id, stored)),
            )
        return out

    def _readable_secrets(self, source_id: str, stored: list[str | None]) -> list[str]:
        secrets = []
        for value in stored:
            if value is None:
                continue
            try:
                secrets.append(decrypt_secret(self.settings.secret_key, value, identity_secret_context(source_id)))
            except SecretUnreadable as exc:
                # Claims then stay unverified (never wrongly verified); each event says so.
                log.error("identity secret of source %s is unreadable: %s", source_id, exc)
        return secrets


_runtime: WorkerRuntime | None = None


def install(runtime: WorkerRuntime) -> WorkerRuntime:
    global _runtime
    if _runtime is not None and _runtime is not runtime:
        _runtime.reset_connection()
        _runtime.reset_side_connection()
    _runtime = runtime
    return runtime


def current() -> WorkerRuntime:
    if _runtime is None:
        from stratum.settings import get_settings

        return install(WorkerRuntime(get_settings()))
    return _runtime
