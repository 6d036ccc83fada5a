"""`restore`: bring sources back, whole or one piece, from the host's configuration or without it."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from restic_orch.hooks import registry

from .. import interactive, progress
from ..report import EXIT_USAGE
from ..restore import execute
from ..restore_setup import Bootstrap, Prepared, RestoreRequest, prepare
from ..runlog import recorded_run
from .common import REPO_NAMES, Ctx, comma_list, exit_codes, fail

F = TypeVar("F", bound=Callable[..., Any])


def kind_options(func: F) -> F:
    """The kinds' own restore options, as each hook declares them (registry.restore_options())."""
    for option in reversed(registry.restore_options()):
        func = click.option(option.flag, option.name, type=option.type, default=None, help=option.help)(func)
    return func


@click.command("restore")
@click.option("--snapshot", default=None, help="latest (default), a restic id, or YYYY-MM-DD.")
@click.option("--from", "from_repo", type=REPO_NAMES, default=None,
              help="Default: local, falling back to offsite when local is unusable.")
@click.option("--only", default=None, help=registry.selector_help())
@click.option("--target-dir", type=click.Path(path_type=Path), default=None,
              help="Write files (state, vault files, files out of containers) here instead of their place.")
@kind_options
@click.option("--force", is_flag=True, help="Replace what exists (container, non-empty database, newer state).")
@click.option("--yes", is_flag=True, help="Non-interactive: do what the flags say, never prompt.")
@click.option("--dry-run", is_flag=True, help="Print the plan and touch nothing.")
@click.option("--skip-redeploy", is_flag=True, help="Do not run the configured redeploy commands.")
@click.option("--repo", "repo_url", default=None, help="No configuration: the repository address (bootstrap).")
@click.option("--password-file", type=click.Path(path_type=Path, exists=True), default=None)
@click.option("--s3-env-file", type=click.Path(path_type=Path, exists=True), default=None)
@click.option("--set", "overrides", multiple=True, help="Override the stored configuration: KEY=VALUE.")
@click.option("--secrets-dir", type=click.Path(path_type=Path, file_okay=False, exists=True), default=None,
              help="With --repo: take each secret the escrow sheet lists from this directory (e.g. /root).")
@click.pass_obj
def restore_cmd(obj: Ctx, snapshot: str | None, from_repo: str | None, only: str | None, target_dir: Path | None,
                force: bool, yes: bool, dry_run: bool, skip_redeploy: bool, repo_url: str | None,
                password_file: Path | None, s3_env_file: Path | None, overrides: tuple[str, ...],
                secrets_dir: Path | None, **kind_params: Any) -> None:
    """Bring containers, databases, Terraform state and vault files back, whole or one piece."""
    from ..render import restore_table

    request = RestoreRequest(snapshot=snapshot, from_repo=from_repo, selectors=comma_list(only), force=force,
                             target_dir=target_dir, params=kind_params, skip_redeploy=skip_redeploy, yes=yes,
                             dry_run=dry_run, overrides=list(overrides),
                             bootstrap=_bootstrap(repo_url, password_file, s3_env_file, secrets_dir))
    on_terminal = sys.stdin.isatty() and not yes and not dry_run and not obj.as_json
    prompts = interactive.Prompts() if on_terminal else None
    with exit_codes():
        setup = prepare(request, obj.config, prompts, announce=None if obj.as_json else _show_stored_config)
    if dry_run:
        _show_plan(obj, setup)
        return
    if prompts is not None:
        interactive.show_plan(setup.steps)
    with (exit_codes(), recorded_run(setup.config, "restore", f"restore {setup.located.snapshot.short_id}") as run,
          progress.live()):
        run.summary = execute(setup.config, setup.located, setup.steps, setup.options, summary=run.summary,
                              confirm=interactive.confirm_step if prompts is not None else None)
    obj.emit(run.summary.to_json(), restore_table(run.summary))
    raise SystemExit(run.summary.exit_code)


def _bootstrap(repo_url: str | None, password_file: Path | None, s3_env_file: Path | None,
               secrets_dir: Path | None) -> Bootstrap | None:
    if repo_url is None:
        if secrets_dir is not None:
            fail("--secrets-dir goes with --repo (restore without the lost host's configuration)", EXIT_USAGE)
        return None
    return Bootstrap(repo_url, password_file, s3_env_file, secrets_dir)


def _show_stored_config(lines: list[str]) -> None:
    click.echo("Configuration stored in the snapshot (override with --set KEY=VALUE):", err=True)
    for line in lines:
        click.echo("  " + line, err=True)


def _show_plan(obj: Ctx, setup: Prepared) -> None:
    plan = [s.to_json() for s in setup.steps]
    short_id, repo = setup.located.snapshot.short_id, setup.located.repo.name
    obj.emit({"dry_run": True, "snapshot": short_id, "repository": repo, "plan": plan},
             f"snapshot {short_id} from {repo}\n" +
             "\n".join(f"{i}. {s['description']}" + (" [changes production]" if s["destructive"] else "")
                       for i, s in enumerate(plan, 1)))
