"""`show SNAPSHOT`: a snapshot's manifest."""

from __future__ import annotations

from pathlib import Path

import click

from ..browse import locate
from .common import Ctx, browse_options, browse_repo, exit_codes


@click.command("show")
@click.argument("snapshot", default="latest")
@browse_options
@click.pass_obj
def show_cmd(obj: Ctx, snapshot: str, repo_name: str | None, repo_url: str | None, password_file: Path | None,
             s3_env_file: Path | None) -> None:
    """Print a snapshot's manifest: what it holds and what failed."""
    from ..render import manifest_text

    repo = browse_repo(obj, repo_name, repo_url, password_file, s3_env_file)
    with exit_codes():
        located = locate(repo, snapshot)
    obj.emit(located.manifest.to_json(), manifest_text(located))
