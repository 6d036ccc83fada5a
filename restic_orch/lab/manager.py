"""`restic-orch lab up|down|status`: start the whole simulated homelab and write a config pointing at it."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import yaml

from . import mariadb, postgres, procs, s3, vault
from .procs import LabError
from .secrets import new_password, secrets_dir, write_secret

__all__ = ["LabError", "up", "down", "status", "describe", "describe_status", "write_config"]

STATE = "lab.json"


def _save(lab_dir: Path, state: dict[str, Any]) -> None:
    (lab_dir / STATE).write_text(json.dumps(state, indent=2, default=str) + "\n")


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


def write_config(lab_dir: Path, state: dict[str, Any]) -> Path:
    """A complete restic-orch configuration for the lab (what /etc/restic-orch/config.yml is in production)."""
    secrets = secrets_dir(lab_dir)
    for name in ("restic-local", "restic-offsite"):
        if not (secrets / name).exists():
            write_secret(secrets / name, new_password() + "\n")
    svc = state["services"]
    sources: dict[str, Any] = {}
    if "pve" in svc:
        pve = svc["pve"]
        sources["proxmox"] = {"host": pve["host"], "port": pve["port"], "user": "backup@pve",
                              "token_name": "restic-orch", "token_file": pve["token_file"],
                              "verify_ssl": False, "node": pve["node"], "storage": "local",
                              "restore_storage": "local-zfs"}
    if "postgres" in svc:
        pg = svc["postgres"]
        sources["postgres"] = [{"name": "pg", "host": pg["host"], "port": pg["port"], "user": pg["user"],
                                "password_file": pg["password_file"], "restore_user": pg["restore_user"],
                                "restore_password_file": pg["restore_password_file"]}]
    if "mariadb" in svc:
        my = svc["mariadb"]
        sources["mysql"] = [{"name": "mariadb", "host": my["host"], "port": my["port"], "user": my["user"],
                             "password_file": my["password_file"], "restore_user": my["restore_user"],
                             "restore_password_file": my["restore_password_file"]}]
    # everything reaches S3 through the proxy, so tests can cut S3 off without losing moto's in-memory data
    endpoint = svc["s3proxy"]["endpoint"] if "s3proxy" in svc else svc.get("s3", {}).get("endpoint")
    if "s3" in svc:
        sources["terraform_state"] = {"endpoint": endpoint, "region": svc["s3"]["region"],
                                      "bucket": svc["s3"]["buckets"]["tfstate"], "env_file": svc["s3"]["env_file"]}
    if "vault" in state:
        sources["ansible_vault"] = {"paths": [str(Path(state["vault"]["root"]) / state["vault"]["globs"][0])],
                                    "password_file": state["vault"]["password_file"]}
    repositories: dict[str, Any] = {
        "local": {"url": str(lab_dir / "repo"), "password_file": str(secrets / "restic-local"),
                  "retention": {"keep_within_daily": "7d"}},
    }
    if "s3" in svc:
        repositories["offsite"] = {
            "url": f"s3:{endpoint}/{svc['s3']['buckets']['offsite']}",
            "password_file": str(secrets / "restic-offsite"), "env_file": svc["s3"]["env_file"],
            "options": {"s3.bucket-lookup": "path"},
            "retention": {"keep_within_daily": "30d"}, "prune_every_days": 7,
        }
    config = {
        "host": "pve1",
        "staging_dir": str(lab_dir / "staging"),
        "state_dir": str(lab_dir / "state"),
        "log_dir": str(lab_dir / "log"),
        "auto_init": True,
        "repositories": repositories,
        "sources": sources,
        "limits": {"nice": 10, "ionice_class": "best-effort", "gomaxprocs": 2, "lock_wait_seconds": 30,
                   # uncapped: the test suite runs many small backups side by side; the cap has its own tests
                   "min_free_bytes": 64 * 2**20, "cpu_percent": None},
        "monitoring": {"textfile_dir": str(lab_dir / "metrics")},
        "drill": {"vmid_range": [9900, 9999], "report_dir": str(lab_dir / "drills")},
    }
    path = lab_dir / "config.yml"
    header = "# restic-orch configuration for the simulated homelab, written by `restic-orch lab up`\n"
    path.write_text(header + yaml.safe_dump(config, sort_keys=False))
    os.chmod(path, 0o600)
    return path


def up(lab_dir: Path, *, size_bytes: int = 3 * 2**20, db_scale: int = 1,
       services: tuple[str, ...] = ("s3", "s3proxy", "postgres", "mariadb", "pve", "vault")) -> dict[str, Any]:
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
            if name != "vault" and name not in state["seeded"]:
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
