"""Lay out a fake node on disk, and small helpers for tests (pct-like actions)."""

from __future__ import annotations

import os
import random
import shutil
import uuid
from pathlib import Path
from typing import Any

from . import containers as ctmod
from . import layout, pctconf
from .rootfs import write_tree
from .rootfs_profiles import build_tree

DEFAULT_CONTAINERS: tuple[dict[str, Any], ...] = (
    {"vmid": 101, "hostname": "proxy", "cores": 1, "memory": 512},
    {"vmid": 102, "hostname": "database", "cores": 2, "memory": 2048},
    {"vmid": 103, "hostname": "monitoring", "cores": 2, "memory": 1024},
    {"vmid": 104, "hostname": "apps", "cores": 2, "memory": 1024},
)

DEFAULT_STORAGES: dict[str, dict[str, Any]] = {
    # Like a stock PVE install: 'local' is a dir storage that cannot hold container volumes.
    "local": {"type": "dir", "path": "storage/local", "content": "backup,iso,vztmpl"},
    "local-zfs": {"type": "zfspool", "path": "storage/local-zfs", "content": "images,rootdir",
                  "pool": "rpool/data", "sparse": 1},
}


def _mac(rng: random.Random) -> str:
    # BC:24:11 is the OUI PVE uses for generated container MAC addresses.
    return "BC:24:11:" + ":".join(f"{rng.randrange(256):02X}" for _ in range(3))


def container_conf(ct: dict[str, Any], storages: dict[str, dict[str, Any]], seed: int) -> dict[str, Any]:
    vmid = int(ct["vmid"])
    storage = ct.get("storage", "local-zfs")
    scfg = storages[storage]
    volname = f"subvol-{vmid}-disk-0" if scfg["type"] != "dir" else f"{vmid}/subvol-{vmid}-disk-0.subvol"
    rng = random.Random(f"mac:{seed}:{vmid}")
    conf: dict[str, Any] = {
        "arch": "amd64",
        "cores": str(ct.get("cores", 1)),
        "hostname": ct.get("hostname", f"CT{vmid}"),
        "memory": str(ct.get("memory", 512)),
        "swap": str(ct.get("swap", 512)),
        "net0": f"name=eth0,bridge=vmbr0,firewall=1,gw=10.0.0.1,hwaddr={_mac(rng)},"
                f"ip=10.0.0.{vmid % 200 + 10}/24,type=veth",
        "onboot": str(ct.get("onboot", 1)),
        "ostype": ct.get("ostype", "debian"),
        "rootfs": f"{storage}:{volname},size={ct.get('disk_size', '8G')}",
        "unprivileged": str(ct.get("unprivileged", 1)),
    }
    for key in ("tags", "lock", "description", "protection"):
        if key in ct:
            conf[key] = str(ct[key])
    return conf


def create_node(root: Path, node: str = "pve1", containers: list[dict[str, Any]] | None = None,
                size_bytes: int = 3 * 1024 * 1024, seed: int = 0) -> None:
    """Create the fake node below root (which may exist but must not hold a node yet).

    containers: dicts with vmid plus optional hostname, storage ('local-zfs'), status
    ('running'), cores, memory, swap, unprivileged (1), onboot (1), ostype, disk_size ('8G'),
    size_bytes (per-container override), profile (proxy|database|monitoring|apps), tags, lock.
    Default: 101 proxy, 102 database, 103 monitoring, 104 apps, all running on local-zfs.
    """
    cts = [dict(c) for c in (containers if containers is not None else DEFAULT_CONTAINERS)]
    root = Path(root)
    if layout.node_file(root).exists():
        raise FileExistsError(f"{root} already holds a fake node")
    root.mkdir(parents=True, exist_ok=True)
    storages = {k: dict(v) for k, v in DEFAULT_STORAGES.items()}
    layout.save_node(root, {
        "node": node,
        "storages": storages,
        "tokens": {layout.TOKEN_ID: {"secret": str(uuid.uuid4()), "privsep": 0}},
    })
    for scfg in storages.values():
        base = layout.storage_path(root, scfg)
        base.mkdir(parents=True, exist_ok=True)
        if scfg["type"] == "dir":
            for sub in ("dump", "template/cache", "template/iso", "images", "private"):
                (base / sub).mkdir(parents=True, exist_ok=True)
    layout.tasks_dir(root).mkdir(exist_ok=True)
    layout.run_dir(root).mkdir(exist_ok=True)
    owners = os.geteuid() == 0
    for ct in cts:
        add_container(root, ct, size_bytes=int(ct.get("size_bytes", size_bytes)), seed=seed, owners=owners)


def add_container(root: Path, ct: dict[str, Any], size_bytes: int, seed: int = 0, owners: bool | None = None) -> None:
    """Add one container (config, state, generated rootfs) to an existing fake node."""
    vmid = int(ct["vmid"])
    if ctmod.exists(root, vmid):
        raise FileExistsError(f"CT {vmid} already exists")
    conf = container_conf(ct, layout.storages(root), seed)
    tree = build_tree(conf["hostname"], vmid, size_bytes, seed, ct.get("profile"))
    if owners is None:
        owners = os.geteuid() == 0
    # Unprivileged containers own their files as host uid 100000+n, like real PVE.
    shift = (100000 if conf["unprivileged"] == "1" else 0) if owners else None
    write_tree(layout.rootfs_dir(root, vmid), tree, shift)
    ctmod.write(root, vmid, conf)
    ctmod.set_running(root, vmid, ct.get("status", "running") == "running")


def unlock(root: Path, vmid: int) -> None:
    """What `pct unlock <vmid>` does: drop any config lock (e.g. after a crashed backup)."""
    node = layout.load_node(root)["node"]

    def _drop(conf: dict[str, Any]) -> None:
        conf.pop("lock", None)

    ctmod.update(Path(root), vmid, node, _drop)


def set_lock(root: Path, vmid: int, lock: str) -> None:
    """Force a config lock, e.g. to simulate the leftover of a crashed backup."""
    node = layout.load_node(root)["node"]

    def _set(conf: dict[str, Any]) -> None:
        conf["lock"] = lock

    ctmod.update(Path(root), vmid, node, _set)


def read_config(root: Path, vmid: int) -> dict[str, Any]:
    """The container config as a dict of strings (pct config)."""
    return pctconf.parse(ctmod.conf_path(Path(root), vmid).read_text())


def remove_node(root: Path) -> None:
    shutil.rmtree(root)
