"""One backup run: a guard (lock, crash marker, signals, notifications, CPU cap) around named phases.

preflight -> stage -> store -> replicate -> publish -> retain -> report. Each phase records itself in the run's
summary under the names docs, tests and bench read: preflight, open:<repo>, dump:<kind>:<name>, hash:wait,
backup:<repo>, copy:offsite, publish:bootstrap, retention:<repo>. The pipeline runs whatever hooks are
registered and names no source kind itself.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Any

from restic_orch.hooks import build_hooks
from restic_orch.hooks.base import DumpContext, DumpOutcome, Hook

from . import __version__, cpucap, notify, progress, restic, runner, staging, userhooks
from .config import Config, redacted
from .init import chunker_source
from .lock import exclusive
from .masking import mask
from .report import (
    IN_PROGRESS_MARKER,
    RunSummary,
    load_repositories,
    new_run_id,
    remember_repositories,
    save_summary,
    write_metrics,
)
from .repos import open_all
from .retention import apply_retention as apply_retention  # its home moved; `forget` and tests import it here
from .staging import Manifest
from .tags import TAG, backup_tags, run_tag

log = logging.getLogger("restic_orch.pipeline")


class Terminated(BaseException):  # noqa: N818 - a signal, not an error
    """SIGTERM or SIGINT arrived (host shutdown, Ctrl-C): stop children, record the run as failed.

    A BaseException, so that no pre-hook's `except Exception` can swallow it and carry on.
    """


class PreflightError(Exception):
    """The run cannot go on: no room, no repository, or nothing staged to back up."""


@dataclass
class Plan:
    hooks: list[Hook]
    repositories: list[str]
    staging: Path

    def describe(self) -> list[str]:
        lines = [f"staging: {self.staging}/<YYYY-MM-DD>/<kind>/"]
        lines += [f"pre-hook {h.kind}: {h.name}" for h in self.hooks]
        lines += [f"repository: {r}" for r in self.repositories]
        return lines


def plan(config: Config, only: set[str] | None = None) -> Plan:
    repos = []
    for name, repo in config.repositories.items():
        policy = " ".join(repo.retention.restic_args()) if repo.retention else "none (append-only)"
        step = "restic backup" if name == "local" or config.repositories.local is None else "restic copy from local"
        retention = "skipped for an --only run" if only else f"forget {policy}"
        repos.append(f"{name} {repo.url}: {step}, then {retention}")
    return Plan(build_hooks(config, only), repos, config.staging_dir)


@dataclass
class Run:
    """What one backup run carries from phase to phase."""

    config: Config
    summary: RunSummary
    now: datetime
    only: set[str] | None = None      # kinds of an --only run; None: every configured source
    when: datetime | None = None      # the snapshot time restic records; None: restic's own clock
    interrupted: bool = False         # the previous run was killed: its leftovers are cleaned first
    day: Path | None = None           # the day's staging tree, once created
    snapshot_saved: bool = False
    cleaner: staging.Cleaner | None = None
    # repository sizes measured during the run ({name: bytes or None}): the last one is reused at the end
    measured: dict[str, int | None] = field(default_factory=dict)


# ---------------------------------------------------------------- the guard


def run_backup(config: Config, *, only: set[str] | None = None, when: datetime | None = None,
               log_file: Path | None = None, run_id: str | None = None) -> RunSummary:
    """The nightly job. Returns the summary; its exit_code is 0, 1 or 3.

    Raises lock.Busy, naming the holder, when another run holds the host's lock.
    """
    now = when or datetime.now(UTC)
    summary = RunSummary("backup", run_id or new_run_id(), config.host, now.isoformat(timespec="seconds"),
                         log_file=str(log_file or ""))
    with (exclusive(config, f"backup {summary.run_id}", cap_cpu=True),
          _in_progress(config, summary.run_id) as interrupted):
        run = Run(config, summary, now, only=only, when=when, interrupted=interrupted)
        try:
            with _stopped_by_signals():
                notify.started(config, summary)
                _run_phases(run)
        finally:
            _remove_staging(run)
            report(config, summary)
    return summary


def _run_phases(run: Run) -> None:
    """The phases in order; an error that ends the run early is recorded as its failure."""
    config, summary = run.config, run.summary
    try:
        _note_conditions(run)
        with progress.current().phase("preflight"):
            version, repos = preflight(config, summary, interrupted=run.interrupted)
        run.day = staging.day_dir(config.staging_dir, run.now.date())
        manifest = new_manifest(config, summary, version, run.now)
        stage(config, build_hooks(config, run.only), run.day, summary, manifest)
        if not manifest.artifacts:
            raise PreflightError("the pre-hooks produced nothing to back up: " +
                                 "; ".join(f["message"] for f in summary.failures[-5:]))
        # status, kinds and size as tags: `snapshots` lists them without reading every manifest
        tags = backup_tags(summary.run_id, manifest.status, summary.bytes_staged, manifest.kinds(),
                           scoped=bool(run.only))
        store(run, repos, run.day, tags)
        replicate(run, repos, run.day, tags)
        with progress.current().phase("publish"):
            publish(run)
        with progress.current().phase("retention"):
            retain(run, repos)
        record_sizes(run, repos)
        summary.finish(_outcome(run))
    except Terminated as exc:
        summary.fail("run", "signal", str(exc))
        # a snapshot already saved is kept: the run is partial, as the exit codes say (found by the soak)
        summary.finish("partial" if run.snapshot_saved else "failure")
    except (PreflightError, staging.StagingError, restic.ResticError, runner.CommandError, OSError) as exc:
        summary.fail("run", "preflight", str(exc))
        summary.finish("partial" if run.snapshot_saved else "failure")


def _outcome(run: Run) -> str:
    if not run.snapshot_saved:
        return "failure"
    return "partial" if run.summary.failures else "success"


@contextmanager
def _in_progress(config: Config, run_id: str) -> Iterator[bool]:
    """The crash marker, written under the lock; yields whether the previous run left it (it was killed)."""
    marker = config.state_dir / IN_PROGRESS_MARKER
    interrupted = marker.exists()  # only our flock holder writes it: present now means a run was killed
    marker.write_text(json.dumps({"run_id": run_id, "pid": os.getpid()}) + "\n")
    try:
        yield interrupted
    finally:
        marker.unlink(missing_ok=True)


@contextmanager
def _stopped_by_signals() -> Iterator[None]:
    """SIGTERM/SIGINT stop every child and raise Terminated in the run; the previous handlers come back after."""
    def handler(signum: int, _frame: FrameType | None) -> None:
        runner.terminate_all()
        raise Terminated(f"stopped by {signal.Signals(signum).name}")

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def _note_conditions(run: Run) -> None:
    """What the summary must say about how this run started: after a killed run, and under which CPU cap."""
    summary = run.summary
    if run.interrupted:
        summary.notices.append({"kind": "run", "source": "previous",
                                "message": "the previous run was interrupted; its leftovers were cleaned"})
    cap = cpucap.current()
    summary.extra["cpu_cap"] = cap.to_json()
    if cap.method == "unavailable":
        summary.notices.append({"kind": "run", "source": "cpu_cap",
                                "message": f"limits.cpu_percent {cap.requested_percent} not enforced:"
                                           f" {cap.detail}; the run is not held to its CPU budget"})


# ---------------------------------------------------------------- preflight


def preflight(config: Config, summary: RunSummary, *, interrupted: bool = False) -> tuple[str, dict[str, restic.Repo]]:
    """The user's pre-backup hooks, then: restic is there, staging is clean with room, repositories open.

    Returns restic's version and the repositories that can be used (created first with auto_init).
    """
    userhooks.run_parts(config, "pre-backup.d", summary)
    started = time.monotonic()
    version = restic.version()
    removed = staging.prepare(config.staging_dir)
    if removed:
        log.warning("removed stale staging left by an interrupted run", extra={"entries": removed})
    need, free = _estimate_need(config), staging.free_bytes(config.staging_dir)
    if free < need:
        raise PreflightError(f"not enough free space in {config.staging_dir}: {free // 2**20} MiB free,"
                             f" about {need // 2**20} MiB needed (limits.min_free_bytes or the last run)")
    repos = _ensure_repos(config, open_all(config), summary, interrupted)
    if not repos:
        raise PreflightError("no repository can be opened: " +
                             "; ".join(f["message"] for f in summary.failures))
    summary.phase("preflight", started, True, f"restic {version}")
    return str(version), repos


def _estimate_need(config: Config) -> int:
    """Bytes staging will need: the last run's staged size plus a fifth, at least limits.min_free_bytes."""
    try:
        last = json.loads((config.state_dir / "last-run.json").read_text(encoding="utf-8"))
        previous = int(last.get("bytes_staged") or 0)
    except (FileNotFoundError, ValueError):
        previous = 0
    return max(config.limits.min_free_bytes, int(previous * 1.2))


def _disappeared(name: str, known: dict[str, dict[str, Any]]) -> restic.RepoNotFound:
    return restic.RepoNotFound(f"repository has disappeared (it held snapshot {known[name].get('snapshot')});"
                               " refusing to create a new empty one: investigate, then run"
                               " `restic-orch init` to re-create it deliberately", repo=name)


def _explain_missing(config: Config, exc: restic.ResticError) -> str:
    """A repository we skipped probing (it held our snapshots) and that is now missing has disappeared."""
    known = load_repositories(config.state_dir)
    if isinstance(exc, restic.RepoNotFound) and exc.repo in known:
        return str(_disappeared(exc.repo, known))
    if "unable to open config file" in str(exc) and "Access Denied" in str(exc):
        # S3 answers a key limited to one bucket with Access Denied for any other bucket, existing or not
        return (f"{exc} | the S3 key may not read this location: the bucket does not exist, or the key's policy"
                " names another bucket or prefix (docs/s3-policies/offsite-host.json)")
    return str(exc)


def _ensure_repos(config: Config, repos: dict[str, restic.Repo], summary: RunSummary,
                  interrupted: bool = False) -> dict[str, restic.Repo]:
    """Open (and with auto_init create) each repository; return those usable.

    A repository that already holds a snapshot of ours is not probed (`restic cat config` costs a key
    derivation, ~0.7 s): the backup or copy itself then reports it missing, as disappeared.
    """
    usable: dict[str, restic.Repo] = {}
    known = load_repositories(config.state_dir)
    # same name but another address (the configuration changed): probe it like a new one
    proven_names = {name for name, repo in repos.items() if name in known and known[name].get("url") == repo.url}
    for name, repo in repos.items():
        started = time.monotonic()
        proven = name in proven_names
        try:
            if interrupted:
                # the last run died: its restic may have left a lock; `unlock` removes only stale ones
                repo.unlock()
                log.warning("removed stale restic locks left by an interrupted run", extra={"repo": name})
            elif not proven and not repo.exists():
                if not config.auto_init:
                    raise restic.RepoNotFound("repository not initialised (run `restic-orch init` or set"
                                              " auto_init: true)", repo=name)
                repo.init(copy_chunker_from=chunker_source(name, repos, set(usable) | proven_names))
                log.info("repository initialised", extra={"repo": name})
            usable[name] = repo
            summary.phase(f"open:{name}", started, True)
        except restic.RepoNotFound as exc:
            message = str(_disappeared(name, known)) if name in known else str(exc)
            summary.phase(f"open:{name}", started, False, message)
            summary.fail("repository", name, message)
        except restic.ResticError as exc:
            message = _explain_missing(config, exc)
            summary.phase(f"open:{name}", started, False, message)
            summary.fail("repository", name, message)
    return usable


# ---------------------------------------------------------------- stage


def new_manifest(config: Config, summary: RunSummary, restic_version: str, now: datetime) -> Manifest:
    """The manifest of this run before any hook ran: who, when, with which tools, and the redacted config."""
    return Manifest(run_id=summary.run_id, host=config.host, started=summary.started, restic_orch=__version__,
                    restic=restic_version, day=now.date().isoformat(), hostname=socket.gethostname(),
                    config=redacted(config))


def stage(config: Config, hooks: list[Hook], day: Path, summary: RunSummary, manifest: Manifest) -> None:
    """Run each pre-hook into the day's staging tree, then write its manifest.json.

    A hook that fails or crashes is recorded and the next one runs (one failed database never loses the
    containers' archives). Files are hashed in the background while the next hook dumps.
    """
    reporter = _DumpReporter()
    # hooks follow their tasks' progress (extra API reads) only for a live display
    shown = {"progress": reporter.report} if progress.current() is not progress.NULL else {}
    ctx = DumpContext(config=config, day_dir=day, run_id=summary.run_id, log=log, background_hashing=True, **shown)
    for hook in hooks:
        with progress.current().phase(f"dump:{hook.kind}:{hook.name}") as task:
            reporter.task = task
            _dump(hook, ctx, summary, manifest)
    with progress.current().phase("hash:wait"):
        _finish_hashing(ctx, summary, manifest)
    manifest.finish_dumps()
    staging.write_manifest(day, manifest)
    summary.bytes_staged = staging.tree_bytes(day)


@dataclass
class _DumpReporter:
    """Where a pre-hook's ctx.progress(label, fraction) lands: the display's line of the hook dumping now."""

    task: progress.Task = progress.NULL_TASK

    def report(self, label: str, fraction: float | None = None) -> None:
        self.task.step(label, fraction)


def _dump(hook: Hook, ctx: DumpContext, summary: RunSummary, manifest: Manifest) -> None:
    started = time.monotonic()
    phase = f"dump:{hook.kind}:{hook.name}"
    try:
        outcome = hook.dump(ctx)
    except Terminated:
        raise
    except Exception as exc:  # a hook's bug must not lose the other sources
        log.exception("pre-hook crashed", extra={"kind": hook.kind, "source": hook.name})
        summary.phase(phase, started, False, f"{type(exc).__name__}: {exc}")
        summary.fail(hook.kind, hook.name, f"{type(exc).__name__}: {exc}", component=f"{hook.kind}:*")
        manifest.failures.append(summary.failures[-1])
        return
    _record(outcome, summary, manifest)
    summary.phase(phase, started, not outcome.failures,
                  f"{len(outcome.artifacts)} artifacts, {len(outcome.failures)} failures")
    log.info("pre-hook done", extra={"kind": hook.kind, "source": hook.name,
                                     "artifacts": len(outcome.artifacts), "failures": len(outcome.failures)})


def _record(outcome: DumpOutcome, summary: RunSummary, manifest: Manifest) -> None:
    """One hook's artifacts, failures, notices and tool versions, into the summary and the manifest."""
    for artifact in outcome.artifacts:
        manifest.artifacts.append(artifact)  # its sha256 may still be computing in the background
        summary.components.append(artifact.component)
    for failure in outcome.failures:
        summary.fail(failure.kind, failure.source, failure.message, failure.component)
        manifest.failures.append(summary.failures[-1])
    for notice in outcome.notices:
        item = {**notice.to_json(), "message": mask(notice.message)}
        summary.notices.append(item)
        manifest.notices.append(item)
    manifest.tools.update(outcome.tools)
    summary.artifacts += len(outcome.artifacts)


def _finish_hashing(ctx: DumpContext, summary: RunSummary, manifest: Manifest) -> None:
    """Wait for the background hashes; a file that could not be read back is a failure, not an artifact."""
    started = time.monotonic()
    failed = {id(item): why for item, why in ctx.finish_hashing()}
    kept = []
    for artifact in manifest.artifacts:
        if id(artifact) in failed:
            summary.fail(artifact.kind, artifact.source, failed[id(artifact)], artifact.component)
            manifest.failures.append(summary.failures[-1])
            summary.components.remove(artifact.component)
            summary.artifacts -= 1
        else:
            kept.append(artifact)
    manifest.artifacts = kept
    summary.phase("hash:wait", started, not failed, f"{len(kept)} artifacts hashed, {len(failed)} unreadable")


# ---------------------------------------------------------------- store and replicate


def store(run: Run, repos: dict[str, restic.Repo], day: Path, tags: list[str]) -> None:
    """restic backup of the staged day into local, or straight into offsite when there is no local repository."""
    first = "local" if "local" in repos else "offsite"
    with progress.current().phase(f"backup:{first}") as task:
        _backup(run, first, repos[first], day, tags, task.on_status)


def replicate(run: Run, repos: dict[str, restic.Repo], day: Path, tags: list[str]) -> None:
    """Bring the run offsite as well: restic copy from local, or, when local saved nothing, a backup of the
    staged day straight to offsite, so the RPO holds without the local disk."""
    if "local" not in repos or "offsite" not in repos:
        return
    if "local" in run.summary.snapshots:
        with progress.current().phase("copy:offsite") as task:
            before = _measure(run, "offsite", repos["offsite"])
            _copy_offsite(run.config, repos["local"], repos["offsite"], run.summary, task.on_status)
            # an S3 that could not be listed before the copy is not waited for a second time
            after = _measure(run, "offsite", repos["offsite"]) if before is not None else None
        run.summary.bytes_added["offsite"] = after - before if before is not None and after is not None else None
    else:
        with progress.current().phase("backup:offsite") as task:
            _backup(run, "offsite", repos["offsite"], day, tags, task.on_status)


def _measure(run: Run, name: str, repo: restic.Repo) -> int | None:
    from .repo_size import stored_bytes

    started = time.monotonic()
    run.measured[name] = stored_bytes(repo)
    log.info("repository size measured", extra={"repo": name, "bytes": run.measured[name],
                                                "seconds": round(time.monotonic() - started, 3)})
    return run.measured[name]


def record_sizes(run: Run, repos: dict[str, restic.Repo]) -> None:
    """What each repository's storage holds at the end of the run, for the report's growth chart. A size measured
    after the copy is reused unless retention removed snapshots there since (one S3 listing less)."""
    for name, repo in repos.items():
        changed = bool(run.summary.retention.get(name, {}).get("removed"))
        if name in run.measured and not changed:
            run.summary.stored_bytes[name] = run.measured[name]
        else:
            run.summary.stored_bytes[name] = _measure(run, name, repo)


def _backup(run: Run, name: str, repo: restic.Repo, day: Path, tags: list[str],
            on_status: restic.Progress | None = None) -> None:
    summary = run.summary
    started = time.monotonic()
    try:
        result = repo.backup([day], tags=tags, host=run.config.host, when=run.when, progress=on_status)
    except restic.ResticError as exc:
        summary.phase(f"backup:{name}", started, False, str(exc))
        summary.fail("repository", name, f"backup failed: {_explain_missing(run.config, exc)}")
        return
    summary.snapshots[name] = result.snapshot_id
    summary.data_added[name] = result.data_added
    summary.extra.setdefault("restic_total_duration", {})[name] = result.total_duration
    run.snapshot_saved = True
    # nothing reads the staging once a snapshot holds it: remove it while the copy and retention run
    run.cleaner = run.cleaner or staging.Cleaner(day)
    summary.phase(f"backup:{name}", started, not result.partial,
                  f"snapshot {result.snapshot_id}, {result.data_added} bytes added, "
                  f"restic's own time {result.total_duration:.1f} s")
    if result.partial:
        summary.fail("repository", name, "restic could not read some staged files: " +
                     "; ".join(result.errors[:5]))


def _copy_offsite(config: Config, local: restic.Repo, offsite: restic.Repo, summary: RunSummary,
                  on_status: restic.Progress | None = None) -> bool:
    """Copy every snapshot of ours that offsite lacks (restic copy skips those already there).

    restic copy names each copy it saves, so the new offsite id comes from its output; only when that text
    says nothing about this run's snapshot does one `snapshots` listing decide.
    """
    started = time.monotonic()
    newest = summary.snapshots.get("local") or "-"
    try:
        results = offsite.copy_from(local, host=config.host, tags=[TAG], progress=on_status)
        mine = [r for r in results if r.source.startswith(newest[:8]) or newest.startswith(r.source)]
        target = mine[0].target if mine else None
        if target is None:
            # restic gives the copy a new id; the run tag finds it
            found = offsite.snapshots(tags=[run_tag(summary.run_id)], host=config.host)
            target = found[-1].short_id if found else None
        if target:
            summary.snapshots["offsite"] = target[:8]
        present = target is not None
        copied = sum(1 for r in results if not r.skipped)
        summary.phase("copy:offsite", started, present, f"{copied} copied, {len(results) - copied} already there")
        if not present:
            summary.fail("repository", "offsite", "the new snapshot is missing offsite after restic copy")
        return present
    except restic.ResticError as exc:
        summary.phase("copy:offsite", started, False, str(exc))
        summary.fail("repository", "offsite", f"offsite copy failed: {_explain_missing(config, exc)}")
        return False


# ---------------------------------------------------------------- publish


def publish(run: Run) -> None:
    """The bootstrap bundle beside the offsite repository (bundle.py), when `restic-orch bundle build` made one.

    Nothing is uploaded when the bucket already holds it. A failed upload is a warning of the run, never a
    failure of its data: the snapshots are safe, and the escrow sheet keeps naming the bundle published before.
    """
    from . import bundle

    bundle_dir = bundle.default_dir(run.config)
    if not (bundle_dir / bundle.SUMS).exists():
        log.info("no bootstrap bundle to publish (restic-orch bundle build makes one)", extra={"dir": str(bundle_dir)})
        return
    if not bundle.has_s3_target(run.config):
        # a host without an S3 offsite chose so: the bundle stays local, `bundle publish` says why if asked
        log.info("no S3 offsite repository: the bootstrap bundle is not published", extra={"dir": str(bundle_dir)})
        return
    started = time.monotonic()
    try:
        result = bundle.publish(run.config, bundle_dir)
    except Exception as exc:  # the backup's outcome must not depend on the bundle
        message = f"bootstrap bundle not published: {exc}"
        if not isinstance(exc, bundle.BundleError):
            log.exception("bootstrap bundle publish crashed")
        run.summary.phase("publish:bootstrap", started, False, message)
        run.summary.notices.append({"kind": "run", "source": "bootstrap", "message": mask(message)})
        return
    uploaded = f"{len(result.uploaded)} files uploaded" if result.uploaded else "already there"
    run.summary.phase("publish:bootstrap", started, True, f"{result.digest[:12]} at {result.url}: {uploaded}")


# ---------------------------------------------------------------- retain and report


def retain(run: Run, repos: dict[str, restic.Repo]) -> None:
    """Retention after a clean, full run only.

    A run that failed never triggers a forget that could leave fewer good snapshots than the policy promises,
    and an --only run must not push a day's full snapshot out of a keep-daily policy.
    """
    summary = run.summary
    if not run.snapshot_saved or summary.failures:
        return
    if run.only:
        summary.retention = {name: {"skipped": "--only run"} for name in repos}
        return
    apply_retention(run.config, repos, summary)


def _remove_staging(run: Run) -> None:
    """Wait for the staged day's removal (started when the first snapshot held it); keep it when none did."""
    cleaner = run.cleaner
    if cleaner is None and run.day is not None and (run.snapshot_saved or run.summary.status == "success"):
        cleaner = staging.Cleaner(run.day)
    if cleaner is not None:
        _staging_removed(cleaner, run.summary)


def _staging_removed(cleaner: staging.Cleaner, summary: RunSummary) -> None:
    waited = time.monotonic()
    error = cleaner.wait()
    waited = time.monotonic() - waited
    if error is None:
        log.info("staging removed", extra={"day": cleaner.day.name, "seconds": round(cleaner.seconds, 3),
                                           "waited": round(waited, 3)})
        return
    # the snapshot is safe; the next run's preflight removes the leftover day
    log.warning("could not remove the staged day", extra={"day": str(cleaner.day), "error": str(error)})
    summary.notices.append({"kind": "run", "source": "staging",
                            "message": f"could not remove {cleaner.day}: {error}; the next run removes it"})


def report(config: Config, summary: RunSummary) -> None:
    """What the run leaves behind: known repositories, the summary, metrics, notifications, the user's hooks."""
    try:
        if summary.snapshots:
            counts = {name: r["kept"] for name, r in summary.retention.items() if "kept" in r}
            urls = {name: repo.url for name, repo in config.repositories.items()}
            remember_repositories(config.state_dir, summary.snapshots, counts, urls)
        save_summary(config.state_dir, summary, keep=config.keep_runs)
        if config.monitoring.textfile_dir:
            write_metrics(config.monitoring.textfile_dir, config.state_dir)
        notify.finished(config, summary)
        hook_dir = "post-backup.d" if summary.status == "success" else "on-failure.d"
        userhooks.run_parts(config, hook_dir, summary)
    except Exception:  # reporting must never hide the run's own result
        log.exception("could not write the run report")
