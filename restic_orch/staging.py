"""The staging tree `<staging_dir>/<YYYY-MM-DD>/<kind>/...` and its `manifest.json`."""

from __future__ import annotations

import json
import os
import re
import shutil
import threading
import time
from datetime import date
from pathlib import Path
from typing import Any

MARKER = ".restic-orch-staging"
MANIFEST = "manifest.json"
DAY = re.compile(r"^\d{4}-\d{2}-\d{2}$")


class StagingError(Exception):
    pass


def prepare(staging_dir: Path) -> list[str]:
    """Create the staging directory (0700) or check it is ours; remove what a killed run left behind."""
    staging_dir = Path(staging_dir)
    if staging_dir.resolve() == Path("/") or len(staging_dir.resolve().parts) < 3:
        raise StagingError(f"staging_dir {staging_dir} is too close to / to be emptied safely")
    if staging_dir.exists():
        if not (staging_dir / MARKER).exists() and any(staging_dir.iterdir()):
            raise StagingError(f"staging_dir {staging_dir} holds files that restic-orch did not create;"
                               " point staging_dir at an empty or dedicated directory")
    staging_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(staging_dir, 0o700)
    (staging_dir / MARKER).touch()
    removed = []
    for entry in sorted(staging_dir.iterdir()):
        if entry.name == MARKER:
            continue
        if (entry.is_dir() and DAY.match(entry.name)) or entry.name.startswith(".tmp-"):
            shutil.rmtree(entry) if entry.is_dir() else entry.unlink()
            removed.append(entry.name)
    return removed


def day_dir(staging_dir: Path, day: date) -> Path:
    path = Path(staging_dir) / day.isoformat()
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    return path


def clean(day: Path) -> None:
    if day.exists() and DAY.match(day.name) and (day.parent / MARKER).exists():
        shutil.rmtree(day)


class Cleaner:
    """Removes a staged day in a thread, started once a snapshot holds the day.

    Nothing after the first saved snapshot reads the staging (the offsite copy goes repository to
    repository, retention never looks at it), and removing GiBs of files written a minute earlier takes
    seconds (the kernel waits for their pages under write-back): overlapped with `restic copy` and
    `forget`, that time leaves the run's critical path.
    """

    def __init__(self, day: Path) -> None:
        self.day = day
        self.error: Exception | None = None
        self.seconds = 0.0
        self._thread = threading.Thread(target=self._run, name="staging-clean", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        started = time.monotonic()
        try:
            clean(self.day)
        except Exception as exc:  # noqa: BLE001 - whatever it is, the run reports it instead of "removed"
            self.error = exc
        self.seconds = time.monotonic() - started

    def wait(self) -> Exception | None:
        """Block until the day is gone (or could not be removed); the error, if any."""
        self._thread.join()
        return self.error


def free_bytes(path: Path) -> int:
    probe = Path(path)
    while not probe.exists():
        probe = probe.parent
    return shutil.disk_usage(probe).free


def tree_bytes(path: Path) -> int:
    total = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(root, name)).st_size
            except FileNotFoundError:
                pass
    return total


def write_manifest(day: Path, manifest: dict[str, Any]) -> Path:
    path = day / MANIFEST
    tmp = day / (MANIFEST + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        json.dump(manifest, handle, indent=2, sort_keys=False, default=str, ensure_ascii=False)
        handle.write("\n")
    os.replace(tmp, path)
    return path
