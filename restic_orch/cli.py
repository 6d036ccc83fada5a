"""Thin command line: parse, call the library, print. Human output by default, --json for machines."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Any, NoReturn

import click

from . import __version__, logs, restic
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
        return self._config

    def emit(self, data: Any, human: str) -> None:
        if self.as_json:
            click.echo(json.dumps(data, indent=2, default=str, ensure_ascii=False))
        elif human:
            click.echo(human)


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
            source = repos.get("local") if name == "offsite" and "local" in repos else None
            repo.init(copy_chunker_from=source)
            result[name] = "created"
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
    run_log, handler = logs.open_run_log(config.log_dir, new_run_id())
    try:
        summary = pipeline.run_backup(config, only=kinds, log_file=run_log)
    except Busy as exc:
        fail(str(exc))
    finally:
        logs.close_run_log(handler)
    from .render import backup_table

    obj.emit(summary.to_json(), "" if obj.verbosity < 0 else backup_table(summary))
    raise SystemExit(summary.exit_code)


@main.command("snapshots")
@click.option("--repo", "repo_name", type=click.Choice(["local", "offsite"]), default=None)
@click.pass_obj
def snapshots_cmd(obj: Ctx, repo_name: str | None) -> None:
    """List restic-orch snapshots by day with their kinds and status."""
    from .render import snapshot_table
    from .repos import open_all

    config = obj.config()
    repos = open_all(config)
    name = repo_name or ("local" if "local" in repos else "offsite")
    if name not in repos:
        fail(f"repository {name} is not configured", EXIT_USAGE)
    try:
        snaps = repos[name].snapshots(tags=["restic-orch"])
    except restic.ResticError as exc:
        fail(str(exc))
    data = [{"id": s.short_id, "time": s.time.isoformat(), "host": s.hostname, "tags": s.tags,
             "status": s.tag_value("status") or "unknown",
             "kinds": [t.split(":", 1)[1] for t in s.tags if t.startswith("kind:")]} for s in snaps]
    obj.emit({"repository": name, "snapshots": data}, snapshot_table(name, data))


@main.command("check")
@click.option("--repo", "repo_name", type=click.Choice(["local", "offsite"]), default=None)
@click.option("--read-data-subset", default=None, help="e.g. 10% or 1/7: also read that part of the data.")
@click.pass_obj
def check_cmd(obj: Ctx, repo_name: str | None, read_data_subset: str | None) -> None:
    """Check the repositories' integrity (restic check); exit 1 when a problem is found."""
    from .repos import open_all

    config = obj.config()
    repos = open_all(config)
    results: dict[str, Any] = {}
    worst = EXIT_OK
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
    human = "\n".join(f"{n}: {'ok' if r['ok'] else 'PROBLEMS FOUND'}" +
                      ("" if r["ok"] else "\n" + r["output"][-2000:]) for n, r in results.items())
    obj.emit({"repositories": results}, human)
    raise SystemExit(worst)


@main.command("forget")
@click.option("--dry-run", is_flag=True, help="Show what the retention policy would remove.")
@click.pass_obj
def forget_cmd(obj: Ctx, dry_run: bool) -> None:
    """Apply the retention policies (7 days local, 30 days offsite by default), then prune."""
    from .pipeline import apply_retention
    from .report import RunSummary, new_run_id

    config = obj.config()
    from .repos import open_all

    summary = RunSummary("forget", new_run_id(), config.host, "")
    apply_retention(config, open_all(config), summary, dry_run=dry_run)
    summary.finish("failure" if summary.failures else "success")
    human = "\n".join(f"{n}: kept {r['kept']}, removed {r['removed']}" + (" (dry run)" if dry_run else "")
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
    obj.emit(state, manager.describe(state))


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
