"""`restic-orch lab up|status|down` through the real CLI: every process it starts is gone after down."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

from restic_orch.config import load_config
from restic_orch.lab.procs import pid_alive
from tests.clihelp import restic_orch


def test_lab_up_status_down(tmp_path):
    lab = Path(tempfile.mkdtemp(prefix="restic-orch-labcli-", dir="/tmp"))
    os.chmod(lab, 0o755)  # noqa: S103 - postgres and mysql must traverse it
    try:
        up = restic_orch(None, "--json", "lab", "up", "--dir", str(lab), "--size-mb", "1")
        assert up.returncode == 0, up.stderr
        state = json.loads(up.stdout)
        pids = {name: info["pid"] for name, info in state["services"].items()}
        assert set(pids) == {"s3", "s3proxy", "postgres", "mariadb", "pve"}
        assert all(pid_alive(p) for p in pids.values())
        config = load_config(Path(state["config"]))  # valid, secret files 0600
        assert config.sources.proxmox and config.sources.postgres and config.sources.mysql
        status = restic_orch(None, "--json", "lab", "status", "--dir", str(lab))
        assert status.returncode == 0 and json.loads(status.stdout)["running"]
        again = restic_orch(None, "--json", "lab", "up", "--dir", str(lab))  # idempotent: same processes
        assert {n: i["pid"] for n, i in json.loads(again.stdout)["services"].items()} == pids
    finally:
        down = restic_orch(None, "--json", "lab", "down", "--dir", str(lab))
    assert down.returncode == 0, down.stderr
    assert not any(pid_alive(p) for p in pids.values())
    status = restic_orch(None, "lab", "status", "--dir", str(lab))
    assert status.returncode == 1
