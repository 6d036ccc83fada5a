"""How hooks write files they must never leave half-written, and set aside the files they would replace."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO


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
