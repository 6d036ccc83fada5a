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

from . import runner

log = logging.getLogger("restic_orch.report")

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
    bytes_staged: int = 0
    artifacts: int = 0
    components: list[str] = field(default_factory=list)
    failures: list[dict[str, Any]] = field(default_factory=list)
    notices: list[dict[str, Any]] = field(default_factory=list)
    phases: list[Phase] = field(default_factory=list)
    retention: dict[str, Any] = field(default_factory=dict)
    log_file: str = ""
    extra: dict[str, Any] = field(default_factory=dict)
    _t0: float = field(default_factory=time.monotonic, repr=False)

    def phase(self, name: str, started: float, ok: bool, detail: str = "") -> None:
        self.phases.append(Phase(name, round(time.monotonic() - started, 3), ok, runner.mask(detail)))

    def fail(self, kind: str, source: str, message: str, component: str = "") -> None:
        self.failures.append({"kind": kind, "source": source, "component": component,
                              "message": runner.mask(message)})

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


def save_summary(state_dir: Path, summary: RunSummary) -> Path:
    """runs/<run_id>.json for history, last-<command>.json (last-run.json for backups) for monitoring."""
    text = runner.mask(json.dumps(summary.to_json(), indent=2, default=str, ensure_ascii=False)) + "\n"
    path = state_dir / "runs" / f"{summary.run_id}-{summary.command}.json"
    _write_private(path, text)
    latest = "last-run.json" if summary.command == "backup" else f"last-{summary.command}.json"
    _write_private(state_dir / latest, text)
    return path


def load_last(state_dir: Path, command: str = "backup") -> dict[str, Any] | None:
    name = "last-run.json" if command == "backup" else f"last-{command}.json"
    try:
        return json.loads((state_dir / name).read_text(encoding="utf-8"))
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def write_metrics(textfile_dir: Path, summary: RunSummary, snapshot_counts: dict[str, int]) -> Path:
    """node_exporter textfile collector format; written atomically so a scrape never sees half a file."""
    status_code = {"success": 0, "partial": 2, "failure": 1}[summary.status]
    now = int(time.time())
    lines = [
        "# HELP restic_orch_last_run_status 0 success, 1 failure, 2 partial",
        "# TYPE restic_orch_last_run_status gauge",
        f'restic_orch_last_run_status{{command="{summary.command}"}} {status_code}',
        "# HELP restic_orch_last_run_timestamp_seconds end of the last run",
        "# TYPE restic_orch_last_run_timestamp_seconds gauge",
        f'restic_orch_last_run_timestamp_seconds{{command="{summary.command}"}} {now}',
        "# HELP restic_orch_last_run_duration_seconds wall time of the last run",
        "# TYPE restic_orch_last_run_duration_seconds gauge",
        f'restic_orch_last_run_duration_seconds{{command="{summary.command}"}} {summary.duration_seconds}',
        "# HELP restic_orch_bytes_staged bytes written to staging by the pre-hooks",
        "# TYPE restic_orch_bytes_staged gauge",
        f"restic_orch_bytes_staged {summary.bytes_staged}",
    ]
    lines += ["# HELP restic_orch_data_added_bytes bytes restic added to the repository",
              "# TYPE restic_orch_data_added_bytes gauge"]
    lines += [f'restic_orch_data_added_bytes{{repo="{r}"}} {v}' for r, v in summary.data_added.items()]
    lines += ["# HELP restic_orch_last_success_timestamp_seconds newest snapshot saved by a run",
              "# TYPE restic_orch_last_success_timestamp_seconds gauge"]
    lines += [f'restic_orch_last_success_timestamp_seconds{{repo="{r}"}} {now}' for r in summary.snapshots]
    lines += ["# HELP restic_orch_snapshots number of restic-orch snapshots in the repository",
              "# TYPE restic_orch_snapshots gauge"]
    lines += [f'restic_orch_snapshots{{repo="{r}"}} {n}' for r, n in snapshot_counts.items()]
    lines += ["# HELP restic_orch_failures sources that failed in the last run",
              "# TYPE restic_orch_failures gauge", f"restic_orch_failures {len(summary.failures)}"]
    path = Path(textfile_dir) / "restic_orch.prom"
    _write_private(path, "\n".join(lines) + "\n", mode=0o644)
    return path
