"""POST /nodes/{node}/vzdump: parameter checks like PVE::API2::VZDump, then the worker task."""

from __future__ import annotations

from typing import Any

from . import access, layout
from .app import Ctx, Perm, Router
from .errors import ApiError, ParamError, TaskError
from .schema import BOOL, NODE, STORAGE_OPT, Prop, schema, split_list
from .tasks import Worker
from .vzdump import Job, shellquote, split_excludes

SCHEMA = schema({
    "node": NODE,
    "vmid": Prop(format="pve-vmid-list"),
    "all": BOOL,
    "stdexcludes": BOOL,
    "compress": Prop(enum=("0", "1", "gzip", "lzo", "zstd")),
    "pigz": Prop(type="integer"),
    "zstd": Prop(type="integer"),
    "quiet": BOOL,
    "mode": Prop(enum=("snapshot", "suspend", "stop")),
    "exclude": Prop(format="pve-vmid-list"),
    # PVE 8: an array of strings; form bodies carry it as repeated fields, which arrive NUL-joined
    "exclude-path": Prop(type="array"),
    "mailto": Prop(),
    "mailnotification": Prop(enum=("always", "failure")),
    "notification-mode": Prop(enum=("auto", "legacy-sendmail", "notification-system")),
    "notification-policy": Prop(enum=("always", "failure", "never")),
    "notification-target": Prop(format="pve-configid"),
    "tmpdir": Prop(),
    "dumpdir": Prop(),
    "script": Prop(),
    "storage": STORAGE_OPT,
    "stop": BOOL,
    "bwlimit": Prop(type="integer", minimum=0),
    "ionice": Prop(type="integer", minimum=0, maximum=8),
    "performance": Prop(),
    "lockwait": Prop(type="integer", minimum=0),
    "stopwait": Prop(type="integer", minimum=0),
    "maxfiles": Prop(type="integer", minimum=1),
    "prune-backups": Prop(format="prune-backups"),
    "remove": BOOL,
    "pool": Prop(),
    "notes-template": Prop(requires="storage", max_length=1024),
    "protected": Prop(type="boolean", requires="storage"),
    "fleecing": Prop(),
    "pbs-change-detection-mode": Prop(enum=("legacy", "data", "metadata")),
    "stdout": BOOL,
})

# pve-manager PVE/API2/Backup.pm assert_param_permission_common (PVE 8.4)
ROOT_ONLY = ("tmpdir", "dumpdir", "script", "job-id")
SYS_MODIFY = ("bwlimit", "ionice", "performance")
STORAGE_ALLOCATE = ("maxfiles", "prune-backups")


def command_line(p: dict[str, Any]) -> str:
    """PVE::VZDump::Common::command_line: 'vzdump 101 102 --mode snapshot ...', one --exclude-path per path."""
    cmd = "vzdump"
    if p.get("vmid"):
        cmd += " " + " ".join(split_list(str(p["vmid"])))
    for key, value in p.items():
        if key in ("vmid", "stdout") or value is None or value == "":
            continue
        values = split_excludes(value) if key == "exclude-path" else [str(value)]
        cmd += "".join(f" --{key} {shellquote(v)}" for v in values)
    return cmd


def start(ctx: Ctx, p: dict[str, Any]) -> str:
    """The synchronous part of the API call (pve-manager PVE/API2/VZDump.pm vzdump): parameter and
    permission checks, then fork the worker."""
    root, node, user, tasks = ctx.root, ctx.node, ctx.user, ctx.tasks
    if p.get("stdout"):
        raise ParamError({"stdout": "option is only allowed on the command line interface."})
    if user != "root@pam":
        for key in ROOT_ONLY:
            if key in p:
                raise ParamError({key: "Only root may set this option."})
        if any(key in p for key in SYS_MODIFY):
            ctx.check("/", "Sys.Modify")
        if any(key in p for key in STORAGE_ALLOCATE):
            ctx.check(f"/storage/{p.get('storage') or 'local'}", "Datastore.Allocate")
        fleecing = dict(i.partition("=")[::2] for i in str(p.get("fleecing", "")).split(",") if "=" in i)
        if fleecing.get("storage"):
            ctx.check(f"/storage/{fleecing['storage']}", "Datastore.AllocateSpace")
    if p.get("stop"):
        ctx.check(f"/nodes/{node}", "Sys.Modify")
    for other in ("all", "exclude", "pool"):
        if p.get(other) and p.get("vmid"):
            raise ParamError({other: "option conflicts with option 'vmid'"})
    if "\n" in str(p.get("notes-template", "")):
        raise ParamError({"notes-template": "contains a line feed"})
    if p.get("exclude") is not None and not p.get("pool"):
        p["all"] = 1
    if not (p.get("all") or p.get("stop") or p.get("pool")) and not p.get("vmid"):
        raise ParamError({"vmid": "property is missing"})
    if p.get("pool"):
        raise TaskError(f"pool '{p['pool']}' does not exist")
    if p.get("vmid"):
        vmids = sorted(int(v) for v in split_list(str(p["vmid"])))
    elif p.get("all"):
        excluded = {int(v) for v in split_list(str(p.get("exclude", "")))}
        vmids = [v for v in layout.list_guest_vmids(root) if v not in excluded]
    else:
        vmids = []
    if not vmids and not p.get("all"):
        return "OK"
    # PVE/API2/VZDump.pm: space on the storage parameter (or 'local') before the worker starts
    ctx.check(f"/storage/{p.get('storage') or 'local'}", "Datastore.AllocateSpace")
    if p.get("all"):
        # PVE/VZDump.pm exec_backup: with all=1 the guests without VM.Backup are skipped silently
        vmids = [v for v in vmids if ctx.check(f"/vms/{v}", "VM.Backup", noerr=True)]
    cmdline = command_line(p)
    job = Job(root, node, p, vmids, cmdline)

    def body(w: Worker) -> None:
        # PVE/VZDump.pm exec_backup: one guest without VM.Backup stops the job before any backup
        for vmid in vmids:
            try:
                access.check(root, user, f"/vms/{vmid}", ("VM.Backup",))
            except ApiError as exc:
                raise TaskError(exc.message.rstrip("\n")) from None
        job.run(w)

    return tasks.spawn("vzdump", str(vmids[0]) if len(vmids) == 1 else "", user, body)



def node_vzdump(ctx: Ctx, p: dict[str, Any]) -> Any:
    return start(ctx, p)


def vzdump_defaults(ctx: Ctx, p: dict[str, Any]) -> Any:
    sid = p.get("storage", "local")
    # PVE/API2/VZDump.pm defaults: Datastore.Audit or Datastore.AllocateSpace on the storage
    ctx.check(f"/storage/{sid}", "Datastore.Audit", "Datastore.AllocateSpace", any_=True)
    res: dict[str, Any] = {"storage": sid, "mode": "snapshot", "compress": "0", "remove": 1, "lockwait": 180,
                           "stopwait": 10, "ionice": 7, "stdexcludes": 1, "prune-backups": "keep-all=1"}
    scfg = layout.storages(ctx.root).get(sid)
    if scfg and scfg.get("prune-backups"):
        res["prune-backups"] = scfg["prune-backups"]
    return res


def register(router: Router) -> None:
    router.add("POST", "/nodes/{node}/vzdump", SCHEMA, node_vzdump, Perm.custom())
    router.add("GET", "/nodes/{node}/vzdump/defaults", schema({"node": NODE, "storage": Prop(format="pve-storage-id")}),
               vzdump_defaults, Perm.custom())
