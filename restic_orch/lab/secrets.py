"""Secret files for the simulated homelab.

Every credential the lab generates lives in a 0600 file under ``<base_dir>/secrets/``
so that the product is exercised the way it runs for real: it reads password files,
never passwords from argv or from the lab's memory.
"""

from __future__ import annotations

import os
import re
import secrets as _stdlib_secrets
from pathlib import Path


def secrets_dir(base_dir: Path) -> Path:
    """The lab's secrets directory (created 0700)."""
    path = Path(base_dir) / "secrets"
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(path, 0o700)
    return path


def new_password(nbytes: int = 24) -> str:
    """A random URL-safe password (no quoting problems in SQL, .pgpass or env files)."""
    return _stdlib_secrets.token_urlsafe(nbytes)


_SAFE_PASSWORD = re.compile(r"[A-Za-z0-9_.~+/=-]{8,128}")


def check_password(password: str) -> str:
    """Return ``password`` if it is safe to embed in SQL/.pgpass/option files, else raise.

    The lab puts passwords into SQL literals and config files; restricting the alphabet
    (token_urlsafe's, plus a few) rules out quoting bugs and injection.
    """
    if not _SAFE_PASSWORD.fullmatch(password):
        raise ValueError("lab passwords must be 8-128 chars of [A-Za-z0-9_.~+/=-]")
    return password


def write_secret(path: Path, text: str) -> Path:
    """Write ``text`` to ``path`` with mode 0600, creating missing parents 0700.

    The file is created with ``os.open(..., 0o600)`` so it is never readable by others,
    not even for the instant between create and chmod.
    """
    path = Path(path)
    missing = []
    parent = path.parent
    while not parent.exists():
        missing.append(parent)
        parent = parent.parent
    for directory in reversed(missing):
        directory.mkdir(mode=0o700)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        # An existing file keeps its old mode through O_CREAT: force 0600.
        os.fchmod(fd, 0o600)
        os.write(fd, text.encode("utf-8"))
    finally:
        os.close(fd)
    return path


def read_secret(path: Path) -> str:
    """Read a one-line secret file, without its trailing newline."""
    return Path(path).read_text(encoding="utf-8").strip()
