"""API and write keys: random tokens shown once, stored as SHA-256 hex.

Keys are 32 random bytes, so a plain SHA-256 is enough (no slow KDF needed: there is
nothing to brute-force). A short prefix tells key kinds apart in logs and support tickets.
"""

from __future__ import annotations

import hashlib
import secrets

WRITE_KEY_PREFIX = "wk_"
TENANT_KEY_PREFIX = "sk_"
OPERATOR_KEY_PREFIX = "op_"
# Identity secrets (HMAC keys of verified identity) are not hashed: see stratum/secret_storage.py
IDENTITY_SECRET_PREFIX = "ids_"


def new_key(prefix: str) -> str:
    return prefix + secrets.token_urlsafe(32)


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()
