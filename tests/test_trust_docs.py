"""docs/TRUST.md's backend snippet computes the signatures Stratum checks."""

from __future__ import annotations

import re
from pathlib import Path

from core.identity_signature import identity_signature

TRUST = (Path(__file__).resolve().parent.parent / "docs" / "TRUST.md").read_text()
CASES = [("ids_secret", "email", " Ådä@Example.com "), ("ids_other", "external_id", "user-1001")]


def _block(language: str) -> str:
    (code,) = re.findall(rf"```{language}\n(.*?)```", TRUST, re.S)
    return code


def test_the_python_snippet_signs_what_workers_verify():
    scope: dict = {}
    exec(compile(_block("python"), "TRUST.md", "exec"), scope)  # noqa: S102 - our own documentation
    for secret, id_type, value in CASES:
        assert scope["identity_signature"](secret, id_type, value) == identity_signature(secret, id_type, value)

