"""/nodes/{node}/qemu...: list, config, status, power actions, destroy and restore, after qemu-server's
PVE/API2/Qemu.pm (vmlist, vmdiridx, vm_config, vmcmdidx, vm_status, vm_start, vm_stop, vm_shutdown,
destroy_vm, create_vm) and PVE/QemuServer.pm (vm_start, _do_vm_stop, destroy_vm)."""

from __future__ import annotations

from typing import Any

from . import layout, qemu, qmconf, qmrestore
from .app import Ctx, Perm, Router
from .errors import ParamError, TaskError
from .schema import BOOL, NODE, VMID, Prop, schema
from .tasks import Worker

NV = {"node": NODE, "vmid": VMID}
ROOT_ONLY = "Only root may use this option."


def vm_list(ctx: Ctx, p: dict[str, Any]) -> Any:
    # vmlist: only the VMs the caller has VM.Audit on
    return [qemu.vmstatus(ctx.root, vmid, ctx.node) for vmid in layout.list_qemu_vmids(ctx.root)
            if ctx.check(f"/vms/{vmid}", "VM.Audit", noerr=True)]


def vm_index(ctx: Ctx, p: dict[str, Any]) -> Any:
    return [{"subdir": s} for s in ("config", "cloudinit", "pending", "status", "unlink", "vncproxy", "termproxy",
                                     "migrate", "resize", "move", "rrd", "rrddata", "monitor", "agent", "snapshot",
                                     "spiceproxy", "sendkey", "firewall", "mtunnel", "remote_migrate")]


def vm_config(ctx: Ctx, p: dict[str, Any]) -> Any:
    if p.get("snapshot") and p.get("current"):
        msg = "cannot use 'snapshot' parameter with 'current'"
        raise ParamError({"snapshot": msg, "current": msg})
    text = qemu.load_text(ctx.root, p["vmid"], ctx.node)
    if p.get("snapshot"):
        raise TaskError(f"snapshot '{p['snapshot']}' does not exist")
    return qmconf.api_view(qmconf.parse(text), text)


def vm_status_index(ctx: Ctx, p: dict[str, Any]) -> Any:
    return [{"subdir": s} for s in ("current", "start", "stop", "reset", "shutdown", "suspend", "reboot")]


def vm_status(ctx: Ctx, p: dict[str, Any]) -> Any:
    conf = qemu.load(ctx.root, p["vmid"], ctx.node)
    status = qemu.vmstatus(ctx.root, p["vmid"], ctx.node)
    status["ha"] = {"managed": 0}
    if qmconf.agent_enabled(conf):
        status["agent"] = 1
    return status


def _root_only(ctx: Ctx, p: dict[str, Any], *keys: str) -> None:
    for key in keys:
        if p.get(key) and not ctx.is_root:
            raise ParamError({key: ROOT_ONLY})


def vm_start(ctx: Ctx, p: dict[str, Any]) -> Any:
    _root_only(ctx, p, "skiplock")
    root, node, vmid = ctx.root, ctx.node, p["vmid"]

    def worker(w: Worker) -> None:
        # PVE::QemuServer::vm_start, under the config lock
        with qemu.config_lock(root, vmid):
            conf = qemu.load(root, vmid, node)
            if conf.get("template") == "1":
                raise TaskError("you can't start a vm if it's a template")
            if conf.get("lock") == "backup" and qemu.is_running(root, vmid):
                qemu.set_running(root, vmid, True)  # a running backup: resume the QEMU it uses (vm_resume)
                return
            if not p.get("skiplock") and conf.get("lock") != "suspended":
                qemu.check_lock(conf)
            if qemu.is_running(root, vmid):
                raise TaskError(f"VM {vmid} already running")
            w.sleep(float(layout.read_faults(root).get("task_delay_seconds", 0)))
            qemu.set_running(root, vmid, True)

    return ctx.tasks.spawn("qmstart", str(vmid), ctx.user, worker)


def _stop(ctx: Ctx, p: dict[str, Any], dtype: str) -> Any:
    _root_only(ctx, p, "skiplock", "keepActive")
    root, node, vmid = ctx.root, ctx.node, p["vmid"]

    def worker(w: Worker) -> None:
        # PVE::QemuServer::_do_vm_stop: a guest that is not running is done at once
        with qemu.config_lock(root, vmid):
            if not qemu.is_running(root, vmid):
                return
            conf = qemu.load(root, vmid, node)
            if not p.get("skiplock"):
                qemu.check_lock(conf)
            w.sleep(float(layout.read_faults(root).get("task_delay_seconds", 0)))
            qemu.set_running(root, vmid, False)

    return ctx.tasks.spawn(dtype, str(vmid), ctx.user, worker)


def vm_stop(ctx: Ctx, p: dict[str, Any]) -> Any:
    return _stop(ctx, p, "qmstop")


def vm_shutdown(ctx: Ctx, p: dict[str, Any]) -> Any:
    if qemu.read_state(ctx.root, p["vmid"]).get("qmpstatus") == "paused" and not p.get("forceStop"):
        raise TaskError("VM is paused - cannot shutdown")
    return _stop(ctx, p, "qmshutdown")


def vm_destroy(ctx: Ctx, p: dict[str, Any]) -> Any:
    _root_only(ctx, p, "skiplock")
    vmid, root, node = p["vmid"], ctx.root, ctx.node

    def early_checks() -> None:
        conf = qemu.load(root, vmid, node)
        if conf.get("protection") == "1":
            raise TaskError(f"can't remove VM {vmid} - protection mode enabled")
        if qemu.is_running(root, vmid):
            raise TaskError(f"VM {vmid} is running - destroy failed")

    early_checks()

    def worker(w: Worker) -> None:
        with qemu.config_lock(root, vmid):
            early_checks()  # repeat, the config might have changed
            conf = qemu.load(root, vmid, node)
            if not p.get("skiplock") and conf.get("lock") != "suspended":
                qemu.check_lock(conf)
            w.sleep(float(layout.read_faults(root).get("task_delay_seconds", 0)))
            qemu.destroy(root, vmid, node, unreferenced=bool(p.get("destroy-unreferenced-disks")))
            if p.get("purge"):
                w.print(f"purging VM {vmid} from related configurations..")

    return ctx.tasks.spawn("qmdestroy", str(vmid), ctx.user, worker)


def register(router: Router) -> None:
    # the `permissions` blocks of PVE/API2/Qemu.pm
    audit, power = Perm.check("/vms/{vmid}", "VM.Audit"), Perm.check("/vms/{vmid}", "VM.PowerMgmt")
    base = "/nodes/{node}/qemu"
    router.add("GET", base, schema({"node": NODE, "full": BOOL}), vm_list, Perm.all())
    router.add("POST", base, qmrestore.SCHEMA, qmrestore.start, Perm.custom())
    router.add("GET", f"{base}/{{vmid}}", schema(NV), vm_index, Perm.all())
    router.add("DELETE", f"{base}/{{vmid}}", schema({**NV, "skiplock": BOOL, "purge": BOOL,
                                                      "destroy-unreferenced-disks": BOOL}), vm_destroy,
               Perm.check("/vms/{vmid}", "VM.Allocate"))
    router.add("GET", f"{base}/{{vmid}}/config", schema({**NV, "current": BOOL, "snapshot": Prop()}), vm_config,
               audit)
    router.add("GET", f"{base}/{{vmid}}/status", schema(NV), vm_status_index, Perm.all())
    router.add("GET", f"{base}/{{vmid}}/status/current", schema(NV), vm_status, audit)
    router.add("POST", f"{base}/{{vmid}}/status/start", schema({
        **NV, "skiplock": BOOL, "timeout": Prop(type="integer", minimum=0)}), vm_start, power)
    router.add("POST", f"{base}/{{vmid}}/status/stop", schema({
        **NV, "skiplock": BOOL, "timeout": Prop(type="integer", minimum=0), "keepActive": BOOL,
        "overrule-shutdown": BOOL}), vm_stop, power)
    router.add("POST", f"{base}/{{vmid}}/status/shutdown", schema({
        **NV, "skiplock": BOOL, "timeout": Prop(type="integer", minimum=0), "forceStop": BOOL,
        "keepActive": BOOL}), vm_shutdown, power)
