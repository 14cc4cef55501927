"""Dedupe scope (CONTRACT 4.5): the tenant for server-side sources, the source for website
sources; keys only ever as SHA-256 of (scope, key)."""

from __future__ import annotations

import hashlib

import pytest

from core.dedupe import MAX_DEDUPE_KEY_CHARS, dedupe_digest, dedupe_key_too_long, dedupe_scope

SOURCE_A, SOURCE_B = "5f0c4a4e-0000-4000-8000-00000000000a", "5f0c4a4e-0000-4000-8000-00000000000b"


@pytest.mark.parametrize("source_type", ["server", "crm", "import", "sgtm"])
def test_server_side_sources_of_a_tenant_share_one_scope(source_type):
    assert dedupe_scope(source_type, SOURCE_A) == dedupe_scope("server", SOURCE_B) == "t"


def test_each_website_source_is_its_own_scope():
    assert dedupe_scope("website", SOURCE_A) == f"s:{SOURCE_A}"
    assert len({dedupe_scope("website", SOURCE_A), dedupe_scope("website", SOURCE_B), dedupe_scope("server", SOURCE_A)}) == 3


def test_digest_is_sha256_of_scope_newline_key_and_scopes_never_collide():
    assert dedupe_digest("t", "order-1") == hashlib.sha256(b"t\norder-1").digest()
    assert dedupe_digest("t", "order-1") != dedupe_digest(f"s:{SOURCE_A}", "order-1")
    # scopes hold no line break, so "scope\nkey" splits one way only: no two pairs hash the same input
    assert all("\n" not in dedupe_scope(t, SOURCE_A) for t in ("website", "server"))


def test_keys_over_255_characters_are_refused_not_truncated():
    assert dedupe_key_too_long("k" * MAX_DEDUPE_KEY_CHARS) is None
    assert "256 characters" in dedupe_key_too_long("k" * 256)
    assert dedupe_key_too_long("é" * 255) is None  # characters, not bytes
