"""Human output: tables rendered with rich into plain strings (the CLI prints them)."""

from __future__ import annotations

import io
from typing import Any

from rich.console import Console
from rich.table import Table

from .report import RunSummary


def _render(table: Table) -> str:
    buffer = io.StringIO()
    Console(file=buffer, width=120, no_color=True, force_terminal=False).print(table)
    return buffer.getvalue().rstrip()


def human_bytes(value: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(value) < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TiB"


def backup_table(summary: RunSummary) -> str:
    table = Table(title=f"backup {summary.run_id}: {summary.status.upper()} (exit {summary.exit_code})")
    table.add_column("phase")
    table.add_column("result")
    table.add_column("seconds", justify="right")
    table.add_column("detail")
    for phase in summary.phases:
        table.add_row(phase.name, "ok" if phase.ok else "FAILED", f"{phase.seconds:.1f}", phase.detail)
    lines = [_render(table)]
    for name, snap in summary.snapshots.items():
        added = summary.data_added.get(name)
        lines.append(f"snapshot {name}: {snap}" + (f" ({human_bytes(added)} added)" if added is not None else ""))
    lines.append(f"staged: {human_bytes(summary.bytes_staged)} in {summary.artifacts} artifacts")
    lines += [f"FAILED {f['kind']} {f['source']} {f['component']}: {f['message']}" for f in summary.failures]
    lines += [f"warning {n['kind']} {n['source']}: {n['message']}" for n in summary.notices]
    if summary.log_file:
        lines.append(f"log: {summary.log_file}")
    return "\n".join(lines)


def snapshot_table(repo: str, snapshots: list[dict[str, Any]]) -> str:
    table = Table(title=f"restic-orch snapshots in {repo}")
    for column in ("day", "time", "id", "host", "status", "kinds"):
        table.add_column(column)
    for snap in snapshots:
        day, _, rest = snap["time"].partition("T")
        table.add_row(day, rest[:8], snap["id"], snap["host"], snap["status"], ",".join(snap["kinds"]))
    return _render(table) if snapshots else f"no restic-orch snapshot in {repo}"
