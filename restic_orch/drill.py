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

from restic_orch.hooks import registry
from restic_orch.hooks.base import Hook, RestoreOptions, RestoreOutcome

from .browse import Located
from .config import Config
from .masking import mask
from .report import RunSummary, load_last
from .restore import Step, hooks_by_source, plan_steps
from .runlog import Run

log = logging.getLogger("restic_orch.drill")

# the sandbox sub-directory where a drill restores files (state, vault and host files, files out of archives)
SANDBOX_FILES = "restored"


@dataclass
class Sandbox:
    """Where each drill step restores: spare IDs, drill_ database names, a temporary directory."""

    config: Config
    root: Path
    day: str
    used_ids: set[int] = field(default_factory=set)
    assigned: dict[str, RestoreOptions] = field(default_factory=dict)
    # IDs in use at the source, asked once (e.g. every VMID of the cluster): never restore over them
    taken: Callable[[], set[int]] = field(default=set)
    _taken: set[int] | None = None

    def options_for(self, step: Step) -> RestoreOptions:
        if step.component in self.assigned:
            return self.assigned[step.component]
        options = RestoreOptions(drill=True, target_dir=self.root / SANDBOX_FILES, suffix=f"drill-{self.day}")
        if step.artifact is not None:
            registry.hook_class(step.kind).sandbox_options(step.artifact, options, self)
        self.assigned[step.component] = options
        return options

    def spare_id(self) -> int:
        if self._taken is None:
            self._taken = set(self.taken())
        low, high = self.config.drill.vmid_range
        for vmid in range(low, high + 1):
            if vmid not in self.used_ids and vmid not in self._taken:
                self.used_ids.add(vmid)
                return vmid
        raise RuntimeError(f"no free ID left in drill.vmid_range {low}-{high} (all in use at the source)")


@dataclass
class _Evidence:
    """What the drill met on the way: failed steps and what their clean-up did."""

    hooks: dict[tuple[str, str], Hook]
    problems: list[dict[str, str]] = field(default_factory=list)
    cleanup: list[dict[str, str]] = field(default_factory=list)

    def taken(self) -> set[int]:
        ids: set[int] = set()
        for hook in self.hooks.values():
            ids |= hook.taken_ids()
        return ids

    def after_step(self, step: Step, outcome: RestoreOutcome, options: RestoreOptions) -> None:
        if not outcome.ok:
            self.problems.append({"step": step.component, "error": mask(outcome.message),
                                  "action": "recorded as failed; the sandbox copy was removed"})
        hook = self.hooks.get((step.kind, step.artifact.source)) if step.artifact else None
        if hook is None or step.artifact is None:
            return
        try:
            done = hook.discard(step.artifact, outcome, options)
            self.cleanup.append({"step": step.component, "result": done})
        except Exception as exc:  # a failed clean-up is a problem to report, not a reason to stop
            message = f"{type(exc).__name__}: {mask(str(exc))}"
            self.problems.append({"step": step.component, "error": f"sandbox clean-up failed: {message}",
                                  "action": "left in place: remove it by hand"})


def _restore_into(config: Config, located: Located, scenario: str, summary: RunSummary, root: Path,
                  evidence: _Evidence, day: str) -> None:
    from .restore import execute

    available = {registry.prefix_of(a.component) for a in located.artifacts}
    selectors = [s for s in registry.scenarios()[scenario] if registry.prefix_of(s) in available]
    sandbox = Sandbox(config, root, day, taken=evidence.taken)
    base_options = RestoreOptions(drill=True, target_dir=root / SANDBOX_FILES)
    steps = plan_steps(located, selectors, base_options, config, skip_redeploy=True)
    for step in steps:
        # server-wide objects (roles, users): a drill proves the file is intact but never applies it
        step.verify_only = registry.is_server_wide(step.component)
    execute(config, located, steps, base_options, summary=summary, options_for=sandbox.options_for,
            after_step=evidence.after_step)


def run_drill(config: Config, located: Located, scenario: str, summary: RunSummary) -> dict[str, Any]:
    """Run the drill; returns the report data (also in summary.extra). Never touches production."""
    now = datetime.now(UTC)
    day = now.date().isoformat()
    root = Path(tempfile.mkdtemp(prefix=f"restic-orch-drill-{day}-"))
    (root / SANDBOX_FILES).mkdir()
    evidence = _Evidence(hooks_by_source(config))
    started = time.monotonic()
    try:
        _restore_into(config, located, scenario, summary, root, evidence, day)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    rto_seconds = time.monotonic() - started
    rpo_seconds = (now - located.snapshot.time.astimezone(UTC)).total_seconds()
    verdict = _verdict(config, summary, rto_seconds, rpo_seconds)
    return {
        "date": now.isoformat(timespec="seconds"), "host": socket.gethostname(), "config_host": config.host,
        "scenario": scenario, "repository": located.repo.name,
        "snapshot": {"id": located.snapshot.short_id, "time": located.snapshot.time.isoformat(),
                     "run_id": located.manifest.run_id, "status": located.manifest.status,
                     # a newer night's dump failed: the drill restored the newest good copy, and says so
                     **({"fallback": located.fallback.message} if located.fallback else {})},
        **verdict, "steps": summary.extra.get("steps", []), "problems": evidence.problems,
        "cleanup": evidence.cleanup, "run_id": summary.run_id, "_sandbox": str(root),
    }


def _verdict(config: Config, summary: RunSummary, rto_seconds: float, rpo_seconds: float) -> dict[str, Any]:
    """RTO and RPO against the targets, and whether the drill passed; the summary is finished here."""
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
    return {"passed": passed,
            "rto": {"seconds": round(rto_seconds, 1), "target_seconds": targets["rto_seconds"], "ok": rto_ok},
            "rpo": {"seconds": round(rpo_seconds), "target_seconds": targets["rpo_seconds"], "ok": rpo_ok}}


def default_repository(config: Config) -> str | None:
    """The repository a drill without --from restores from: the one the last drill did not use.

    The weekly drill then alternates local and offsite, so the path of the host-lost day (offsite) is timed
    too. None when only one repository is configured (the usual local-then-offsite fallback applies).
    """
    names = [name for name, _settings in config.repositories.items()]
    if len(names) < 2:
        return None
    last = load_last(config.state_dir, "drill") or {}
    used = (last.get("extra") or {}).get("repository")
    return next(name for name in names if name != used) if used in names else names[0]


def run_and_report(config: Config, located: Located, scenario: str, run: Run, report_dir: Path,
                   lab_note: bool) -> dict[str, Any]:
    """The drill, then its report; the run log is closed first so the report's excerpt of it is complete."""
    report = run_drill(config, located, scenario, run.summary)
    run.summary.extra["report"] = {k: report[k] for k in ("passed", "rto", "rpo", "scenario", "snapshot")}
    run.close_log()
    paths = write_report(report, report_dir, run.log_file, lab=lab_note,
                         lab_dir=config.state_dir.parent if lab_note else None)
    run.summary.extra["report_files"] = [str(p) for p in paths]
    return report


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
        return mask(text)

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
        *([f"| Not the latest | {snap['fallback']} |"] if snap.get("fallback") else []),
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
