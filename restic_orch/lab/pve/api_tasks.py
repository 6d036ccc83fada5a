"""/nodes/{node}/tasks: list, status, log, stop."""

from __future__ import annotations

from typing import Any

from .app import Ctx, Perm, Result, Router
from .errors import ParamError, TaskError
from .schema import BOOL, NODE, VMID_OPT, Prop, schema, split_list
from .upid import decode

UPID = Prop(optional=False)


def owns(ctx: Ctx, task_user: str) -> bool:
    """pve-manager PVE/API2/Tasks.pm check_task_user: a token's task is its own and its user's."""
    return ctx.user == task_user or ("!" in task_user and ctx.user == task_user.split("!", 1)[0])


def _check_access(ctx: Ctx, task_user: str, priv: str = "Sys.Audit") -> None:
    if not owns(ctx, task_user):
        ctx.check(f"/nodes/{ctx.node}", priv)


def task_list(ctx: Ctx, p: dict[str, Any]) -> Any:
    source = p.get("source", "archive")
    entries: list[dict[str, Any]] = []
    if source in ("active", "all"):
        entries += ctx.tasks.running()
    if source != "active":
        entries += ctx.tasks.finished()
    wanted = {s.lower() for s in split_list(p.get("statusfilter", ""))}
    # PVE/API2/Tasks.pm node_tasks: other users' tasks only with Sys.Audit on the node
    all_users = ctx.check(f"/nodes/{ctx.node}", "Sys.Audit", noerr=True)
    start, limit = p.get("start", 0), p.get("limit", 50)
    res, count = [], 0
    for t in entries:
        full = f"{t['user']}!{t['tokenid']}" if t.get("tokenid") else t["user"]
        if not all_users and not owns(ctx, full):
            continue
        if p.get("userfilter") and p["userfilter"].lower() not in t["user"].lower():
            continue
        if p.get("typefilter") and t["type"] != p["typefilter"]:
            continue
        if p.get("vmid") and t["id"] != str(p["vmid"]):
            continue
        if p.get("since") is not None and t["starttime"] < p["since"]:
            continue
        if p.get("until") is not None and t["starttime"] > p["until"]:
            continue
        status = t.get("status", "")
        kind = "ok" if status == "OK" else "warning" if status.startswith("WARNINGS") else \
            "unknown" if status in ("", "RUNNING", "unexpected status") else "error"
        if p.get("errors") and kind == "ok":
            continue
        if wanted and kind not in wanted:
            continue
        count += 1
        if count <= start or len(res) >= limit:
            continue
        res.append(t)
    return Result(res, total=count)


def _upid(p: dict[str, Any]) -> Any:
    upid = decode(p["upid"])
    if upid is None:
        raise ParamError({"upid": "unable to parse worker upid"})
    return upid


def task_status(ctx: Ctx, p: dict[str, Any]) -> Any:
    _check_access(ctx, _upid(p).user)
    status = ctx.tasks.status(p["upid"])
    if status is None:
        raise ParamError({"upid": "no such task"})
    return status


def task_log(ctx: Ctx, p: dict[str, Any]) -> Any:
    upid = _upid(p)
    _check_access(ctx, upid.user)
    if p.get("download"):
        if "start" in p or "limit" in p:
            raise TaskError("'download' cannot be used together with 'start' or 'limit' parameters")
        return ctx.tasks.logfile(upid).read_text(errors="replace")
    total, lines = ctx.tasks.log(upid, p.get("start", 0), p.get("limit", 50))
    return Result(lines, total=total)


def task_stop(ctx: Ctx, p: dict[str, Any]) -> Any:
    upid = _upid(p)
    _check_access(ctx, upid.user, "Sys.Modify")
    if not ctx.tasks.logfile(upid).is_file():
        raise ParamError({"upid": "no such task"})
    ctx.tasks.stop(p["upid"])
    return None


def task_index(ctx: Ctx, p: dict[str, Any]) -> Any:
    _upid(p)
    return [{"name": "log"}, {"name": "status"}]


def register(router: Router) -> None:
    router.add("GET", "/nodes/{node}/tasks", schema({
        "node": NODE, "start": Prop(type="integer", minimum=0), "limit": Prop(type="integer", minimum=0),
        "userfilter": Prop(), "typefilter": Prop(), "vmid": VMID_OPT, "errors": BOOL,
        "source": Prop(enum=("archive", "active", "all")), "since": Prop(type="integer"),
        "until": Prop(type="integer"), "statusfilter": Prop(format="pve-task-status-type-list"),
    }), task_list, Perm.all())
    nu = schema({"node": NODE, "upid": UPID})
    router.add("GET", "/nodes/{node}/tasks/{upid}", nu, task_index, Perm.all())
    router.add("DELETE", "/nodes/{node}/tasks/{upid}", nu, task_stop, Perm.custom())
    router.add("GET", "/nodes/{node}/tasks/{upid}/status", nu, task_status, Perm.custom())
    router.add("GET", "/nodes/{node}/tasks/{upid}/log", schema({
        "node": NODE, "upid": UPID, "start": Prop(type="integer", minimum=0),
        "limit": Prop(type="integer", minimum=0), "download": BOOL,
    }), task_log, Perm.custom())
