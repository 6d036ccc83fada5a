"""`drill`: a restore test into a sandbox, verified, timed, and written down as a dated report."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from restic_orch.hooks import registry

from .. import drill
from ..browse import Located, locate
from ..report import EXIT_FAILURE, EXIT_OK, RunSummary
from ..runlog import recorded_run
from .common import REPO_NAMES, Ctx, exit_codes, repo_for


@click.command("drill")
@click.option("--scenario", type=click.Choice(list(registry.scenarios())), default=registry.FULL_SCENARIO,
              show_default=True)
@click.option("--from", "from_repo", type=REPO_NAMES, default=None,
              help="Default: the repository the last drill did not use (local and offsite alternate).")
@click.option("--snapshot", default="latest", show_default=True)
@click.option("--report-dir", type=click.Path(path_type=Path), default=None,
              help="Default: drill.report_dir of the configuration.")
@click.option("--lab-note", is_flag=True, help="Say in the report that it ran on the simulated homelab.")
@click.pass_obj
def drill_cmd(obj: Ctx, scenario: str, from_repo: str | None, snapshot: str, report_dir: Path | None,
              lab_note: bool) -> None:
    """Restore into a sandbox, verify against the manifest, measure RTO/RPO, write a dated report."""
    config, repo = repo_for(obj, from_repo or drill.default_repository(obj.config()))
    with exit_codes():
        # a snapshot that cannot be drilled is a usage error: refused before the run makes its lock and log
        located = locate(repo, snapshot, selectors=registry.scenarios()[scenario])
    with exit_codes(), recorded_run(config, "drill", f"drill {scenario}", cap_cpu=True) as run:
        report = drill.run_and_report(config, located, scenario, run, report_dir or config.drill.report_dir,
                                      lab_note)
    obj.emit(run.summary.to_json(), _human(scenario, located, report, run.summary))
    raise SystemExit(EXIT_OK if report["passed"] else EXIT_FAILURE)


def _human(scenario: str, located: Located, report: dict[str, Any], summary: RunSummary) -> str:
    rto, rpo = report["rto"], report["rpo"]
    return (f"drill {scenario} of snapshot {located.snapshot.short_id}: {'PASSED' if report['passed'] else 'FAILED'}"
            f"\nRTO {rto['seconds']} s (target {rto['target_seconds']} s),"
            f" RPO {rpo['seconds'] / 3600:.1f} h (target {rpo['target_seconds'] / 3600:.0f} h)"
            + "".join(f"\nFAILED {st['component']}: {st['message']}" for st in report["steps"]
                      if st["result"] != "ok")
            + "".join(f"\nproblem {p['step']}: {p['error']}" for p in report["problems"])
            + "\nreport: " + ", ".join(summary.extra["report_files"]))
