"""The one place that reads the environment.

Every knob has a default, a ``STRATUM_``-prefixed variable and a line in
docs/CONFIGURATION.md. Everything else in the code base receives a ``Settings``
(or the values it needs) explicitly.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from dataclasses import dataclass, field
from functools import lru_cache

_PREFIX = "STRATUM_"


def _env(name: str, default: str) -> str:
    return os.environ.get(_PREFIX + name, default)


def _int(name: str, default: int) -> int:
    raw = os.environ.get(_PREFIX + name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError as exc:
        raise ValueError(f"{_PREFIX}{name} must be an integer, got {raw!r}") from exc


def _float(name: str, default: float) -> float:
    raw = os.environ.get(_PREFIX + name)
    if raw is None or raw == "":
        return default
    try:
        return float(raw)
    except ValueError as exc:
        raise ValueError(f"{_PREFIX}{name} must be a number, got {raw!r}") from exc


def _bool(name: str, default: bool) -> bool:
    raw = os.environ.get(_PREFIX + name, "").strip().lower()
    if raw == "":
        return default
    if raw in ("1", "true", "yes", "on"):
        return True
    if raw in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"{_PREFIX}{name} must be true or false, got {raw!r}")


LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


def _log_level(name: str, default: str) -> str:
    raw = os.environ.get(_PREFIX + name, "").strip().upper()
    if raw == "":
        return default
    if raw not in LOG_LEVELS:
        raise ValueError(f"{_PREFIX}{name} must be one of {', '.join(LOG_LEVELS)}, got {raw!r}")
    return raw


def _list(name: str) -> tuple[str, ...]:
    raw = os.environ.get(_PREFIX + name, "")
    return tuple(item.strip() for item in raw.split(",") if item.strip())


@dataclass(frozen=True)
class Settings:
    database_url: str = "postgresql:///stratum"
    redis_url: str = "redis://127.0.0.1:6379/0"

    queue_name: str = "stratum-events"
    # The import lane (PostHog ``historical_migration`` batches): empty means "<queue_name>-import"
    import_queue_name: str = ""
    # Logging of every process: DEBUG, INFO, WARNING or ERROR
    log_level: str = "INFO"
    # Ingest
    ingest_host: str = "127.0.0.1"
    ingest_port: int = 8000
    read_host: str = "127.0.0.1"
    read_port: int = 8001
    # HTTP servers (both APIs): hostile or broken clients
    http_header_timeout_s: float = 5.0
    http_body_timeout_s: float = 60.0
    http_max_connections: int = 4096
    max_events_per_request: int = 1000
    max_request_bytes: int = 4 * 1024 * 1024
    max_event_bytes: int = 32 * 1024
    max_future_skew_s: int = 24 * 3600
    dedupe_window_s: int = 3600
    idempotency_ttl_s: int = 24 * 3600
    idempotency_lock_s: int = 30
    queue_high_water: int = 50_000
    retry_after_s: int = 5
    default_rate_limit_per_s: int = 10_000
    dead_letter_ttl_s: int = 7 * 24 * 3600
    # Workers
    job_timeout_s: int = 300
    failed_job_ttl_s: int = 7 * 24 * 3600
    worker_coalesce_max_events: int = 5_000
    # Coalesced rounds one job may run back to back, the next round prepared while the
    # current one's transaction runs (workers/jobs.py); 1: one round, nothing ahead
    worker_rounds_per_job: int = 8
    # Rounds but a job's last one defer events whose identifiers another worker's
    # transaction holds, instead of waiting for it (workers/persist.py)
    worker_defer_conflicts: bool = True
    db_retry_attempts: int = 10
    # A stored identifier's last_seen is rewritten only when it moves by more than this
    identifier_touch_granularity_s: int = 3600
    # Scheduler
    partitions_ahead_months: int = 3
    retention_months: int = 13
    scheduler_interval_s: float = 10.0
    # Audiences (segments, computed traits), churn, anomalies: periods of the scheduler's jobs
    audience_refresh_interval_s: float = 3600.0
    churn_interval_s: float = 3600.0
    anomaly_interval_s: float = 600.0
    churn_after_days: int = 90
    anomaly_lookback_weeks: int = 8
    anomaly_min_weeks: int = 3
    anomaly_threshold: float = 3.5
    anomaly_min_expected: float = 5.0
    # Read API
    db_pool_min: int = 2
    db_pool_max: int = 10
    # How long a read API process trusts an API key lookup (revocation is effective within
    # it); at most 1 s, the CONTRACT's bound.
    read_key_cache_ttl_s: float = 1.0
    export_max_per_tenant: int = 4
    export_lease_s: int = 60
    # Identity rule dry-run (POST /api/v1/cdp/identity/dry-run): where a replay stops
    dry_run_max_events: int = 1_000_000
    dry_run_max_s: float = 60.0
    # Destinations (CONTRACT 7): SSRF guard, secrets at rest, delivery lanes
    destinations_allow_private: bool = False
    delivery_max_in_flight: int = 4
    delivery_timeout_s: float = 10.0
    delivery_breaker_threshold: int = 20
    delivery_breaker_cooldown_s: float = 30.0
    delivery_poll_interval_s: float = 0.2
    deliver_metrics_host: str = "127.0.0.1"
    deliver_metrics_port: int = 0
    stream_max_clients_per_tenant: int = 100
    # Identity rules defaults (per-tenant overrides live in the tenant's settings)
    extra_blocked_values: tuple[str, ...] = field(default_factory=tuple)
    # Encrypts stored identity and webhook secrets (stratum/secret_storage.py); None: stored in
    # plain text (every process warns), unless require_secret_key makes them refuse to start.
    secret_key: str | None = field(default=None, repr=False)
    require_secret_key: bool = False

    @property
    def import_queue(self) -> str:
        """The import lane's queue: lower priority than ``queue_name`` (workers take it last)."""
        return self.import_queue_name or f"{self.queue_name}-import"

    @property
    def worker_queues(self) -> list[str]:
        """The queues a worker listens to by default, highest priority first."""
        return [self.queue_name, self.import_queue]

    def replace(self, **changes: object) -> Settings:
        return dataclasses.replace(self, **changes)


def settings_from_env() -> Settings:
    """Build settings from ``STRATUM_*`` variables (unset ones keep their defaults)."""
    d = Settings()
    return Settings(
        database_url=_env("DATABASE_URL", d.database_url),
        redis_url=_env("REDIS_URL", d.redis_url),
        queue_name=_env("QUEUE_NAME", d.queue_name),
        import_queue_name=_env("IMPORT_QUEUE_NAME", d.import_queue_name),
        log_level=_log_level("LOG_LEVEL", d.log_level),
        ingest_host=_env("INGEST_HOST", d.ingest_host),
        ingest_port=_int("INGEST_PORT", d.ingest_port),
        read_host=_env("READ_HOST", d.read_host),
        read_port=_int("READ_PORT", d.read_port),
        http_header_timeout_s=_float("HTTP_HEADER_TIMEOUT_S", d.http_header_timeout_s),
        http_body_timeout_s=_float("HTTP_BODY_TIMEOUT_S", d.http_body_timeout_s),
        http_max_connections=_int("HTTP_MAX_CONNECTIONS", d.http_max_connections),
        max_events_per_request=_int("MAX_EVENTS_PER_REQUEST", d.max_events_per_request),
        max_request_bytes=_int("MAX_REQUEST_BYTES", d.max_request_bytes),
        max_event_bytes=_int("MAX_EVENT_BYTES", d.max_event_bytes),
        max_future_skew_s=_int("MAX_FUTURE_SKEW_S", d.max_future_skew_s),
        dedupe_window_s=_int("DEDUPE_WINDOW_S", d.dedupe_window_s),
        idempotency_ttl_s=_int("IDEMPOTENCY_TTL_S", d.idempotency_ttl_s),
        idempotency_lock_s=_int("IDEMPOTENCY_LOCK_S", d.idempotency_lock_s),
        queue_high_water=_int("QUEUE_HIGH_WATER", d.queue_high_water),
        retry_after_s=_int("RETRY_AFTER_S", d.retry_after_s),
        default_rate_limit_per_s=_int("DEFAULT_RATE_LIMIT_PER_S", d.default_rate_limit_per_s),
        dead_letter_ttl_s=_int("DEAD_LETTER_TTL_S", d.dead_letter_ttl_s),
        job_timeout_s=_int("JOB_TIMEOUT_S", d.job_timeout_s),
        failed_job_ttl_s=_int("FAILED_JOB_TTL_S", d.failed_job_ttl_s),
        worker_coalesce_max_events=_int("WORKER_COALESCE_MAX_EVENTS", d.worker_coalesce_max_events),
        worker_rounds_per_job=_int("WORKER_ROUNDS_PER_JOB", d.worker_rounds_per_job),
        worker_defer_conflicts=_bool("WORKER_DEFER_CONFLICTS", d.worker_defer_conflicts),
        db_retry_attempts=_int("DB_RETRY_ATTEMPTS", d.db_retry_attempts),
        identifier_touch_granularity_s=_int("IDENTIFIER_TOUCH_GRANULARITY_S", d.identifier_touch_granularity_s),
        partitions_ahead_months=_int("PARTITIONS_AHEAD_MONTHS", d.partitions_ahead_months),
        retention_months=_int("RETENTION_MONTHS", d.retention_months),
        scheduler_interval_s=_float("SCHEDULER_INTERVAL_S", d.scheduler_interval_s),
        audience_refresh_interval_s=_float("AUDIENCE_REFRESH_INTERVAL_S", d.audience_refresh_interval_s),
        churn_interval_s=_float("CHURN_INTERVAL_S", d.churn_interval_s),
        anomaly_interval_s=_float("ANOMALY_INTERVAL_S", d.anomaly_interval_s),
        churn_after_days=_int("CHURN_AFTER_DAYS", d.churn_after_days),
        anomaly_lookback_weeks=_int("ANOMALY_LOOKBACK_WEEKS", d.anomaly_lookback_weeks),
        anomaly_min_weeks=_int("ANOMALY_MIN_WEEKS", d.anomaly_min_weeks),
        anomaly_threshold=_float("ANOMALY_THRESHOLD", d.anomaly_threshold),
        anomaly_min_expected=_float("ANOMALY_MIN_EXPECTED", d.anomaly_min_expected),
        db_pool_min=_int("DB_POOL_MIN", d.db_pool_min),
        db_pool_max=_int("DB_POOL_MAX", d.db_pool_max),
        read_key_cache_ttl_s=_float("READ_KEY_CACHE_TTL_S", d.read_key_cache_ttl_s),
        export_max_per_tenant=_int("EXPORT_MAX_PER_TENANT", d.export_max_per_tenant),
        export_lease_s=_int("EXPORT_LEASE_S", d.export_lease_s),
        dry_run_max_events=_int("DRY_RUN_MAX_EVENTS", d.dry_run_max_events),
        dry_run_max_s=_float("DRY_RUN_MAX_S", d.dry_run_max_s),
        extra_blocked_values=_list("BLOCKED_VALUES"),
        secret_key=_env("SECRET_KEY", "") or None,
        require_secret_key=_bool("REQUIRE_SECRET_KEY", d.require_secret_key),
        destinations_allow_private=_bool("DESTINATIONS_ALLOW_PRIVATE", d.destinations_allow_private),
        delivery_max_in_flight=_int("DELIVERY_MAX_IN_FLIGHT", d.delivery_max_in_flight),
        delivery_timeout_s=_float("DELIVERY_TIMEOUT_S", d.delivery_timeout_s),
        delivery_breaker_threshold=_int("DELIVERY_BREAKER_THRESHOLD", d.delivery_breaker_threshold),
        delivery_breaker_cooldown_s=_float("DELIVERY_BREAKER_COOLDOWN_S", d.delivery_breaker_cooldown_s),
        delivery_poll_interval_s=_float("DELIVERY_POLL_INTERVAL_S", d.delivery_poll_interval_s),
        deliver_metrics_host=_env("DELIVER_METRICS_HOST", d.deliver_metrics_host),
        deliver_metrics_port=_int("DELIVER_METRICS_PORT", d.deliver_metrics_port),
        stream_max_clients_per_tenant=_int("STREAM_MAX_CLIENTS_PER_TENANT", d.stream_max_clients_per_tenant),
    )


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """Process-wide settings, read once. Tests build their own with ``Settings(...)``.

    Every process reads its settings here once at start, so this is where a missing
    ``STRATUM_SECRET_KEY`` is reported (CONTRACT 2), or, with
    ``STRATUM_REQUIRE_SECRET_KEY=true`` (what production should set), refused with a
    ValueError so no process starts that would store secrets in plain text."""
    settings = settings_from_env()
    if not settings.secret_key:
        advice = ("set it to a long random value (e.g. python -c 'import secrets; print(secrets.token_urlsafe(32))')"
                  " on every process")
        if settings.require_secret_key:
            raise ValueError(f"STRATUM_REQUIRE_SECRET_KEY is true and STRATUM_SECRET_KEY is not set: {advice}")
        logging.getLogger("stratum").warning(
            "STRATUM_SECRET_KEY is not set: identity and webhook secrets are stored in plain text; %s", advice)
    return settings


def global_blocked_values(settings: Settings) -> frozenset[str]:
    """STRATUM_BLOCKED_VALUES as compared: trimmed and lowercased."""
    return frozenset(v.strip().lower() for v in settings.extra_blocked_values if v.strip())


def sqlalchemy_url(database_url: str) -> str:
    """Map a plain ``postgresql://`` URL onto the psycopg 3 driver for SQLAlchemy."""
    for prefix in ("postgresql+psycopg://", "postgresql+psycopg2://", "postgresql://", "postgres://"):
        if database_url.startswith(prefix):
            return "postgresql+psycopg://" + database_url[len(prefix):]
    raise ValueError(f"STRATUM_DATABASE_URL must be a postgresql:// URL, got {database_url!r}")


def libpq_url(database_url: str) -> str:
    """The URL as libpq (psycopg) takes it: without a SQLAlchemy driver suffix."""
    scheme, sep, rest = database_url.partition("://")
    if not sep:
        raise ValueError(f"STRATUM_DATABASE_URL must be a postgresql:// URL, got {database_url!r}")
    return "postgresql://" + rest if scheme.startswith("postgres") else database_url
