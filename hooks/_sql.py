"""What the database hooks (postgres, mysql) share: client argv, private files, database selection."""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import quote

from restic_orch import runner
from restic_orch.config import DatabaseSource

from .base import Artifact, sha256_file


class SourceError(Exception):
    """The whole source cannot be dumped or restored (server down, wrong password, client too old)."""


def client(source: DatabaseSource, name: str) -> list[str]:
    """argv start for a client binary: the exec prefix (pct exec ...), then bin_dir/name or name."""
    binary = str(Path(source.bin_dir) / name) if source.bin_dir else name
    return [*source.command_prefix(), binary]


@contextmanager
def private_dir(prefix: str) -> Iterator[Path]:
    """A 0700 temporary directory, removed with everything in it (password files included) afterwards."""
    path = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        os.chmod(path, 0o700)
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def write_private(path: Path, text: str) -> Path:
    """Write a 0600 file; O_CREAT with the mode, so it is never readable by others even for an instant."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text)
    return path


def safe_filename(name: str) -> str:
    """A database name as one path component: anything but [A-Za-z0-9_.~-] percent-encoded."""
    encoded = quote(name, safe="")
    return "%2E" + encoded[1:] if encoded.startswith(".") else encoded


def select_databases(source: DatabaseSource, present: list[str], never: set[str]) -> tuple[list[str], list[str]]:
    """(databases to dump, configured databases that do not exist) after `databases` and `exclude`."""
    excluded = set(source.exclude)
    if source.databases == "all":
        wanted = [d for d in present if d not in never]
        missing: list[str] = []
    else:
        wanted = [d for d in source.databases if d in present]
        missing = [d for d in source.databases if d not in present]
    return [d for d in wanted if d not in excluded], [d for d in missing if d not in excluded]


def remove(path: Path) -> None:
    try:
        path.unlink()
    except FileNotFoundError:
        pass


def error_text(exc: BaseException) -> str:
    """An exception as one masked line of text (never a password)."""
    return runner.mask(str(exc) or type(exc).__name__)


def needs(which: str, account: str, right: str, statement: str) -> str:
    """What an account lacks, said the same way everywhere: the account, the right, the statement granting it."""
    return f"the {which} account {account} needs {right} ({statement})"


def version_of(text: str, patterns: tuple[str, ...]) -> str:
    for pattern in patterns:
        match = re.search(pattern, text)
        if match:
            return match.group(1)
    raise SourceError(f"cannot read a version number from {text.strip()[:200]!r}")


def version_tuple(version: str) -> tuple[int, ...]:
    return tuple(int(p) for p in re.findall(r"\d+", version)[:3])


def check_fetched(artifact: Artifact, path: Path) -> str | None:
    """Why the fetched file is not the artifact that was backed up (size or sha256), or None."""
    size = path.stat().st_size
    if artifact.size and size != artifact.size:
        return f"fetched {size} bytes, the manifest says {artifact.size}"
    if artifact.sha256 and sha256_file(path) != artifact.sha256:
        return "the fetched file's sha256 differs from the manifest"
    return None


def compare_counts(expected: dict[str, int], actual: dict[str, int]) -> dict[str, dict[str, int | None]]:
    """Tables whose row count differs (a table missing on either side counts as None)."""
    diffs: dict[str, dict[str, int | None]] = {}
    for table in sorted(set(expected) | set(actual)):
        want, got = expected.get(table), actual.get(table)
        if want != got:
            diffs[table] = {"expected": want, "actual": got}
    return diffs
