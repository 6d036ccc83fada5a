"""The tags a backup puts on its restic snapshots, written and read back here only.

They let `snapshots`, `latest` and `status` judge a snapshot without reading its manifest. Repositories
already hold them: the strings never change.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .restic import Snapshot

TAG = "restic-orch"          # every snapshot of ours: forget, copy and listings select on it
SCOPE_ONLY = "scope:only"    # an --only run: `latest` passes over it unless it holds what a restore asks for
_RUN, _STATUS, _BYTES, _KIND = "run", "status", "bytes", "kind"


def run_tag(run_id: str) -> str:
    """The tag that finds the snapshot(s) of one run, e.g. its copy in the offsite repository."""
    return f"{_RUN}:{run_id}"


def backup_tags(run_id: str, status: str, size: int, kinds: Iterable[str], scoped: bool = False) -> list[str]:
    """Tags of one backup: ours, its run, the manifest's status, bytes staged, each kind it holds, its scope."""
    tags = [TAG, run_tag(run_id), f"{_STATUS}:{status}", f"{_BYTES}:{size}"]
    tags += [f"{_KIND}:{kind}" for kind in kinds]
    if scoped:
        tags.append(SCOPE_ONLY)
    return tags


def _values(snapshot: Snapshot, name: str) -> list[str]:
    prefix = name + ":"
    return [tag[len(prefix):] for tag in snapshot.tags if tag.startswith(prefix)]


def run_id(snapshot: Snapshot) -> str:
    """The id of the run that made the snapshot ("" for a snapshot without the tag)."""
    found = _values(snapshot, _RUN)
    return found[0] if found else ""


def kinds(snapshot: Snapshot) -> list[str]:
    """The source kinds a snapshot holds, in tag order."""
    return _values(snapshot, _KIND)


def status(snapshot: Snapshot) -> str:
    """complete or partial as its manifest said; "" for a snapshot without the tag."""
    found = _values(snapshot, _STATUS)
    return found[0] if found else ""


def size(snapshot: Snapshot) -> int:
    """Bytes the run staged (0 when unknown)."""
    found = _values(snapshot, _BYTES)
    try:
        return int(found[0]) if found else 0
    except ValueError:
        return 0


def scoped(snapshot: Snapshot) -> bool:
    """True for the snapshot of an --only run (a part of the sources)."""
    return SCOPE_ONLY in snapshot.tags
