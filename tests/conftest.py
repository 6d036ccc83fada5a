"""Shared fixtures: the whole simulated homelab, started once per session from the real binaries."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

from restic_orch.config import load_config
from restic_orch.lab import manager


def _lab_dir() -> Path:
    # postgres and mysql run as their own users: the lab must sit under traversable directories
    path = Path(tempfile.mkdtemp(prefix="restic-orch-lab-", dir="/tmp"))
    os.chmod(path, 0o755)  # noqa: S103
    return path


@pytest.fixture(scope="session")
def lab():
    """The full lab: fake PVE, S3 (behind a proxy), PostgreSQL, MariaDB, vault files; config at lab['config']."""
    lab_dir = _lab_dir()
    state = manager.up(lab_dir)
    yield {"dir": lab_dir, "config": Path(state["config"]), "state": state}
    manager.down(lab_dir)
    shutil.rmtree(lab_dir, ignore_errors=True)


@pytest.fixture
def lab_config(lab):
    return load_config(lab["config"])


@pytest.fixture
def fresh_repos(lab):
    """Empty local repository, offsite bucket emptied, staging and state cleared: each test starts clean.

    The offsite bucket is versioned and the config's key may not delete: it is emptied, old versions too,
    with the lab's own key (lab-root, the bucket owner's counterpart)."""
    from restic_orch.lab.s3 import empty_bucket

    config = load_config(lab["config"])
    for path in (Path(config.repositories.local.url), config.staging_dir, config.state_dir):
        shutil.rmtree(path, ignore_errors=True)
    info = lab["state"]["services"]["s3"]
    empty_bucket(info, info["buckets"]["offsite"])
    return config
