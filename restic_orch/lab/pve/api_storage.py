"""/nodes/{node}/storage...: storage list, status, content listing and volume actions."""

from __future__ import annotations

import time
from typing import Any

from . import layout, storage
from .app import Ctx, Perm, Router
from .errors import ApiError, ParamError, TaskError, die
from .schema import BOOL, NODE, STORAGE, STORAGE_OPT, VMID_OPT, Prop, schema
from .tasks import Worker, read_status
from .vzdump import remove_archive

CONTENT = Prop(format="pve-storage-content")
VOLUME = Prop(optional=False)


def check_volume_access(ctx: Ctx, volid: str, vmid: int | None = None, vtype_wanted: str | None = None) -> None:
    """pve-storage PVE/Storage.pm check_volume_access, for volume IDs (absolute paths are root's only);
    vtype_wanted is its $type: the volume must hold that content."""
    sid, _ = storage.parse_volume_id(volid)
    vtype, _volname, owner = storage.parse_volname(ctx.root, volid)
    if vtype_wanted is not None and vtype != vtype_wanted and (vtype_wanted != "rootdir" or vtype != "images"):
        raise die(f"unable to use volume {volid} - content type needs to be '{vtype_wanted}'")
    if ctx.is_root:
        return
    if ctx.check(f"/storage/{sid}", "Datastore.Allocate", noerr=True):
        return
    if vtype in ("iso", "vztmpl", "import"):
        ctx.check(f"/storage/{sid}", "Datastore.AllocateSpace", "Datastore.Audit", any_=True)
    elif owner is not None and vmid is not None and owner == vmid:
        return
    elif vtype == "backup" and owner:
        ctx.check(f"/storage/{sid}", "Datastore.AllocateSpace")
        ctx.check(f"/vms/{owner}", "VM.Backup")
    elif vtype in ("images", "rootdir") and owner:
        ctx.check(f"/storage/{sid}", "Datastore.Audit")
        ctx.check(f"/vms/{owner}", "VM.Config.Disk")
    else:
        raise die(f"missing privileges to access {volid}")


def _may_use(ctx: Ctx, sid: str) -> bool:
    return ctx.check(f"/storage/{sid}", "Datastore.Audit", "Datastore.AllocateSpace", any_=True, noerr=True)


def node_storages(ctx: Ctx, p: dict[str, Any]) -> Any:
    res = []
    for sid, scfg in sorted(layout.storages(ctx.root).items()):
        if p.get("storage") not in (None, sid) or not _may_use(ctx, sid):
            continue
        if p.get("content") and p["content"] not in layout.content_set(scfg):
            continue
        st = storage.status(ctx.root, sid, scfg)
        st["storage"] = sid
        st["used_fraction"] = st["used"] / st["total"] if st["total"] else 0
        res.append(st)
    return res


def storage_status(ctx: Ctx, p: dict[str, Any]) -> Any:
    return storage.status(ctx.root, p["storage"], storage.config(ctx.root, p["storage"]))


def storage_dir_index(ctx: Ctx, p: dict[str, Any]) -> Any:
    storage.config(ctx.root, p["storage"])
    return [{"subdir": s} for s in ("content", "download-url", "file-restore", "import-metadata",
                                     "prunebackups", "rrd", "rrddata", "status", "upload")]


def content_list(ctx: Ctx, p: dict[str, Any]) -> Any:
    res = []
    for vol in storage.list_volumes(ctx.root, p["storage"], p.get("content"), p.get("vmid")):
        try:  # pve-storage PVE/API2/Storage/Content.pm index: volumes the caller may not access are left out
            check_volume_access(ctx, vol["volid"])
        except ApiError:
            continue
        res.append(vol)
    return res


def real_volume_id(sid: str | None, volume: str) -> tuple[str, str]:
    """Volumes may be given without the 'storage:' prefix when the storage is in the path."""
    if ":" in volume:
        vsid, _ = storage.parse_volume_id(volume)
        if sid and vsid != sid:
            raise ParamError({"volume": f"storage ID mismatch ({vsid} != {sid})\n"})
        return volume, vsid
    if not sid:
        raise ParamError({"volume": "no storage specified - incomplete volume ID"})
    return f"{sid}:{volume}", sid


def _backup_file(ctx: Ctx, p: dict[str, Any]) -> tuple[str, Any]:
    volid, _sid = real_volume_id(p.get("storage"), p["volume"])
    vtype, _volname, _owner = storage.parse_volname(ctx.root, volid)
    if vtype != "backup":
        raise TaskError(f"volume '{volid}' is not a backup - only backups are supported by the fake node")
    return volid, storage.backup_path(ctx.root, volid)


def content_info(ctx: Ctx, p: dict[str, Any]) -> Any:
    volid, path = _backup_file(ctx, p)
    check_volume_access(ctx, volid)
    if not path.is_file():
        raise TaskError(f"volume_size_info on '{volid}' failed - no format")
    info = storage.archive_info(path.name)
    res: dict[str, Any] = {"path": str(path), "size": path.stat().st_size, "used": path.stat().st_size,
                           "format": info["format"] if info else "raw"}
    notes = path.with_name(path.name + ".notes")
    if notes.is_file():
        res["notes"] = notes.read_text()
    res["protected"] = 1 if path.with_name(path.name + ".protected").exists() else 0
    return res


def content_update(ctx: Ctx, p: dict[str, Any]) -> Any:
    volid, path = _backup_file(ctx, p)
    check_volume_access(ctx, volid)
    if "notes" in p:
        notes = path.with_name(path.name + ".notes")
        if p["notes"]:
            notes.write_text(p["notes"])
        else:
            notes.unlink(missing_ok=True)
    if "protected" in p:
        flag = path.with_name(path.name + ".protected")
        if p["protected"]:
            flag.touch()
        else:
            flag.unlink(missing_ok=True)
    return None


def content_delete(ctx: Ctx, p: dict[str, Any]) -> Any:
    """Deleting a volume is an 'imgdel' task (PVE 7.x+); with 'delay' wait for it briefly."""
    volid, path = _backup_file(ctx, p)
    vtype, _volname, owner = storage.parse_volname(ctx.root, volid)
    sid = volid.split(":", 1)[0]
    # pve-storage PVE/API2/Storage/Content.pm delete
    if vtype == "backup" and owner:
        ctx.check(f"/storage/{sid}", "Datastore.AllocateSpace")
        ctx.check(f"/vms/{owner}", "VM.Backup")
    else:
        ctx.check(f"/storage/{sid}", "Datastore.Allocate")

    def worker(w: Worker) -> None:
        remove_archive(path)
        w.print(f"Removed volume '{volid}'")

    upid = ctx.tasks.spawn("imgdel", f"{owner}@{sid}" if owner else sid, ctx.user, worker)
    if p.get("delay"):
        end = time.monotonic() + p["delay"]
        while ctx.tasks.is_running(upid) and time.monotonic() < end:
            time.sleep(0.05)
        if not ctx.tasks.is_running(upid):
            from .upid import decode

            status = read_status(ctx.tasks.logfile(decode(upid)))  # type: ignore[arg-type]
            if status == "OK" or status.startswith("WARNINGS"):
                return None
            raise TaskError(status)
    return upid


def register(router: Router) -> None:
    # pve-storage PVE/API2/Storage/Status.pm and Content.pm `permissions` blocks
    use = Perm.check("/storage/{storage}", "Datastore.Audit", "Datastore.AllocateSpace", any_=True)
    router.add("GET", "/nodes/{node}/storage", schema({
        "node": NODE, "content": Prop(format="pve-storage-content-list"), "enabled": BOOL, "format": BOOL,
        "storage": STORAGE_OPT, "target": Prop(format="pve-node"),
    }), node_storages, Perm.all())
    base = "/nodes/{node}/storage/{storage}"
    router.add("GET", base, schema({"node": NODE, "storage": STORAGE}), storage_dir_index, use)
    router.add("GET", f"{base}/status", schema({"node": NODE, "storage": STORAGE}), storage_status, use)
    router.add("GET", f"{base}/content", schema({"node": NODE, "storage": STORAGE, "content": CONTENT,
                                                  "vmid": VMID_OPT}), content_list, use)
    vol = {"node": NODE, "storage": STORAGE_OPT, "volume": VOLUME}
    router.add("GET", f"{base}/content/{{volume}}", schema(vol), content_info, Perm.custom())
    router.add("PUT", f"{base}/content/{{volume}}", schema({**vol, "notes": Prop(), "protected": BOOL}),
               content_update, Perm.custom())
    router.add("DELETE", f"{base}/content/{{volume}}", schema({
        **vol, "delay": Prop(type="integer", minimum=1, maximum=30)}), content_delete, Perm.custom())
