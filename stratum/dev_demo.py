"""The demo tenant and source of ``stratum dev``, kept from one run to the next.

Keys are stored only as hashes, so a database cannot give back the keys a previous run
printed. ``stratum dev`` therefore keeps them in ``<data dir>/demo.json``, owner-only (mode
0600, like ``secret_key`` beside it: the file is as secret as the keys it holds), with the
tenant and source ids. On a rerun:

- the file's tenant exists in the database: it is reused; its admin key is reused while its
  hash is still a live admin key of that tenant, otherwise a new one is created;
- the file's source exists there, active, under that tenant: it is reused; its write key is
  reused while its hash still matches, otherwise the source's key is rotated; an unknown or
  deactivated source is replaced by a new one;
- no file, or a tenant the database does not know (another database than last time, or one
  rebuilt): a new tenant and source, and the file is rewritten.

Deleting the file therefore makes the next run start a fresh demo tenant; the old one stays.
"""

from __future__ import annotations

import json
import os
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path

import psycopg

from stratum.admin import create_source, create_tenant, create_tenant_key, rotate_source_key
from stratum.keys import hash_key

DEMO_FILE = "demo.json"
TENANT_NAME, SOURCE_NAME, SOURCE_TYPE, PHONE_REGION = "demo", "demo website", "server", "US"


@dataclass(frozen=True)
class DemoKeys:
    tenant_id: str
    tenant_key: str
    source_id: str
    write_key: str


def ensure_demo(conn: psycopg.Connection, data_dir: Path, secret_key: str | None) -> tuple[DemoKeys, str]:
    """The demo tenant and source with working keys, and a few words on what was done
    ("created", "reused", "reused; new tenant key", ...). Runs in the caller's transaction;
    writes ``<data_dir>/demo.json`` when anything changed (commit before relying on it)."""
    path = data_dir / DEMO_FILE
    known = _read(path)
    if known is None or not _tenant_exists(conn, known.tenant_id):
        tenant = create_tenant(conn, TENANT_NAME)
        source = create_source(conn, tenant.owner_id, SOURCE_NAME, SOURCE_TYPE, PHONE_REGION, secret_key=secret_key)
        keys = DemoKeys(str(tenant.owner_id), tenant.key, str(source.owner_id), source.key)
        _write(path, keys)
        return keys, "created"

    keys, changes = known, []
    if not _live_admin_key(conn, keys.tenant_id, keys.tenant_key):
        created = create_tenant_key(conn, uuid.UUID(keys.tenant_id), "admin")
        keys = DemoKeys(keys.tenant_id, created.key, keys.source_id, keys.write_key)
        changes.append("new tenant key")
    source_hash = _active_source_key_hash(conn, keys.tenant_id, keys.source_id)
    if source_hash is None:
        source = create_source(conn, uuid.UUID(keys.tenant_id), SOURCE_NAME, SOURCE_TYPE, PHONE_REGION,
                               secret_key=secret_key)
        keys = DemoKeys(keys.tenant_id, keys.tenant_key, str(source.owner_id), source.key)
        changes.append("new source")
    elif source_hash != hash_key(keys.write_key):
        _, write_key = rotate_source_key(conn, keys.tenant_id, keys.source_id)
        keys = DemoKeys(keys.tenant_id, keys.tenant_key, keys.source_id, write_key)
        changes.append("write key rotated")
    if changes:
        _write(path, keys)
    return keys, "; ".join(["reused", *changes])


def _read(path: Path) -> DemoKeys | None:
    try:
        return DemoKeys(**json.loads(path.read_text()))
    except (FileNotFoundError, ValueError, TypeError):  # absent or not ours: start afresh
        return None


def _write(path: Path, keys: DemoKeys) -> None:
    """Replace the file atomically, never readable by others even for a moment."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(asdict(keys), f, indent=2)
        f.write("\n")
    os.replace(tmp, path)


def _tenant_exists(conn: psycopg.Connection, tenant_id: str) -> bool:
    try:
        tid = uuid.UUID(tenant_id)
    except ValueError:
        return False
    return conn.execute("SELECT 1 FROM tenants WHERE id = %s", (tid,)).fetchone() is not None


def _live_admin_key(conn: psycopg.Connection, tenant_id: str, key: str) -> bool:
    return conn.execute(
        "SELECT 1 FROM api_keys WHERE tenant_id = %s AND key_hash = %s AND role = 'admin' AND revoked_at IS NULL",
        (tenant_id, hash_key(key))).fetchone() is not None


def _active_source_key_hash(conn: psycopg.Connection, tenant_id: str, source_id: str) -> str | None:
    try:
        sid = uuid.UUID(source_id)
    except ValueError:
        return None
    row = conn.execute("SELECT write_key_hash FROM sources WHERE id = %s AND tenant_id = %s AND active",
                       (sid, tenant_id)).fetchone()
    return row[0] if row else None
