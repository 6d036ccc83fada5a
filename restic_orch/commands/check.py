"""`check`: the repositories' integrity, or (--permissions) the rights the sources' accounts lack."""

from __future__ import annotations

from typing import Any

import click

from .. import progress
from ..integrity import check_repositories, escrow_warnings
from ..runlog import recorded_run
from .common import REPO_NAMES, Ctx, configured_repos, exit_codes


@click.command("check")
@click.option("--repo", "repo_name", type=REPO_NAMES, default=None)
@click.option("--read-data-subset", default=None,
              help="e.g. 10% or 1/7: also read that part of the data; overrides check.rotation_parts,"
                   " whose rotation it leaves where it was.")
@click.option("--permissions", is_flag=True,
              help="Instead: ask each source (e.g. the PVE API) which rights its account lacks;"
                   " exit 2 if one is missing, 1 if a source could not be asked.")
@click.pass_obj
def check_cmd(obj: Ctx, repo_name: str | None, read_data_subset: str | None, permissions: bool) -> None:
    """Check the repositories' integrity (restic check); exit 1 when a problem is found."""
    if permissions:
        from ..rights import check_rights

        report = check_rights(obj.config())
        obj.emit(report.to_json(), report.human())
        raise SystemExit(report.exit_code)
    config = obj.config()
    configured_repos(config, repo_name)  # exit 2 for one not configured, before the run makes its lock and log
    with exit_codes(), recorded_run(config, "check", "check", cap_cpu=True) as run, progress.live():
        results = check_repositories(config, run.summary, repo_name, read_data_subset)
        warnings = escrow_warnings(config, run.summary, repo_name)
    obj.emit({"repositories": results, "warnings": warnings},
             "\n".join([_human(results), *(f"warning: {w}" for w in warnings)]))
    raise SystemExit(run.summary.exit_code)


def _human(results: dict[str, dict[str, Any]]) -> str:
    return "\n".join(f"{n}: {'ok' if r['ok'] else 'PROBLEMS FOUND'}"
                     + (f" (data read: {r['read_data_subset']})" if r.get("read_data_subset") else "")
                     + ("" if r["ok"] else "\n" + r["output"][-2000:])
                     for n, r in results.items())
