"""The Dockerfile installs the package from copied sources, so every package pyproject.toml
declares must be copied into the image (a missing one installs fine and fails at import).
Offline: reads the files, builds nothing."""

from __future__ import annotations

import fnmatch
import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _copied_paths() -> set[str]:
    """Source paths of the Dockerfile's COPY instructions (the destination is left out)."""
    copied: set[str] = set()
    for line in (ROOT / "Dockerfile").read_text().splitlines():
        if m := re.match(r"\s*COPY\s+(?!--from)(?:--\S+\s+)*(.+)$", line, re.IGNORECASE):
            copied.update(p.rstrip("/") for p in m.group(1).split()[:-1])
    return copied


def _declared_packages() -> list[str]:
    """Top-level packages in the repo that pyproject's ``packages.find`` includes."""
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    include = pyproject["tool"]["setuptools"]["packages"]["find"]["include"]
    return sorted(d.name for d in ROOT.iterdir()
                  if (d / "__init__.py").is_file() and any(fnmatch.fnmatch(d.name, pat) for pat in include))


def test_every_declared_package_is_copied_into_the_image():
    packages = _declared_packages()
    assert {"core", "stratum", "stratum_client", "migrations"} <= set(packages)  # the pattern list is read right
    copied = _copied_paths()
    if "." in copied:  # COPY . . takes everything
        return
    missing = [p for p in packages if p not in copied]
    assert not missing, f"Dockerfile does not COPY {missing} (declared in pyproject.toml's packages.find)"


def test_files_the_build_reads_are_copied():
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    copied = _copied_paths()
    needed = {"pyproject.toml", pyproject["project"]["readme"], "alembic.ini"}
    assert "." in copied or needed <= copied, f"Dockerfile does not COPY {sorted(needed - copied)}"
