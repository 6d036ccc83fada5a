"""Storage config lookups and volume listings with PVE::Storage's texts and shapes."""

from __future__ import annotations

import os
import re
import shutil
import time
from pathlib import Path
from typing import Any

from . import containers, layout, pctconf
from .archive import ARCHIVE_RE
from .errors import TaskError


def config(root: Path, sid: str) -> dict[str, Any]:
    scfg = layout.storages(root).get(sid)
    if scfg is None:
        raise TaskError(f"storage '{sid}' does not exist")
    return scfg


def api_config(root: Path, sid: str, scfg: dict[str, Any]) -> dict[str, Any]:
    """One entry of GET /storage: the storage.cfg section as PVE returns it."""
    res: dict[str, Any] = {"storage": sid, "type": scfg["type"],
                           "content": ",".join(sorted(layout.content_set(scfg))),
                           "digest": pctconf.digest(repr(sorted(layout.storages(root).items())))}
    path = str(layout.storage_path(root, scfg))
    if scfg["type"] == "dir":
        res["path"] = path
        res["shared"] = 0
        if scfg.get("content-dirs"):
            # pve-storage's API decodes the property string: GET /storage returns an object
            res["content-dirs"] = {k.strip(): v.strip() for k, _, v in
                                   (i.partition("=") for i in str(scfg["content-dirs"]).split(",")) if v}
    elif scfg["type"] == "zfspool":
        res["pool"] = scfg.get("pool", "rpool/data")
        res["mountpoint"] = path  # a real zfspool option: where its datasets are mounted
        res["sparse"] = int(scfg.get("sparse", 0))
    if scfg.get("prune-backups"):
        res["prune-backups"] = scfg["prune-backups"]
    return res


def parse_volume_id(volid: str) -> tuple[str, str]:
    m = re.match(r"^([a-z][a-z0-9\-_.]*[a-z0-9]):(.+)$", volid, re.IGNORECASE)
    if not m:
        raise TaskError(f"unable to parse volume ID '{volid}'")
    return m.group(1), m.group(2)


def parse_volname(root: Path, volid: str) -> tuple[str, str, int | None]:
    """(vtype, volname, owner vmid) for volumes of the fake's storages."""
    sid, volname = parse_volume_id(volid)
    scfg = config(root, sid)
    if scfg["type"] == "dir":
        m = re.match(r"^backup/([^/]+)$", volname)
        if m:
            owner = re.match(r"^vzdump-(openvz|lxc|qemu)-(\d+)-.+", m.group(1))
            return "backup", volname, int(owner.group(2)) if owner else None
        for vtype in ("iso", "vztmpl", "snippets", "import"):
            if volname.startswith(vtype + "/"):
                return vtype, volname, None
        m = re.match(r"^(\d+)/((base|subvol|vm)-(\d+)-\S+)$", volname)
        if m:
            return ("rootdir" if m.group(3) == "subvol" else "images"), volname, int(m.group(1))
        raise TaskError(f"unable to parse directory volume name '{volname}'")
    m = re.match(r"^((base|subvol|vm)-(\d+)-\S+)$", volname)
    if m:
        return ("rootdir" if m.group(2) == "subvol" else "images"), volname, int(m.group(3))
    raise TaskError(f"unable to parse zfs volume name '{volname}'")


def backup_path(root: Path, volid: str) -> Path:
    sid, volname = parse_volume_id(volid)
    return layout.backup_dir(root, config(root, sid)) / volname.split("/", 1)[1]


def archive_info(name: str) -> dict[str, Any] | None:
    m = ARCHIVE_RE.match(name)
    if not m:
        return None
    y, mo, d, h, mi, s = (int(m.group(i)) for i in range(3, 9))
    # PVE uses timelocal(): the name carries local time.
    ctime = int(time.mktime((y, mo, d, h, mi, s, 0, 0, -1)))
    fmt = m.group(9)
    return {"type": m.group(1), "vmid": int(m.group(2)), "ctime": ctime, "format": fmt,
            "logfilename": name[: m.end(8)] + ".log"}


def list_backups(root: Path, sid: str, vmid: int | None = None) -> list[dict[str, Any]]:
    scfg = config(root, sid)
    dump = layout.backup_dir(root, scfg)
    res = []
    if not dump.is_dir():
        return res
    for path in dump.iterdir():
        m = re.match(r"^(.+\.(tgz|(?:tar|vma)(?:\.(?:zst|gz|lzo|bz2|xz))?))$", path.name)
        if not m or not path.is_file():
            continue
        if vmid is not None and not re.search(rf"\S+-{vmid}-\S+", path.name):
            continue
        info: dict[str, Any] = {"volid": f"{sid}:backup/{path.name}", "format": m.group(2), "content": "backup"}
        ainfo = archive_info(path.name)
        if ainfo:
            info["ctime"] = ainfo["ctime"]
        info["subtype"] = ainfo["type"] if ainfo else "unknown"
        vm = re.search(rf"-([1-9][0-9]{{2,8}})-[^/]+\.{re.escape(m.group(2))}$", path.name)
        if vmid is not None or vm:
            info["vmid"] = vmid if vmid is not None else int(vm.group(1))  # type: ignore[union-attr]
        notes = path.with_name(path.name + ".notes")
        if notes.is_file():
            first = notes.read_text(errors="replace").split("\n", 1)[0]
            info["notes"] = first
        if path.with_name(path.name + ".protected").exists():
            info["protected"] = 1
        info["size"] = path.stat().st_size
        res.append(info)
    return res


def list_volumes(root: Path, sid: str, content: str | None, vmid: int | None) -> list[dict[str, Any]]:
    """GET .../storage/{storage}/content: only content types the storage has enabled."""
    scfg = config(root, sid)
    enabled = layout.content_set(scfg)
    wanted = [content] if content else ["rootdir", "images", "vztmpl", "iso", "backup"]
    res: list[dict[str, Any]] = []
    for ct in wanted:
        if ct not in enabled:
            continue
        if ct == "backup":
            res.extend(list_backups(root, sid, vmid))
        elif ct in ("vztmpl", "iso"):
            sub = "template/cache" if ct == "vztmpl" else "template/iso"
            base = layout.storage_path(root, scfg) / sub
            for path in sorted(base.glob("*")) if base.is_dir() else []:
                fmt = "iso" if ct == "iso" else "t" + path.name.rsplit(".tar.", 1)[-1]
                res.append({"volid": f"{sid}:{ct}/{path.name}", "format": fmt, "content": ct,
                            "size": path.stat().st_size, "ctime": int(path.stat().st_mtime)})
        elif ct == "rootdir":
            res.extend(_subvols(root, sid, vmid))
        elif ct == "images":
            from .qemu import list_images  # qemu builds on this module

            res.extend(list_images(root, sid, vmid))
    return sorted(res, key=lambda v: v["volid"].lower())


def _subvols(root: Path, sid: str, vmid: int | None) -> list[dict[str, Any]]:
    node = layout.load_node(root)["node"]
    res = []
    for ct in layout.list_vmids(root):
        if vmid is not None and ct != vmid:
            continue
        mp = containers.rootfs_volume(containers.load(root, ct, node))
        if containers.volume_storage(mp.get("volume", "")) != sid:
            continue
        res.append({"volid": mp["volume"], "format": "subvol", "content": "rootdir", "vmid": ct,
                    "size": mp.get("size", 0), "used": containers.disk_usage(layout.rootfs_dir(root, ct)),
                    "ctime": int(os.stat(layout.rootfs_dir(root, ct)).st_mtime)})
    return res


def status(root: Path, sid: str, scfg: dict[str, Any]) -> dict[str, Any]:
    path = layout.storage_path(root, scfg)
    usage = shutil.disk_usage(path if path.exists() else root)
    return {"type": scfg["type"], "content": ",".join(sorted(layout.content_set(scfg))), "active": 1,
            "enabled": 1, "shared": 0, "total": usage.total, "used": usage.total - usage.free,
            "avail": usage.free}
