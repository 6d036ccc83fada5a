"""Shared fixtures: the whole simulated homelab, started once per session from the real binaries."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from restic_orch.config import load_config
from restic_orch.lab import manager

CLI = [sys.executable, "-m", "restic_orch.cli"]


def restic_orch(config: Path | str | None, *args: str, check: bool = False, timeout: float = 600,
                env: dict | None = None, input: str | None = None) -> subprocess.CompletedProcess:
    """Run the real CLI in a child process, as cron or a user would."""
    argv = CLI + (["--config", str(config)] if config else []) + list(args)
    result = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=env, input=input)
    if check and result.returncode != 0:
        raise AssertionError(f"{argv} exited {result.returncode}\nstdout:{result.stdout}\nstderr:{result.stderr}")
    return result


def run_json(config: Path, *args: str, expect: int | tuple[int, ...] = 0, timeout: float = 600) -> dict:
    result = restic_orch(config, "--json", *args, timeout=timeout)
    codes = (expect,) if isinstance(expect, int) else expect
    assert result.returncode in codes, f"exit {result.returncode}\n{result.stdout}\n{result.stderr}"
    return json.loads(result.stdout)


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
