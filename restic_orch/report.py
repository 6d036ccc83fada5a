"""Run summaries (JSON in state_dir), Prometheus textfile metrics, and failure notifications."""

from __future__ import annotations

import json
import logging
import os
import secrets
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from .masking import mask

log = logging.getLogger("restic_orch.report")
progress = logging.getLogger("restic_orch.progress")  # shown on a terminal even without -v

EXIT_OK, EXIT_FAILURE, EXIT_USAGE, EXIT_PARTIAL = 0, 1, 2, 3
STATUS_EXIT = {"success": EXIT_OK, "failure": EXIT_FAILURE, "partial": EXIT_PARTIAL}


def new_run_id(now: datetime | None = None) -> str:
    now = now or datetime.now(UTC)
    return now.strftime("%Y%m%dT%H%M%SZ") + "-" + secrets.token_hex(2)


@dataclass
class Phase:
    name: str
    seconds: float
    ok: bool
    detail: str = ""


@dataclass
class RunSummary:
    command: str
    run_id: str
    host: str
    started: str
    status: str = "failure"
    finished: str = ""
    duration_seconds: float = 0.0
    exit_code: int = EXIT_FAILURE
    snapshots: dict[str, str] = field(default_factory=dict)
    data_added: dict[str, int] = field(default_factory=dict)
    # what each repository's storage holds after the run (sum of its objects' sizes); None: could not be measured
    stored_bytes: dict[str, int | None] = field(default_factory=dict)
    # storage growth measured around a step that restic reports no bytes for (offsite: after copy minus before)
    bytes_added: dict[str, int | None] = field(default_factory=dict)
    bytes_staged: int = 0
    artifacts: int = 0
    components: list[str] = field(default_factory=list)
    failures: list[dict[str, Any]] = field(default_factory=list)
    notices: list[dict[str, Any]] = field(default_factory=list)
    phases: list[Phase] = field(default_factory=list)
    retention: dict[str, Any] = field(default_factory=dict)
    log_file: str = ""
    extra: dict[str, Any] = field(default_factory=dict)
    # systemd's id of this service run: the OnFailure= reporter skips a failure this run reported itself
    invocation_id: str = field(default_factory=lambda: os.environ.get("INVOCATION_ID", ""))
    _t0: float = field(default_factory=time.monotonic, repr=False)

    def phase(self, name: str, started: float, ok: bool, detail: str = "") -> None:
        self.phases.append(Phase(name, round(time.monotonic() - started, 3), ok, mask(detail)))
        progress.info(f"{name}: {'ok' if ok else 'FAILED'} in {self.phases[-1].seconds:.1f} s"
                      + (f" ({mask(detail)})" if detail else ""))

    def fail(self, kind: str, source: str, message: str, component: str = "") -> None:
        self.failures.append({"kind": kind, "source": source, "component": component,
                              "message": mask(message)})

    def finish(self, status: str) -> None:
        self.status = status
        self.exit_code = STATUS_EXIT[status]
        self.finished = datetime.now(UTC).isoformat(timespec="seconds")
        self.duration_seconds = round(time.monotonic() - self._t0, 3)

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("_t0", None)
        return data


def _write_private(path: Path, text: str, mode: int = 0o640) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o750)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text)
    os.replace(tmp, path)


KEEP_RUNS = 400


# written by a backup under its lock, removed when it ends: present with a live pid = a backup is running now
IN_PROGRESS_MARKER = "run-in-progress.json"


def backup_in_progress(state_dir: Path, started_within_seconds: float) -> bool:
    """Whether a backup is running now and started less than `started_within_seconds` ago (a run killed with
    SIGKILL leaves the marker: its pid is gone; a run hung for longer than that no longer counts)."""
    marker = state_dir / IN_PROGRESS_MARKER
    try:
        pid = int(json.loads(marker.read_text()).get("pid", 0))
        started = marker.stat().st_mtime
    except (OSError, ValueError, AttributeError):
        return False
    return pid > 0 and Path(f"/proc/{pid}").exists() and time.time() - started < started_within_seconds


def save_summary(state_dir: Path, summary: RunSummary, keep: int = KEEP_RUNS) -> Path:
    """runs/<run_id>.json for history, last-<command>.json (last-run.json for backups) for monitoring; then
    runs/ pruned to the newest `keep` summaries."""
    text = mask(json.dumps(summary.to_json(), indent=2, default=str, ensure_ascii=False)) + "\n"
    path = state_dir / "runs" / f"{summary.run_id}-{summary.command}.json"
    _write_private(path, text)
    latest = "last-run.json" if summary.command == "backup" else f"last-{summary.command}.json"
    _write_private(state_dir / latest, text)
    prune_runs(state_dir / "runs", keep)
    return path


def prune_runs(runs_dir: Path, keep: int) -> list[Path]:
    """Remove all but the newest `keep` run summaries; returns those removed.

    Newest by name: a run id starts with its UTC start time, so names sort in time order whatever the mtimes.
    """
    summaries = sorted(p for p in runs_dir.glob("*.json") if p.is_file())
    removed = summaries[:max(0, len(summaries) - keep)]
    for old in removed:
        old.unlink(missing_ok=True)
    return removed


def load_last(state_dir: Path, command: str = "backup") -> dict[str, Any] | None:
    name = "last-run.json" if command == "backup" else f"last-{command}.json"
    try:
        return json.loads((state_dir / name).read_text(encoding="utf-8"))
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def _gauge(lines: list[str], name: str, help_text: str, samples: list[tuple[str, float]]) -> None:
    lines += [f"# HELP {name} {help_text}", f"# TYPE {name} gauge"]
    lines += [f"{name}{labels} {value}" for labels, value in samples]


def write_metrics(textfile_dir: Path, state_dir: Path) -> Path:
    """node_exporter textfile collector format, rebuilt from the state files after every command.

    Built from state (not from the run that just ended) so a failed run never hides the age of the last good one.
    """
    now = time.time()
    status_code = {"success": 0, "failure": 1, "partial": 2}
    lines: list[str] = []
    runs = {cmd: load_last(state_dir, cmd) for cmd in ("backup", "drill", "check")}
    for cmd, run in runs.items():
        if not run:
            continue
        label = f'{{command="{cmd}"}}'
        finished = run.get("finished") or ""
        try:
            ts = datetime.fromisoformat(finished).timestamp()
        except ValueError:
            ts = 0
        _gauge(lines, "restic_orch_last_run_status", "0 success, 1 failure, 2 partial",
               [(label, status_code.get(run.get("status", "failure"), 1))])
        _gauge(lines, "restic_orch_last_run_timestamp_seconds", "end of the last run", [(label, int(ts))])
        _gauge(lines, "restic_orch_last_run_duration_seconds", "wall time of the last run",
               [(label, run.get("duration_seconds", 0))])
    backup = runs.get("backup") or {}
    _gauge(lines, "restic_orch_bytes_staged", "bytes written to staging by the last backup's pre-hooks",
           [("", backup.get("bytes_staged", 0))])
    _gauge(lines, "restic_orch_data_added_bytes", "bytes restic added to the repository in the last backup",
           [(f'{{repo="{r}"}}', v) for r, v in (backup.get("data_added") or {}).items()])
    _gauge(lines, "restic_orch_failures", "sources or steps that failed in the last backup",
           [("", len(backup.get("failures") or []))])
    known = load_repositories(state_dir)
    _gauge(lines, "restic_orch_last_success_timestamp_seconds", "time of the newest snapshot a run saved",
           [(f'{{repo="{r}"}}', int(v.get("time", 0))) for r, v in known.items()])
    _gauge(lines, "restic_orch_rpo_age_seconds", "age of the newest snapshot a run saved",
           [(f'{{repo="{r}"}}', int(now - v.get("time", 0))) for r, v in known.items()])
    _gauge(lines, "restic_orch_snapshots", "restic-orch snapshots in the repository after the last run",
           [(f'{{repo="{r}"}}', v["count"]) for r, v in known.items() if "count" in v])
    drill = runs.get("drill") or {}
    if drill:
        report = (drill.get("extra") or {}).get("report") or {}
        _gauge(lines, "restic_orch_last_drill_passed", "1 when the last restore drill passed",
               [("", 1 if report.get("passed") else 0)])
        if report.get("rto"):
            _gauge(lines, "restic_orch_last_drill_rto_seconds", "measured RTO of the last drill",
                   [("", report["rto"]["seconds"])])
    _gauge(lines, "restic_orch_data_verified_age_seconds",
           "age of the oldest read-back of the repository's data by the check rotation (a part never read counts"
           " from the rotation's first run)",
           [(f'{{repo="{r}"}}', v["age_seconds"]) for r, v in _verified_ages(state_dir).items()])
    path = Path(textfile_dir) / "restic_orch.prom"
    _write_private(path, "\n".join(lines) + "\n", mode=0o644)
    return path


def _verified_ages(state_dir: Path) -> dict[str, dict[str, Any]]:
    from . import rotation

    return {name: rotation.verified(entry) for name, entry in rotation.load(state_dir).items()
            if isinstance(entry, dict)}


def load_repositories(state_dir: Path) -> dict[str, dict[str, Any]]:
    """What we know of each repository: the newest snapshot a run saved there and when."""
    try:
        data = json.loads((state_dir / "repositories.json").read_text(encoding="utf-8"))
    except (FileNotFoundError, ValueError):
        return {}
    # the first format kept only the snapshot id
    return {k: (v if isinstance(v, dict) else {"snapshot": v, "time": 0}) for k, v in data.items()}


def remember_repositories(state_dir: Path, snapshots: dict[str, str], counts: dict[str, int],
                          urls: dict[str, str] | None = None) -> None:
    """Record where each repository is and its newest snapshot: a known repository is not probed next run."""
    known = load_repositories(state_dir)
    for name, snap in snapshots.items():
        known[name] = {"snapshot": snap, "time": time.time(), **({"count": counts[name]} if name in counts else {}),
                       **({"url": urls[name]} if urls and name in urls else {})}
    _write_private(state_dir / "repositories.json", json.dumps(known, indent=2) + "\n")
