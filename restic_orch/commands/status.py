"""`status`: last runs, the age of the newest good snapshot against the RPO target and, with a check rotation, of
the oldest data read back against check.verified_within_days."""

from __future__ import annotations

import click

from ..report import EXIT_FAILURE, EXIT_OK
from .common import Ctx


@click.command("status")
@click.option("--notify-only", is_flag=True,
              help="For a scheduler: print nothing and exit 0; an RPO breach goes to the rpo_breach notification"
                   " routes, once per breach.")
@click.pass_obj
def status_cmd(obj: Ctx, notify_only: bool) -> None:
    """Last runs, age of the newest good snapshot per repository against the RPO target, and (check.rotation_parts)
    of the oldest read-back of its data against check.verified_within_days; exit 1 when either is exceeded."""
    from ..notify import rpo_breach
    from ..status import collect, render

    config = obj.config()
    data = collect(config)
    if not notify_only:
        obj.emit(data, render(data))
    # after the output: an hourly status tells the rpo_breach routes once per breach
    rpo_breach(config, data)
    # a scheduled watch alerts through the routes: an exit 1 every hour would be a mail every hour
    raise SystemExit(EXIT_OK if data["ok"] or notify_only else EXIT_FAILURE)
