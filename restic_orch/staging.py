"""The staging tree `<staging_dir>/<YYYY-MM-DD>/<kind>/...` and its `manifest.json`."""

from __future__ import annotations

import json
import os
import re
import shutil
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

from restic_orch.hooks.base import Artifact

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


FORMAT = 1
COMPLETE, PARTIAL = "complete", "partial"
# what an artifact written by an older version may lack; a restore then fails its checks instead of reading
_ARTIFACT_DEFAULTS: dict[str, Any] = {"component": "", "kind": "", "source": "", "path": "", "size": 0, "sha256": ""}


@dataclass
class Manifest:
    """`manifest.json` at the root of a staged day: what the run staged, what failed, and how to restore it.

    It is inside every snapshot and restore reads it first, so its JSON keeps its shape: same keys, same order.
    """

    format: int = FORMAT
    run_id: str = ""
    host: str = ""
    started: str = ""
    restic_orch: str = ""
    restic: str = ""
    day: str = ""
    hostname: str = ""
    tools: dict[str, str] = field(default_factory=dict)
    artifacts: list[Artifact] = field(default_factory=list)
    failures: list[dict[str, Any]] = field(default_factory=list)
    notices: list[dict[str, Any]] = field(default_factory=list)
    config: dict[str, Any] = field(default_factory=dict)  # redacted: no secret, only where they are
    finished_dumps: str = ""
    status: str = ""

    def finish_dumps(self, when: datetime | None = None) -> None:
        """The pre-hooks are done: stamp the time, and the status the snapshot's tags will carry."""
        self.finished_dumps = (when or datetime.now(UTC)).isoformat(timespec="seconds")
        self.status = PARTIAL if self.failures else COMPLETE

    def kinds(self) -> list[str]:
        return sorted({a.kind for a in self.artifacts})

    def to_json(self) -> dict[str, Any]:
        data = {f.name: getattr(self, f.name) for f in fields(self)}
        data["artifacts"] = [a.to_json() for a in self.artifacts]
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Manifest:
        """Read a manifest of this or an earlier version: a missing or null key takes its default."""
        names = {f.name for f in fields(cls)} - {"artifacts", "tools", "failures", "notices", "config"}
        manifest = cls(**{k: data[k] for k in names if data.get(k) is not None})
        manifest.tools = dict(data.get("tools") or {})
        manifest.failures = [dict(f) for f in data.get("failures") or []]
        manifest.notices = [dict(n) for n in data.get("notices") or []]
        manifest.config = dict(data.get("config") or {})
        manifest.artifacts = [Artifact.from_json({**_ARTIFACT_DEFAULTS, **a}) for a in data.get("artifacts") or []]
        return manifest


def write_manifest(day: Path, manifest: Manifest) -> Path:
    """Write `<day>/manifest.json` (0600) atomically: a reader never sees half of it."""
    data = manifest.to_json()
    path = day / MANIFEST
    tmp = day / (MANIFEST + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        json.dump(data, handle, indent=2, sort_keys=False, default=str, ensure_ascii=False)
        handle.write("\n")
    os.replace(tmp, path)
    return path


def read_manifest(day: Path) -> Manifest:
    """The manifest of a staged (or restored) day directory."""
    return Manifest.from_json(json.loads((Path(day) / MANIFEST).read_text(encoding="utf-8")))
