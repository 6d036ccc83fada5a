"""`lab up | down | status`: the simulated homelab."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from ..report import EXIT_FAILURE, EXIT_OK
from .common import Ctx, fail

LAB_DIR = click.option("--dir", "lab_dir", type=click.Path(path_type=Path), default=Path(".lab"), show_default=True)


@click.group("lab")
def lab_group() -> None:
    """The simulated homelab (fake PVE API, S3, PostgreSQL, MariaDB, vault files) on 127.0.0.1."""


@lab_group.command("up")
@LAB_DIR
@click.option("--size-mb", type=int, default=3, show_default=True, help="Root filesystem size per container.")
@click.option("--db-scale", type=int, default=1, show_default=True, help="Database size multiplier.")
@click.pass_obj
def lab_up(obj: Ctx, lab_dir: Path, size_mb: int, db_scale: int) -> None:
    """Start the lab and write DIR/config.yml pointing at it."""
    from ..lab import manager

    try:
        state = manager.up(lab_dir.resolve(), size_bytes=size_mb * 2**20, db_scale=db_scale)
    except manager.LabError as exc:
        fail(str(exc))
    obj.emit(_without_keys(state), manager.describe(state))


def _without_keys(data: Any) -> Any:
    """The lab state as printed: secret key values left out (they live in 0600 files)."""
    if isinstance(data, dict):
        return {k: ("****" if k in ("secret_key", "access_key", "secret") else _without_keys(v))
                for k, v in data.items()}
    if isinstance(data, list):
        return [_without_keys(v) for v in data]
    return data


@lab_group.command("down")
@LAB_DIR
@click.pass_obj
def lab_down(obj: Ctx, lab_dir: Path) -> None:
    """Stop exactly what `lab up` started (by pid)."""
    from ..lab import manager

    stopped = manager.down(lab_dir.resolve())
    obj.emit({"stopped": stopped}, "\n".join(f"stopped {s}" for s in stopped) or "nothing was running")


@lab_group.command("status")
@LAB_DIR
@click.pass_obj
def lab_status(obj: Ctx, lab_dir: Path) -> None:
    """Show what runs where."""
    from ..lab import manager

    status = manager.status(lab_dir.resolve())
    obj.emit(status, manager.describe_status(status))
    raise SystemExit(EXIT_OK if status.get("running") else EXIT_FAILURE)
