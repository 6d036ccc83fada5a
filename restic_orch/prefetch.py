"""Fetch every artifact a restore will need with one `restic restore`, before the steps run.

One `restic dump` per artifact pays restic's start and index load each time and reads one pipe without
concurrency; one restore of all the paths pays that once and downloads packs in parallel. A step then takes its
file from here (a rename when on the same filesystem) and checks its sha256 exactly as it checks a dump; an
artifact that is not here (no room, restic failed, a file inside an archive) is dumped as before.
"""

from __future__ import annotations

import errno
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from restic_orch.hooks.base import Artifact

from . import progress, restic
from .browse import Located

log = logging.getLogger("restic_orch.prefetch")

SCRATCH_PREFIX = ".tmp-restore-"  # staging's prefix for leftovers: the next run empties what a killed one left
MIN_SECONDS = 3600
BYTES_PER_SECOND = 1024 * 1024  # the timeout allows this slow a link before calling restic stuck


def scratch_parent(staging_dir: Path) -> Path:
    """The staging directory (sized for a day's artifacts, emptied of `.tmp-*` by every run) when it is usable,
    else the system's temporary directory."""
    try:
        staging_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        if os.access(staging_dir, os.W_OK | os.X_OK):
            return staging_dir
    except OSError:
        pass
    return Path(tempfile.gettempdir())


def fitting(artifacts: list[Artifact], free: int) -> tuple[list[Artifact], list[Artifact]]:
    """The artifacts that fit in `free` bytes less a tenth kept for what the steps write, smallest first (the
    small ones gain the most: a dump each costs restic's start), and those left to be dumped one at a time."""
    budget = free - free // 10
    chosen: list[Artifact] = []
    left: list[Artifact] = []
    for artifact in sorted(artifacts, key=lambda a: a.size):
        if artifact.size <= budget:
            chosen.append(artifact)
            budget -= artifact.size
        else:
            left.append(artifact)
    return chosen, left


@contextmanager
def prefetched(located: Located, artifacts: list[Artifact], parent: Path) -> Iterator[dict[str, Path]]:
    """{artifact.path: its file} for what one restic restore fetched into a private scratch directory under
    `parent`; the directory and whatever is still in it are removed when the block ends, failed or not.

    Never fails the restore: when fetching at once goes wrong, every artifact is dumped on its own instead
    (and what restic wrote is not trusted: it may be partial), so each step reports its own error.
    """
    unique = list({a.path: a for a in artifacts}.values())
    scratch: Path | None = None
    try:
        files: dict[str, Path] = {}
        if unique:
            try:
                scratch = Path(tempfile.mkdtemp(prefix=SCRATCH_PREFIX, dir=parent))
                os.chmod(scratch, 0o700)
                files = _fetch_all(located, unique, scratch)
            except (OSError, restic.ResticError) as exc:
                log.warning("fetching all artifacts at once failed: each is fetched on its own",
                            extra={"error": str(exc)})
                if scratch is not None:  # free the room now: the dumps that follow need it
                    shutil.rmtree(scratch, ignore_errors=True)
                    scratch = None
        yield files
    finally:
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)


def _fetch_all(located: Located, artifacts: list[Artifact], scratch: Path) -> dict[str, Path]:
    free = shutil.disk_usage(scratch).free
    chosen, left = fitting(artifacts, free)
    if left:
        log.warning("not enough free space to fetch every artifact at once: the rest are fetched one at a time",
                    extra={"scratch": str(scratch.parent), "free": free, "needed": sum(a.size for a in artifacts),
                           "one_at_a_time": len(left)})
    if not chosen:
        return {}
    total = sum(a.size for a in chosen)
    with progress.current().phase("fetch") as task:
        commands = located.repo.restore_paths(located.snapshot.id, [located.path_of(a) for a in chosen], scratch,
                                              timeout=max(MIN_SECONDS, total / BYTES_PER_SECOND),
                                              progress=task.on_status)
    files: dict[str, Path] = {}
    for artifact in chosen:
        path = scratch / located.path_of(artifact).lstrip("/")
        if path.is_file() and not path.is_symlink() and path.stat().st_size == artifact.size:
            os.chmod(path, 0o600)  # as a dump writes it; the step sets the mode it restores
            files[artifact.path] = path
        else:
            log.warning("artifact missing after the restore of all: fetched on its own",
                        extra={"artifact": artifact.path})
    log.info("artifacts fetched at once", extra={"artifacts": len(files), "bytes": total, "commands": commands})
    return files


def move_into(source: Path, dest: Path) -> None:
    """Put a prefetched file at `dest`: one rename on the same filesystem, else a private copy (0600)."""
    try:
        os.replace(source, dest)
        return
    except OSError as exc:
        if exc.errno != errno.EXDEV:
            raise
    fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as out, open(source, "rb") as src:
        shutil.copyfileobj(src, out, 4 * 1024 * 1024)
    source.unlink()
