"""Human output: tables rendered with rich into plain strings (the CLI prints them)."""

from __future__ import annotations

import io
from typing import Any

from rich.console import Console
from rich.table import Table

from restic_orch.hooks import registry

from .report import RunSummary
from .units import human_bytes


def _render(table: Table) -> str:
    buffer = io.StringIO()
    Console(file=buffer, width=120, no_color=True, force_terminal=False).print(table)
    return buffer.getvalue().rstrip()


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
    for column in ("day", "time", "id", "host", "status", "size", "kinds"):
        table.add_column(column)
    for snap in snapshots:
        day, _, rest = snap["time"].partition("T")
        size = human_bytes(snap["bytes"]) if snap.get("bytes") else "?"
        table.add_row(day, rest[:8], snap["id"], snap["host"], snap["status"], size, ",".join(snap["kinds"]))
    return _render(table) if snapshots else f"no restic-orch snapshot in {repo}"


def restore_table(summary: RunSummary) -> str:
    steps = summary.extra.get("steps", [])
    table = Table(title=f"restore {summary.run_id} of snapshot {summary.extra.get('snapshot')} from "
                        f"{summary.extra.get('repository')}: {summary.status.upper()} (exit {summary.exit_code})")
    for column in ("component", "result", "seconds", "checks", "message"):
        table.add_column(column)
    for step in steps:
        checks = ", ".join(f"{k}={v}" for k, v in (step.get("checks") or {}).items() if not isinstance(v, dict))
        table.add_row(step["component"], step["result"], f"{step['seconds']:.1f}", checks[:60], step["message"][:80])
    lines = [_render(table), f"measured restore time (RTO): {summary.duration_seconds:.1f} s"]
    lines += [f"FAILED {f['component'] or f['source']}: {f['message']}" for f in summary.failures]
    return "\n".join(lines)


def _details(kind: str, meta: dict[str, Any]) -> list[str]:
    try:
        return registry.hook_class(kind).details(meta)
    except KeyError:  # a kind this version does not know (a newer restic-orch made the snapshot)
        return []


def manifest_text(located: Any) -> str:
    manifest = located.manifest
    snap = located.snapshot
    lines = [f"snapshot {snap.short_id} ({snap.time:%Y-%m-%d %H:%M:%S}) in {located.repo.name}",
             f"run {manifest.run_id} on {manifest.host}: {manifest.status}",
             f"restic {manifest.restic}, restic-orch {manifest.restic_orch}"]
    table = Table()
    for column in ("component", "kind", "size", "sha256", "details"):
        table.add_column(column)
    for art in (a.to_json() for a in manifest.artifacts):
        details = _details(art["kind"], art.get("meta") or {})
        table.add_row(art["component"], art["kind"], human_bytes(art["size"]), art["sha256"][:12], " ".join(details))
    lines.append(_render(table))
    failures = manifest.failures
    lines += [f"FAILED {f.get('component') or f.get('source')}: {f.get('message')}" for f in failures]
    lines += [f"warning {n.get('source')}: {n.get('message')}" for n in manifest.notices]
    return "\n".join(lines)
