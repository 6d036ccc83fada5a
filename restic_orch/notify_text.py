"""What a notification says: which event it is, a title, and a body naming what failed, why, and where to look.

Plain text (every Apprise service shows it), masked: a failure's message may quote a command's output.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .config import Config
from .masking import mask
from .render import human_bytes
from .report import RunSummary

MAX_FAILURES = 10
MAX_NOTICES = 5
MAX_MESSAGE = 600  # characters of one failure's message: restic's output can run long, chat services cut at ~4 KB
# commands whose every result has its own event; any run that fails is also a `failure`
OWN_EVENT = {"drill": "drill", "check": "check"}


@dataclass
class Message:
    events: set[str]
    title: str
    body: str
    level: str  # Apprise's notify type: info, success, warning, failure


def _status(summary: RunSummary) -> str:
    return summary.status if summary.status in ("success", "partial") else "failure"


def events_for(summary: RunSummary) -> set[str]:
    """The events a finished run is sent under: its command's own (drill, check), else its status; a failure
    is a `failure` whatever the command."""
    status = _status(summary)
    own = OWN_EVENT.get(summary.command)
    if own is None:
        return {status}
    return {own} | ({status} if status != "success" else set())


def _verdict(summary: RunSummary) -> str:
    status = _status(summary)
    if summary.command == "drill":
        return "PASSED" if status == "success" else "FAILED"
    if summary.command == "check":
        return "ok" if status == "success" else "PROBLEMS FOUND"
    return {"success": "success", "partial": "PARTIAL"}.get(status, "FAILED")


def _short(text: str) -> str:
    # the end of a command's output says why it failed
    return text if len(text) <= MAX_MESSAGE else "..." + text[-MAX_MESSAGE:]


def _failures(summary: RunSummary) -> list[str]:
    lines = []
    if summary.failures:
        lines.append("What failed:")
        for f in summary.failures[:MAX_FAILURES]:
            where = " ".join(str(p) for p in (f.get("kind"), f.get("source")) if p)
            component = f.get("component")
            if component and component != f.get("source"):
                where += f" ({component})"
            lines.append(f"  - {where}: {_short(str(f.get('message', '')))}")
        if len(summary.failures) > MAX_FAILURES:
            lines.append(f"  ... and {len(summary.failures) - MAX_FAILURES} more (see the summary file)")
    if summary.notices:
        lines.append("Notices:")
        lines += [f"  - {n.get('source', '')}: {_short(str(n.get('message', '')))}"
                  for n in summary.notices[:MAX_NOTICES]]
    return lines


def _results(summary: RunSummary) -> list[str]:
    lines = []
    if summary.snapshots:
        lines.append("Snapshots: " + ", ".join(f"{repo} {snap}" for repo, snap in summary.snapshots.items()))
    # restic's own count first; a step it reports nothing for (a copy) may have its storage growth measured
    grown = {repo: n for repo, n in (getattr(summary, "bytes_added", None) or {}).items() if n is not None}
    added = {**grown, **summary.data_added}
    if added:
        lines.append("Added: " + ", ".join(f"{repo} {human_bytes(n)}" for repo, n in added.items()))
    if summary.bytes_staged or summary.artifacts:
        lines.append(f"Staged: {human_bytes(summary.bytes_staged)} in {summary.artifacts} artifacts")
    report = summary.extra.get("report") or {}
    if report:
        rto, rpo, snap = report.get("rto") or {}, report.get("rpo") or {}, report.get("snapshot") or {}
        snap_id = snap.get("id", "") if isinstance(snap, dict) else snap
        lines.append(f"Drill {report.get('scenario', '')} of snapshot {snap_id}:"
                     f" RTO {rto.get('seconds', '?')} s (target {rto.get('target_seconds', '?')} s),"
                     f" RPO {float(rpo.get('seconds') or 0) / 3600:.1f} h"
                     f" (target {float(rpo.get('target_seconds') or 0) / 3600:.0f} h)")
    if summary.extra.get("report_files"):
        lines.append("Report: " + ", ".join(summary.extra["report_files"]))
    return lines


def _look_closer(config: Config, summary: RunSummary) -> list[str]:
    lines = ["Look closer:", "  restic-orch status"]
    if summary.status != "success":
        for repo, snap in summary.snapshots.items():
            lines.append(f"  restic-orch show {snap} --repo {repo}   (what the snapshot holds and what failed)")
        if summary.command == "check":
            lines += [f"  restic-orch check --repo {f['source']}" for f in summary.failures if f.get("source")]
    if summary.log_file:
        lines.append(f"  log: {summary.log_file}")
    lines.append(f"  summary: {config.state_dir / 'runs' / f'{summary.run_id}-{summary.command}.json'}")
    return lines


def for_summary(config: Config, summary: RunSummary) -> Message:
    """The notification of a finished run (backup, restore, drill, check)."""
    verdict = _verdict(summary)
    title = f"restic-orch {summary.command} on {summary.host}: {verdict}"
    head = [f"{summary.command} on {summary.host}: {verdict} (status {summary.status}, exit {summary.exit_code}),"
            f" run {summary.run_id}",
            f"finished {summary.finished or '?'} after {summary.duration_seconds:.1f} s"]
    body = "\n".join([*head, *_failures(summary), *_results(summary), *_look_closer(config, summary)])
    level = {"success": "success", "partial": "warning"}.get(_status(summary), "failure")
    return Message(events_for(summary), mask(title), mask(body), level)


def _repo_line(name: str, repo: dict[str, Any]) -> str:
    rpo_hours = repo["rpo_seconds"] / 3600
    if repo["newest_complete"] is None:
        return f"  - {name}: no complete backup at all ({repo['snapshots']} snapshots), target {rpo_hours:.0f} h"
    return (f"  - {name}: newest complete backup {repo['newest_complete']} is {repo['age_seconds'] / 3600:.1f} h"
            f" old (taken {repo['newest_time']}), target {rpo_hours:.0f} h")


def for_rpo_breach(config: Config, breached: dict[str, dict[str, Any]], data: dict[str, Any]) -> Message:
    """The notification of `status` finding repositories whose newest good backup is older than the RPO target."""
    title = f"restic-orch on {config.host}: RPO BREACHED ({', '.join(breached)})"
    lines = [f"{config.host}: the newest complete backup is older than targets.rpo_hours"
             f" ({config.targets.rpo_hours} h), checked {data.get('checked_at', '?')}:"]
    lines += [_repo_line(name, repo) for name, repo in breached.items()]
    last = (data.get("last") or {}).get("backup")
    lines.append("Last backup: " + (f"{last['status']} at {last['finished']}, run {last['run_id']}"
                                    f" ({last['failures']} failures)" if last else "never"))
    lines += ["Look closer:", "  restic-orch status"]
    lines += [f"  restic-orch snapshots --repo {name}" for name in breached]
    if last and last.get("run_id"):
        lines.append(f"  log: {config.log_dir / (last['run_id'] + '.jsonl')}")
        lines.append(f"  summary: {config.state_dir / 'runs' / (last['run_id'] + '-backup.json')}")
    return Message({"rpo_breach"}, mask(title), mask("\n".join(lines)), "failure")
