"""Redis key names shared by the ingest API, the read API and the workers. Pure: names only.

Both sides import these so a key is spelled in one place. ``tenant_id`` is always part
of the key, so one tenant's entries can never answer another tenant's lookup.
"""

from __future__ import annotations

_PREFIX = "stratum"


def deadletter_key(tenant_id: str) -> str:
    """Redis list of a tenant's unusable events (written by ingest, shown by ``/ops``)."""
    return f"{_PREFIX}:deadletter:{tenant_id}"


def dry_run_lock_key(tenant_id: str) -> str:
    """Held while one of the tenant's identity rule dry-runs runs (one at a time)."""
    return f"{_PREFIX}:dry-run:{tenant_id}"
