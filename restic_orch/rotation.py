"""Which part of each repository's data the next `check` reads, and when each part was last read back OK.

State: <state_dir>/check-rotation.json, {repository: {"parts": N, "next": n, "started": iso, "read": {n: iso}}}.
A change of N starts that repository's rotation afresh: parts of another N cover other packs.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

STATE_FILE = "check-rotation.json"


def load(state_dir: Path) -> dict[str, dict[str, Any]]:
    try:
        data = json.loads((state_dir / STATE_FILE).read_text(encoding="utf-8"))
    except (FileNotFoundError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def save(state_dir: Path, state: dict[str, dict[str, Any]]) -> None:
    from .report import _write_private

    _write_private(state_dir / STATE_FILE, json.dumps(state, indent=2, sort_keys=True) + "\n")


def forget(state_dir: Path) -> None:
    """Rotation turned off: drop its state, so the metrics stop reporting an age nothing keeps fresh any more."""
    (state_dir / STATE_FILE).unlink(missing_ok=True)


def _entry(state: dict[str, dict[str, Any]], repo: str, parts: int, now: datetime) -> dict[str, Any]:
    entry = state.get(repo)
    if not isinstance(entry, dict) or entry.get("parts") != parts or not 1 <= int(entry.get("next", 0)) <= parts:
        entry = {"parts": parts, "next": 1, "started": now.isoformat(timespec="seconds"), "read": {}}
        state[repo] = entry
    return entry


def next_subset(state: dict[str, dict[str, Any]], repo: str, parts: int, now: datetime | None = None) -> str:
    """restic's --read-data-subset value for the repository's next part, e.g. "3/12"."""
    entry = _entry(state, repo, parts, now or datetime.now(UTC))
    return f"{entry['next']}/{parts}"


def record_read(state: dict[str, dict[str, Any]], repo: str, subset: str, now: datetime | None = None) -> None:
    """Part n of N read back OK: remember when, and make the next part (wrapping after N) the one to read."""
    now = now or datetime.now(UTC)
    n, parts = (int(x) for x in subset.split("/"))
    entry = _entry(state, repo, parts, now)
    entry["read"][str(n)] = now.isoformat(timespec="seconds")
    entry["next"] = n % parts + 1


def verified(entry: dict[str, Any], now: datetime | None = None) -> dict[str, Any]:
    """{"age_seconds", "parts", "parts_read", "complete"} for one repository's rotation.

    The age is that of the oldest part's last read; a part never read counts from the rotation's start, so a
    rotation that never gets round to every part still ages (and raises the alert) instead of staying unknown.
    """
    now = now or datetime.now(UTC)
    parts = int(entry.get("parts", 0))
    read = entry.get("read") or {}
    times = [read.get(str(n)) or entry.get("started") for n in range(1, parts + 1)]
    oldest = min(datetime.fromisoformat(t) for t in times if t) if any(times) else now
    return {"age_seconds": max(0, round((now - oldest).total_seconds())), "parts": parts,
            "parts_read": sum(1 for n in range(1, parts + 1) if str(n) in read),
            "complete": all(str(n) in read for n in range(1, parts + 1))}
