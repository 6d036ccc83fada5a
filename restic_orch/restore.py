"""Restore: plan the steps from the snapshot's manifest, then run them in the story's order.

1) containers, 2) redeploy (Terraform/Ansible commands), 3) data: databases, Terraform state, vault files.
Every step is verified against the manifest by its hook and timed (the measured RTO).
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from restic_orch.hooks import build_hooks, registry
from restic_orch.hooks.base import Artifact, Hook, RestoreOptions, RestoreOutcome, sha256_file

from . import browse, prefetch, progress, restic, runner, tags
from .browse import Located, SelectionError
from .config import Config
from .masking import mask
from .report import RunSummary, new_run_id

log = logging.getLogger("restic_orch.restore")

REDEPLOY = "redeploy"


@dataclass
class Step:
    component: str
    kind: str
    description: str
    destructive: bool
    artifact: Artifact | None = None
    inner_path: str | None = None      # a file inside a container archive (ct:102:/etc/nginx/nginx.conf)
    command: list[str] = field(default_factory=list)
    verify_only: bool = False          # fetch and check the sha256, change nothing (drill: roles, users)

    def to_json(self) -> dict[str, Any]:
        return {"component": self.component, "kind": self.kind, "description": self.description,
                "destructive": self.destructive}


def plan_steps(located: Located, only: list[str], options: RestoreOptions, config: Config,
               skip_redeploy: bool = False) -> list[Step]:
    """The steps for the selection; an unknown component is a SelectionError naming what exists."""
    artifacts = located.artifacts
    steps: list[Step] = []
    seen: set[str] = set()
    for text in only or registry.default_selectors():
        if only and not registry.kinds_of(registry.prefix_of(text)):
            raise SelectionError(f"unknown component {text!r} in snapshot {located.snapshot.short_id};"
                                 f" it holds: {_holding(artifacts)} (selectors start with"
                                 f" {', '.join(registry.prefixes())})")
        selector = registry.parse(text)
        matched = [a for a in artifacts if selector.matches(a.component)]
        if not matched and only:
            raise SelectionError(f"unknown component {selector.text!r} in snapshot {located.snapshot.short_id};"
                                 f" it holds: {_holding(artifacts)}")
        for artifact in matched:
            key = artifact.component + (f":{selector.inner}" if selector.inner else "")
            if key not in seen:
                seen.add(key)
                steps.append(_step(artifact, selector.inner, options, _fallback_note(located, selector.text)))
    if not skip_redeploy and not options.drill and any(
            registry.calls_for_redeploy(s.kind) and not s.inner_path for s in steps):
        steps += [Step(REDEPLOY, REDEPLOY, "run " + " ".join(command), True, command=list(command))
                  for command in config.restore.redeploy]
    steps.sort(key=lambda s: (registry.rank(s.kind), not registry.is_server_wide(s.component), s.component))
    return steps


def _holding(artifacts: list[Artifact]) -> str:
    return ", ".join(sorted(a.component for a in artifacts)[:40])


def _fallback_note(located: Located, selector: str) -> str:
    """What the plan line of a component says when `latest` moved past the night its dump failed."""
    fallback = located.fallback
    return f" ({fallback.message})" if fallback and selector in fallback.selectors else ""


def _step(artifact: Artifact, inner: str | None, options: RestoreOptions, note: str = "") -> Step:
    if inner:
        where = options.target_dir or Path(".")
        return Step(f"{artifact.component}:{inner}", artifact.kind,
                    f"extract {inner} from {artifact.path} into {where}{note}", False, artifact, inner)
    text, destructive = registry.hook_class(artifact.kind).describe_restore(artifact, options)
    return Step(artifact.component, artifact.kind, text + note, destructive and not options.drill, artifact)


def open_repository(repos: dict[str, restic.Repo], wanted: str | None) -> restic.Repo:
    """--from, else local, else offsite when local cannot be opened (the host-lost case)."""
    if wanted:
        if wanted not in repos:
            raise SelectionError(f"repository {wanted} is not configured")
        return repos[wanted]
    if "local" in repos:
        try:
            repos["local"].snapshots(tags=[tags.TAG])
            return repos["local"]
        except restic.ResticError as exc:
            if "offsite" not in repos:
                raise
            log.warning("local repository unusable, falling back to offsite", extra={"error": str(exc)})
    return repos["offsite"]


Confirm = Callable[[Step], bool]


class IntegrityError(Exception):
    """What restic returned does not match the manifest's sha256."""


def execute(config: Config, located: Located, steps: list[Step], options: RestoreOptions, *,
            confirm: Confirm | None = None, summary: RunSummary | None = None,
            options_for: Callable[[Step], RestoreOptions] | None = None,
            after_step: Callable[[Step, RestoreOutcome, RestoreOptions], None] | None = None) -> RunSummary:
    """Run the steps; a refused or failed step never stops the others. Exit 0 all ok, 3 some, 1 none."""
    summary = summary or RunSummary("restore", new_run_id(), config.host, time.strftime("%Y-%m-%dT%H:%M:%S%z"))
    summary.extra.update({"snapshot": located.snapshot.short_id, "repository": located.repo.name,
                          "snapshot_time": located.snapshot.time.isoformat(), "steps": []})
    if located.fallback is not None:
        summary.extra["fallback"] = located.fallback.message
    hooks = hooks_by_source(config)
    done = 0
    fetch_started = time.monotonic()
    with prefetch.prefetched(located, _prefetchable(steps, hooks, confirm),
                             prefetch.scratch_parent(config.staging_dir)) as ready:
        _note_prefetch(summary, ready, fetch_started)
        for step in steps:
            started = time.monotonic()
            if step.destructive and confirm is not None and not _confirmed(confirm, step):
                summary.phase(step.component, started, False, "skipped: not confirmed")
                summary.fail(step.kind, step.component, "skipped: not confirmed", step.component)
                _record(summary, step, "skipped", "not confirmed", {}, started)
                continue
            step_options = options
            try:
                step_options = options_for(step) if options_for else options
                with progress.current().phase(step.component):
                    outcome = _run_step(config, located, step, step_options, hooks, ready)
            except Exception as exc:  # one broken step must not stop the rest of a disaster recovery
                log.exception("restore step failed", extra={"component": step.component})
                outcome = RestoreOutcome(step.component, False, f"{type(exc).__name__}: {mask(str(exc))}")
            if after_step is not None:
                after_step(step, outcome, step_options)
            summary.phase(step.component, started, outcome.ok, outcome.message)
            _record(summary, step, "ok" if outcome.ok else "failed", outcome.message, outcome.checks, started,
                    outcome.restored_to)
            if outcome.ok:
                done += 1
                summary.components.append(step.component)
            else:
                summary.fail(step.kind, step.component, outcome.message, step.component)
    if not steps:
        summary.fail("restore", "plan", "nothing to restore: the selection matched no artifact")
    summary.finish("success" if steps and done == len(steps) else ("partial" if done else "failure"))
    return summary


def _confirmed(confirm: Confirm, step: Step) -> bool:
    """Ask, with the live display off: a question and a redrawn bar on one terminal would garble both."""
    with progress.current().paused():
        return confirm(step)


def _prefetchable(steps: list[Step], hooks: dict[tuple[str, str], Hook], confirm: Confirm | None) -> list[Artifact]:
    """The artifacts to fetch before the steps: not a file inside an archive (that streams), not a step to be
    confirmed first (a refusal must not have cost its download), not one no configured source can restore."""
    wanted = []
    for step in steps:
        artifact = step.artifact
        if artifact is None or step.inner_path or (step.destructive and confirm is not None):
            continue
        if step.verify_only or (artifact.kind, artifact.source) in hooks:
            wanted.append(artifact)
    return wanted


def _note_prefetch(summary: RunSummary, ready: dict[str, Path], started: float) -> None:
    if ready:
        summary.phase("fetch", started, True, f"{len(ready)} artifacts fetched at once")
        summary.extra["prefetch"] = {"artifacts": len(ready), "seconds": round(time.monotonic() - started, 3)}


def hooks_by_source(config: Config) -> dict[tuple[str, str], Hook]:
    return {(h.kind, h.name): h for h in build_hooks(config)}


def _record(summary: RunSummary, step: Step, result: str, message: str, checks: dict[str, Any],
            started: float, restored_to: str = "") -> None:
    summary.extra["steps"].append({**step.to_json(), "result": result, "message": mask(message),
                                   "checks": checks, "restored_to": restored_to,
                                   "seconds": round(time.monotonic() - started, 3)})


def _run_step(config: Config, located: Located, step: Step, options: RestoreOptions,
              hooks: dict[tuple[str, str], Hook], ready: dict[str, Path]) -> RestoreOutcome:
    if step.kind == REDEPLOY:
        result = runner.run(step.command, timeout=config.restore.redeploy_timeout_seconds, check=False)
        for line in (result.stdout + result.stderr).splitlines()[-50:]:
            log.info("redeploy output", extra={"line": line})
        return RestoreOutcome("redeploy", result.returncode == 0, f"exit {result.returncode}")
    artifact = step.artifact
    assert artifact is not None

    def fetch(dest: Path) -> Path:
        fetched = ready.pop(artifact.path, None)  # taken once: a second fetch of it dumps again
        if fetched is not None:
            prefetch.move_into(fetched, dest)
        else:
            located.repo.dump_to_file(located.snapshot.id, located.path_of(artifact), dest, timeout=3600)
        digest = sha256_file(dest)
        if digest != artifact.sha256:
            raise IntegrityError(f"{artifact.path}: sha256 {digest[:16]}… differs from the manifest's"
                                 f" {artifact.sha256[:16]}…: the snapshot's copy is damaged or was tampered with")
        return dest

    if step.verify_only:
        scratch = Path(tempfile.mkdtemp(prefix="restic-orch-verify-", dir=options.target_dir))
        try:
            fetch(scratch / "artifact")
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        return RestoreOutcome(step.component, True, "fetched and verified, not applied",
                              checks={"sha256": True})
    if step.inner_path:
        target = options.target_dir or Path.cwd()
        written = browse.extract_from_archive(located, artifact, step.inner_path, target)
        return RestoreOutcome(step.component, True, f"extracted to {written}", restored_to=str(written))
    hook = hooks.get((artifact.kind, artifact.source))
    if hook is None:
        return RestoreOutcome(step.component, False, f"no {artifact.kind} source named {artifact.source!r} in the"
                              " configuration: add it (or pass --set) to restore this component")
    return hook.restore(artifact, fetch, options)
