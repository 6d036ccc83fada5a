"""Container config/state access with PVE's lock semantics and error texts."""

from __future__ import annotations

import json
import os
import shutil
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from . import layout, pctconf
from .errors import TaskError

_locks: dict[tuple[str, int], threading.RLock] = {}
_locks_guard = threading.Lock()


def config_lock(root: Path, vmid: int) -> threading.RLock:
    """Per-container lock standing in for PVE's lock_config flock (within this server)."""
    key = (str(root), vmid)
    with _locks_guard:
        return _locks.setdefault(key, threading.RLock())


def conf_path(root: Path, vmid: int) -> Path:
    return layout.ct_dir(root, vmid) / "pct.conf"


def cfs_path(node: str, vmid: int) -> str:
    return f"nodes/{node}/lxc/{vmid}.conf"


def exists(root: Path, vmid: int) -> bool:
    return conf_path(root, vmid).is_file()


def load_text(root: Path, vmid: int, node: str) -> str:
    try:
        return conf_path(root, vmid).read_text()
    except FileNotFoundError:
        raise TaskError(f"Configuration file '{cfs_path(node, vmid)}' does not exist") from None


def load(root: Path, vmid: int, node: str) -> dict[str, Any]:
    return pctconf.parse(load_text(root, vmid, node))


def write(root: Path, vmid: int, conf: dict[str, Any]) -> None:
    layout.ct_dir(root, vmid).mkdir(parents=True, exist_ok=True)
    layout.write_atomic(conf_path(root, vmid), pctconf.render(conf))


def update(root: Path, vmid: int, node: str, fn: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
    with config_lock(root, vmid):
        conf = load(root, vmid, node)
        fn(conf)
        write(root, vmid, conf)
        return conf


def check_lock(conf: dict[str, Any]) -> None:
    """PVE::AbstractConfig::check_lock for containers ('CT is locked (backup)')."""
    if conf.get("lock"):
        raise TaskError(f"CT is locked ({conf['lock']})")


def set_lock(root: Path, vmid: int, node: str, lock: str) -> None:
    def _set(conf: dict[str, Any]) -> None:
        check_lock(conf)
        conf["lock"] = lock

    update(root, vmid, node, _set)


def remove_lock(root: Path, vmid: int, node: str, lock: str | None = None) -> None:
    def _remove(conf: dict[str, Any]) -> None:
        if not conf.get("lock"):
            what = f"'{lock}' " if lock else "any"
            raise TaskError(f"no lock found trying to remove {what}lock")
        if lock and conf["lock"] != lock:
            raise TaskError(f"found lock '{conf['lock']}' trying to remove '{lock}' lock")
        del conf["lock"]

    update(root, vmid, node, _remove)


def state_path(root: Path, vmid: int) -> Path:
    return layout.ct_dir(root, vmid) / "state.json"


def read_state(root: Path, vmid: int) -> dict[str, Any]:
    try:
        return json.loads(state_path(root, vmid).read_text())
    except (FileNotFoundError, ValueError):
        return {"status": "stopped"}


def is_running(root: Path, vmid: int) -> bool:
    return read_state(root, vmid).get("status") == "running"


def set_running(root: Path, vmid: int, running: bool) -> None:
    state: dict[str, Any] = {"status": "stopped"}
    if running:
        # A stable fake init PID per container makes /proc/<pid>/root log lines repeatable.
        state = {"status": "running", "started": int(time.time()), "pid": 10000 + vmid * 7 % 50000}
    layout.ct_dir(root, vmid).mkdir(parents=True, exist_ok=True)
    layout.write_atomic(state_path(root, vmid), json.dumps(state) + "\n")


def rootfs_volume(conf: dict[str, Any]) -> dict[str, Any]:
    return pctconf.parse_mountpoint(conf.get("rootfs", ""))


def volume_storage(volid: str) -> str:
    return volid.split(":", 1)[0]


def new_subvol_name(root: Path, scfg: dict[str, Any], vmid: int, taken: set[str]) -> str:
    """Pick the next free disk name like PVE's find_free_diskname (disk-0, disk-1, ...)."""
    for n in range(1000):
        name = f"subvol-{vmid}-disk-{n}"
        volname = name if scfg["type"] != "dir" else f"{vmid}/{name}.subvol"
        if volname not in taken:
            return volname
    raise TaskError("unable to allocate an image name")


def disk_usage(path: Path) -> int:
    total = 0
    for dirpath, dirnames, filenames in os.walk(path):
        for name in filenames + dirnames:
            try:
                total += os.lstat(os.path.join(dirpath, name)).st_blocks * 512
            except OSError:
                pass
    return total


def vmstatus(root: Path, vmid: int, node: str) -> dict[str, Any]:
    """The per-container hash of PVE::LXC::vmstatus (values for an idle container)."""
    conf = load(root, vmid, node)
    state = read_state(root, vmid)
    running = state.get("status") == "running"
    rootfs = rootfs_volume(conf)
    maxdisk = rootfs.get("size") or 4 * 1024**3
    d: dict[str, Any] = {
        "vmid": vmid,
        "type": "lxc",
        "status": "running" if running else "stopped",
        "name": conf.get("hostname", f"CT{vmid}").replace(" ", ""),
        "cpus": int(conf.get("cores", 0)) or os.cpu_count() or 1,
        "maxmem": int(conf.get("memory", 512)) * 1024 * 1024,
        "maxswap": int(conf.get("swap", 0)) * 1024 * 1024,
        "maxdisk": maxdisk,
        "disk": disk_usage(layout.rootfs_dir(root, vmid)) if running else 0,
        "mem": 0,
        "swap": 0,
        "uptime": int(time.time()) - int(state.get("started", time.time())) if running else 0,
        "cpu": 0,
        "netin": 0,
        "netout": 0,
        "diskread": 0,
        "diskwrite": 0,
    }
    if running:
        d["pid"] = int(state.get("pid", 0))
        d["mem"] = 48 * 1024 * 1024
    if conf.get("tags"):
        d["tags"] = conf["tags"]
    if conf.get("template") == "1":
        d["template"] = 1
    if conf.get("lock"):
        d["lock"] = conf["lock"]
    return d


def destroy(root: Path, vmid: int) -> None:
    shutil.rmtree(layout.ct_dir(root, vmid), ignore_errors=True)
