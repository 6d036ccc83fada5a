"""What the tests' hand-written configurations share."""

from __future__ import annotations

from pathlib import Path


def host_dirs(tmp_path: Path) -> str:
    """The head of a configuration: the host and its staging, state and log directories under tmp_path."""
    return (f"host: pve1\nstaging_dir: {tmp_path}/staging\nstate_dir: {tmp_path}/state\n"
            f"log_dir: {tmp_path}/log\n")
