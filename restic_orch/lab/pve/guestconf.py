"""What a container's and a VM's config have in common: where it lives, PVE::AbstractConfig's load/lock
handling and the fake's run state file. containers.py and qemu.py each bind one `GuestConfigs`."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import layout
from .errors import TaskError

_locks: dict[tuple[str, int], threading.RLock] = {}
_locks_guard = threading.Lock()


def config_lock(root: Path, vmid: int) -> threading.RLock:
    """Per-guest lock standing in for PVE's lock_config flock (within this server); one table for both types,
    VMIDs being unique across them."""
    key = (str(root), vmid)
    with _locks_guard:
        return _locks.setdefault(key, threading.RLock())


@dataclass(frozen=True)
class GuestConfigs:
    """One guest type's configs: `noun` as PVE says it (CT, VM), its directory, file name and cfs folder."""

    noun: str
    guest_dir: Callable[[Path, int], Path]
    file_name: str
    cfs_folder: str
    parse: Callable[[str], dict[str, Any]]
    render: Callable[[dict[str, Any]], str]

    def conf_path(self, root: Path, vmid: int) -> Path:
        return self.guest_dir(root, vmid) / self.file_name

    def cfs_path(self, node: str, vmid: int) -> str:
        return f"nodes/{node}/{self.cfs_folder}/{vmid}.conf"

    def exists(self, root: Path, vmid: int) -> bool:
        return self.conf_path(root, vmid).is_file()

    def load_text(self, root: Path, vmid: int, node: str) -> str:
        try:
            return self.conf_path(root, vmid).read_text()
        except FileNotFoundError:
            # PVE::AbstractConfig->load_config
            raise TaskError(f"Configuration file '{self.cfs_path(node, vmid)}' does not exist") from None

    def load(self, root: Path, vmid: int, node: str) -> dict[str, Any]:
        return self.parse(self.load_text(root, vmid, node))

    def write(self, root: Path, vmid: int, conf: dict[str, Any]) -> None:
        self.guest_dir(root, vmid).mkdir(parents=True, exist_ok=True)
        layout.write_atomic(self.conf_path(root, vmid), self.render(conf))

    def update(self, root: Path, vmid: int, node: str, fn: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
        with config_lock(root, vmid):
            conf = self.load(root, vmid, node)
            fn(conf)
            self.write(root, vmid, conf)
            return conf

    def check_lock(self, conf: dict[str, Any]) -> None:
        """PVE::AbstractConfig::check_lock: 'CT is locked (backup)', 'VM is locked (create)'."""
        if conf.get("lock"):
            raise TaskError(f"{self.noun} is locked ({conf['lock']})")

    def set_lock(self, root: Path, vmid: int, node: str, lock: str) -> None:
        def _set(conf: dict[str, Any]) -> None:
            self.check_lock(conf)
            conf["lock"] = lock

        self.update(root, vmid, node, _set)

    def remove_lock(self, root: Path, vmid: int, node: str, lock: str | None = None) -> None:
        """PVE::AbstractConfig::remove_lock, with its error texts."""
        def _remove(conf: dict[str, Any]) -> None:
            if not conf.get("lock"):
                what = f"'{lock}' " if lock else "any"
                raise TaskError(f"no lock found trying to remove {what}lock")
            if lock and conf["lock"] != lock:
                raise TaskError(f"found lock '{conf['lock']}' trying to remove '{lock}' lock")
            del conf["lock"]

        self.update(root, vmid, node, _remove)

    def state_path(self, root: Path, vmid: int) -> Path:
        return self.guest_dir(root, vmid) / "state.json"

    def read_state(self, root: Path, vmid: int) -> dict[str, Any]:
        """The fake's run state of a guest (a missing or unreadable file: stopped)."""
        try:
            return json.loads(self.state_path(root, vmid).read_text())
        except (FileNotFoundError, ValueError):
            return {"status": "stopped"}

    def is_running(self, root: Path, vmid: int) -> bool:
        return self.read_state(root, vmid).get("status") == "running"
