"""Tenants, keys, operators and sources: the administrative writes shared by the CLI and
the read API. Functions take an open psycopg connection and run inside the caller's
transaction; keys are returned once and only their hashes are stored."""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from datetime import datetime
from urllib.parse import urlsplit

import phonenumbers
import psycopg

from core.errors import StratumError
from stratum.keys import (
    IDENTITY_SECRET_PREFIX,
    OPERATOR_KEY_PREFIX,
    TENANT_KEY_PREFIX,
    WRITE_KEY_PREFIX,
    hash_key,
    new_key,
)
from stratum.secret_storage import (
    SecretUnreadable,
    destination_secret_context,
    encrypt_secret,
    identity_secret_context,
    reseal_secret,
)

SOURCE_TYPES = ("website", "server", "sgtm", "import", "crm")
KEY_ROLES = ("admin", "read")
MAX_NAME_CHARS = 200
IDENTITY_VERIFICATION_MODES = ("protect", "off")
MAX_ORIGIN_CHARS = 300
# C0 controls and DEL: NUL cannot be stored in Postgres text at all, the rest break logs and pages.
_CONTROL_CHARS = re.compile(r"[\x00-\x1f\x7f]")
_HOST_NAME = re.compile(r"^[a-z0-9_]([a-z0-9_-]*[a-z0-9_])?(\.[a-z0-9_]([a-z0-9_-]*[a-z0-9_])?)*$")


def validate_name(name: object, what: str) -> str:
    """A tenant, operator or source name as stored: trimmed, 1..200 characters, no control
    characters. StratumError ``invalid_name`` / ``name_too_long`` otherwise."""
    if not isinstance(name, str) or not name.strip():
        raise StratumError(f"{what} name must not be empty", code="invalid_name")
    name = name.strip()
    if len(name) > MAX_NAME_CHARS:
        raise StratumError(f"{what} name must be at most {MAX_NAME_CHARS} characters, got {len(name)}",
                           code="name_too_long")
    if _CONTROL_CHARS.search(name):
        raise StratumError(f"{what} name must not contain control characters (NUL, newline, tab...)",
                           code="invalid_name")
    return name


@dataclass(frozen=True)
class CreatedKey:
    owner_id: uuid.UUID
    key_id: uuid.UUID
    key: str
    identity_secret: str | None = None  # website sources: shown once, like the key


def create_tenant(conn: psycopg.Connection, name: str) -> CreatedKey:
    """A new tenant and its first admin key."""
    name = validate_name(name, "tenant")
    tenant_id = uuid.uuid4()
    conn.execute("INSERT INTO tenants (id, name) VALUES (%s, %s)", (tenant_id, name))
    created = create_tenant_key(conn, tenant_id, "admin")
    return CreatedKey(tenant_id, created.key_id, created.key)


def create_tenant_key(conn: psycopg.Connection, tenant_id: uuid.UUID, role: str) -> CreatedKey:
    if role not in KEY_ROLES:
        raise StratumError(f"role must be one of {', '.join(KEY_ROLES)}", code="invalid_role")
    if conn.execute("SELECT 1 FROM tenants WHERE id = %s", (tenant_id,)).fetchone() is None:
        raise StratumError(f"no tenant {tenant_id}", code="not_found")
    key_id, key = uuid.uuid4(), new_key(TENANT_KEY_PREFIX)
    conn.execute(
        "INSERT INTO api_keys (id, tenant_id, role, key_hash) VALUES (%s, %s, %s, %s)",
        (key_id, tenant_id, role, hash_key(key)),
    )
    return CreatedKey(tenant_id, key_id, key)


def revoke_key(conn: psycopg.Connection, key_id: uuid.UUID) -> bool:
    """Revoke a tenant or operator key. True if a live key was revoked."""
    row = conn.execute(
        "UPDATE api_keys SET revoked_at = now() WHERE id = %s AND revoked_at IS NULL RETURNING id",
        (key_id,),
    ).fetchone()
    return row is not None


def create_operator(conn: psycopg.Connection, name: str) -> CreatedKey:
    name = validate_name(name, "operator")
    operator_id, key_id, key = uuid.uuid4(), uuid.uuid4(), new_key(OPERATOR_KEY_PREFIX)
    conn.execute("INSERT INTO operators (id, name) VALUES (%s, %s)", (operator_id, name))
    conn.execute(
        "INSERT INTO api_keys (id, operator_id, role, key_hash) VALUES (%s, %s, 'operator', %s)",
        (key_id, operator_id, hash_key(key)),
    )
    return CreatedKey(operator_id, key_id, key)


def validate_phone_region(region: str | None) -> str | None:
    if region is None:
        return None
    region = region.strip().upper()
    if region not in phonenumbers.SUPPORTED_REGIONS:
        raise StratumError(f"unknown phone region {region!r}; use an ISO 3166 code like US", code="invalid_phone_region")
    return region


MAX_RATE_LIMIT = 1_000_000_000  # events/s; the column is a 32-bit integer


def check_rate_limit(rate_limit: int | None) -> None:
    if rate_limit is not None and not 0 < rate_limit <= MAX_RATE_LIMIT:
        raise StratumError(f"rate_limit must be 1..{MAX_RATE_LIMIT} events per second (or null for the default)",
                           code="invalid_rate_limit")


def create_source(
    conn: psycopg.Connection,
    tenant_id: uuid.UUID,
    name: str,
    source_type: str = "website",
    phone_region: str | None = None,
    rate_limit: int | None = None,
    allowed_origins: list[str] | None = None,
    *,
    identity_verification: str | None = None,
    secret_key: str | None = None,
) -> CreatedKey:
    """A new source with its write key (shown once) and, for website sources, its identity
    secret (shown once; stored encrypted with ``secret_key``, STRATUM_SECRET_KEY, or in
    plain text without one). ``identity_verification`` defaults to ``protect`` for website
    sources; other types are trusted and always ``off``."""
    if source_type not in SOURCE_TYPES:
        raise StratumError(f"type must be one of {', '.join(SOURCE_TYPES)}", code="invalid_source_type")
    name = validate_name(name, "source")
    check_rate_limit(rate_limit)
    region = validate_phone_region(phone_region)
    verification = validate_identity_verification(source_type, identity_verification)
    if conn.execute("SELECT 1 FROM tenants WHERE id = %s", (tenant_id,)).fetchone() is None:
        raise StratumError(f"no tenant {tenant_id}", code="not_found")
    source_id, key = uuid.uuid4(), new_key(WRITE_KEY_PREFIX)
    secret = new_key(IDENTITY_SECRET_PREFIX) if source_type == "website" else None
    stored = encrypt_secret(secret_key, secret, identity_secret_context(source_id)) if secret else None
    conn.execute(
        "INSERT INTO sources (id, tenant_id, name, type, write_key_hash, phone_region, rate_limit, allowed_origins,"
        " identity_verification, identity_secret) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)",
        (source_id, tenant_id, name, source_type, hash_key(key), region, rate_limit, allowed_origins or [],
         verification, stored),
    )
    return CreatedKey(source_id, source_id, key, secret)


def reseal_stored_secrets(conn: psycopg.Connection, secret_key: str | None) -> dict[str, int]:
    """Rewrite every stored identity and webhook secret that is in an older form (legacy
    Fernet, or plain text while a key is set) in the current one (stratum/secret_storage.py);
    returns how many columns were rewritten per table. Idempotent; secrets that do not open
    with ``secret_key`` are left as they are and counted under ``unreadable``."""
    counts = {"sources": 0, "destinations": 0, "unreadable": 0}
    tables = (("sources", ("identity_secret", "previous_identity_secret"), identity_secret_context),
              ("destinations", ("secret", "previous_secret"), destination_secret_context))
    for table, columns, context_of in tables:
        for row in conn.execute(f"SELECT id, {', '.join(columns)} FROM {table} FOR UPDATE").fetchall():
            changes = {}
            for column, stored in zip(columns, row[1:], strict=True):
                if stored is None:
                    continue
                try:
                    new = reseal_secret(secret_key, stored, context_of(row[0]))
                except SecretUnreadable:
                    counts["unreadable"] += 1
                    continue
                if new is not None:
                    changes[column] = new
            if changes:
                sets = ", ".join(f"{c} = %({c})s" for c in changes)
                conn.execute(f"UPDATE {table} SET {sets} WHERE id = %(id)s", {**changes, "id": row[0]})
                counts[table] += len(changes)
    return counts


def validate_identity_verification(source_type: str, mode: str | None) -> str:
    """The ``identity_verification`` of a source of ``source_type`` (None: the default)."""
    if mode is None:
        return "protect" if source_type == "website" else "off"
    if mode not in IDENTITY_VERIFICATION_MODES:
        raise StratumError(f"identity_verification must be one of {', '.join(IDENTITY_VERIFICATION_MODES)}",
                           code="invalid_identity_verification")
    if mode == "protect" and source_type != "website":
        raise StratumError("identity_verification protect applies to website sources; server-side sources are "
                           "trusted and stay off", code="invalid_identity_verification")
    return mode


# Sources: reading, changing and rotating (the read API's /sources endpoints).

SOURCE_COLUMNS = ("id::text, name, type, active, phone_region, rate_limit, allowed_origins, created_at,"
                  " identity_verification")
MAX_ALLOWED_ORIGINS = 100


@dataclass(frozen=True)
class SourceRecord:
    id: str
    name: str
    type: str
    active: bool
    phone_region: str | None
    rate_limit: int | None
    allowed_origins: list[str]
    created_at: datetime
    identity_verification: str = "off"


def validate_allowed_origins(origins: list[str] | None) -> list[str]:
    """Browser origins allowed to send with a source's write key: ``scheme://host[:port]``
    (http or https, no path), compared without a trailing slash. Empty: any origin."""
    if origins is None:
        return []
    if len(origins) > MAX_ALLOWED_ORIGINS:
        raise StratumError(f"at most {MAX_ALLOWED_ORIGINS} allowed origins", code="invalid_allowed_origins")
    out: list[str] = []
    for origin in origins:
        value = origin.strip().rstrip("/") if isinstance(origin, str) else ""
        if not _is_origin(value):
            shown = origin[:MAX_ORIGIN_CHARS] if isinstance(origin, str) else origin
            raise StratumError(f"allowed origin {shown!r} must look like https://shop.example.com",
                               code="invalid_allowed_origins")
        if value not in out:
            out.append(value)
    return out


def _is_origin(value: str) -> bool:
    """``scheme://host[:port]``: http(s), a DNS name or an IP address, a valid port, nothing else."""
    if not value or len(value) > MAX_ORIGIN_CHARS or _CONTROL_CHARS.search(value):
        return False
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 - raises ValueError for a port that is not 0..65535
    except ValueError:  # "http://[::1", "http://[zz]", "https://a.com:abc"
        return False
    host = parts.hostname or ""
    if (parts.scheme not in ("http", "https") or not host or parts.path or parts.query or parts.fragment
            or parts.username is not None or parts.password is not None):
        return False
    if value.lower().startswith(f"{parts.scheme}://["):
        return True  # a bracketed IPv6 address, already checked by urlsplit
    return bool(_HOST_NAME.match(host))


def _validate_source_fields(changes: dict) -> dict:
    out = dict(changes)
    if "name" in out:
        out["name"] = validate_name(out["name"], "source")
    if "rate_limit" in out:
        check_rate_limit(out["rate_limit"])
    if "phone_region" in out:
        out["phone_region"] = validate_phone_region(out["phone_region"])
    if "allowed_origins" in out:
        out["allowed_origins"] = validate_allowed_origins(out["allowed_origins"])
    return out


def get_source(conn: psycopg.Connection, tenant_id: uuid.UUID | str, source_id: uuid.UUID | str) -> SourceRecord:
    """One source of the tenant; StratumError ``not_found`` for another tenant's source."""
    row = conn.execute(f"SELECT {SOURCE_COLUMNS} FROM sources WHERE id = %s AND tenant_id = %s",
                       (source_id, tenant_id)).fetchone()
    if row is None:
        raise StratumError(f"no source {source_id}", code="not_found")
    return SourceRecord(*row)


def update_source(conn: psycopg.Connection, tenant_id: uuid.UUID | str, source_id: uuid.UUID | str,
                  changes: dict) -> SourceRecord:
    """Change some of ``name``, ``active``, ``phone_region``, ``rate_limit``,
    ``allowed_origins``, ``identity_verification`` (``None`` clears ``phone_region``/
    ``rate_limit``). ``type`` cannot change (``immutable_field``): it decides the source's
    trust and dedupe scope. The ingest API and workers see a change within one second."""
    editable = ("name", "active", "phone_region", "rate_limit", "allowed_origins", "identity_verification")
    changes = dict(changes)
    if "type" in changes:
        current = get_source(conn, tenant_id, source_id)
        if changes.pop("type") != current.type:
            raise StratumError("a source's type cannot be changed (it decides its trust and dedupe scope); "
                               "create a new source instead", code="immutable_field")
    unknown = sorted(set(changes) - set(editable))
    if unknown:
        raise StratumError(f"{unknown[0]} cannot be changed; editable: {', '.join(editable)}", code="invalid_field")
    fields = _validate_source_fields(changes)
    if "identity_verification" in fields:
        source_type = get_source(conn, tenant_id, source_id).type
        fields["identity_verification"] = validate_identity_verification(source_type,
                                                                         fields["identity_verification"] or "")
    if not fields:
        return get_source(conn, tenant_id, source_id)
    assignments = ", ".join(f"{name} = %s" for name in fields)
    row = conn.execute(
        f"UPDATE sources SET {assignments}, updated_at = now() WHERE id = %s AND tenant_id = %s"
        f" RETURNING {SOURCE_COLUMNS}",
        (*fields.values(), source_id, tenant_id),
    ).fetchone()
    if row is None:
        raise StratumError(f"no source {source_id}", code="not_found")
    return SourceRecord(*row)


def rotate_source_key(conn: psycopg.Connection, tenant_id: uuid.UUID | str,
                      source_id: uuid.UUID | str) -> tuple[SourceRecord, str]:
    """A new write key for the source (shown once); the old one stops working at once
    (within the ingest API's one-second key cache)."""
    key = new_key(WRITE_KEY_PREFIX)
    row = conn.execute(
        f"UPDATE sources SET write_key_hash = %s, updated_at = now() WHERE id = %s AND tenant_id = %s"
        f" RETURNING {SOURCE_COLUMNS}",
        (hash_key(key), source_id, tenant_id),
    ).fetchone()
    if row is None:
        raise StratumError(f"no source {source_id}", code="not_found")
    return SourceRecord(*row), key


# After a rotation the previous identity secret stays valid this long (CONTRACT 6), so
# backends can switch to the new one without a gap.
IDENTITY_SECRET_GRACE_S = 24 * 3600


def rotate_identity_secret(conn: psycopg.Connection, tenant_id: uuid.UUID | str, source_id: uuid.UUID | str,
                           secret_key: str | None) -> tuple[SourceRecord, str]:
    """A new identity secret for a website source (shown once); the previous one stays valid
    for ``IDENTITY_SECRET_GRACE_S`` (the one before it stops at once). Workers see the change
    within their one-second cache."""
    current = get_source(conn, tenant_id, source_id)
    if current.type != "website":
        raise StratumError("only website sources have an identity secret; server-side sources are trusted",
                           code="not_a_website_source")
    secret = new_key(IDENTITY_SECRET_PREFIX)
    row = conn.execute(
        "UPDATE sources SET previous_identity_secret = identity_secret, identity_secret = %s,"
        " identity_secret_rotated_at = now(), updated_at = now() WHERE id = %s AND tenant_id = %s"
        f" RETURNING {SOURCE_COLUMNS}",
        (encrypt_secret(secret_key, secret, identity_secret_context(source_id)), source_id, tenant_id),
    ).fetchone()
    if row is None:
        raise StratumError(f"no source {source_id}", code="not_found")
    return SourceRecord(*row), secret
