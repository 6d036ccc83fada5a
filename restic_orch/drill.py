"""Restore drill: restore a snapshot into a sandbox that touches nothing in production, verify it against the
manifest, measure RTO and RPO against the targets, clean up, and write a dated Markdown and JSON report."""

from __future__ import annotations

import json
import logging
import shutil
import socket
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from restic_orch.hooks.base import RestoreOptions, RestoreOutcome

from . import runner
from .browse import Located
from .config import Config
from .report import RunSummary
from .restore import Step, hooks_by_source, plan_steps

log = logging.getLogger("restic_orch.drill")

SCENARIOS = {
    "full": ["ct:all", "db:all", "tfstate", "vault"],
    "container": ["ct:all"],
    "database": ["db:all"],
    "tfstate": ["tfstate"],
}


@dataclass
class Sandbox:
    """Where each drill step restores: spare VMIDs, drill_ database names, a temporary directory."""

    config: Config
    root: Path
    day: str
    used_vmids: set[int] = field(default_factory=set)
    assigned: dict[str, RestoreOptions] = field(default_factory=dict)
    # IDs in use at the source, asked once (e.g. every VMID of the cluster): never restore over them
    taken: Callable[[], set[int]] = field(default=set)
    _taken: set[int] | None = None

    def options_for(self, step: Step) -> RestoreOptions:
        if step.component in self.assigned:
            return self.assigned[step.component]
        options = RestoreOptions(drill=True, target_dir=self.root / "files", suffix=f"drill-{self.day}")
        if step.kind == "proxmox":
            options.as_vmid = self._spare_vmid()
            if options.as_vmid is None:
                low, high = self.config.drill.vmid_range
                raise RuntimeError(f"no free VMID left in drill.vmid_range {low}-{high} (all in use in the cluster)")
        elif step.kind in ("postgres", "mysql") and step.artifact is not None:
            database = step.artifact.meta.get("database", step.component.rsplit("/", 1)[-1])
            if not database.startswith("@"):
                options.target_db = f"drill_{database}_{self.day.replace('-', '')}"[:63]
        self.assigned[step.component] = options
        return options

    def _spare_vmid(self) -> int | None:
        if self._taken is None:
            self._taken = set(self.taken())
        low, high = self.config.drill.vmid_range
        for vmid in range(low, high + 1):
            if vmid not in self.used_vmids and vmid not in self._taken:
                self.used_vmids.add(vmid)
                return vmid
        return None


def run_drill(config: Config, located: Located, scenario: str, summary: RunSummary) -> dict[str, Any]:
    """Run the drill; returns the report data (also in summary.extra). Never touches production."""
    from .restore import execute

    now = datetime.now(UTC)
    day = now.date().isoformat()
    root = Path(tempfile.mkdtemp(prefix=f"restic-orch-drill-{day}-"))
    (root / "files").mkdir()
    problems: list[dict[str, str]] = []
    cleanup: list[dict[str, str]] = []
    hooks = hooks_by_source(config)

    def taken() -> set[int]:
        ids: set[int] = set()
        for hook in hooks.values():
            ids |= hook.taken_ids()
        return ids

    sandbox = Sandbox(config, root, day, taken=taken)

    def after_step(step: Step, outcome: RestoreOutcome, options: RestoreOptions) -> None:
        if not outcome.ok:
            problems.append({"step": step.component, "error": runner.mask(outcome.message),
                             "action": "recorded as failed; the sandbox copy was removed"})
        hook = hooks.get((step.kind, step.artifact.source)) if step.artifact else None
        if hook is None or step.artifact is None:
            return
        try:
            done = hook.discard(step.artifact, outcome, options)
            cleanup.append({"step": step.component, "result": done})
        except Exception as exc:  # a failed clean-up is a problem to report, not a reason to stop
            message = f"{type(exc).__name__}: {runner.mask(str(exc))}"
            problems.append({"step": step.component, "error": f"sandbox clean-up failed: {message}",
                             "action": "left in place: remove it by hand"})

    selectors = SCENARIOS[scenario]
    available = {a.component.split(":", 1)[0] for a in located.artifacts}
    selectors = [s for s in selectors if s.split(":", 1)[0] in available]
    base_options = RestoreOptions(drill=True, target_dir=root / "files")
    started = time.monotonic()
    try:
        steps = plan_steps(located, selectors, base_options, config, skip_redeploy=True)
        for step in steps:
            # roles and users live server-wide: a drill proves the file is intact but never applies it
            step.verify_only = "@" in step.component
        execute(config, located, steps, base_options, summary=summary, options_for=sandbox.options_for,
                after_step=after_step)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    rto_seconds = time.monotonic() - started
    rpo_seconds = (now - located.snapshot.time.astimezone(UTC)).total_seconds()
    targets = {"rto_seconds": config.targets.rto_minutes * 60, "rpo_seconds": config.targets.rpo_hours * 3600}
    rto_ok = rto_seconds <= targets["rto_seconds"]
    rpo_ok = rpo_seconds <= targets["rpo_seconds"]
    if not rto_ok:
        summary.fail("drill", "rto", f"restore took {rto_seconds:.0f} s, target {targets['rto_seconds']} s")
    if not rpo_ok:
        summary.fail("drill", "rpo", f"snapshot is {rpo_seconds / 3600:.1f} h old, target {config.targets.rpo_hours} h")
    checks_ok = all(s["result"] == "ok" for s in summary.extra.get("steps", [])) and bool(summary.extra.get("steps"))
    passed = checks_ok and rto_ok and rpo_ok
    summary.finish("success" if passed else "failure")
    return {
        "date": now.isoformat(timespec="seconds"), "host": socket.gethostname(), "config_host": config.host,
        "scenario": scenario, "repository": located.repo.name,
        "snapshot": {"id": located.snapshot.short_id, "time": located.snapshot.time.isoformat(),
                     "run_id": located.manifest.get("run_id"), "status": located.manifest.get("status")},
        "passed": passed, "rto": {"seconds": round(rto_seconds, 1), "target_seconds": targets["rto_seconds"],
                                  "ok": rto_ok},
        "rpo": {"seconds": round(rpo_seconds), "target_seconds": targets["rpo_seconds"], "ok": rpo_ok},
        "steps": summary.extra.get("steps", []), "problems": problems, "cleanup": cleanup,
        "run_id": summary.run_id, "_sandbox": str(root),
    }


def write_report(report: dict[str, Any], report_dir: Path, log_file: Path | None, lab: bool = False,
                 lab_dir: Path | None = None) -> list[Path]:
    """docs-style dated Markdown plus the same data as JSON; returns both paths.

    The drill's temporary sandbox is written `<sandbox>`, and on the lab its directory `<lab>`: a report
    committed as evidence names no path of the machine that made it.
    """
    report_dir.mkdir(parents=True, exist_ok=True)
    stamp = report["date"].replace(":", "").replace("+0000", "Z")[:17]
    base = report_dir / f"drill-{stamp}-{report['scenario']}"
    scrub: dict[str, str] = {}
    if report.get("_sandbox"):
        scrub[str(report["_sandbox"])] = "<sandbox>"
    if lab and lab_dir:
        scrub[str(lab_dir)] = "<lab>"
    report = {k: v for k, v in report.items() if k != "_sandbox"} | {"log_excerpt": _log_excerpt(log_file)}

    def clean(text: str) -> str:
        for path, name in scrub.items():
            text = text.replace(path, name)
        return runner.mask(text)

    json_path = base.with_suffix(".json")
    json_path.write_text(clean(json.dumps(report, indent=2, default=str, ensure_ascii=False)) + "\n")
    md_path = base.with_suffix(".md")
    md_path.write_text(clean(render_markdown(report, lab)))
    return [md_path, json_path]


def _log_excerpt(log_file: Path | None, lines: int = 40) -> list[str]:
    if not log_file or not Path(log_file).exists():
        return []
    out = []
    for raw in Path(log_file).read_text(encoding="utf-8").splitlines()[-lines:]:
        try:
            item = json.loads(raw)
            extras = {k: v for k, v in item.items() if k not in ("ts", "level", "logger", "msg")}
            out.append(f"{item['ts']} {item['level']} {item['msg']} {json.dumps(extras, default=str)}")
        except (ValueError, KeyError):
            out.append(raw)
    return out


def render_markdown(report: dict[str, Any], lab: bool = False) -> str:
    verdict = "PASSED" if report["passed"] else "FAILED"
    snap = report["snapshot"]
    lines = [
        f"# Restore drill {report['date'][:10]} — {report['scenario']} — {verdict}",
        "",
        "Generated by `restic-orch drill`; the JSON beside this file holds the same data.",
    ]
    if lab:
        lines += ["", "> Ran on the **simulated homelab** (`restic-orch lab up`): fake Proxmox VE API, moto S3,"
                  " throwaway PostgreSQL and MariaDB servers, real restic."]
    lines += [
        "",
        "| | |", "|---|---|",
        f"| Date | {report['date']} |",
        f"| Host | {report['host']} (configured host `{report['config_host']}`) |",
        f"| Scenario | {report['scenario']} |",
        f"| Repository | {report['repository']} |",
        f"| Snapshot | `{snap['id']}` taken {snap['time']} (run {snap['run_id']}, {snap['status']}) |",
        f"| Measured RTO | {report['rto']['seconds']} s (target {report['rto']['target_seconds']} s):"
        f" {'met' if report['rto']['ok'] else 'MISSED'} |",
        f"| RPO at drill time | {report['rpo']['seconds'] / 3600:.1f} h (target"
        f" {report['rpo']['target_seconds'] / 3600:.0f} h): {'met' if report['rpo']['ok'] else 'MISSED'} |",
        "",
        "## Steps",
        "",
        "| component | result | seconds | checks | restored to |",
        "|---|---|---|---|---|",
    ]
    for step in report["steps"]:
        checks = ", ".join(f"{k}={v}" for k, v in (step.get("checks") or {}).items() if not isinstance(v, dict))
        lines.append(f"| `{step['component']}` | {step['result']} | {step['seconds']} | {checks} |"
                     f" {step.get('restored_to') or ''} |")
    lines += ["", "## Problems met and what was done", ""]
    if report["problems"]:
        lines += [f"- `{p['step']}`: {p['error']} — {p['action']}" for p in report["problems"]]
    else:
        lines.append("None.")
    lines += ["", "## Sandbox clean-up", ""]
    lines += [f"- `{c['step']}`: {c['result']}" for c in report["cleanup"]] or ["Nothing to clean up."]
    lines += ["", "## Log excerpt", "", "```"] + report.get("log_excerpt", []) + ["```", ""]
    return "\n".join(lines)
