"""How hooks write files they must never leave half-written, and set aside the files they would replace."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

from .base import sha256_file


def open_private(path: Path) -> BinaryIO:
    """Open a 0600 file for writing; O_CREAT with the mode, so it is never readable by others even for an instant."""
    return os.fdopen(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "wb")


def write_private(path: Path, text: str) -> Path:
    """Write text to a 0600 file (see open_private)."""
    with open_private(path) as handle:
        handle.write(text.encode("utf-8"))
    return path


@contextmanager
def replacing(path: Path) -> Iterator[Path]:
    """Yield `<path>.partial` to write; when the block succeeds it becomes `path` in one rename.

    On any error or interruption the partial file is removed: `path` is either absent or whole, and a
    half-written file never fills the staging space the other sources need.
    """
    partial = path.with_name(path.name + ".partial")
    try:
        yield partial
        os.replace(partial, path)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise


def keep_aside(path: Path) -> Path:
    """Move an existing file to <file>.bak (.bak.1, ...) without ever overwriting a kept one."""
    for n in range(10000):
        candidate = path.with_name(path.name + (f".bak.{n}" if n else ".bak"))
        try:
            os.link(path, candidate)  # atomic and fails if the name is taken: never clobbers
        except FileExistsError:
            continue
        except OSError:
            # a filesystem without hard links: exclusive create, then copy
            try:
                with open(candidate, "xb") as out, open(path, "rb") as src:
                    shutil.copyfileobj(src, out)
            except FileExistsError:
                continue
            shutil.copystat(path, candidate)
        path.unlink()
        return candidate
    raise OSError(f"no free .bak name next to {path}")


@contextmanager
def fetched_beside(dest: Path, fetch: Callable[[Path], Path], sha256: str) -> Iterator[Path | None]:
    """Fetch an artifact into a temporary file next to `dest`, so that putting it in place is one rename.

    Yields that file, or None when its bytes are not the recorded sha256; the file is removed afterwards
    unless the block renamed it into place.
    """
    fd, name = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.restic-orch-")
    os.close(fd)
    tmp = Path(name)
    try:
        fetched = Path(fetch(tmp))
        if fetched != tmp:
            shutil.move(fetched, tmp)
        yield tmp if sha256_file(tmp) == sha256 else None
    finally:
        tmp.unlink(missing_ok=True)

