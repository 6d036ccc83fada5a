"""`init`: create the repositories that do not exist yet."""

from __future__ import annotations

import click

from ..init import init_repositories
from .common import Ctx, exit_codes


@click.command("init")
@click.pass_obj
def init_cmd(obj: Ctx) -> None:
    """Create the repositories that do not exist yet (offsite with the local chunker parameters)."""
    config = obj.config()
    with exit_codes():
        result = init_repositories(config)
    obj.emit({"repositories": result}, "\n".join(f"{k}: {v}" for k, v in result.items()))
