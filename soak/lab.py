"""The soak's own simulated homelab (it changes the lab's data every night: never a shared one).

The host runs the configuration `lab up` renders from the Ansible role (append-only offsite: `retention: null`).
The soak also plays the trusted machine of docs/security.md: a configuration holding only the offsite repository
with the admin key and the role's 30-day offsite policy, whose `restic-orch forget` runs after each night.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from proxmoxer import ProxmoxAPI

from restic_orch.config import Config, load_config
from restic_orch.lab import manager
from restic_orch.repos import open_all
from restic_orch.restic import Repo

OFFSITE_POLICY = {"keep_within_daily": "30d"}  # the role's offsite policy, run by the trusted machine


@dataclass
class Lab:
    dir: Path
    config_path: Path
    trusted_path: Path
    state: dict[str, Any]

    @property
    def config(self) -> Config:
        return load_config(self.config_path)

    def services(self) -> dict[str, Any]:
        return manager.load(self.dir)["services"]

    def repos(self) -> dict[str, Repo]:
        return open_all(self.config)

    @property
    def pve_root(self) -> Path:
        return Path(self.services()["pve"]["root"])

    def pve_api(self) -> ProxmoxAPI:
        info = self.services()["pve"]
        token = Path(info["token_file"]).read_text().strip()
        return ProxmoxAPI(info["host"], port=info["port"], user="backup@pve", token_name="restic-orch",  # noqa: S106
                          token_value=token, verify_ssl=False, backend="https", timeout=60)

    def restart(self, name: str) -> None:
        """Start a stopped service again, on its port, with its data (manager.up rewrites the same config)."""
        manager.up(self.dir, services=(name,))


def new_dir() -> Path:
    # postgres and mariadb run as their own users: the lab must sit under traversable directories
    path = Path(tempfile.mkdtemp(prefix="restic-orch-soak-", dir="/tmp"))
    os.chmod(path, 0o755)  # noqa: S103
    return path


def up(lab_dir: Path) -> Lab:
    state = manager.up(lab_dir)
    config_path = Path(state["config"])
    return Lab(Path(lab_dir), config_path, write_trusted(lab_dir, config_path, state), state)


def down(lab: Lab, remove: bool) -> None:
    manager.down(lab.dir)
    if remove:
        shutil.rmtree(lab.dir, ignore_errors=True)


def write_trusted(lab_dir: Path, config_path: Path, state: dict[str, Any]) -> Path:
    """The trusted machine's configuration: the offsite repository alone, the admin key, the 30-day policy."""
    data = yaml.safe_load(config_path.read_text())
    offsite = dict(data["repositories"]["offsite"], env_file=state["services"]["s3"]["admin_env_file"],
                   retention=OFFSITE_POLICY, prune_every_days=0)
    trusted = Path(lab_dir) / "trusted"
    path = Path(lab_dir) / "config-trusted.yml"
    path.write_text(yaml.safe_dump({
        "host": data["host"], "staging_dir": str(trusted / "staging"), "state_dir": str(trusted / "state"),
        "log_dir": str(trusted / "log"), "repositories": {"offsite": offsite},
        "limits": {"lock_wait_seconds": data["limits"]["lock_wait_seconds"]}}, sort_keys=False))
    os.chmod(path, 0o600)
    return path
