"""The last days of runs, read back from state_dir/runs (the RunSummary files report.py writes), as the figures
`restic-orch report` draws: durations by phase, bytes added, exit codes, RPO age over time, drills' RTO."""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

log = logging.getLogger("restic_orch.history")

DEFAULT_RTO_SECONDS = 30 * 60


@dataclass
class RunRow:
    run_id: str
    command: str
    started: str
    status: str
    exit_code: int
    duration_seconds: float
    # phase name up to its first ':' (backup:local, backup:offsite -> backup), seconds summed
    phases: dict[str, float]
    data_added: dict[str, int]
    # repositories the run saved a snapshot in (a repository here but not in data_added: bytes not recorded)
    repositories: list[str]
    failures: list[str]
    # storage growth the run measured where restic reports none (offsite copy); None: measured, but unknown
    bytes_added: dict[str, int | None] = field(default_factory=dict)
    # what each repository's storage held after the run; None: could not be measured; absent: older summaries
    stored_bytes: dict[str, int | None] = field(default_factory=dict)

    def added(self, repo: str) -> int | None:
        """Bytes the run added to `repo`: restic's own figure for a backup, the measured growth for a copy."""
        if repo in self.data_added:
            return self.data_added[repo]
        return self.bytes_added.get(repo)


@dataclass
class RpoPoint:
    at: str
    run_id: str
    # None: no good backup known before this run
    age_seconds: float | None


@dataclass
class DrillPoint:
    run_id: str
    started: str
    passed: bool
    rto_seconds: float | None
    target_seconds: float


@dataclass
class History:
    days: int
    since: str
    until: str
    rto_target_seconds: float
    rpo_target_seconds: float | None
    runs: list[RunRow] = field(default_factory=list)
    rpo: list[RpoPoint] = field(default_factory=list)
    drills: list[DrillPoint] = field(default_factory=list)
    # {repo: [(time, bytes or None)]} at the end of each backup; None: a gap (not measured, or an older summary)
    growth: dict[str, list[tuple[str, int | None]]] = field(default_factory=dict)
    unreadable: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def parse_time(text: str) -> datetime | None:
    try:
        moment = datetime.fromisoformat(text)
    except (TypeError, ValueError):
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def run_start(data: dict[str, Any]) -> datetime | None:
    """When a run started: summaries made by runlog leave `started` empty, so then the run id's timestamp
    (new_run_id: %Y%m%dT%H%M%SZ-xxxx), else finished minus the duration."""
    started = parse_time(data.get("started") or "")
    if started:
        return started
    try:
        return datetime.strptime(str(data.get("run_id", ""))[:16], "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
    except ValueError:
        pass
    finished = parse_time(data.get("finished") or "")
    return finished - timedelta(seconds=float(data.get("duration_seconds") or 0)) if finished else None


def read_summaries(runs_dir: Path) -> tuple[list[dict[str, Any]], list[str]]:
    """Every summary with a known start time (normalised to ISO 8601 in `started`), oldest first; and the names
    of the files that could not be read."""
    found: list[tuple[datetime, dict[str, Any]]] = []
    unreadable: list[str] = []
    for path in sorted(runs_dir.glob("*.json")) if runs_dir.is_dir() else []:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            unreadable.append(path.name)
            continue
        started = run_start(data) if isinstance(data, dict) else None
        if started is None:
            unreadable.append(path.name)
            continue
        found.append((started, {**data, "started": started.isoformat(timespec="seconds")}))
    if unreadable:
        log.warning("unreadable run summaries skipped", extra={"names": unreadable})
    found.sort(key=lambda pair: pair[0])
    return [data for _, data in found], unreadable


def _row(data: dict[str, Any]) -> RunRow:
    phases: dict[str, float] = {}
    for phase in data.get("phases") or []:
        group = str(phase.get("name", "?")).split(":", 1)[0]
        phases[group] = round(phases.get(group, 0.0) + float(phase.get("seconds") or 0), 3)
    return RunRow(run_id=str(data.get("run_id", "")), command=str(data.get("command", "")),
                  started=str(data["started"]), status=str(data.get("status", "")),
                  exit_code=int(data.get("exit_code", 1)), duration_seconds=float(data.get("duration_seconds") or 0),
                  phases=phases, data_added={str(k): int(v) for k, v in (data.get("data_added") or {}).items()},
                  repositories=[str(k) for k in data.get("snapshots") or {}],
                  failures=[str(f.get("message", "")) for f in data.get("failures") or []],
                  bytes_added=_sizes(data.get("bytes_added")), stored_bytes=_sizes(_stored(data)))


def _sizes(value: Any) -> dict[str, int | None]:
    """{repo: bytes} from a summary, a value that is no whole number read as unknown (None)."""
    if not isinstance(value, dict):
        return {}
    return {str(k): (int(v) if isinstance(v, int) and not isinstance(v, bool) else None) for k, v in value.items()}


def _stored(data: dict[str, Any]) -> Any:
    # stored_bytes since the runs measure it; extra.repository_size was the name planned before
    return data.get("stored_bytes") or (data.get("extra") or {}).get("repository_size")


def is_good_backup(data: dict[str, Any]) -> bool:
    """A backup that saved a complete snapshot: a partial one is not what a restore should count on."""
    return data.get("command") == "backup" and data.get("status") == "success" and bool(data.get("snapshots"))


def _rpo_points(summaries: list[dict[str, Any]], since: datetime) -> list[RpoPoint]:
    """At the end of each run: age of the newest good snapshot, timed from the start of the run that saved it
    (restic stamps the snapshot later, so this errs on the old side)."""
    points: list[RpoPoint] = []
    newest: datetime | None = None
    for data in summaries:
        started = parse_time(data["started"])
        assert started is not None  # read_summaries keeps only these
        if is_good_backup(data):
            newest = started
        at = parse_time(data.get("finished", "")) or started
        if started >= since:
            age = (at - newest).total_seconds() if newest else None
            points.append(RpoPoint(at.isoformat(timespec="seconds"), str(data.get("run_id", "")), age))
    return points


def _drill(data: dict[str, Any], default_target: float) -> DrillPoint:
    report = (data.get("extra") or {}).get("report") or {}
    rto = report.get("rto") or {}
    return DrillPoint(run_id=str(data.get("run_id", "")), started=str(data["started"]),
                      passed=bool(report.get("passed")) and data.get("status") == "success",
                      rto_seconds=float(rto["seconds"]) if "seconds" in rto else None,
                      target_seconds=float(rto.get("target_seconds") or default_target))


def _growth(summaries: list[dict[str, Any]]) -> dict[str, list[tuple[str, int | None]]]:
    """Each repository's stored size at the end of each backup run; a run that did not measure it (an older
    summary, a failed measure, a run that ended early) is a None point: a gap in the line, not a drop to zero."""
    backups = [(str(data["started"]), _sizes(_stored(data))) for data in summaries if data.get("command") == "backup"]
    repos = list(dict.fromkeys(repo for _, sizes in backups for repo, size in sizes.items() if size is not None))
    growth: dict[str, list[tuple[str, int | None]]] = {repo: [] for repo in repos}
    for started, sizes in backups:
        for repo in repos:
            growth[repo].append((started, sizes.get(repo)))
    # leading and trailing gaps say nothing: the chart starts and ends with a measure
    for repo, points in growth.items():
        known = [i for i, (_, size) in enumerate(points) if size is not None]
        growth[repo] = points[known[0]:known[-1] + 1]
    return growth


def collect(state_dir: Path, days: int = 30, *, rto_target_seconds: float | None = None,
            rpo_target_seconds: float | None = None, now: datetime | None = None) -> History:
    """The figures of the runs started in the last `days` days (older runs only date the newest good backup)."""
    until = now or datetime.now(UTC)
    since = until - timedelta(days=days)
    summaries, unreadable = read_summaries(state_dir / "runs")
    recent = [s for s in summaries if parse_time(s["started"]) >= since]  # type: ignore[operator]
    target = rto_target_seconds or DEFAULT_RTO_SECONDS
    return History(days=days, since=since.isoformat(timespec="seconds"), until=until.isoformat(timespec="seconds"),
                   rto_target_seconds=target, rpo_target_seconds=rpo_target_seconds,
                   runs=[_row(s) for s in recent], rpo=_rpo_points(summaries, since),
                   drills=[_drill(s, target) for s in recent if s.get("command") == "drill"],
                   growth=_growth(recent), unreadable=unreadable)
