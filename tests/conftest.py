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
    """Empty local repository, offsite bucket emptied, staging and state cleared: each test starts clean."""
    from restic_orch.lab.s3 import s3_client

    config = load_config(lab["config"])
    for path in (Path(config.repositories.local.url), config.staging_dir, config.state_dir):
        shutil.rmtree(path, ignore_errors=True)
    s3 = s3_client(lab["state"]["services"]["s3"])
    bucket = lab["state"]["services"]["s3"]["buckets"]["offsite"]
    paginator = s3.get_paginator("list_objects_v2")
    for page in paginator.paginate(Bucket=bucket):
        keys = [{"Key": o["Key"]} for o in page.get("Contents", [])]
        if keys:
            s3.delete_objects(Bucket=bucket, Delete={"Objects": keys})
    return config
