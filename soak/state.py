"""What the soak carries from night to night, and what each night leaves for the report."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

from restic_orch.restic import Snapshot

from .lab import Lab
from .plan import KINDS, Night
from .record import Record

REPOS = ("local", "offsite")


@dataclass
class Options:
    seed: int
    nights: int = 30
    every_days: int = 1
    kinds: tuple[str, ...] = KINDS
    quick: bool = False          # one restore a night, restic check and a sample of kinds at the end only
    lab_dir: Path | None = None
    keep_lab: bool = False
    keep_going: bool = False     # go on after a failed night (the nights after it may fail because of it)


@dataclass
class NightResult:
    number: int
    day: str
    fault: str = "-"
    landed: bool = False
    notes: list[str] = field(default_factory=list)
    exit: int | None = None
    status: str = ""
    held: dict[str, bool] = field(default_factory=dict)     # tonight's snapshot is in local / offsite
    stored: dict[str, int] = field(default_factory=dict)    # snapshots per repository afterwards
    verified: int = 0
    by_kind: dict[str, int] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    seconds: float = 0.0
    data_added: int = 0


@dataclass
class Soak:
    options: Options
    lab: Lab
    nights: list[Night]
    records: dict[int, Record] = field(default_factory=dict)
    components: dict[str, set[str]] = field(default_factory=dict)   # snapshot tree -> components it holds
    before: dict[str, dict[str, Snapshot]] = field(default_factory=lambda: {r: {} for r in REPOS})
    previous_killed: bool = False
    results: list[NightResult] = field(default_factory=list)
    final: dict[str, Any] = field(default_factory=dict)

    def night_of(self, day: date) -> int | None:
        for night in self.nights:
            if night.when.date() == day:
                return night.number
        return None

    def by_night(self, snaps: dict[str, Snapshot]) -> dict[int, list[Snapshot]]:
        found: dict[int, list[Snapshot]] = {}
        for snap in snaps.values():
            found.setdefault(self.night_of(snap.time.date()) or 0, []).append(snap)
        return found
