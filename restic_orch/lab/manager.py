"""`restic-orch lab up|down|status`: start the whole simulated homelab and write a config pointing at it."""

from __future__ import annotations

import json
import os
import re
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import yaml

from . import mariadb, postgres, procs, s3, vault
from .procs import LabError
from .secrets import new_password, secrets_dir, write_secret

__all__ = ["LabError", "up", "down", "status", "describe", "describe_status", "write_config"]

STATE = "lab.json"


def _save(lab_dir: Path, state: dict[str, Any]) -> None:
    # the state holds the lab's S3 keys (the admin's and the owner's among them): root's eyes only
    path = lab_dir / STATE
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(json.dumps(state, indent=2, default=str) + "\n")
    os.chmod(path, 0o600)


def load(lab_dir: Path) -> dict[str, Any]:
    try:
        return json.loads((Path(lab_dir) / STATE).read_text())
    except FileNotFoundError:
        return {}


def start_pve(lab_dir: Path, size_bytes: int, port: int | None = None) -> dict[str, Any]:
    from . import pve

    root = lab_dir / "pve"
    if not (root / "node.json").exists():
        pve.create_node(root, size_bytes=size_bytes)
    port = port or procs.free_port()
    log_path = lab_dir / "pve.log"
    pid = procs.start_daemon([sys.executable, "-m", "restic_orch.lab.pve", "serve", "--root", str(root),
                              "--host", "127.0.0.1", "--port", str(port)], log_path)
    procs.wait_ready(procs.tcp_ready("127.0.0.1", port), pid=pid, log_path=log_path, timeout=60,
                     what="fake Proxmox VE API")
    token = write_secret(secrets_dir(lab_dir) / "pve-token", pve.token_secret(root) + "\n")
    return {"kind": "pve", "pid": pid, "host": "127.0.0.1", "port": port, "root": str(root),
            "node": "pve1", "token_file": str(token), "log": str(log_path)}


def start_s3_proxy(lab_dir: Path, target_port: int, port: int | None = None) -> dict[str, Any]:
    port = port or procs.free_port()
    log_path = lab_dir / "s3-proxy.log"
    pid = procs.start_daemon([sys.executable, "-m", "restic_orch.lab.tcpproxy", "--listen", str(port),
                              "--target", str(target_port)], log_path)
    procs.wait_ready(procs.tcp_ready("127.0.0.1", port), pid=pid, log_path=log_path, timeout=30,
                     what="S3 proxy")
    return {"kind": "s3proxy", "pid": pid, "host": "127.0.0.1", "port": port, "log": str(log_path),
            "endpoint": f"http://127.0.0.1:{port}"}


def stop_s3_proxy(info: dict[str, Any]) -> None:
    procs.stop_pid(int(info["pid"]), timeout=10, match="tcpproxy")


def stop_pve(info: dict[str, Any]) -> None:
    procs.stop_pid(int(info["pid"]), timeout=10, match="restic_orch.lab.pve")


# --- the lab's configuration: rendered by the Ansible role's own template --------------------------------

ROLE_DIR = Path(__file__).resolve().parents[2] / "ansible" / "roles" / "backup"
ROLE_VARS = Path(__file__).with_name("role-vars.yml")
_TEMPLATE = re.compile(r"\{\{|\{%")
_ONE_EXPRESSION = re.compile(r"\s*\{\{(?P<expr>.*?)\}\}\s*", re.S)


# A Proxmox VE node's own files, as docs/host-files.md's pve-host preset keeps them (pmxcfs's modes: 0640,
# root:www-data); .members is one of pmxcfs's live status files, which the lab's exclude leaves out.
_HOST_FILES = {
    "etc/pve/storage.cfg": "dir: local\n\tpath /var/lib/vz\n\tcontent iso,vztmpl,backup\n\n"
                           "zfspool: local-zfs\n\tpool rpool/data\n\tcontent images,rootdir\n\tsparse 1\n",
    "etc/pve/user.cfg": "user:root@pam:1:0:::root@pve1.lab.invalid:::\nuser:backup@pve:1:0::::::\n\n"
                        "acl:1:/:backup@pve:PVEVMAdmin,PVEDatastoreAdmin:\n",
    "etc/pve/datacenter.cfg": "keyboard: fr\nmigration: secure,network=192.0.2.0/24\n",
    "etc/pve/firewall/cluster.fw": "[OPTIONS]\nenable: 1\n\n[RULES]\nIN SSH(ACCEPT) -source 192.0.2.0/24\n",
    "etc/pve/.members": '{"nodename": "pve1", "version": 1}\n',
    "etc/network/interfaces": "auto lo\niface lo inet loopback\n\nauto vmbr0\niface vmbr0 inet static\n"
                              "\taddress 192.0.2.2/24\n\tgateway 192.0.2.1\n\tbridge-ports eno1\n",
    "etc/hosts": "127.0.0.1 localhost\n192.0.2.2 pve1.lab.invalid pve1\n",
    "etc/vzdump.conf": "# vzdump defaults\ntmpdir: /var/tmp\n",
}


def make_host_tree(lab_dir: Path) -> dict[str, Any]:
    """The node's own files under <lab>/host (its /etc/pve, network, hosts), for the `files` source."""
    root = Path(lab_dir) / "host"
    for rel, text in _HOST_FILES.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        os.chmod(path, 0o640 if rel.startswith("etc/pve/") else 0o644)
    link = root / "etc/pve/local"  # pmxcfs's link to this node's directory
    if not link.is_symlink():
        (root / "etc/pve/nodes/pve1").mkdir(parents=True, exist_ok=True)
        link.symlink_to("nodes/pve1")
    return {"root": str(root), "files": sorted(str(root / rel) for rel in _HOST_FILES)}


def _to_bool(value: Any) -> bool:
    """Ansible's `bool` filter."""
    if isinstance(value, bool):
        return value
    if value is None:
        return False
    return str(value).strip().lower() in ("yes", "on", "1", "true", "y", "t")


def _combine(*dicts: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for d in dicts:
        out.update(d)
    return out


class _RoleVars(Mapping[str, Any]):
    """Variables as Ansible resolves them: a string holding a template is rendered when it is first read, a
    lone `{{ expr }}` keeps its native type (a list stays a list), nested values are resolved in turn.

    Jinja looks up every name a template mentions before it runs, even one only an untaken `if` branch uses:
    a variable that cannot be resolved becomes an undefined value that fails only when it is really used,
    as Ansible's lazy variables do."""

    def __init__(self, env: Any, raw: dict[str, Any]) -> None:
        self.env, self.raw = env, raw
        self.cache: dict[str, Any] = {}
        self.resolving: list[str] = []

    def __getitem__(self, key: str) -> Any:
        if key in self.cache:
            return self.cache[key]
        if key not in self.raw:
            return self.env.globals[key]
        if key in self.resolving:
            raise LabError(f"role variable {key} refers to itself: {' -> '.join([*self.resolving, key])}")
        from jinja2.exceptions import UndefinedError

        self.resolving.append(key)
        try:
            value = self.resolve(self.raw[key])
        except UndefinedError as exc:
            value = self.env.undefined(hint=f"{key}: {exc.message}")
        finally:
            self.resolving.pop()
        self.cache[key] = value
        return value

    def __contains__(self, key: object) -> bool:
        return key in self.raw or key in self.env.globals

    def __iter__(self) -> Iterator[str]:
        return iter({**self.env.globals, **self.raw})

    def __len__(self) -> int:
        return len({**self.env.globals, **self.raw})

    def resolve(self, value: Any) -> Any:
        if isinstance(value, dict):
            return {self.resolve(k): self.resolve(v) for k, v in value.items()}
        if isinstance(value, list):
            return [self.resolve(v) for v in value]
        if not isinstance(value, str) or not _TEMPLATE.search(value):
            return value
        one = _ONE_EXPRESSION.fullmatch(value)
        if one and not _TEMPLATE.search(one["expr"]):
            template = self.env.from_string("{% set result = (" + one["expr"] + ") %}")
            context = template.new_context(self, shared=True)
            for _ in template.root_render_func(context):
                pass
            return self.resolve(context.vars["result"])
        return self.render(self.env.from_string(value))

    def render(self, template: Any) -> str:
        return "".join(template.root_render_func(template.new_context(self, shared=True)))


def _role_environment() -> Any:
    """Jinja2 set up as the role's template task runs it, with the Ansible filters the role uses."""
    import jinja2  # the lab extra brings it (moto[server] -> flask); the product itself does not need it

    class Undefined(jinja2.ChainableUndefined, jinja2.StrictUndefined):
        """Ansible's: `a.b.c | default(x)` works when `a` is undefined; using an undefined value fails."""

    env = jinja2.Environment(undefined=Undefined, trim_blocks=True, lstrip_blocks=True,
                             keep_trailing_newline=True, autoescape=False)  # noqa: S701 - YAML, not HTML
    env.filters.update({
        "to_json": lambda value: json.dumps(value, default=str),  # str() of an undefined value raises
        "bool": _to_bool,
        "ternary": lambda value, yes, no: yes if value else no,
        "combine": _combine,
        "dict2items": lambda d: [{"key": k, "value": v} for k, v in d.items()],
        "items2dict": lambda items: {i["key"]: i["value"] for i in items},
        "basename": os.path.basename,
        "dirname": os.path.dirname,
    })
    env.tests.update({"match": lambda value, pattern: re.match(pattern, str(value)) is not None,
                      "truthy": bool, "falsy": lambda value: not value,
                      "mapping": lambda value: isinstance(value, dict)})

    def lookup(plugin: str, *terms: str) -> str:
        if plugin != "file":
            raise LabError(f"lookup('{plugin}') is not supported when the lab renders the role")
        # str() of an undefined term raises UndefinedError, which the variable holding the lookup defers
        return "".join(Path(str(term)).read_text(encoding="utf-8").rstrip() for term in terms)

    env.globals["lookup"] = lookup
    return env


def _load_yaml(path: Path) -> dict[str, Any]:
    data = yaml.safe_load(path.read_text()) or {}
    if not isinstance(data, dict):
        raise LabError(f"{path}: not a mapping of variables")
    return data


def render_role_config(lab_dir: Path, state: dict[str, Any], *, role_dir: Path = ROLE_DIR,
                       lab_vars: Path = ROLE_VARS) -> tuple[str, Path, dict[str, str]]:
    """(config.yml text, secrets directory, {secret file name: content}) as the role deploys them.

    The role's defaults, then `lab_vars`, then its vars/main.yml (Ansible's precedence for role defaults,
    play vars files and role vars), rendered through the role's templates/config.yml.j2; the secret files
    are those of the role's tasks/config.yml: backup__secret_files, then each database account's password.
    """
    if not (role_dir / "templates" / "config.yml.j2").exists():
        raise LabError(f"the lab renders its configuration with the Ansible role `backup`, not found in {role_dir}:"
                       " run the lab from a restic-orch checkout")
    env = _role_environment()
    raw = {**_load_yaml(role_dir / "defaults" / "main.yml"), **_load_yaml(lab_vars),
           **_load_yaml(role_dir / "vars" / "main.yml"),
           "role_path": str(role_dir), "lab_dir": str(lab_dir), "lab": state}
    rolevars = _RoleVars(env, raw)
    secrets: dict[str, str] = {}
    for item in raw["backup__secret_files"]:  # like the task: its `when` first, the content only when present
        if _to_bool(rolevars.resolve(item["present"])):
            secrets[rolevars.resolve(item["name"])] = f"{rolevars.resolve(item['content'])}\n"
    for kind in ("postgres", "mysql"):
        for source in rolevars[f"backup_{kind}_sources"]:
            for field, prefix in (("password", kind), ("restore_password", f"{kind}_restore")):
                if source.get(field):
                    secrets[f"{prefix}-{source['name']}.pass"] = f"{source[field]}\n"
    template = env.from_string((role_dir / "templates" / "config.yml.j2").read_text())
    return rolevars.render(template), Path(rolevars["backup_secrets_dir"]), secrets


def write_config(lab_dir: Path, state: dict[str, Any]) -> Path:
    """The lab's configuration (what /etc/restic-orch/config.yml is in production), deployed as the role does.

    The repository passwords are generated once into the lab's secrets; restic_orch/lab/role-vars.yml maps
    the lab's services onto the role's variables, and render_role_config does what the role's config tasks
    do: secret files (0600) in the role's secrets directory, and the configuration (0600) from its template.
    """
    lab_dir = Path(lab_dir).resolve()
    secrets = secrets_dir(lab_dir)
    for name in ("restic-local", "restic-offsite"):
        if not (secrets / name).exists():
            write_secret(secrets / name, new_password() + "\n")
    text, deployed, secret_files = render_role_config(lab_dir, state)
    if deployed.resolve() == secrets.resolve():
        raise LabError(f"backup_secrets_dir must not be the lab's own secrets directory {secrets}")
    for name, content in secret_files.items():
        write_secret(deployed / name, content)
    if deployed.is_dir():  # as the role does: no stale credential of a feature now off
        for stale in sorted(set(os.listdir(deployed)) - set(secret_files)):
            if (deployed / stale).is_file() or (deployed / stale).is_symlink():
                (deployed / stale).unlink()
    path = lab_dir / "config.yml"
    header = ("# restic-orch configuration for the simulated homelab, written by `restic-orch lab up`: the Ansible\n"
              "# role's templates/config.yml.j2 rendered with restic_orch/lab/role-vars.yml\n")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        os.fchmod(handle.fileno(), 0o600)
        handle.write(header + text)
    return path


def up(lab_dir: Path, *, size_bytes: int = 3 * 2**20, db_scale: int = 1,
       services: tuple[str, ...] = ("s3", "s3proxy", "postgres", "mariadb", "pve", "vault", "host"),
       ) -> dict[str, Any]:
    """Start every service (idempotent: running ones are kept) and write lab_dir/config.yml."""
    lab_dir = Path(lab_dir).resolve()
    lab_dir.mkdir(parents=True, exist_ok=True)
    os.chmod(lab_dir, 0o755)  # noqa: S103 - postgres and mysql run as their own users and must reach their data dirs
    procs.check_traversable(lab_dir, "postgres")
    state = load(lab_dir) or {"dir": str(lab_dir), "services": {}}
    svc = state["services"]
    try:
        for name in services:
            if name in svc and procs.pid_alive(int(svc[name]["pid"])):
                continue
            # a restarted service keeps its data (and ports, so the written config stays right)
            port = svc[name].get("port") if name in svc else None
            seeded = name in state.setdefault("seeded", [])
            if name == "s3":
                svc["s3"] = s3.start_s3(lab_dir, port=port)
                s3.seed_tfstate(svc["s3"])  # moto keeps nothing across restarts
            elif name == "s3proxy":
                svc["s3proxy"] = start_s3_proxy(lab_dir, svc["s3"]["port"], port=port)
            elif name == "postgres":
                svc["postgres"] = postgres.start_postgres(lab_dir, port=port)
                if not seeded:
                    postgres.seed_postgres(svc["postgres"], scale=db_scale)
            elif name == "mariadb":
                svc["mariadb"] = mariadb.start_mariadb(lab_dir, port=port)
                if not seeded:
                    mariadb.seed_mariadb(svc["mariadb"], scale=db_scale)
            elif name == "pve":
                svc["pve"] = start_pve(lab_dir, size_bytes, port=port)
            elif name == "vault" and "vault" not in state:
                state["vault"] = {k: v for k, v in vault.make_vault_tree(lab_dir).items() if k != "contents"}
            elif name == "host" and "host" not in state:
                state["host"] = make_host_tree(lab_dir)
            if name not in ("vault", "host") and name not in state["seeded"]:
                state["seeded"].append(name)
            _save(lab_dir, state)
    except Exception:
        _save(lab_dir, state)
        raise
    state["config"] = str(write_config(lab_dir, state))
    _save(lab_dir, state)
    return state


_STOP = {"s3": s3.stop_s3, "s3proxy": stop_s3_proxy, "postgres": postgres.stop_postgres,
         "mariadb": mariadb.stop_mariadb, "pve": stop_pve}


def stop_service(lab_dir: Path, name: str) -> None:
    """Stop one service (fault injection); `up(lab_dir, services=(name,))` starts it again on its port."""
    info = load(lab_dir)["services"][name]
    if procs.pid_alive(int(info["pid"])):
        _STOP[name](info)


def down(lab_dir: Path) -> list[str]:
    """Stop exactly the processes `up` recorded (by pid), newest first."""
    state = load(lab_dir)
    stopped = []
    for name, info in reversed(list(state.get("services", {}).items())):
        if procs.pid_alive(int(info["pid"])):
            _STOP[name](info)
            stopped.append(f"{name} (pid {info['pid']})")
    if state:
        state["services"] = {}
        _save(Path(lab_dir), state)
    return stopped


def status(lab_dir: Path) -> dict[str, Any]:
    state = load(lab_dir)
    services = {name: {"pid": info["pid"], "port": info.get("port"), "alive": procs.pid_alive(int(info["pid"]))}
                for name, info in state.get("services", {}).items()}
    return {"dir": str(lab_dir), "config": state.get("config"), "services": services,
            "running": bool(services) and all(s["alive"] for s in services.values())}


def describe(state: dict[str, Any]) -> str:
    lines = [f"lab in {state['dir']}"]
    for name, info in state["services"].items():
        where = info.get("endpoint") or f"{info.get('host', '127.0.0.1')}:{info.get('port')}"
        lines.append(f"  {name:<9} pid {info['pid']:<8} {where}")
    lines.append(f"config: {state['config']}")
    lines.append(f"try:    restic-orch --config {state['config']} backup")
    return "\n".join(lines)


def describe_status(status_: dict[str, Any]) -> str:
    if not status_["services"]:
        return f"no lab running in {status_['dir']}"
    lines = [f"lab in {status_['dir']} (config {status_['config']})"]
    for name, info in status_["services"].items():
        lines.append(f"  {name:<9} pid {info['pid']:<8} port {info['port']}  {'up' if info['alive'] else 'DOWN'}")
    return "\n".join(lines)
