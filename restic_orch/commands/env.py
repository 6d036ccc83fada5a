"""`env REPO`: export lines to use plain restic on a repository."""

from __future__ import annotations

import click

from ..config import Repository
from ..report import EXIT_USAGE
from .common import REPO_NAMES, Ctx, fail


@click.command("env")
@click.argument("repo_name", type=REPO_NAMES)
@click.pass_obj
def env_cmd(obj: Ctx, repo_name: str) -> None:
    """Print export lines to use plain restic on a repository (secrets by file, never by value)."""
    repo = getattr(obj.config().repositories, repo_name)
    if repo is None:
        fail(f"repository {repo_name} is not configured", EXIT_USAGE)
    obj.emit({"RESTIC_REPOSITORY": repo.url, "RESTIC_PASSWORD_FILE": str(repo.password_file),
              "env_file": str(repo.env_file or ""), "options": repo.options}, "\n".join(_exports(repo)))


def _exports(repo: Repository) -> list[str]:
    lines = [f"export RESTIC_REPOSITORY='{repo.url}'", f"export RESTIC_PASSWORD_FILE='{repo.password_file}'"]
    if repo.env_file:
        lines.append(f"set -a; . '{repo.env_file}'; set +a")
    opts = " ".join(f"-o {k}={v}" for k, v in repo.options.items())
    if opts:
        lines.append(f"# add to restic commands: {opts}")
    return lines
