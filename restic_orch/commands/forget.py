"""`forget`: the retention policies, then prune, under the host's lock."""

from __future__ import annotations

import click

from ..report import RunSummary
from ..retention import apply_retention
from ..runlog import recorded_run
from .common import REPO_NAMES, Ctx, configured_repos, exit_codes


@click.command("forget")
@click.option("--repo", "repo_name", type=REPO_NAMES, default=None,
              help="Only this repository (e.g. offsite, from the trusted machine that holds the delete key).")
@click.option("--dry-run", is_flag=True, help="Show what would be removed.")
@click.pass_obj
def forget_cmd(obj: Ctx, repo_name: str | None, dry_run: bool) -> None:
    """Apply the retention policies (7 days local, 30 days offsite by default), then prune."""
    config = obj.config()
    repos = configured_repos(config, repo_name)
    with exit_codes(), recorded_run(config, "forget", "forget", record=False) as run:
        apply_retention(config, repos, run.summary, dry_run=dry_run)
        run.summary.finish("failure" if run.summary.failures else "success")
    obj.emit(run.summary.to_json(), _human(run.summary, dry_run))
    raise SystemExit(run.summary.exit_code)


def _human(summary: RunSummary, dry_run: bool) -> str:
    human = "\n".join(f"{n}: skipped: {r['skipped']}" if "skipped" in r else
                      f"{n}: kept {r['kept']}, removed {r['removed']}" + (" (dry run)" if dry_run else "")
                      for n, r in summary.retention.items())
    return human + "".join(f"\nerror: {f['source']}: {f['message']}" for f in summary.failures)
