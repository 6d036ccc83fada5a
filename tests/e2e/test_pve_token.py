"""The documented PVE token, seen from the CLI: the permission preflight and a night without a privilege."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from restic_orch.lab.pve.pveum import doc_commands
from restic_orch.lab.pve.pveum import run as pveum
from tests.clihelp import restic_orch, run_json

pytestmark = pytest.mark.e2e


def _backup_privs() -> list[str]:
    return next(a[a.index("--privs") + 1].split(",") for a in doc_commands()
                if a[:3] == ["role", "add", "ResticOrchBackup"])


def _vzdump_tasks(root: Path) -> int:
    index = root / "tasks" / "index"
    return sum(":vzdump:" in line for line in index.read_text().splitlines()) if index.exists() else 0


def test_check_permissions_names_the_missing_privilege_and_the_night_fails_fast(lab, fresh_repos):
    root = Path(lab["state"]["services"]["pve"]["root"])
    ok = restic_orch(lab["config"], "check", "--permissions")
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "holds the rights" in ok.stdout
    privs = _backup_privs()
    pveum(root, ["role", "modify", "ResticOrchBackup", "--privs", ",".join(p for p in privs if p != "VM.Backup")])
    try:
        lacking = restic_orch(lab["config"], "--json", "check", "--permissions")
        assert lacking.returncode == 2, lacking.stdout + lacking.stderr
        report = json.loads(lacking.stdout)
        rights = {m["right"] for m in report["missing"]}
        assert rights == {"VM.Backup on /vms"}, rights  # the lab backs up `vmids: all`
        assert report["missing"][0]["fix"].startswith("pveum role modify ResticOrchBackup --append 1 --privs VM.Backup")
        human = restic_orch(lab["config"], "check", "--permissions").stdout
        assert "missing VM.Backup on /vms" in human and "pveum acl modify /vms" in human
        tasks_before = _vzdump_tasks(root)
        night = run_json(lab["config"], "backup", "--only", "proxmox", expect=1)
        failure = next(f for f in night["failures"] if f["kind"] == "proxmox")
        assert {f["kind"] for f in night["failures"]} == {"proxmox", "run"}  # run: nothing left to back up
        assert failure["component"] == "ct:*" and "missing VM.Backup on /vms" in failure["message"]
        assert _vzdump_tasks(root) == tasks_before  # failed fast: no vzdump ran
    finally:
        pveum(root, ["role", "modify", "ResticOrchBackup", "--privs", ",".join(privs)])
    assert restic_orch(lab["config"], "check", "--permissions").returncode == 0
