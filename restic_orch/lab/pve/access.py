"""Users, API tokens, roles and ACLs of the fake node, and the permission checks PVE 8 makes.

Semantics follow pve-access-control:
- `PVE/AccessControl.pm` `roles()`: walk the path from `/` down; at each level the ACL entries of the
  user (or token) replace what was inherited, otherwise those of its groups do; an entry on a parent
  only counts below it with `propagate`; `NoAccess` wins over everything on its level.
- `PVE/AccessControl.pm` `permission()`: the privileges of those roles, each with its propagate bit.
- `PVE/RPCEnvironment.pm` `permissions()`: root@pam has every privilege; a token without privilege
  separation has its user's; a privsep token has the intersection of its own and its user's.
- `PVE/RPCEnvironment.pm` `check()` / `check_any()` / `raise_perm_exc()`: HTTP 403
  `Permission check failed (<path>, <priv>)`, or `(<path>, <priv1>|<priv2>)` for check_any.
The state lives in node.json under "access" (like /etc/pve/user.cfg) and "tokens" (priv/token.cfg).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from . import layout
from .errors import ApiError
from .privileges import ALL_PRIVS, BUILTIN_ROLES

ROOT = "root@pam"
# PVE/RPCEnvironment.pm get_effective_permissions: the paths always reported, beside those in ACLs
TOP_PATHS = ("/", "/access", "/access/groups", "/nodes", "/pool", "/sdn", "/storage", "/vms")


def perm_error(msg: str) -> ApiError:
    return ApiError(403, f"Permission check failed ({msg})\n")


def split_tokenid(authid: str) -> tuple[str, str | None]:
    user, sep, token = authid.partition("!")
    return user, (token if sep else None)


def initial_access() -> dict[str, Any]:
    """A fresh install's user.cfg: root@pam only, no ACL, no custom role."""
    return {"users": {ROOT: {"enable": 1, "comment": "", "groups": []}}, "groups": {}, "roles": {}, "acl": []}


def load(root: Path) -> dict[str, Any]:
    data = layout.load_node(root)
    acc = data.get("access") or initial_access()
    acc["tokens"] = data.get("tokens", {})
    return acc


def role_privs(acc: dict[str, Any], roleid: str) -> frozenset[str]:
    if roleid in BUILTIN_ROLES:
        return BUILTIN_ROLES[roleid]
    return frozenset(acc["roles"].get(roleid, ()))


def _norm(path: str) -> str:
    parts = [p for p in path.split("/") if p]
    return "/" + "/".join(parts)


def _levels(path: str) -> list[str]:
    parts = [p for p in path.split("/") if p]
    return ["/"] + ["/" + "/".join(parts[: i + 1]) for i in range(len(parts))]


def roles(acc: dict[str, Any], ugid: str, path: str) -> dict[str, int]:
    """PVE::AccessControl::roles for a user or token id (no root shortcut, no privsep: see permissions())."""
    is_token = "!" in ugid
    user_groups = set() if is_token else set(acc["users"].get(ugid, {}).get("groups", []))
    result: dict[str, int] = {}
    levels = _levels(path)
    for i, level in enumerate(levels):
        final = i == len(levels) - 1
        entries = [a for a in acc["acl"] if a["path"] == level]
        own = {a["roleid"]: int(a["propagate"]) for a in entries
               if a["type"] == ("token" if is_token else "user") and a["ugid"] == ugid
               and (final or a["propagate"])}
        if own:
            result = own
            continue
        grp = {a["roleid"]: int(a["propagate"]) for a in entries
               if a["type"] == "group" and a["ugid"] in user_groups and (final or a["propagate"])}
        if grp:
            result = grp
    if "NoAccess" in result:
        return {"NoAccess": result["NoAccess"]}
    return result


def _privs_of(acc: dict[str, Any], ugid: str, path: str) -> dict[str, int]:
    privs: dict[str, int] = {}
    for roleid, propagate in roles(acc, ugid, path).items():
        for priv in role_privs(acc, roleid):
            privs[priv] = privs.get(priv, 0) or propagate
    return privs


def _enabled(acc: dict[str, Any], userid: str) -> bool:
    user = acc["users"].get(userid)
    return bool(user) and bool(int(user.get("enable", 1)))


def permissions(acc: dict[str, Any], authid: str, path: str) -> dict[str, int]:
    """PVE::RPCEnvironment::permissions: privilege -> propagate bit, for a user or an API token."""
    path = _norm(path)
    userid, tokenid = split_tokenid(authid)
    if authid == ROOT:
        return dict.fromkeys(ALL_PRIVS, 1)
    if not _enabled(acc, userid):
        return {}
    if tokenid is None:
        return _privs_of(acc, userid, path)
    token = acc["tokens"].get(authid)
    if token is None:
        return {}
    user_perms = dict.fromkeys(ALL_PRIVS, 1) if userid == ROOT else _privs_of(acc, userid, path)
    if not int(token.get("privsep", 1)):
        return user_perms
    own = _privs_of(acc, authid, path)
    return {p: v and user_perms[p] for p, v in own.items() if p in user_perms}


def check(root: Path, authid: str, path: str, privs: tuple[str, ...] | list[str], *,
          any_: bool = False, noerr: bool = False) -> bool:
    """RPCEnvironment check (all privileges) or check_any; raises the 403 PVE answers unless noerr."""
    acc = load(root)
    perms = permissions(acc, authid, path)
    for priv in privs:
        if priv not in ALL_PRIVS:
            raise ValueError(f"invalid privilege name '{priv}'")  # verify_privname: a bug in the caller
    if any_:
        if any(p in perms for p in privs):
            return True
        if noerr:
            return False
        raise perm_error(f"{path}, {'|'.join(privs)}")
    for priv in privs:
        if priv not in perms:
            if noerr:
                return False
            raise perm_error(f"{path}, {priv}")
    return True


def effective_permissions(acc: dict[str, Any], authid: str) -> dict[str, dict[str, int]]:
    """PVE::RPCEnvironment::get_effective_permissions: every path of interest with its privileges."""
    paths = set(TOP_PATHS) | {_norm(a["path"]) for a in acc["acl"]}
    res = {}
    for path in sorted(paths):
        perms = permissions(acc, authid, path)
        if perms:
            res[path] = perms
    return res


def save(root: Path, acc: dict[str, Any]) -> None:
    data = layout.load_node(root)
    tokens = acc.pop("tokens", None)
    data["access"] = acc
    if tokens is not None:
        data["tokens"] = tokens
    layout.save_node(root, data)
