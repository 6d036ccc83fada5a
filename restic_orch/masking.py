"""The secrets this process has read, and mask(): what writes text anywhere (logs, summaries, notifications,
error messages) passes it through mask() so a known secret never leaves the process as itself.

A secret is known once it is read through read_secret/read_env_file or registered explicitly.
"""

from __future__ import annotations

import threading
from pathlib import Path

_secrets: set[str] = set()
_secrets_lock = threading.Lock()


def register_secret(value: str) -> None:
    """Remember a secret value so it is masked wherever a command line or error text is logged."""
    value = value.strip()
    # shorter values would mask ordinary words and numbers everywhere
    if len(value) >= 4:
        with _secrets_lock:
            _secrets.add(value)


def mask(text: str) -> str:
    with _secrets_lock:
        known = sorted(_secrets, key=len, reverse=True)
    # longest first: a secret containing another one is replaced whole
    for secret in known:
        text = text.replace(secret, "****")
    return text


def read_secret(path: Path) -> str:
    """Read a secret file (first line, stripped) and register its value for masking."""
    value = Path(path).read_text(encoding="utf-8").splitlines()[0].strip() if Path(path).stat().st_size else ""
    register_secret(value)
    return value


def read_env_file(path: Path) -> dict[str, str]:
    """KEY=VALUE lines (an optional `export ` prefix, # comments); values of *SECRET*, *PASSWORD* and *TOKEN*
    keys are registered for masking."""
    env: dict[str, str] = {}
    for number, raw in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("export "):
            line = line[len("export "):].strip()
        key, sep, value = line.partition("=")
        if not sep or not key.replace("_", "").isalnum():
            raise ValueError(f"{path}:{number}: expected KEY=VALUE")
        value = value.strip().strip('"').strip("'")
        env[key.strip()] = value
        if "SECRET" in key or "PASSWORD" in key or "TOKEN" in key:
            register_secret(value)
    return env
