"""`backup`: the nightly run (pipeline.run_backup holds the lock and applies the CPU budget itself)."""

from __future__ import annotations

import click

from restic_orch.hooks import registry

from ..report import EXIT_USAGE
from ..runlog import opened_log
from .common import Ctx, comma_list, exit_codes, fail


@click.command("backup")
@click.option("--only", default=None, help=f"Comma-separated kinds: {','.join(registry.kind_names())}.")
@click.option("--dry-run", is_flag=True, help="Print the plan and touch nothing.")
@click.pass_obj
def backup_cmd(obj: Ctx, only: str | None, dry_run: bool) -> None:
    """Run the pre-hooks, store the staging area in restic, copy offsite, apply retention."""
    from .. import pipeline, progress
    from ..render import backup_table

    config = obj.config()
    kinds = _kinds(only)
    if dry_run:
        the_plan = pipeline.plan(config, kinds)
        obj.emit({"dry_run": True, "plan": the_plan.describe()}, "\n".join(the_plan.describe()))
        return
    with exit_codes(), opened_log(config) as (run_id, log_file), progress.live():
        summary = pipeline.run_backup(config, only=kinds, log_file=log_file, run_id=run_id)
    obj.emit(summary.to_json(), "" if obj.verbosity < 0 else backup_table(summary))
    raise SystemExit(summary.exit_code)


def _kinds(only: str | None) -> set[str] | None:
    """The kinds --only names (None: every source); exit 2 naming the known ones when one is unknown."""
    if not only:
        return None
    kinds = set(comma_list(only))
    known = registry.kind_names()
    unknown = kinds - set(known)
    if unknown:
        fail(f"--only: unknown kind(s) {', '.join(sorted(unknown))}; known: {', '.join(known)}", EXIT_USAGE)
    return kinds
