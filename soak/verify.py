"""Restores into a sandbox with the product's own `restore`, compared with the soak's record of that night.

Containers come back beside the originals (`--as-vmid 9990+`), databases under another name (`--target-db
soak_<db>`), state, vault and host files under a scratch directory (`--target-dir`); each sandbox is removed
right after its comparison, before the next night's backup could see it. VMs come back in place (`--force`, as
an operator brings a VM back: stopped, replaced, started again): a copy beside the original would get new MACs
and a new smbios1 uuid and stay stopped, in place all of the record must come back. The server-wide account dumps
(@globals, @users) cannot be restored beside the originals: their artifact is read from the snapshot and every
role or account the server had that night must be created by it.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from restic_orch.hooks.terraform_state import key_to_relpath
from restic_orch.lab import pve
from restic_orch.lab.mariadb import mariadb_sql
from restic_orch.lab.postgres import psql
from restic_orch.restic import Repo, Snapshot

from . import proctree, reads, record
from .lab import Lab

PLAIN = ("tfstate:", "vault:", "files:")


@dataclass
class Verified:
    count: int = 0
    by_kind: dict[str, int] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    def ok(self, component: str) -> None:
        self.count += 1
        kind = component.split(":", 1)[0]
        self.by_kind[kind] = self.by_kind.get(kind, 0) + 1


def cli(config: Path, *args: str, timeout: float = 900) -> tuple[int, dict[str, Any] | None, str]:
    """The real CLI in a child process, --json: (exit code, its JSON, stderr)."""
    proc = proctree.start(["restic_orch.cli", "--config", str(config), "--json", *args])
    out, err = proc.communicate(timeout=timeout)
    data = json.loads(out) if out.strip().startswith("{") else None
    return proc.returncode, data, err


def manifest(repo: Repo, snap: Snapshot) -> dict[str, str]:
    """The snapshot's own manifest: component -> the artifact's path in the staged day."""
    with tempfile.TemporaryDirectory(prefix="soak-manifest-") as tmp:
        out = Path(tmp) / "manifest.json"
        reads.dump(repo, snap, "manifest.json", out)
        return {a["component"]: a["path"] for a in json.loads(out.read_text())["artifacts"]}


def restore(lab: Lab, repo: Repo, snap: Snapshot, components: Iterable[str], want: dict[str, Any],
            where: str, done: Verified) -> None:
    """Restore each component of `snap` into a sandbox and compare it with `want` (the night's record)."""
    wanted = sorted(components)
    plain = [c for c in wanted if c.startswith(PLAIN)]
    if plain:
        _plain(lab, repo, snap, plain, want, where, done)
    for component in wanted:
        if component.startswith("ct:"):
            _container(lab, repo, snap, component, want[component], where, done)
        elif component.startswith("vm:"):
            _vm(lab, repo, snap, component, want[component], where, done)
        elif component.startswith("db:") and "/@" in component:
            _accounts(repo, snap, component, want[component], where, done)
        elif component.startswith("db:"):
            _database(lab, repo, snap, component, want[component], where, done)


def _restore_cli(lab: Lab, repo: Repo, snap: Snapshot, only: list[str], *extra: str) -> str | None:
    """None when the product's restore said success, else why not."""
    rc, data, err = cli(lab.config_path, "restore", "--snapshot", snap.short_id, "--from", repo.name,
                        "--only", ",".join(only), *extra, "--yes")
    if rc == 0 and data and data.get("status") == "success":
        return None
    failures = (data or {}).get("failures") or [{"message": err.strip()[-400:]}]
    return f"restore exited {rc}: " + "; ".join(str(f.get("message", ""))[:300] for f in failures)


def _plain(lab: Lab, repo: Repo, snap: Snapshot, components: list[str], want: dict[str, Any], where: str,
           done: Verified) -> None:
    target = Path(tempfile.mkdtemp(prefix="soak-restore-"))
    try:
        why = _restore_cli(lab, repo, snap, components, "--target-dir", str(target))
        for component in components:
            if why:
                done.problems.append(f"{where} {component}: {why}")
                continue
            kind, name = component.split(":", 1)
            if kind == "tfstate":
                path = target / key_to_relpath(name)
                got: Any = record.file_entry(path)[2] if path.is_file() else None
            else:
                path = target / name.lstrip("/")
                got = record.file_entry(path) if path.exists() or path.is_symlink() else None
            if got != want[component]:
                done.problems.append(f"{where} {component}: restored {got} but the night held {want[component]}")
            else:
                done.ok(component)
    finally:
        shutil.rmtree(target, ignore_errors=True)


def _container(lab: Lab, repo: Repo, snap: Snapshot, component: str, want: dict[str, Any], where: str,
               done: Verified) -> None:
    vmid = record.SANDBOX_VMID + int(component.split(":")[1]) % 10
    destroy(lab, vmid)
    try:
        why = _restore_cli(lab, repo, snap, [component], "--as-vmid", str(vmid))
        if why:
            done.problems.append(f"{where} {component}: {why}")
            return
        root = lab.pve_root
        got = {"config": record.ct_config(root, vmid), "rootfs": record.tree(pve.rootfs_dir(root, vmid))}
        # a copy beside the original is restored with onboot=0 (it must never start at boot next to production)
        expected = {**want["config"], "onboot": "0"}
        if got["config"] != expected:
            done.problems.append(f"{where} {component}: config {got['config']} != {expected}")
        elif got["rootfs"] != want["rootfs"]:
            differs = _tree_diff(want["rootfs"], got["rootfs"])
            done.problems.append(f"{where} {component}: root filesystem differs: {differs}")
        else:
            done.ok(component)
    finally:
        destroy(lab, vmid)


def _vm(lab: Lab, repo: Repo, snap: Snapshot, component: str, want: dict[str, Any], where: str,
        done: Verified) -> None:
    """In place: the VM the lab runs becomes the snapshot's. Tonight's snapshot holds what the lab holds, so the
    lab is unchanged; an older one (the closing, when the last night lacks the VM) puts back that night's."""
    why = _restore_cli(lab, repo, snap, [component], "--force")
    if why:
        done.problems.append(f"{where} {component}: {why}")
        return
    vmid = int(component.split(":")[1])
    got = record.vm(lab.pve_root, vmid)
    if got["config"] != want["config"]:
        differ = sorted(k for k in {*got["config"], *want["config"]} if got["config"].get(k) != want["config"].get(k))
        done.problems.append(f"{where} {component}: config differs in {differ}: {got['config']} != {want['config']}")
    elif got["disks"] != want["disks"]:
        differ = sorted(k for k in {*got["disks"], *want["disks"]} if got["disks"].get(k) != want["disks"].get(k))
        done.problems.append(f"{where} {component}: disk images differ: {differ}")
    else:
        done.ok(component)


def _tree_diff(want: dict[str, Any], got: dict[str, Any]) -> list[str]:
    lines = [f"missing {p}" for p in sorted(set(want) - set(got))]
    lines += [f"extra {p}" for p in sorted(set(got) - set(want))]
    lines += [f"differs {p}" for p in sorted(set(want) & set(got)) if want[p] != got[p]]
    return lines[:10]


def destroy(lab: Lab, vmid: int) -> None:
    """Remove a sandbox container through the PVE API, as an operator would."""
    api = lab.pve_api()
    node = api.nodes(lab.services()["pve"]["node"])
    if vmid not in {int(ct["vmid"]) for ct in node.lxc.get()}:
        return
    upid = node.lxc(vmid).delete(force=1, purge=1)
    deadline = time.monotonic() + 120
    while node.tasks(upid).status.get().get("status") != "stopped" and time.monotonic() < deadline:
        time.sleep(0.1)


def _database(lab: Lab, repo: Repo, snap: Snapshot, component: str, want: dict[str, Any], where: str,
              done: Verified) -> None:
    source, name = component.split(":", 1)[1].split("/", 1)
    target = f"{record.SANDBOX_DB}{name}"
    services = lab.services()
    is_pg = source == "pg"
    drop = f'DROP DATABASE IF EXISTS "{target}";' if is_pg else f"DROP DATABASE IF EXISTS `{target}`;"
    sql = (lambda q: psql(services["postgres"], q)) if is_pg else (lambda q: mariadb_sql(services["mariadb"], q))
    sql(drop)
    try:
        why = _restore_cli(lab, repo, snap, [component], "--target-db", target)
        if why:
            done.problems.append(f"{where} {component}: {why}")
            return
        got = (record.pg_tables(services["postgres"], target) if is_pg
               else record.my_tables(services["mariadb"], target))
        if got != want:
            differ = sorted(t for t in set(got) | set(want) if got.get(t) != want.get(t))
            done.problems.append(f"{where} {component}: tables differ: {differ}")
        else:
            done.ok(component)
    finally:
        sql(drop)


def _accounts(repo: Repo, snap: Snapshot, component: str, want: dict[str, Any], where: str, done: Verified) -> None:
    with tempfile.TemporaryDirectory(prefix="soak-accounts-") as tmp:
        out = Path(tmp) / "dump.sql"
        reads.dump(repo, snap, manifest(repo, snap)[component], out)
        text = out.read_text(errors="replace")
    if "roles" in want:
        missing = [r for r in want["roles"] if f"CREATE ROLE {r};" not in text]
    else:
        missing = [u for u in want["users"] if f"`{u}`@" not in text]
    if missing:
        done.problems.append(f"{where} {component}: the dump creates none of {missing}")
    else:
        done.ok(component)
