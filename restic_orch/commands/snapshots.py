"""`snapshots`: our snapshots in one repository, with what their tags say."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from .. import restic, tags
from .common import Ctx, browse_options, browse_repo, exit_codes


@click.command("snapshots")
@browse_options
@click.pass_obj
def snapshots_cmd(obj: Ctx, repo_name: str | None, repo_url: str | None, password_file: Path | None,
                  s3_env_file: Path | None) -> None:
    """List restic-orch snapshots by day with their kinds and status."""
    from ..render import snapshot_table

    repo = browse_repo(obj, repo_name, repo_url, password_file, s3_env_file)
    with exit_codes():
        snaps = repo.snapshots(tags=[tags.TAG])
    data = [_row(s) for s in snaps]
    obj.emit({"repository": repo.name, "snapshots": data}, snapshot_table(repo.name, data))


def _row(snap: restic.Snapshot) -> dict[str, Any]:
    return {"id": snap.short_id, "time": snap.time.isoformat(), "host": snap.hostname, "tags": snap.tags,
            "status": tags.status(snap) or "unknown", "bytes": tags.size(snap), "kinds": tags.kinds(snap)}
