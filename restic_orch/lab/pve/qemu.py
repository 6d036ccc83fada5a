"""QEMU guests of the fake node: config and state with qemu-server's lock semantics and texts, and their
raw disk images on the storages (pve-storage's volume names and paths)."""

from __future__ import annotations

import json
import os
import re
import shutil
import time
from pathlib import Path
from typing import Any

from . import guestconf, layout, qmconf, storage
from .errors import TaskError

_CONFIGS = guestconf.GuestConfigs("VM", layout.qemu_dir, "qemu-server.conf", "qemu-server", qmconf.parse,
                                   qmconf.render)
config_lock = guestconf.config_lock
conf_path, cfs_path, exists = _CONFIGS.conf_path, _CONFIGS.cfs_path, _CONFIGS.exists
load_text, load, write, update = _CONFIGS.load_text, _CONFIGS.load, _CONFIGS.write, _CONFIGS.update
check_lock, set_lock, remove_lock = _CONFIGS.check_lock, _CONFIGS.set_lock, _CONFIGS.remove_lock
state_path, read_state, is_running = _CONFIGS.state_path, _CONFIGS.read_state, _CONFIGS.is_running


def set_running(root: Path, vmid: int, running: bool, qmpstatus: str = "running") -> None:
    """qmpstatus: QEMU's run state ('running', 'paused' for suspended or 'prelaunch' for a backup start)."""
    state: dict[str, Any] = {"status": "stopped"}
    if running:
        state = {"status": "running", "qmpstatus": qmpstatus, "started": int(time.time()),
                 "pid": 20000 + vmid * 7 % 40000}
    layout.qemu_dir(root, vmid).mkdir(parents=True, exist_ok=True)
    layout.write_atomic(state_path(root, vmid), json.dumps(state) + "\n")


# -- disk images --------------------------------------------------------------------------------------


def image_path(root: Path, volid: str) -> Path:
    """Where the fake keeps a volume's raw image: <storage>/<volname> (zvol-like) or <storage>/images/..."""
    sid, volname = storage.parse_volume_id(volid)
    scfg = storage.config(root, sid)
    base = layout.storage_path(root, scfg)
    return base / "images" / volname if scfg["type"] == "dir" else base / volname


def new_image_name(root: Path, sid: str, vmid: int) -> str:
    """pve-storage Plugin::find_free_diskname: vm-<vmid>-disk-<n> ('<vmid>/...raw' on dir storages)."""
    scfg = storage.config(root, sid)
    for n in range(1000):
        name = f"vm-{vmid}-disk-{n}"
        volname = f"{vmid}/{name}.raw" if scfg["type"] == "dir" else name
        if not image_path(root, f"{sid}:{volname}").exists():
            return volname
    raise TaskError(f"unable to allocate an image name for VM {vmid} in storage '{sid}'")


def alloc_image(root: Path, sid: str, vmid: int, size_kib: int) -> str:
    """PVE::Storage::vdisk_alloc of a raw image (sparse, zero-filled) of size_kib KiB; returns the volid."""
    volid = f"{sid}:{new_image_name(root, sid, vmid)}"
    path = image_path(root, volid)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as fh:
        fh.truncate(size_kib * 1024)
    return volid


def free_image(root: Path, volid: str) -> None:
    path = image_path(root, volid)
    path.unlink(missing_ok=True)
    if path.parent.name.isdigit() and path.parent.is_dir() and not any(path.parent.iterdir()):
        path.parent.rmdir()


def owned_volumes(root: Path, vmid: int) -> list[str]:
    """Every image on every storage named for vmid (PVE::Storage::vdisk_list with a vmid, 'images')."""
    res = []
    for sid, scfg in layout.storages(root).items():
        if "images" not in layout.content_set(scfg):
            continue
        base = layout.storage_path(root, scfg)
        found = base.glob(f"images/{vmid}/vm-{vmid}-*") if scfg["type"] == "dir" else base.glob(f"vm-{vmid}-*")
        for path in sorted(found):
            rel = path.relative_to(base / "images") if scfg["type"] == "dir" else path.relative_to(base)
            res.append(f"{sid}:{rel}")
    return res


def volume_owner(volid: str) -> int | None:
    m = re.search(r"(?:^|[:/])(?:vm|base)-(\d+)-", volid)
    return int(m.group(1)) if m else None


def list_images(root: Path, sid: str, vmid: int | None) -> list[dict[str, Any]]:
    """GET .../storage/{storage}/content?content=images entries for the VM disks on a storage."""
    res = []
    for guest in layout.list_qemu_vmids(root):
        if vmid is not None and guest != vmid:
            continue
        for volid in owned_volumes(root, guest):
            if storage.parse_volume_id(volid)[0] != sid:
                continue
            path = image_path(root, volid)
            st = path.stat()
            res.append({"volid": volid, "format": "raw", "content": "images", "vmid": guest, "size": st.st_size,
                        "used": st.st_blocks * 512, "ctime": int(st.st_mtime)})
    return res


# -- status -------------------------------------------------------------------------------------------


def bootdisk_size(conf: dict[str, Any]) -> int:
    """PVE::QemuServer::Drive::bootdisk_size: the size of the first boot disk ('boot: order=scsi0;net0')."""
    order = str(conf.get("boot", ""))
    m = re.match(r"^order=(.*)$", order)
    candidates = [d for d in re.split(r"[;,]", m.group(1)) if d] if m else []
    all_drives = dict(qmconf.drives(conf))
    for key in candidates or [k for k, _d in qmconf.drives(conf)]:
        drive = all_drives.get(key)
        if drive and not qmconf.is_cdrom(drive):
            return int(drive.get("size") or 0)
    return 0


def vmstatus(root: Path, vmid: int, node: str) -> dict[str, Any]:
    """One entry of PVE::QemuServer::vmstatus (values for an idle guest)."""
    conf = load(root, vmid, node)
    state = read_state(root, vmid)
    running = state.get("status") == "running"
    cpus = int(conf.get("sockets", 1)) * int(conf.get("cores", 1))
    d: dict[str, Any] = {
        "vmid": vmid, "status": "running" if running else "stopped", "name": conf.get("name", f"VM {vmid}"),
        "cpus": min(cpus, os.cpu_count() or 1), "maxmem": int(conf.get("memory", 512)) * 1024 * 1024,
        "maxdisk": bootdisk_size(conf), "disk": 0, "uptime": 0, "cpu": 0, "mem": 0, "netin": 0, "netout": 0,
        "diskread": 0, "diskwrite": 0,
    }
    if running:
        d["pid"] = int(state.get("pid", 0))
        d["uptime"] = int(time.time()) - int(state.get("started", time.time()))
        d["mem"] = d["maxmem"] // 4
        d["qmpstatus"] = state.get("qmpstatus", "running")
    for key in ("lock", "tags"):
        if conf.get(key):
            d[key] = conf[key]
    if conf.get("template") == "1":
        d["template"] = 1
    return d


def destroy(root: Path, vmid: int, node: str, unreferenced: bool = False) -> None:
    """PVE::QemuServer::destroy_vm: free the images the config references and vmid owns (with
    `unreferenced` every image of vmid), then drop the config."""
    conf = load(root, vmid, node)
    for _key, drive in qmconf.drives(conf) + [(k, qmconf.parse_drive(str(v))) for k, v in conf.items()
                                                if re.fullmatch(r"unused\d+", k)]:
        volid = str(drive.get("file", ""))
        if ":" in volid and not qmconf.is_cdrom(drive) and volume_owner(volid) == vmid:
            free_image(root, volid)
    if unreferenced:
        for volid in owned_volumes(root, vmid):
            free_image(root, volid)
    shutil.rmtree(layout.qemu_dir(root, vmid), ignore_errors=True)
