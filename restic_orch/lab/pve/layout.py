"""Where the fake node keeps its state under the root directory R, and how to read it.

R/node.json            node name, storages, API tokens
R/faults.json          optional fault switches, re-read on every use
R/lxc/<vmid>/pct.conf  container config in PVE's own text format
R/lxc/<vmid>/state.json runtime state (running/stopped, start time)
R/lxc/<vmid>/rootfs/   the container's root filesystem
R/qemu/<vmid>/qemu-server.conf, state.json   a QEMU guest's config and runtime state
R/storage/<id>/<volname>  a QEMU guest's raw disk image (zfspool; dir storages: images/<vmid>/<name>.raw)
R/storage/<id>/        storage directories (dir storages keep backups in dump/)
R/tasks/               task logs and the finished-task index, like /var/log/pve/tasks
R/run/vzdump.lock      the node-global vzdump lock (flock)
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

TOKEN_USER = "backup@pve"  # noqa: S105 - a user id, not a secret
TOKEN_NAME = "restic-orch"  # noqa: S105 - a token id, not a secret
TOKEN_ID = f"{TOKEN_USER}!{TOKEN_NAME}"

# Storage types whose volumes can be snapshotted for a container (vzdump 'snapshot' mode).
SNAPSHOT_STORAGE_TYPES = frozenset({"zfspool", "lvmthin", "rbd", "btrfs"})

FAULT_KEYS = frozenset({
    "vzdump_fail", "global_lock_held", "task_delay_seconds", "suspend_freeze_seconds", "snapshot_freeze_seconds",
    "restore_fail", "minute_seconds", "auth_delay_seconds",
})


def node_file(root: Path) -> Path:
    return Path(root) / "node.json"


def load_node(root: Path) -> dict[str, Any]:
    return json.loads(node_file(root).read_text())


def save_node(root: Path, data: dict[str, Any]) -> None:
    write_atomic(node_file(root), json.dumps(data, indent=2, sort_keys=True) + "\n")


def write_atomic(path: Path, text: str) -> None:
    # Readers in other threads or processes must never see a half-written file.
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def read_faults(root: Path) -> dict[str, Any]:
    """Fault switches; read on every request so a test in another process can flip them."""
    try:
        data = json.loads((Path(root) / "faults.json").read_text())
    except (FileNotFoundError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def write_faults(root: Path, **faults: Any) -> None:
    """Replace faults.json (unknown keys are rejected to catch typos in tests)."""
    unknown = set(faults) - FAULT_KEYS
    if unknown:
        raise ValueError(f"unknown fault keys: {sorted(unknown)}")
    write_atomic(Path(root) / "faults.json", json.dumps(faults, indent=2, sort_keys=True) + "\n")


def storages(root: Path) -> dict[str, dict[str, Any]]:
    return load_node(root)["storages"]


def storage_path(root: Path, scfg: dict[str, Any]) -> Path:
    path = Path(scfg["path"])
    return path if path.is_absolute() else root / path


def backup_dir(root: Path, scfg: dict[str, Any]) -> Path:
    """pve-storage Plugin.pm get_subdir: <path>/dump, or <path>/<dir> with content-dirs 'backup=<dir>'."""
    subdir = "dump"
    for item in str(scfg.get("content-dirs", "")).split(","):
        vtype, _, value = item.partition("=")
        if vtype.strip() == "backup" and value.strip():
            subdir = value.strip().lstrip("/")
    return storage_path(Path(root), scfg) / subdir


def dump_dir(root: Path, storage: str = "local") -> Path:
    """The backup directory of a dir storage (PVE: <path>/dump unless content-dirs overrides it)."""
    return backup_dir(Path(root), storages(root)[storage])


def ct_dir(root: Path, vmid: int) -> Path:
    return Path(root) / "lxc" / str(vmid)


def rootfs_dir(root: Path, vmid: int) -> Path:
    return ct_dir(root, vmid) / "rootfs"


def tasks_dir(root: Path) -> Path:
    return root / "tasks"


def run_dir(root: Path) -> Path:
    return root / "run"


def list_vmids(root: Path) -> list[int]:
    base = root / "lxc"
    if not base.is_dir():
        return []
    return sorted(int(p.name) for p in base.iterdir() if p.name.isdigit() and (p / "pct.conf").is_file())


def qemu_dir(root: Path, vmid: int) -> Path:
    return Path(root) / "qemu" / str(vmid)


def list_qemu_vmids(root: Path) -> list[int]:
    base = Path(root) / "qemu"
    if not base.is_dir():
        return []
    return sorted(int(p.name) for p in base.iterdir() if p.name.isdigit() and (p / "qemu-server.conf").is_file())


def list_guest_vmids(root: Path) -> list[int]:
    """Every guest of the node, containers and QEMU VMs (PVE::Cluster::get_vmlist's ids)."""
    return sorted(set(list_vmids(root)) | set(list_qemu_vmids(root)))


def content_set(scfg: dict[str, Any]) -> set[str]:
    return {c for c in str(scfg.get("content", "")).split(",") if c}


def token_secret(root: Path, token_id: str = TOKEN_ID) -> str:
    """The secret of an API token of the fake node (default: backup@pve!restic-orch)."""
    return load_node(root)["tokens"][token_id]["secret"]
