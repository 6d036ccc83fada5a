"""Thin command line: parse, call the library, print. Human output by default, --json for machines."""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NoReturn

import click
from pydantic import ValidationError

from . import __version__, logs, restic, runner
from .browse import SelectionError
from .config import Config, ConfigError, default_config_path, load_config, redacted
from .lock import Busy
from .report import EXIT_FAILURE, EXIT_OK, EXIT_USAGE

log = logging.getLogger("restic_orch.cli")


class Ctx:
    def __init__(self, config_path: Path | None, as_json: bool, verbosity: int) -> None:
        self.config_path = config_path
        self.as_json = as_json
        self.verbosity = verbosity
        self._config: Config | None = None

    @property
    def path(self) -> Path:
        return self.config_path or default_config_path()

    def config(self) -> Config:
        if self._config is None:
            try:
                self._config = load_config(self.path)
            except ConfigError as exc:
                for problem in exc.problems:
                    click.echo(str(problem), err=True)
                raise SystemExit(EXIT_USAGE) from None
            limits = self._config.limits
            # every heavy child (dumps, restic) runs at the configured CPU and I/O priority
            runner.set_priority(runner.Priority(limits.nice, limits.ionice_class, limits.ionice_level))
        return self._config

    def cap_cpu(self) -> None:
        """Heavy commands (backup, check, drill) run inside the CPU budget; light ones need not."""
        from . import cpucap

        cpucap.apply(self.config().limits.cpu_percent)

    def emit(self, data: Any, human: str) -> None:
        if self.as_json:
            click.echo(json.dumps(data, indent=2, default=str, ensure_ascii=False))
        elif human:
            click.echo(human)


def _record(config: Config, summary: Any) -> None:
    """Summary file, metrics and notifications for commands other than backup (which does its own)."""
    from . import notify
    from .report import save_summary, write_metrics

    save_summary(config.state_dir, summary)
    if config.monitoring.textfile_dir:
        write_metrics(config.monitoring.textfile_dir, config.state_dir)
    notify.finished(config, summary)


@contextmanager
def _locked_run(config: Config, what: str) -> Iterator[tuple[str, Path, logging.Handler]]:
    """Hold the host's run lock and a run log for one command; exit 1 naming the holder when busy."""
    from .lock import RunLock
    from .report import new_run_id

    lock = RunLock(config.state_dir, what)
    try:
        lock.acquire()
    except Busy as exc:
        fail(str(exc))
    run_id = new_run_id()
    run_log, handler = logs.open_run_log(config.log_dir, run_id)
    try:
        yield run_id, run_log, handler
    finally:
        logs.close_run_log(handler)
        lock.release()


def fail(message: str, code: int = EXIT_FAILURE) -> NoReturn:
    click.echo(f"error: {message}", err=True)
    raise SystemExit(code)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--config", "config_path", type=click.Path(path_type=Path), default=None,
              help="Configuration file (default: $RESTIC_ORCH_CONFIG or /etc/restic-orch/config.yml).")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option("-v", "--verbose", count=True, help="More output (-vv for debug).")
@click.option("-q", "--quiet", is_flag=True, help="Errors only.")
@click.version_option(__version__, prog_name="restic-orch")
@click.pass_context
def main(ctx: click.Context, config_path: Path | None, as_json: bool, verbose: int, quiet: bool) -> None:
    """Backup and disaster recovery for a Proxmox VE homelab, on restic."""
    verbosity = -1 if quiet else verbose
    logs.setup_console(verbosity)
    ctx.obj = Ctx(config_path, as_json, verbosity)


# ---------------------------------------------------------------- config
@main.group("config")
def config_group() -> None:
    """Check or print the configuration."""


@config_group.command("validate")
@click.pass_obj
def config_validate(obj: Ctx) -> None:
    """Exit 0 when the configuration is valid; else list every problem as FILE:LINE: field: message."""
    try:
        load_config(obj.path)
    except ConfigError as exc:
        obj.emit({"valid": False, "problems": [vars(p) | {"file": str(p.file)} for p in exc.problems]},
                 "")
        if not obj.as_json:
            for problem in exc.problems:
                click.echo(str(problem), err=True)
        raise SystemExit(EXIT_USAGE) from None
    obj.emit({"valid": True, "file": str(obj.path)}, f"{obj.path}: valid")


@config_group.command("show")
@click.pass_obj
def config_show(obj: Ctx) -> None:
    """Print the resolved configuration (secrets appear only as the paths of their files)."""
    import yaml

    data = redacted(obj.config())
    obj.emit(data, yaml.safe_dump(data, sort_keys=False, allow_unicode=True).rstrip())


# ---------------------------------------------------------------- repositories
@main.command("init")
@click.pass_obj
def init_cmd(obj: Ctx) -> None:
    """Create the repositories that do not exist yet (offsite with the local chunker parameters)."""
    from .repos import open_all

    config = obj.config()
    repos = open_all(config)
    result: dict[str, str] = {}
    try:
        for name, repo in repos.items():
            if repo.exists():
                result[name] = "exists"
                continue
            # either repository can give its chunker parameters to the other, so copies deduplicate
            other = repos.get("offsite" if name == "local" else "local")
            source = other if other is not None and result.get(other.name) == "exists" else None
            if source is None and other is not None and name == "local" and other.exists():
                source = other
            repo.init(copy_chunker_from=source)
            result[name] = "created" + (f" (chunker parameters of {source.name})" if source else "")
    except restic.ResticError as exc:
        fail(str(exc))
    obj.emit({"repositories": result}, "\n".join(f"{k}: {v}" for k, v in result.items()))


@main.command("backup")
@click.option("--only", default=None, help="Comma-separated kinds: proxmox,postgres,mysql,terraform,ansible-vault.")
@click.option("--dry-run", is_flag=True, help="Print the plan and touch nothing.")
@click.pass_obj
def backup_cmd(obj: Ctx, only: str | None, dry_run: bool) -> None:
    """Run the pre-hooks, store the staging area in restic, copy offsite, apply retention."""
    from restic_orch.hooks import known_kinds

    from . import pipeline
    from .report import new_run_id

    config = obj.config()
    kinds = None
    if only:
        kinds = {k.strip() for k in only.split(",") if k.strip()}
        unknown = kinds - set(known_kinds())
        if unknown:
            fail(f"--only: unknown kind(s) {', '.join(sorted(unknown))}; known: {', '.join(known_kinds())}",
                 EXIT_USAGE)
    if dry_run:
        the_plan = pipeline.plan(config, kinds)
        obj.emit({"dry_run": True, "plan": the_plan.describe()}, "\n".join(the_plan.describe()))
        return
    obj.cap_cpu()
    run_id = new_run_id()
    run_log, handler = logs.open_run_log(config.log_dir, run_id)
    try:
        summary = pipeline.run_backup(config, only=kinds, log_file=run_log, run_id=run_id)
    except Busy as exc:
        fail(str(exc))
    finally:
        logs.close_run_log(handler)
    from .render import backup_table

    obj.emit(summary.to_json(), "" if obj.verbosity < 0 else backup_table(summary))
    raise SystemExit(summary.exit_code)


def _repo_for(obj: Ctx, repo_name: str | None) -> tuple[Config, restic.Repo]:
    from .repos import open_all
    from .restore import open_repository

    config = obj.config()
    try:
        return config, open_repository(open_all(config), repo_name)
    except (restic.ResticError, SelectionError) as exc:
        fail(str(exc), EXIT_USAGE if isinstance(exc, SelectionError) else EXIT_FAILURE)


def browse_options(func: Any) -> Any:
    """--repo local|offsite from the configuration, or --repo-url with its secrets when there is none."""
    func = click.option("--s3-env-file", type=click.Path(path_type=Path), default=None,
                        help="With --repo-url: the S3 keys (AWS_ACCESS_KEY_ID=...).")(func)
    func = click.option("--password-file", type=click.Path(path_type=Path), default=None,
                        help="With --repo-url: the repository password file.")(func)
    func = click.option("--repo-url", default=None, help="A repository address, when no configuration survives.")(func)
    return click.option("--repo", "repo_name", type=click.Choice(["local", "offsite"]), default=None)(func)


def _browse_repo(obj: Ctx, repo_name: str | None, url: str | None, password_file: Path | None,
                 env_file: Path | None) -> restic.Repo:
    from .repos import ad_hoc

    if url:
        if password_file is None:
            fail("--repo-url needs --password-file (and --s3-env-file for S3)", EXIT_USAGE)
        return ad_hoc(url, password_file, env_file)
    return _repo_for(obj, repo_name)[1]


@main.command("snapshots")
@browse_options
@click.pass_obj
def snapshots_cmd(obj: Ctx, repo_name: str | None, repo_url: str | None, password_file: Path | None,
                  s3_env_file: Path | None) -> None:
    """List restic-orch snapshots by day with their kinds and status."""
    from .render import snapshot_table

    repo = _browse_repo(obj, repo_name, repo_url, password_file, s3_env_file)
    name = repo.name
    try:
        snaps = repo.snapshots(tags=["restic-orch"])
    except restic.ResticError as exc:
        fail(str(exc))
    data = [{"id": s.short_id, "time": s.time.isoformat(), "host": s.hostname, "tags": s.tags,
             "status": s.tag_value("status") or "unknown", "bytes": int(s.tag_value("bytes") or 0),
             "kinds": [t.split(":", 1)[1] for t in s.tags if t.startswith("kind:")]} for s in snaps]
    obj.emit({"repository": name, "snapshots": data}, snapshot_table(name, data))


@main.command("check")
@click.option("--repo", "repo_name", type=click.Choice(["local", "offsite"]), default=None)
@click.option("--read-data-subset", default=None, help="e.g. 10% or 1/7: also read that part of the data.")
@click.option("--permissions", is_flag=True,
              help="Instead: ask each source (e.g. the PVE API) which rights its account lacks;"
                   " exit 2 if one is missing, 1 if a source could not be asked.")
@click.pass_obj
def check_cmd(obj: Ctx, repo_name: str | None, read_data_subset: str | None, permissions: bool) -> None:
    """Check the repositories' integrity (restic check); exit 1 when a problem is found."""
    from .lock import RunLock

    if permissions:
        from .rights import check_rights

        report = check_rights(obj.config())
        obj.emit(report.to_json(), report.human())
        raise SystemExit(report.exit_code)
    from .repos import open_all

    config = obj.config()
    obj.cap_cpu()
    repos = open_all(config)
    results: dict[str, Any] = {}
    worst = EXIT_OK
    lock = RunLock(config.state_dir, "check")
    try:
        lock.acquire()
    except Busy as exc:
        fail(str(exc))
    for name, repo in repos.items():
        if repo_name and name != repo_name:
            continue
        try:
            result = repo.check(read_data_subset)
            results[name] = {"ok": result.ok, "output": result.output[-4000:]}
        except restic.ResticError as exc:
            results[name] = {"ok": False, "output": str(exc)}
        if not results[name]["ok"]:
            worst = EXIT_FAILURE
    lock.release()
    from .report import RunSummary, new_run_id

    summary = RunSummary("check", new_run_id(), config.host, "")
    summary.extra["repositories"] = results
    for name, res in results.items():
        if not res["ok"]:
            summary.fail("check", name, res["output"][-500:])
    summary.finish("failure" if worst else "success")
    _record(config, summary)
    human = "\n".join(f"{n}: {'ok' if r['ok'] else 'PROBLEMS FOUND'}" +
                      ("" if r["ok"] else "\n" + r["output"][-2000:]) for n, r in results.items())
    obj.emit({"repositories": results}, human)
    raise SystemExit(worst)


@main.command("forget")
@click.option("--repo", "repo_name", type=click.Choice(["local", "offsite"]), default=None,
              help="Only this repository (e.g. offsite, from the trusted machine that holds the delete key).")
@click.option("--dry-run", is_flag=True, help="Show what would be removed.")
@click.pass_obj
def forget_cmd(obj: Ctx, repo_name: str | None, dry_run: bool) -> None:
    """Apply the retention policies (7 days local, 30 days offsite by default), then prune."""
    from .pipeline import apply_retention
    from .report import RunSummary, new_run_id
    from .repos import open_all

    config = obj.config()
    repos = open_all(config)
    if repo_name is not None:
        if repo_name not in repos:
            fail(f"repository {repo_name} is not configured", EXIT_USAGE)
        repos = {repo_name: repos[repo_name]}
    summary = RunSummary("forget", new_run_id(), config.host, "")
    apply_retention(config, repos, summary, dry_run=dry_run)
    summary.finish("failure" if summary.failures else "success")
    human = "\n".join(f"{n}: skipped: {r['skipped']}" if "skipped" in r else
                      f"{n}: kept {r['kept']}, removed {r['removed']}" + (" (dry run)" if dry_run else "")
                      for n, r in summary.retention.items())
    human += "".join(f"\nerror: {f['source']}: {f['message']}" for f in summary.failures)
    obj.emit(summary.to_json(), human)
    raise SystemExit(summary.exit_code)


@main.command("env")
@click.argument("repo_name", type=click.Choice(["local", "offsite"]))
@click.pass_obj
def env_cmd(obj: Ctx, repo_name: str) -> None:
    """Print export lines to use plain restic on a repository (secrets by file, never by value)."""
    config = obj.config()
    repo = getattr(config.repositories, repo_name)
    if repo is None:
        fail(f"repository {repo_name} is not configured", EXIT_USAGE)
    lines = [f"export RESTIC_REPOSITORY='{repo.url}'", f"export RESTIC_PASSWORD_FILE='{repo.password_file}'"]
    if repo.env_file:
        lines.append(f"set -a; . '{repo.env_file}'; set +a")
    opts = " ".join(f"-o {k}={v}" for k, v in repo.options.items())
    if opts:
        lines.append(f"# add to restic commands: {opts}")
    obj.emit({"RESTIC_REPOSITORY": repo.url, "RESTIC_PASSWORD_FILE": str(repo.password_file),
              "env_file": str(repo.env_file or ""), "options": repo.options}, "\n".join(lines))


# ---------------------------------------------------------------- browsing and restore
@main.command("show")
@click.argument("snapshot", default="latest")
@browse_options
@click.pass_obj
def show_cmd(obj: Ctx, snapshot: str, repo_name: str | None, repo_url: str | None, password_file: Path | None,
             s3_env_file: Path | None) -> None:
    """Print a snapshot's manifest: what it holds and what failed."""
    from .browse import locate
    from .render import manifest_text

    repo = _browse_repo(obj, repo_name, repo_url, password_file, s3_env_file)
    try:
        located = locate(repo, snapshot)
    except SelectionError as exc:
        fail(str(exc), EXIT_USAGE)
    except restic.ResticError as exc:
        fail(str(exc))
    obj.emit(located.manifest, manifest_text(located))


@main.command("ls")
@click.argument("snapshot", default="latest")
@click.argument("path", required=False)
@browse_options
@click.pass_obj
def ls_cmd(obj: Ctx, snapshot: str, path: str | None, repo_name: str | None, repo_url: str | None,
           password_file: Path | None, s3_env_file: Path | None) -> None:
    """List files of a snapshot; PATH may be ct:<vmid>:/dir to look inside a container archive."""
    from .browse import list_in_archive, locate

    repo = _browse_repo(obj, repo_name, repo_url, password_file, s3_env_file)
    try:
        located = locate(repo, snapshot)
        if path and path.startswith("ct:"):
            vmid, _, inner = path[3:].partition(":")
            matches = [a for a in located.artifacts if a.component == f"ct:{vmid}"]
            if not matches:
                raise SelectionError(f"no container {vmid} in snapshot {located.snapshot.short_id}")
            rows = list_in_archive(located, matches[0], inner or "/")
            obj.emit(rows, "\n".join(f"{r['mode']} {r['uid']:>5}:{r['gid']:<5} {r['size']:>10} {r['path']}"
                                     for r in rows))
            return
        nodes = repo.ls(located.snapshot.id, f"{located.root}/{path.strip('/')}" if path else None)
    except SelectionError as exc:
        fail(str(exc), EXIT_USAGE)
    except restic.ResticError as exc:
        fail(str(exc))
    rows = [{"path": n.path, "type": n.type, "size": n.size} for n in nodes]
    obj.emit(rows, "\n".join(f"{r['type']:<8} {r['size']:>12} {r['path']}" for r in rows))


@main.command("restore")
@click.option("--snapshot", default=None, help="latest (default), a restic id, or YYYY-MM-DD.")
@click.option("--from", "from_repo", type=click.Choice(["local", "offsite"]), default=None,
              help="Default: local, falling back to offsite when local is unusable.")
@click.option("--only", default=None,
              help="Comma-separated: ct:101, ct:all, ct:102:/etc/file, db:<source>/<db>, db:all, tfstate, vault.")
@click.option("--target-dir", type=click.Path(path_type=Path), default=None,
              help="Write files (state, vault files, files out of containers) here instead of their place.")
@click.option("--target-db", default=None, help="Restore a database under another name.")
@click.option("--as-vmid", type=int, default=None, help="Restore a container beside the original.")
@click.option("--force", is_flag=True, help="Replace what exists (container, non-empty database, newer state).")
@click.option("--yes", is_flag=True, help="Non-interactive: do what the flags say, never prompt.")
@click.option("--dry-run", is_flag=True, help="Print the plan and touch nothing.")
@click.option("--skip-redeploy", is_flag=True, help="Do not run the configured redeploy commands.")
@click.option("--repo", "repo_url", default=None, help="No configuration: the repository address (bootstrap).")
@click.option("--password-file", type=click.Path(path_type=Path, exists=True), default=None)
@click.option("--s3-env-file", type=click.Path(path_type=Path, exists=True), default=None)
@click.option("--set", "overrides", multiple=True, help="Override the stored configuration: KEY=VALUE.")
@click.pass_obj
def restore_cmd(obj: Ctx, snapshot: str | None, from_repo: str | None, only: str | None, target_dir: Path | None,
                target_db: str | None, as_vmid: int | None, force: bool, yes: bool, dry_run: bool,
                skip_redeploy: bool, repo_url: str | None, password_file: Path | None, s3_env_file: Path | None,
                overrides: tuple[str, ...]) -> None:
    """Bring containers, databases, Terraform state and vault files back, whole or one piece."""
    from restic_orch.hooks.base import RestoreOptions

    from . import bootstrap, interactive
    from .browse import locate
    from .render import restore_table
    from .repos import ad_hoc
    from .restore import execute, plan_steps

    interactive_mode = sys.stdin.isatty() and not yes and not dry_run and not obj.as_json
    selectors = [s.strip() for s in only.split(",") if s.strip()] if only else []
    options = RestoreOptions(force=force, target_dir=target_dir.resolve() if target_dir else None,
                             target_db=target_db, as_vmid=as_vmid)
    try:
        if repo_url:
            if password_file is None:
                fail("--repo needs --password-file (and --s3-env-file for an S3 repository)", EXIT_USAGE)
            repo = ad_hoc(repo_url, password_file, s3_env_file)
            if interactive_mode and snapshot is None:
                snapshot = interactive.choose_snapshot(repo.snapshots(tags=["restic-orch"]))
            located = locate(repo, snapshot or "latest", selectors=selectors)
            config = bootstrap.config_from_manifest(located.manifest, repo, list(overrides))
            if not obj.as_json:
                click.echo("Configuration stored in the snapshot (override with --set KEY=VALUE):", err=True)
                for line in bootstrap.summary_lines(config):
                    click.echo("  " + line, err=True)
        else:
            if overrides:
                fail("--set goes with --repo (restore without the lost host's configuration)", EXIT_USAGE)
            config, repo = _repo_for(obj, from_repo)
            if interactive_mode and snapshot is None:
                snapshot = interactive.choose_snapshot(repo.snapshots(tags=["restic-orch"]))
            located = locate(repo, snapshot or "latest", selectors=selectors)
        if interactive_mode and not selectors:
            selectors = interactive.choose_components(located)
        steps = plan_steps(located, selectors, options, config, skip_redeploy=skip_redeploy)
    except (SelectionError, bootstrap.OverrideError) as exc:
        fail(str(exc), EXIT_USAGE)
    except ValidationError as exc:
        fail(f"configuration after --set is invalid: {exc}", EXIT_USAGE)
    except restic.ResticError as exc:
        fail(str(exc))
    plan = [s.to_json() for s in steps]
    if dry_run:
        obj.emit({"dry_run": True, "snapshot": located.snapshot.short_id, "repository": repo.name, "plan": plan},
                 f"snapshot {located.snapshot.short_id} from {repo.name}\n" +
                 "\n".join(f"{i}. {s['description']}" + (" [changes production]" if s["destructive"] else "")
                           for i, s in enumerate(plan, 1)))
        return
    destructive = [s for s in steps if s.destructive]
    if destructive and not yes and not interactive_mode:
        fail("refusing to change production without a terminal to confirm on; run again with --yes to do:\n  "
             + "\n  ".join(s.description for s in destructive), EXIT_USAGE)
    confirm = None
    if interactive_mode:
        interactive.show_plan(steps)
        confirm = interactive.confirm_step
    from .report import RunSummary

    with _locked_run(config, f"restore {located.snapshot.short_id}") as (run_id, run_log, _handler):
        summary = RunSummary("restore", run_id, config.host, "", log_file=str(run_log))
        summary = execute(config, located, steps, options, confirm=confirm, summary=summary)
        _record(config, summary)
    obj.emit(summary.to_json(), restore_table(summary))
    raise SystemExit(summary.exit_code)


@main.command("drill")
@click.option("--scenario", type=click.Choice(["full", "container", "database", "tfstate"]), default="full",
              show_default=True)
@click.option("--from", "from_repo", type=click.Choice(["local", "offsite"]), default=None)
@click.option("--snapshot", default="latest", show_default=True)
@click.option("--report-dir", type=click.Path(path_type=Path), default=None,
              help="Default: drill.report_dir of the configuration.")
@click.option("--lab-note", is_flag=True, help="Say in the report that it ran on the simulated homelab.")
@click.pass_obj
def drill_cmd(obj: Ctx, scenario: str, from_repo: str | None, snapshot: str, report_dir: Path | None,
              lab_note: bool) -> None:
    """Restore into a sandbox, verify against the manifest, measure RTO/RPO, write a dated report."""
    from . import drill
    from .browse import locate
    from .report import RunSummary

    config, repo = _repo_for(obj, from_repo)
    obj.cap_cpu()
    with _locked_run(config, f"drill {scenario}") as (run_id, run_log, handler):
        try:
            located = locate(repo, snapshot, selectors=drill.SCENARIOS[scenario])
        except SelectionError as exc:
            fail(str(exc), EXIT_USAGE)
        except restic.ResticError as exc:
            fail(str(exc))
        summary = RunSummary("drill", run_id, config.host, "", log_file=str(run_log))
        report = drill.run_drill(config, located, scenario, summary)
        summary.extra["report"] = {k: report[k] for k in ("passed", "rto", "rpo", "scenario", "snapshot")}
        logs.close_run_log(handler)  # flushed, so the report's log excerpt is complete
        paths = drill.write_report(report, report_dir or config.drill.report_dir, run_log, lab=lab_note,
                                   lab_dir=config.state_dir.parent if lab_note else None)
        summary.extra["report_files"] = [str(p) for p in paths]
        _record(config, summary)
    human = (f"drill {scenario} of snapshot {located.snapshot.short_id}: {'PASSED' if report['passed'] else 'FAILED'}"
             f"\nRTO {report['rto']['seconds']} s (target {report['rto']['target_seconds']} s),"
             f" RPO {report['rpo']['seconds'] / 3600:.1f} h (target {report['rpo']['target_seconds'] / 3600:.0f} h)"
             + "".join(f"\nFAILED {st['component']}: {st['message']}" for st in report["steps"]
                       if st["result"] != "ok")
             + "".join(f"\nproblem {p['step']}: {p['error']}" for p in report["problems"])
             + "\nreport: " + ", ".join(summary.extra["report_files"]))
    obj.emit(summary.to_json(), human)
    raise SystemExit(EXIT_OK if report["passed"] else EXIT_FAILURE)


@main.command("status")
@click.pass_obj
def status_cmd(obj: Ctx) -> None:
    """Last runs, age of the newest good snapshot per repository against the RPO target (exit 1 when breached)."""
    from .status import collect, render

    config = obj.config()
    data = collect(config)
    obj.emit(data, render(data))
    raise SystemExit(EXIT_OK if data["ok"] else EXIT_FAILURE)


# ---------------------------------------------------------------- lab
@main.group("lab")
def lab_group() -> None:
    """The simulated homelab (fake PVE API, S3, PostgreSQL, MariaDB, vault files) on 127.0.0.1."""


@lab_group.command("up")
@click.option("--dir", "lab_dir", type=click.Path(path_type=Path), default=Path(".lab"), show_default=True)
@click.option("--size-mb", type=int, default=3, show_default=True, help="Root filesystem size per container.")
@click.option("--db-scale", type=int, default=1, show_default=True, help="Database size multiplier.")
@click.pass_obj
def lab_up(obj: Ctx, lab_dir: Path, size_mb: int, db_scale: int) -> None:
    """Start the lab and write DIR/config.yml pointing at it."""
    from .lab import manager

    try:
        state = manager.up(lab_dir.resolve(), size_bytes=size_mb * 2**20, db_scale=db_scale)
    except manager.LabError as exc:
        fail(str(exc))
    obj.emit(_without_keys(state), manager.describe(state))


def _without_keys(data: Any) -> Any:
    """The lab state as printed: secret key values left out (they live in 0600 files)."""
    if isinstance(data, dict):
        return {k: ("****" if k in ("secret_key", "access_key", "secret") else _without_keys(v))
                for k, v in data.items()}
    if isinstance(data, list):
        return [_without_keys(v) for v in data]
    return data


@lab_group.command("down")
@click.option("--dir", "lab_dir", type=click.Path(path_type=Path), default=Path(".lab"), show_default=True)
@click.pass_obj
def lab_down(obj: Ctx, lab_dir: Path) -> None:
    """Stop exactly what `lab up` started (by pid)."""
    from .lab import manager

    stopped = manager.down(lab_dir.resolve())
    obj.emit({"stopped": stopped}, "\n".join(f"stopped {s}" for s in stopped) or "nothing was running")


@lab_group.command("status")
@click.option("--dir", "lab_dir", type=click.Path(path_type=Path), default=Path(".lab"), show_default=True)
@click.pass_obj
def lab_status(obj: Ctx, lab_dir: Path) -> None:
    """Show what runs where."""
    from .lab import manager

    status = manager.status(lab_dir.resolve())
    obj.emit(status, manager.describe_status(status))
    raise SystemExit(EXIT_OK if status.get("running") else EXIT_FAILURE)


def run() -> None:
    try:
        main(standalone_mode=True)
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    run()
