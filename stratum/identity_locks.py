"""The advisory lock key of an identifier: workers take it before they create, link or
merge through the identifier (workers/identity_store.py), the read API's unmerge before it
moves the identifier back (read_api/unmerge.py). One spelling, so both lock the same key."""

from __future__ import annotations

import hashlib
from functools import lru_cache


# Memoized: a busy identifier's key is computed once per process, not once per batch.
@lru_cache(maxsize=200_000)
def advisory_key(tenant_id: str, id_type: str, id_hash: str) -> int:
    """A signed 64-bit key for ``pg_advisory_xact_lock``."""
    digest = hashlib.blake2b(f"{tenant_id}:{id_type}:{id_hash}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)
