"""`status`: last runs, the age of the newest good snapshot against the RPO target and, with a check rotation, of
the oldest data read back against check.verified_within_days."""

from __future__ import annotations

import click

from ..report import EXIT_FAILURE, EXIT_OK
from .common import Ctx


@click.command("status")
@click.pass_obj
def status_cmd(obj: Ctx) -> None:
    """Last runs, age of the newest good snapshot per repository against the RPO target, and (check.rotation_parts)
    of the oldest read-back of its data against check.verified_within_days; exit 1 when either is exceeded."""
    from ..status import collect, render

    data = collect(obj.config())
    obj.emit(data, render(data))
    raise SystemExit(EXIT_OK if data["ok"] else EXIT_FAILURE)
