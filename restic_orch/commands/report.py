"""`report`: the last days of runs as one self-contained HTML page (charts inline, nothing fetched at view time)."""

from __future__ import annotations

from pathlib import Path

import click

from .common import Ctx, fail


@click.command("report")
@click.option("--out", type=click.Path(path_type=Path, dir_okay=False), default=None,
              help="The HTML file to write (default: <state_dir>/report.html).")
@click.option("--days", type=click.IntRange(min=1), default=30, show_default=True,
              help="Runs started in the last DAYS days.")
@click.pass_obj
def report_cmd(obj: Ctx, out: Path | None, days: int) -> None:
    """Write the run history page from <state_dir>/runs: duration by phase, bytes added, exit codes, RPO age over
    time, the drills' RTO against the target, repository growth. Prints the page's path (--json: the figures)."""
    from ..history import collect
    from ..history_render import write_page

    # only the state directory is read: a missing secret file must not stop the page
    config = obj.config(check_files=False)
    history = collect(config.state_dir, days, rto_target_seconds=config.targets.rto_minutes * 60,
                      rpo_target_seconds=config.targets.rpo_hours * 3600)
    path = out or config.state_dir / "report.html"
    try:
        write_page(history, path, f"restic-orch on {config.host}: the last {days} days")
    except OSError as exc:
        fail(f"cannot write the report: {exc}")
    obj.emit({"path": str(path), **history.to_json()}, str(path))
