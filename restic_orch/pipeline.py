"""One backup run: lock, preflight, pre-hooks, restic, offsite copy, retention, report."""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Any

from restic_orch.hooks import build_hooks
from restic_orch.hooks.base import DumpContext, Hook

from . import __version__, cpucap, notify, restic, runner, staging, userhooks
from .config import Config, redacted
from .lock import RunLock
from .report import RunSummary, load_repositories, new_run_id, remember_repositories, save_summary, write_metrics
from .repos import open_all

log = logging.getLogger("restic_orch.pipeline")

TAG = "restic-orch"


class Terminated(BaseException):  # noqa: N818 - a signal, not an error
    """SIGTERM or SIGINT arrived (host shutdown, Ctrl-C): stop children, record the run as failed.

    A BaseException, so that no pre-hook's `except Exception` can swallow it and carry on.
    """


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


def _install_signal_handlers() -> Callable[[], None]:
    def handler(signum: int, _frame: FrameType | None) -> None:
        runner.terminate_all()
        raise Terminated(f"stopped by {signal.Signals(signum).name}")

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGTERM, signal.SIGINT)}

    def restore() -> None:
        for sig, old in previous.items():
            signal.signal(sig, old)

    return restore


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
    for name, repo in repos.items():
        started = time.monotonic()
        # same name but another address (the configuration changed): probe it like a new one
        proven = name in known and known[name].get("url") == repo.url
        try:
            if interrupted:
                # the last run died: its restic may have left a lock; `unlock` removes only stale ones
                repo.unlock()
                log.warning("removed stale restic locks left by an interrupted run", extra={"repo": name})
            elif not proven and not repo.exists():
                if not config.auto_init:
                    raise restic.RepoNotFound("repository not initialised (run `restic-orch init` or set"
                                              " auto_init: true)", repo=name)
                source = repos.get("local") if name == "offsite" and "local" in usable else None
                repo.init(copy_chunker_from=source)
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


def _run_hooks(hooks: list[Hook], ctx: DumpContext, summary: RunSummary, manifest: dict[str, Any]) -> None:
    for hook in hooks:
        started = time.monotonic()
        try:
            outcome = hook.dump(ctx)
        except Terminated:
            raise
        except Exception as exc:  # a hook's bug must not lose the other sources
            log.exception("pre-hook crashed", extra={"kind": hook.kind, "source": hook.name})
            summary.phase(f"dump:{hook.kind}:{hook.name}", started, False, f"{type(exc).__name__}: {exc}")
            summary.fail(hook.kind, hook.name, f"{type(exc).__name__}: {exc}", component=f"{hook.kind}:*")
            manifest["failures"].append(summary.failures[-1])
            continue
        for artifact in outcome.artifacts:
            manifest["artifacts"].append(artifact)  # serialised once its background hash is known
            summary.components.append(artifact.component)
        for failure in outcome.failures:
            summary.fail(failure.kind, failure.source, failure.message, failure.component)
            manifest["failures"].append(summary.failures[-1])
        for notice in outcome.notices:
            item = {**notice.to_json(), "message": runner.mask(notice.message)}
            summary.notices.append(item)
            manifest["notices"].append(item)
        manifest["tools"].update(outcome.tools)
        summary.artifacts += len(outcome.artifacts)
        ok = not outcome.failures
        summary.phase(f"dump:{hook.kind}:{hook.name}", started, ok,
                      f"{len(outcome.artifacts)} artifacts, {len(outcome.failures)} failures")
        log.info("pre-hook done", extra={"kind": hook.kind, "source": hook.name,
                                         "artifacts": len(outcome.artifacts), "failures": len(outcome.failures)})
    _finish_hashing(ctx, summary, manifest)


def _finish_hashing(ctx: DumpContext, summary: RunSummary, manifest: dict[str, Any]) -> None:
    started = time.monotonic()
    failed = {id(item): why for item, why in ctx.finish_hashing()}
    kept = []
    for artifact in manifest["artifacts"]:
        if id(artifact) in failed:
            summary.fail(artifact.kind, artifact.source, failed[id(artifact)], artifact.component)
            manifest["failures"].append(summary.failures[-1])
            summary.components.remove(artifact.component)
            summary.artifacts -= 1
        else:
            kept.append(artifact.to_json())
    manifest["artifacts"] = kept
    summary.phase("hash:wait", started, not failed, f"{len(kept)} artifacts hashed, {len(failed)} unreadable")


def _retention_due(config: Config, name: str, every_days: int) -> bool:
    if every_days <= 0:
        return True
    try:
        last = float((config.state_dir / f"prune-{name}.stamp").read_text().strip())
    except (FileNotFoundError, ValueError):
        return True
    return time.time() - last >= every_days * 86400 - 3600


def apply_retention(config: Config, repos: dict[str, restic.Repo], summary: RunSummary,
                    dry_run: bool = False) -> None:
    for name, repo in repos.items():
        settings = getattr(config.repositories, name)
        if settings.retention is None:
            started = time.monotonic()
            if name == "offsite":
                # the append-only offsite (docs/security.md): this host's key cannot delete, a trusted machine
                # with the delete-capable key runs forget/prune
                why = ("left to the trusted host: retention is null here (append-only offsite), run"
                       " `restic-orch forget` there with the key that may delete")
            else:
                why = "no retention configured (retention: null, append-only repository)"
            summary.retention[name] = {"skipped": why}
            summary.phase(f"retention:{name}", started, True, why)
            continue
        started = time.monotonic()
        try:
            groups = repo.forget(settings.retention.restic_args(), host=config.host, tags=[TAG], dry_run=dry_run)
            removed = sum(len(g.remove) for g in groups)
            kept = sum(len(g.keep) for g in groups)
            pruned = False
            if not dry_run and removed and _retention_due(config, name, settings.prune_every_days):
                repo.prune()
                (config.state_dir / f"prune-{name}.stamp").write_text(str(time.time()))
                pruned = True
            summary.retention[name] = {"kept": kept, "removed": removed, "pruned": pruned}
            summary.phase(f"retention:{name}", started, True, f"kept {kept}, removed {removed}")
        except restic.ResticError as exc:
            summary.phase(f"retention:{name}", started, False, str(exc))
            summary.fail("retention", name, str(exc))


def _copy_offsite(config: Config, local: restic.Repo, offsite: restic.Repo, summary: RunSummary) -> bool:
    """Copy every snapshot of ours that offsite lacks (restic copy skips those already there).

    restic copy names each copy it saves, so the new offsite id comes from its output; only when that text
    says nothing about this run's snapshot does one `snapshots` listing decide.
    """
    started = time.monotonic()
    newest = summary.snapshots.get("local") or "-"
    try:
        results = offsite.copy_from(local, host=config.host, tags=[TAG])
        mine = [r for r in results if r.source.startswith(newest[:8]) or newest.startswith(r.source)]
        target = mine[0].target if mine else None
        if target is None:
            # restic gives the copy a new id; the run tag finds it
            found = offsite.snapshots(tags=[f"run:{summary.run_id}"], host=config.host)
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


def run_backup(config: Config, *, only: set[str] | None = None, when: datetime | None = None,
               log_file: Path | None = None, run_id: str | None = None) -> RunSummary:
    """The nightly job. Returns the summary; its exit_code is 0, 1 or 3."""
    now = when or datetime.now(UTC)
    summary = RunSummary("backup", run_id or new_run_id(), config.host, now.isoformat(timespec="seconds"),
                         log_file=str(log_file or ""))
    lock = RunLock(config.state_dir, f"backup {summary.run_id}")
    lock.acquire()
    marker = config.state_dir / "run-in-progress.json"
    interrupted = marker.exists()  # only our flock holder writes it: present now means a run was killed
    marker.write_text(json.dumps({"run_id": summary.run_id, "pid": os.getpid()}) + "\n")
    restore_signals = _install_signal_handlers()
    notify.started(config, summary)
    day: Path | None = None
    snapshot_saved = False
    cleaner: staging.Cleaner | None = None
    try:
        if interrupted:
            summary.notices.append({"kind": "run", "source": "previous",
                                    "message": "the previous run was interrupted; its leftovers were cleaned"})
        cap = cpucap.current()
        summary.extra["cpu_cap"] = cap.to_json()
        if cap.method == "unavailable":
            summary.notices.append({"kind": "run", "source": "cpu_cap",
                                    "message": f"limits.cpu_percent {cap.requested_percent} not enforced:"
                                               f" {cap.detail}; the run is not held to its CPU budget"})
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

        day = staging.day_dir(config.staging_dir, now.date())
        manifest: dict[str, Any] = {
            "format": 1, "run_id": summary.run_id, "host": config.host, "started": summary.started,
            "restic_orch": __version__, "restic": str(version), "day": now.date().isoformat(),
            "hostname": socket.gethostname(), "tools": {}, "artifacts": [], "failures": [], "notices": [],
            "config": redacted(config),
        }
        ctx = DumpContext(config=config, day_dir=day, run_id=summary.run_id, log=log, background_hashing=True)
        _run_hooks(build_hooks(config, only), ctx, summary, manifest)
        manifest["finished_dumps"] = datetime.now(UTC).isoformat(timespec="seconds")
        manifest["status"] = "partial" if manifest["failures"] else "complete"
        staging.write_manifest(day, manifest)
        summary.bytes_staged = staging.tree_bytes(day)
        if not manifest["artifacts"]:
            raise PreflightError("the pre-hooks produced nothing to back up: " +
                                 "; ".join(f["message"] for f in summary.failures[-5:]))

        kinds = sorted({a["kind"] for a in manifest["artifacts"]})
        # status, kinds and size as tags: `snapshots` lists them without reading every manifest
        tags = [TAG, f"run:{summary.run_id}", f"status:{manifest['status']}", f"bytes:{summary.bytes_staged}"]
        tags += [f"kind:{k}" for k in kinds]
        if only:
            tags.append("scope:only")  # `latest` passes over it unless it holds what a restore asks for
        first = "local" if "local" in repos else "offsite"
        order = [first] + ([] if first == "offsite" else (["offsite"] if "offsite" in repos else []))
        for name in order:
            if name == "offsite" and "local" in summary.snapshots:
                _copy_offsite(config, repos["local"], repos["offsite"], summary)
                continue
            started = time.monotonic()
            try:
                result = repos[name].backup([day], tags=tags, host=config.host, when=when)
                summary.snapshots[name] = result.snapshot_id
                summary.data_added[name] = result.data_added
                summary.extra.setdefault("restic_total_duration", {})[name] = result.total_duration
                snapshot_saved = True
                cleaner = cleaner or staging.Cleaner(day)
                summary.phase(f"backup:{name}", started, not result.partial,
                              f"snapshot {result.snapshot_id}, {result.data_added} bytes added, "
                              f"restic's own time {result.total_duration:.1f} s")
                if result.partial:
                    summary.fail("repository", name, "restic could not read some staged files: " +
                                 "; ".join(result.errors[:5]))
            except restic.ResticError as exc:
                summary.phase(f"backup:{name}", started, False, str(exc))
                summary.fail("repository", name, f"backup failed: {_explain_missing(config, exc)}")
                # when local failed, the offsite turn below backs up directly: the RPO holds without the disk
        if not snapshot_saved:
            summary.finish("failure")
        elif summary.failures:
            summary.finish("partial")
        elif only:
            # a partial selection must not push a day's full snapshot out of a keep-daily policy
            summary.retention = {name: {"skipped": "--only run"} for name in repos}
            summary.finish("success")
        else:
            apply_retention(config, repos, summary)
            summary.finish("partial" if summary.failures else "success")
    except Terminated as exc:
        summary.fail("run", "signal", str(exc))
        summary.finish("failure")
    except (PreflightError, staging.StagingError, restic.ResticError, runner.CommandError, OSError) as exc:
        summary.fail("run", "preflight", str(exc))
        summary.finish("partial" if snapshot_saved else "failure")
    finally:
        restore_signals()
        if cleaner is None and day is not None and (snapshot_saved or summary.status == "success"):
            cleaner = staging.Cleaner(day)
        if cleaner is not None:
            _staging_removed(cleaner, summary)
        _finalise(config, summary)
        marker.unlink(missing_ok=True)
        lock.release()
    return summary


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


def _finalise(config: Config, summary: RunSummary) -> None:
    try:
        if summary.snapshots:
            counts = {name: r["kept"] for name, r in summary.retention.items() if "kept" in r}
            urls = {name: repo.url for name, repo in config.repositories.items()}
            remember_repositories(config.state_dir, summary.snapshots, counts, urls)
        save_summary(config.state_dir, summary)
        if config.monitoring.textfile_dir:
            write_metrics(config.monitoring.textfile_dir, config.state_dir)
        notify.finished(config, summary)
        hook_dir = "post-backup.d" if summary.status == "success" else "on-failure.d"
        userhooks.run_parts(config, hook_dir, summary)
    except Exception:  # reporting must never hide the run's own result
        log.exception("could not write the run report")


class PreflightError(Exception):
    pass
