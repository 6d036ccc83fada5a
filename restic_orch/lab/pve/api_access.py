"""/access: users, API tokens, roles, ACLs and the effective-permissions dump (pve-access-control PVE/API2/)."""

from __future__ import annotations

import re
import uuid
from typing import Any

from . import access
from .app import Ctx, Perm, Router
from .errors import ParamError, die
from .privileges import ALL_PRIVS, BUILTIN_ROLES
from .schema import BOOL, Prop, schema, split_list

# PVE/Auth/Plugin.pm: pve-userid and pve-tokenid formats
USERID_RE = re.compile(r"^[^\s:/]+@[A-Za-z][A-Za-z0-9.\-_]+$")
TOKENID_RE = re.compile(r"^[A-Za-z][A-Za-z0-9.\-_]+$")
ROLEID_RE = re.compile(r"^[A-Za-z0-9.\-_]+$")
REALMS = ("pam", "pve")
# PVE/AccessControl.pm check_path: the ACL paths PVE 8 accepts
ACL_PATH_RES = tuple(re.compile(p) for p in (
    r"^/$", r"^/access$", r"^/access/groups$", r"^/access/groups/[^/]+$", r"^/access/realm$",
    r"^/access/realm/[^/]+$", r"^/mapping$", r"^/mapping/(?:notifications|pci|usb|dir)$",
    r"^/mapping/(?:notifications|pci|usb|dir)/[^/]+$", r"^/nodes$", r"^/nodes/[^/]+$", r"^/pool$",
    r"^/pool/[A-Za-z0-9.\-_]+(?:/[A-Za-z0-9.\-_]+){0,2}$", r"^/sdn$", r"^/sdn/controllers$",
    r"^/sdn/controllers/[^/]+$", r"^/sdn/dns$", r"^/sdn/dns/[^/]+$", r"^/sdn/ipams$", r"^/sdn/ipams/[^/]+$",
    r"^/sdn/zones$", r"^/sdn/zones/[^/]+$", r"^/sdn/zones/[^/]+/[^/]+$", r"^/sdn/zones/[^/]+/[^/]+/[1-9][0-9]*$",
    r"^/storage$", r"^/storage/[^/]+$", r"^/vms$", r"^/vms/[1-9][0-9]{2,8}$",
))

USERID = Prop(optional=False, max_length=64)
TOKENID = Prop(optional=False)


def _userid(value: str, param: str = "userid") -> str:
    if not USERID_RE.match(value):
        raise ParamError({param: f"value '{value}' does not look like a valid user name\n"})
    realm = value.rsplit("@", 1)[1]
    if realm not in REALMS:
        raise die(f"domain '{realm}' does not exist")
    return value


def _acl_path(path: str) -> str:
    norm = "/" + "/".join(p for p in path.split("/") if p)
    if not any(r.match(norm) for r in ACL_PATH_RES):
        raise die(f"invalid ACL path '{path}'")
    return norm


def user_create(ctx: Ctx, p: dict[str, Any]) -> Any:
    userid = _userid(p["userid"])
    # User.pm create_user: ['and', ['userid-param', 'Realm.AllocateUser'], ['userid-group', ['User.Modify']]]
    ctx.check("/access/groups", "User.Modify")
    acc = access.load(ctx.root)
    if userid in acc["users"]:
        raise die(f"create user failed: user '{userid}' already exists")
    groups = split_list(p.get("groups", ""))
    for group in groups:
        if group not in acc["groups"]:
            raise die(f"create user failed: no such group '{group}'")
    acc["users"][userid] = {"enable": int(p.get("enable", 1)), "comment": p.get("comment", ""),
                            "groups": groups, "expire": int(p.get("expire", 0))}
    access.save(ctx.root, acc)
    return None


def user_list(ctx: Ctx, p: dict[str, Any]) -> Any:
    acc = access.load(ctx.root)
    res = []
    for userid, user in sorted(acc["users"].items()):
        if not access.check(ctx.root, ctx.user, "/access/groups", ("User.Modify", "Sys.Audit"), any_=True,
                            noerr=True) and userid != access.split_tokenid(ctx.user)[0]:
            continue
        res.append({"userid": userid, "enable": user.get("enable", 1), "comment": user.get("comment", ""),
                    "expire": user.get("expire", 0), "realm-type": userid.rsplit("@", 1)[1]})
    return res


def role_create(ctx: Ctx, p: dict[str, Any]) -> Any:
    roleid = p["roleid"]
    if not ROLEID_RE.match(roleid):
        raise ParamError({"roleid": f"role name '{roleid}' contains illegal characters\n"})
    if roleid.upper().startswith("PVE"):
        raise ParamError({"roleid": "cannot use role ID starting with 'PVE'\n"})  # Role.pm: reserved
    acc = access.load(ctx.root)
    if roleid in BUILTIN_ROLES or roleid in acc["roles"]:
        raise die(f"create role failed: role '{roleid}' already exists")
    acc["roles"][roleid] = _privs(p.get("privs", ""))
    access.save(ctx.root, acc)
    return None


def role_update(ctx: Ctx, p: dict[str, Any]) -> Any:
    roleid = p["roleid"]
    if roleid in BUILTIN_ROLES:
        raise die("cannot modify built-in role 'ROLE'".replace("ROLE", roleid))
    acc = access.load(ctx.root)
    if roleid not in acc["roles"]:
        raise die(f"update role failed: role '{roleid}' does not exist")
    privs = _privs(p.get("privs", ""))
    acc["roles"][roleid] = sorted(set(acc["roles"][roleid]) | set(privs)) if p.get("append") else privs
    access.save(ctx.root, acc)
    return None


def role_list(ctx: Ctx, p: dict[str, Any]) -> Any:
    acc = access.load(ctx.root)
    res = [{"roleid": r, "privs": ",".join(sorted(v)), "special": 1} for r, v in sorted(BUILTIN_ROLES.items())]
    res += [{"roleid": r, "privs": ",".join(sorted(v))} for r, v in sorted(acc["roles"].items())]
    return res


def _privs(text: str) -> list[str]:
    privs = split_list(text)
    for priv in privs:
        if priv not in ALL_PRIVS:
            raise die(f"invalid privilege '{priv}'")
    return sorted(set(privs))


def acl_update(ctx: Ctx, p: dict[str, Any]) -> Any:
    """PUT /access/acl (PVE/API2/ACL.pm update_acl): add (or with delete=1 remove) role entries on a path."""
    delete = bool(p.get("delete"))
    path = _acl_path(p["path"]) if not delete else "/" + "/".join(x for x in p["path"].split("/") if x)
    _check_perm_modify(ctx, path)
    acc = access.load(ctx.root)
    roles = split_list(p["roles"])
    for role in roles:
        if role not in BUILTIN_ROLES and role not in acc["roles"]:
            raise die(f"role '{role}' does not exist")
    held = access.permissions(acc, ctx.user, path)
    if "Permissions.Modify" not in held:
        # ACL.pm update_acl: without Permissions.Modify a caller hands out only what it holds itself
        for role in roles:
            privs = access.role_privs(acc, role)
            if role == "NoAccess" or any(priv not in held for priv in privs) or \
                    (int(p.get("propagate", 1)) and any(not held[priv] for priv in privs)):
                raise ParamError({"role": f"Cannot add role '{role}' - requires 'Permissions.Modify' or superset"
                                          " of privileges.\n"})
    targets: list[tuple[str, str]] = []
    for group in split_list(p.get("groups", "")):
        if group not in acc["groups"]:
            raise die(f"group '{group}' does not exist")
        targets.append(("group", group))
    for user in split_list(p.get("users", "")):
        if user not in acc["users"]:
            raise die(f"user '{user}' does not exist")
        targets.append(("user", user))
    for token in split_list(p.get("tokens", "")):
        userid, tokenid = access.split_tokenid(token)
        if not tokenid or not TOKENID_RE.match(tokenid):
            raise die(f"invalid token ID '{token}'")
        if token not in acc["tokens"]:
            raise die(f"no such token '{tokenid}' for user '{userid}'")
        targets.append(("token", token))
    if not targets:
        raise ParamError({"groups": "either 'groups', 'users' or 'tokens' is required\n"})
    propagate = int(p.get("propagate", 1))
    for kind, ugid in targets:
        for role in roles:
            key = (path, kind, ugid, role)
            acc["acl"] = [a for a in acc["acl"] if (a["path"], a["type"], a["ugid"], a["roleid"]) != key]
            if not delete:
                acc["acl"].append({"path": path, "type": kind, "ugid": ugid, "roleid": role, "propagate": propagate})
    access.save(ctx.root, acc)
    return None


def _check_perm_modify(ctx: Ctx, path: str) -> None:
    """RPCEnvironment check_perm_modify: Permissions.Modify on the path, or the allocate privilege of
    what the path names (Datastore.Allocate on /storage/x, VM.Allocate on /vms/x, Pool.Allocate on /pool/x)."""
    privs = ["Permissions.Modify"]
    for prefix, priv in (("/storage/", "Datastore.Allocate"), ("/vms/", "VM.Allocate"), ("/pool/", "Pool.Allocate")):
        if path.startswith(prefix):
            privs.append(priv)
    ctx.check(path, *privs, any_=True)


def acl_list(ctx: Ctx, p: dict[str, Any]) -> Any:
    acc = access.load(ctx.root)
    res = []
    for a in acc["acl"]:
        if access.check(ctx.root, ctx.user, a["path"], ("Sys.Audit", "Permissions.Modify"), any_=True, noerr=True):
            res.append({"path": a["path"], "type": a["type"], "ugid": a["ugid"], "roleid": a["roleid"],
                        "propagate": a["propagate"]})
    return res


def _may_manage_tokens(ctx: Ctx, userid: str) -> None:
    # PVE/API2/User.pm token methods: ['or', ['userid-param', 'self'], ['userid-group', ['User.Modify']]]
    # (a token is never 'self'; the fake models userid-group as User.Modify on /access/groups)
    if ctx.user == userid:
        return
    access.check(ctx.root, ctx.user, "/access/groups", ("User.Modify",))


def token_create(ctx: Ctx, p: dict[str, Any]) -> Any:
    userid = _userid(p["userid"])
    tokenid = p["tokenid"]
    if not TOKENID_RE.match(tokenid):
        raise ParamError({"tokenid": f"value '{tokenid}' does not look like a valid token ID\n"})
    _may_manage_tokens(ctx, userid)
    acc = access.load(ctx.root)
    if userid not in acc["users"]:
        raise die(f"no such user ('{userid}')")
    full = f"{userid}!{tokenid}"
    if full in acc["tokens"]:
        raise die("Token already exists.")
    info = {"privsep": int(p.get("privsep", 1)), "expire": int(p.get("expire", 0))}
    if p.get("comment"):
        info["comment"] = p["comment"]
    secret = str(uuid.uuid4())
    acc["tokens"][full] = {**info, "secret": secret}
    access.save(ctx.root, acc)
    return {"full-tokenid": full, "info": info, "value": secret}


def token_read(ctx: Ctx, p: dict[str, Any]) -> Any:
    userid = _userid(p["userid"])
    _may_manage_tokens(ctx, userid)
    token = access.load(ctx.root)["tokens"].get(f"{userid}!{p['tokenid']}")
    if token is None:
        raise die(f"no such token '{p['tokenid']}' for user '{userid}'")
    return {k: v for k, v in token.items() if k != "secret"}


def permissions_dump(ctx: Ctx, p: dict[str, Any]) -> Any:
    """GET /access/permissions (PVE/API2/AccessControl.pm permissions): own, own tokens', or with Sys.Audit."""
    target = p.get("userid") or ctx.user
    user, _token = access.split_tokenid(target)
    if target != ctx.user and user != ctx.user:
        access.check(ctx.root, ctx.user, "/access", ("Sys.Audit",))
    acc = access.load(ctx.root)
    if target != access.ROOT and (user not in acc["users"] or ("!" in target and target not in acc["tokens"])):
        raise die(f"no such user/token '{target}'")
    if p.get("path"):
        return {p["path"]: access.permissions(acc, target, p["path"])}
    return access.effective_permissions(acc, target)


def register(router: Router) -> None:
    router.add("GET", "/access/users", schema({"enabled": BOOL, "full": BOOL}), user_list, Perm.all())
    router.add("POST", "/access/users", schema({
        "userid": USERID, "comment": Prop(), "enable": BOOL, "expire": Prop(type="integer", minimum=0),
        "groups": Prop(), "email": Prop(), "firstname": Prop(), "lastname": Prop(), "keys": Prop(),
        "password": Prop(min_length=8),
    }), user_create, Perm.check("/access/realm/{realm}", "Realm.AllocateUser"))
    router.add("GET", "/access/roles", schema({}), role_list, Perm.all())
    router.add("POST", "/access/roles", schema({"roleid": Prop(optional=False), "privs": Prop()}), role_create,
               Perm.check("/access", "Sys.Modify"))
    router.add("PUT", "/access/roles/{roleid}", schema({"roleid": Prop(optional=False), "privs": Prop(),
                                                         "append": BOOL}),
               role_update, Perm.check("/access", "Sys.Modify"))
    router.add("GET", "/access/acl", schema({}), acl_list, Perm.all())
    router.add("PUT", "/access/acl", schema({
        "path": Prop(optional=False), "roles": Prop(optional=False), "users": Prop(), "groups": Prop(),
        "tokens": Prop(), "propagate": BOOL, "delete": BOOL,
    }), acl_update, Perm.custom())
    tok = {"userid": USERID, "tokenid": TOKENID}
    router.add("POST", "/access/users/{userid}/token/{tokenid}", schema({
        **tok, "comment": Prop(), "expire": Prop(type="integer", minimum=0), "privsep": BOOL,
    }), token_create, Perm.custom())
    router.add("GET", "/access/users/{userid}/token/{tokenid}", schema(tok), token_read, Perm.custom())
    router.add("GET", "/access/permissions", schema({"userid": Prop(), "path": Prop()}), permissions_dump,
               Perm.all())
