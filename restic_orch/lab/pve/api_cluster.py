"""/version, /nodes, /cluster/resources and /storage."""

from __future__ import annotations

import os
import shutil
import time
from typing import Any

from . import containers, layout, qemu, storage
from .app import Ctx, Perm, Router
from .errors import ParamError, TaskError
from .schema import NODE, STORAGE, VMID_OPT, Prop, schema

VERSION = {"version": "8.3.2", "release": "8.3", "repoid": "3e76eec21c4a14a7"}
STORAGE_TYPES = ("btrfs", "cephfs", "cifs", "dir", "esxi", "glusterfs", "iscsi", "iscsidirect", "lvm", "lvmthin",
                 "nfs", "pbs", "rbd", "zfs", "zfspool")


def _meminfo() -> tuple[int, int]:
    try:
        info = dict(line.split(":", 1) for line in open("/proc/meminfo").read().splitlines())
        total = int(info["MemTotal"].split()[0]) * 1024
        return total, total - int(info["MemAvailable"].split()[0]) * 1024
    except (OSError, KeyError, ValueError):
        return 16 * 1024**3, 4 * 1024**3


def node_entry(ctx: Ctx) -> dict[str, Any]:
    total, used = _meminfo()
    disk = shutil.disk_usage(ctx.root)
    return {"id": f"node/{ctx.node}", "type": "node", "node": ctx.node, "status": "online", "level": "",
            "cpu": round(os.getloadavg()[0] / (os.cpu_count() or 1), 4), "maxcpu": os.cpu_count() or 1,
            "mem": used, "maxmem": total, "disk": disk.total - disk.free, "maxdisk": disk.total,
            "uptime": int(time.time() - ctx.started), "ssl_fingerprint": ctx.fingerprint}


def version(ctx: Ctx, p: dict[str, Any]) -> Any:
    return dict(VERSION)


def nodes(ctx: Ctx, p: dict[str, Any]) -> Any:
    entry = node_entry(ctx)
    if not ctx.check(f"/nodes/{ctx.node}", "Sys.Audit", noerr=True):
        # pve-manager PVE/API2/Nodes.pm index + PVE/API2Tools.pm extract_node_stats: no stats without Sys.Audit
        entry = {k: entry[k] for k in ("id", "type", "node", "status", "level", "ssl_fingerprint")}
    return [entry]


def node_index(ctx: Ctx, p: dict[str, Any]) -> Any:
    return [{"name": n} for n in ("lxc", "qemu", "storage", "tasks", "vzdump", "status", "version")]


def nextid(ctx: Ctx, p: dict[str, Any]) -> Any:
    """pve-manager PVE/API2/Cluster.pm nextid: the first free VMID from 100, or assert the given one is free."""
    taken = set(layout.list_guest_vmids(ctx.root))
    if p.get("vmid") is not None:
        if p["vmid"] in taken:
            raise ParamError({"vmid": f"VM {p['vmid']} already exists"})
        return str(p["vmid"])
    for vmid in range(100, 1000 * 1000):
        if vmid not in taken:
            return str(vmid)  # PVE answers the number as a JSON string
    raise TaskError("unable to get any free VMID in range [100, 1000000]")


def resources(ctx: Ctx, p: dict[str, Any]) -> Any:
    kind = p.get("type")
    res: list[dict[str, Any]] = []
    # pve-manager PVE/API2/Cluster.pm resources: each entry only with its audit privilege
    if kind in (None, "vm"):
        cts = set(layout.list_vmids(ctx.root))
        for vmid in layout.list_guest_vmids(ctx.root):
            if not ctx.check(f"/vms/{vmid}", "VM.Audit", noerr=True):
                continue
            vtype = "lxc" if vmid in cts else "qemu"
            st = (containers if vtype == "lxc" else qemu).vmstatus(ctx.root, vmid, ctx.node)
            entry = {"id": f"{vtype}/{vmid}", "type": vtype, "vmid": vmid, "name": st["name"], "node": ctx.node,
                     "status": st["status"], "maxcpu": st["cpus"], "maxmem": st["maxmem"], "maxdisk": st["maxdisk"],
                     "cpu": st["cpu"], "mem": st["mem"], "disk": st["disk"], "uptime": st["uptime"],
                     "netin": 0, "netout": 0, "diskread": 0, "diskwrite": 0, "template": st.get("template", 0)}
            for key in ("lock", "tags"):
                if key in st:
                    entry[key] = st[key]
            res.append(entry)
    if kind in (None, "node"):
        node = node_entry(ctx)
        if not ctx.check(f"/nodes/{ctx.node}", "Sys.Audit", noerr=True):  # listed, without its stats
            node = {k: node[k] for k in ("id", "type", "node", "status", "level", "ssl_fingerprint")}
        node.pop("ssl_fingerprint")
        node["cgroup-mode"] = 2
        res.append(node)
    if kind in (None, "storage"):
        for sid, scfg in sorted(layout.storages(ctx.root).items()):
            if not ctx.check(f"/storage/{sid}", "Datastore.Audit", noerr=True):
                continue
            st = storage.status(ctx.root, sid, scfg)
            res.append({"id": f"storage/{ctx.node}/{sid}", "type": "storage", "storage": sid, "node": ctx.node,
                        "status": "available", "plugintype": scfg["type"], "content": st["content"],
                        "shared": 0, "disk": st["used"], "maxdisk": st["total"]})
    return res


def storage_index(ctx: Ctx, p: dict[str, Any]) -> Any:
    # pve-storage PVE/API2/Storage/Config.pm index: storages the caller may audit or allocate space on
    items = sorted(layout.storages(ctx.root).items())
    return [storage.api_config(ctx.root, sid, s) for sid, s in items if p.get("type") in (None, s["type"])
            and ctx.check(f"/storage/{sid}", "Datastore.Audit", "Datastore.AllocateSpace", any_=True, noerr=True)]


def storage_read(ctx: Ctx, p: dict[str, Any]) -> Any:
    return storage.api_config(ctx.root, p["storage"], storage.config(ctx.root, p["storage"]))


def register(router: Router) -> None:
    router.add("GET", "/version", schema({}), version, Perm.all())
    router.add("GET", "/nodes", schema({}), nodes, Perm.all())
    router.add("GET", "/nodes/{node}", schema({"node": NODE}), node_index, Perm.all())
    router.add("GET", "/cluster/resources", schema({"type": Prop(enum=("vm", "storage", "node", "sdn"))}), resources,
               Perm.all())
    router.add("GET", "/cluster/nextid", schema({"vmid": VMID_OPT}), nextid, Perm.all())
    router.add("GET", "/storage", schema({"type": Prop(enum=STORAGE_TYPES)}), storage_index, Perm.all())
    # pve-storage PVE/API2/Storage/Config.pm read: the whole storage config needs Datastore.Allocate
    router.add("GET", "/storage/{storage}", schema({"storage": STORAGE}), storage_read,
               Perm.check("/storage/{storage}", "Datastore.Allocate"))
