"""`ls SNAPSHOT [PATH]`: files of a snapshot, or inside one of its archives (ct:<vmid>:/dir)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from .. import browse
from .common import Ctx, browse_options, browse_repo, exit_codes


@click.command("ls")
@click.argument("snapshot", default="latest")
@click.argument("path", required=False)
@browse_options
@click.pass_obj
def ls_cmd(obj: Ctx, snapshot: str, path: str | None, repo_name: str | None, repo_url: str | None,
           password_file: Path | None, s3_env_file: Path | None) -> None:
    """List files of a snapshot; PATH may be ct:<vmid>:/dir to look inside a container archive."""
    repo = browse_repo(obj, repo_name, repo_url, password_file, s3_env_file)
    with exit_codes():
        located = browse.locate(repo, snapshot)
        inside = browse.list_inside(located, path) if path else None
        if inside is None:
            nodes = repo.ls(located.snapshot.id, located.staged_path(path))
    if inside is not None:
        obj.emit(inside, "\n".join(_archive_line(r) for r in inside))
        return
    rows = [{"path": n.path, "type": n.type, "size": n.size} for n in nodes]
    obj.emit(rows, "\n".join(f"{r['type']:<8} {r['size']:>12} {r['path']}" for r in rows))


def _archive_line(row: dict[str, Any]) -> str:
    return f"{row['mode']} {row['uid']:>5}:{row['gid']:<5} {row['size']:>10} {row['path']}"
