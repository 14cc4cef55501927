"""Sealing stored secrets (webhook signing secrets) with ``STRATUM_SECRET_KEY``.

A secret that must be used again (a webhook secret signs every delivery) cannot be hashed,
so it is encrypted at rest with Fernet (AES-128-CBC + HMAC-SHA256, from the ``cryptography``
package). The Fernet key is derived from the configured secret key by SHA-256, so any
high-entropy string works as ``STRATUM_SECRET_KEY``.

Stored form: ``fernet:<token>`` when a key is configured, ``plain:<secret>`` when it is not
(every process warns at start in that case). ``open_secret`` reads both, so setting a key
later only needs a rotation of each secret to seal it. Pure: no I/O.
"""

from __future__ import annotations

import base64
import hashlib

from cryptography.fernet import Fernet, InvalidToken

_FERNET = "fernet:"
_PLAIN = "plain:"


class SecretKeyError(Exception):
    """A sealed secret cannot be opened: no key configured, or the wrong one."""


def _fernet(secret_key: str) -> Fernet:
    return Fernet(base64.urlsafe_b64encode(hashlib.sha256(secret_key.encode()).digest()))


def seal_secret(value: str, secret_key: str) -> str:
    """The stored form of ``value``: encrypted with ``secret_key``, or marked plain when it is empty."""
    if not secret_key:
        return _PLAIN + value
    return _FERNET + _fernet(secret_key).encrypt(value.encode()).decode()


def open_secret(stored: str, secret_key: str) -> str:
    """The secret a ``seal_secret`` result holds. Raises SecretKeyError when it is sealed and
    ``secret_key`` is empty or not the key it was sealed with."""
    if stored.startswith(_PLAIN):
        return stored[len(_PLAIN):]
    if not stored.startswith(_FERNET):
        raise SecretKeyError("unknown stored secret format")
    if not secret_key:
        raise SecretKeyError("a sealed secret needs STRATUM_SECRET_KEY")
    try:
        return _fernet(secret_key).decrypt(stored[len(_FERNET):].encode()).decode()
    except InvalidToken:
        raise SecretKeyError("STRATUM_SECRET_KEY is not the key this secret was sealed with") from None
