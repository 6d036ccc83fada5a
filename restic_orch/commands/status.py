"""`status`: last runs and the age of the newest good snapshot against the RPO target."""

from __future__ import annotations

import click

from ..report import EXIT_FAILURE, EXIT_OK
from .common import Ctx


@click.command("status")
@click.pass_obj
def status_cmd(obj: Ctx) -> None:
    """Last runs, age of the newest good snapshot per repository against the RPO target (exit 1 when breached)."""
    from ..status import collect, render

    data = collect(obj.config())
    obj.emit(data, render(data))
    raise SystemExit(EXIT_OK if data["ok"] else EXIT_FAILURE)
