"""/nodes/{node}/lxc...: list, config, status, power actions, destroy and restore."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from . import containers, layout, pctconf, restore
from .app import Ctx, Perm, Router
from .errors import ParamError, TaskError
from .schema import BOOL, NODE, VMID, Prop, schema
from .tasks import TaskManager, Worker

NV = {"node": NODE, "vmid": VMID}


def _existing(ctx: Ctx, vmid: int) -> dict[str, Any]:
    return containers.load(ctx.root, vmid, ctx.node)


def ct_list(ctx: Ctx, p: dict[str, Any]) -> Any:
    # PVE/API2/LXC.pm vmlist: only the containers the caller has VM.Audit on
    return [containers.vmstatus(ctx.root, vmid, ctx.node) for vmid in layout.list_vmids(ctx.root)
            if ctx.check(f"/vms/{vmid}", "VM.Audit", noerr=True)]


def ct_index(ctx: Ctx, p: dict[str, Any]) -> Any:
    _existing(ctx, p["vmid"])
    return [{"subdir": s} for s in ("config", "pending", "status", "vncproxy", "termproxy", "vncwebsocket",
                                     "spiceproxy", "migrate", "clone", "rrd", "rrddata", "firewall", "snapshot",
                                     "resize", "interfaces")]


def ct_config(ctx: Ctx, p: dict[str, Any]) -> Any:
    text = containers.load_text(ctx.root, p["vmid"], ctx.node)
    if p.get("snapshot"):
        raise TaskError(f"snapshot '{p['snapshot']}' does not exist")
    return pctconf.api_view(pctconf.parse(text), text)


def ct_status_index(ctx: Ctx, p: dict[str, Any]) -> Any:
    _existing(ctx, p["vmid"])
    return [{"subdir": s} for s in ("current", "start", "stop", "shutdown", "reboot", "suspend", "resume")]


def ct_status(ctx: Ctx, p: dict[str, Any]) -> Any:
    _existing(ctx, p["vmid"])
    status = containers.vmstatus(ctx.root, p["vmid"], ctx.node)
    status["ha"] = {"managed": 0}
    return status


def spawn_start(root: Path, node: str, user: str, tasks: TaskManager, vmid: int) -> str:
    def worker(w: Worker) -> None:
        conf = containers.load(root, vmid, node)
        if conf.get("template") == "1":
            raise TaskError("you can't start a CT if it's a template")
        if conf.get("lock") != "mounted":
            containers.check_lock(conf)
        w.sleep(float(layout.read_faults(root).get("task_delay_seconds", 0)))
        containers.set_running(root, vmid, True)

    return tasks.spawn("vzstart", str(vmid), user, worker)


def ct_start(ctx: Ctx, p: dict[str, Any]) -> Any:
    vmid = p["vmid"]
    if p.get("skiplock") and ctx.user != "root@pam":
        raise ParamError({"skiplock": "Only root may use this option."})
    if containers.is_running(ctx.root, vmid):
        raise TaskError(f"CT {vmid} already running")
    return spawn_start(ctx.root, ctx.node, ctx.user, ctx.tasks, vmid)


def _stop(ctx: Ctx, p: dict[str, Any], dtype: str) -> Any:
    vmid = p["vmid"]
    if p.get("skiplock") and ctx.user != "root@pam":
        raise ParamError({"skiplock": "Only root may use this option."})
    if not containers.is_running(ctx.root, vmid):
        raise TaskError(f"CT {vmid} not running")
    root, node = ctx.root, ctx.node

    def worker(w: Worker) -> None:
        conf = containers.load(root, vmid, node)
        if not (p.get("skiplock") or conf.get("lock") == "mounted"):
            containers.check_lock(conf)
        w.sleep(float(layout.read_faults(root).get("task_delay_seconds", 0)))
        containers.set_running(root, vmid, False)

    return ctx.tasks.spawn(dtype, str(vmid), ctx.user, worker)


def ct_stop(ctx: Ctx, p: dict[str, Any]) -> Any:
    return _stop(ctx, p, "vzstop")


def ct_shutdown(ctx: Ctx, p: dict[str, Any]) -> Any:
    return _stop(ctx, p, "vzshutdown")


def ct_destroy(ctx: Ctx, p: dict[str, Any]) -> Any:
    vmid, root, node = p["vmid"], ctx.root, ctx.node

    def early_checks(conf: dict[str, Any]) -> None:
        if conf.get("protection") == "1":
            raise TaskError(f"can't remove CT {vmid} - protection mode enabled")
        containers.check_lock(conf)

    early_checks(_existing(ctx, vmid))
    running_msg = f"unable to destroy CT {vmid} - container is running"
    if not p.get("force") and containers.is_running(root, vmid):
        raise TaskError(running_msg)

    def worker(w: Worker) -> None:
        with containers.config_lock(root, vmid):
            early_checks(containers.load(root, vmid, node))
            if containers.is_running(root, vmid):
                if not p.get("force"):
                    raise TaskError(running_msg)
                w.warn_raw(f"forced to stop CT {vmid} before destroying!")
                containers.set_running(root, vmid, False)
            w.sleep(float(layout.read_faults(root).get("task_delay_seconds", 0)))
            if p.get("purge"):
                w.print(f"purging CT {vmid} from related configurations..")
            containers.destroy(root, vmid)

    return ctx.tasks.spawn("vzdestroy", str(vmid), ctx.user, worker)


def ct_create(ctx: Ctx, p: dict[str, Any]) -> Any:
    return restore.start(ctx, p)


def register(router: Router) -> None:
    # pve-container PVE/API2/LXC.pm and PVE/API2/LXC/Status.pm `permissions` blocks
    audit, power = Perm.check("/vms/{vmid}", "VM.Audit"), Perm.check("/vms/{vmid}", "VM.PowerMgmt")
    base = "/nodes/{node}/lxc"
    router.add("GET", base, schema({"node": NODE}), ct_list, Perm.all())
    router.add("POST", base, restore.SCHEMA, ct_create, Perm.custom())
    router.add("GET", f"{base}/{{vmid}}", schema(NV), ct_index, Perm.all())
    router.add("DELETE", f"{base}/{{vmid}}", schema({**NV, "force": BOOL, "purge": BOOL,
                                                      "destroy-unreferenced-disks": BOOL}), ct_destroy,
               Perm.check("/vms/{vmid}", "VM.Allocate"))
    router.add("GET", f"{base}/{{vmid}}/config", schema({**NV, "current": BOOL, "snapshot": Prop()}), ct_config,
               audit)
    router.add("GET", f"{base}/{{vmid}}/status", schema(NV), ct_status_index, Perm.all())
    router.add("GET", f"{base}/{{vmid}}/status/current", schema(NV), ct_status, audit)
    router.add("POST", f"{base}/{{vmid}}/status/start", schema({**NV, "skiplock": BOOL, "debug": BOOL}), ct_start,
               power)
    router.add("POST", f"{base}/{{vmid}}/status/stop", schema({**NV, "skiplock": BOOL,
                                                               "overrule-shutdown": BOOL}), ct_stop, power)
    router.add("POST", f"{base}/{{vmid}}/status/shutdown", schema({
        **NV, "timeout": Prop(type="integer", minimum=0), "forceStop": BOOL}), ct_shutdown, power)
