"""Routing and request dispatch, independent of the HTTP transport."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import access
from .errors import ApiError, ParamError, TaskError
from .schema import Schema
from .tasks import TaskManager


@dataclass
class Result:
    """Handler result; `total` becomes the envelope's total (task logs, task lists)."""

    data: Any
    total: int | None = None


@dataclass
class Ctx:
    root: Path
    node: str
    tasks: TaskManager
    user: str = ""
    fingerprint: str = ""
    started: float = 0.0

    def check(self, path: str, *privs: str, any_: bool = False, noerr: bool = False) -> bool:
        """The caller's privileges on path (RPCEnvironment check / check_any); 403 unless noerr."""
        return access.check(self.root, self.user, path, privs, any_=any_, noerr=noerr)

    @property
    def is_root(self) -> bool:
        return self.user == access.ROOT


@dataclass(frozen=True)
class Perm:
    """An API method's `permissions` block, checked before its parameters (PVE::RPCEnvironment
    check_api2_permissions runs in the HTTP server before the handler validates its schema)."""

    kind: str  # all: any authenticated caller; custom: the handler checks; perm: path + privileges
    path: str = ""
    privs: tuple[str, ...] = ()
    any_: bool = False

    @classmethod
    def all(cls) -> Perm:
        return cls("all")

    @classmethod
    def custom(cls) -> Perm:
        return cls("custom")

    @classmethod
    def check(cls, path: str, *privs: str, any_: bool = False) -> Perm:
        return cls("perm", path, privs, any_)

    def enforce(self, ctx: Ctx, params: dict[str, str]) -> None:
        if self.kind != "perm":
            return
        values = dict(params)
        if "userid" in values and "@" in values["userid"]:
            values["realm"] = values["userid"].rsplit("@", 1)[1]
        path = re.sub(r"\{(\w+)\}", lambda m: values.get(m.group(1), ""), self.path)
        ctx.check(path, *self.privs, any_=self.any_)


Handler = Callable[[Ctx, dict[str, Any]], Any]


@dataclass(frozen=True)
class Route:
    method: str
    parts: tuple[str, ...]
    schema: Schema
    handler: Handler
    perm: Perm

    def match(self, method: str, comps: list[str]) -> dict[str, str] | None:
        if method != self.method:
            return None
        params: dict[str, str] = {}
        for i, part in enumerate(self.parts):
            if part == "{volume}":  # volume IDs contain '/', PVE hands over the rest of the path
                if i >= len(comps):
                    return None
                params["volume"] = "/".join(comps[i:])
                return params
            if i >= len(comps):
                return None
            if part.startswith("{"):
                params[part[1:-1]] = comps[i]
            elif part != comps[i]:
                return None
        return params if len(comps) == len(self.parts) else None


@dataclass
class Router:
    routes: list[Route] = field(default_factory=list)

    def add(self, method: str, path: str, schema: Schema, handler: Handler, perm: Perm) -> None:
        self.routes.append(Route(method, tuple(p for p in path.split("/") if p), schema, handler, perm))

    def dispatch(self, ctx: Ctx, method: str, rel_uri: str, params: dict[str, str]) -> Result:
        comps = [c for c in rel_uri.split("/") if c]
        for route in self.routes:
            uri_params = route.match(method, comps)
            if uri_params is None:
                continue
            for key, value in params.items():
                if key in uri_params and uri_params[key] != value:
                    raise ParamError({key: "duplicate parameter (already defined in URI) with conflicting values!"})
            merged = {**params, **uri_params}
            route.perm.enforce(ctx, merged)
            typed = route.schema.validate(merged)
            if "node" in typed and typed["node"] != ctx.node:
                raise TaskError(f"hostname lookup '{typed['node']}' failed - failed to get address info for: "
                                f"{typed['node']}: Name or service not known")
            res = route.handler(ctx, typed)
            return res if isinstance(res, Result) else Result(res)
        raise ApiError(501, f"Method '{method} {rel_uri}' not implemented")


def build_router() -> Router:
    from . import api_access, api_cluster, api_lxc, api_qemu, api_storage, api_tasks, api_vzdump

    router = Router()
    for module in (api_access, api_cluster, api_lxc, api_qemu, api_storage, api_tasks, api_vzdump):
        module.register(router)
    return router
