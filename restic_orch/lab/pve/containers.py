"""Container config/state access with PVE's lock semantics and error texts."""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

from . import guestconf, layout, pctconf
from .errors import TaskError

_CONFIGS = guestconf.GuestConfigs("CT", layout.ct_dir, "pct.conf", "lxc", pctconf.parse, pctconf.render)
config_lock = guestconf.config_lock
conf_path, cfs_path, exists = _CONFIGS.conf_path, _CONFIGS.cfs_path, _CONFIGS.exists
load_text, load, write, update = _CONFIGS.load_text, _CONFIGS.load, _CONFIGS.write, _CONFIGS.update
check_lock, set_lock, remove_lock = _CONFIGS.check_lock, _CONFIGS.set_lock, _CONFIGS.remove_lock
state_path, read_state, is_running = _CONFIGS.state_path, _CONFIGS.read_state, _CONFIGS.is_running


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
