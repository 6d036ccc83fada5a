"""Fingerprints of what a restore must bring back (or leave alone), read straight from the lab's parts.

Every helper reads the real thing — the fake node's files, PostgreSQL, MariaDB, the S3 bucket, the vault files —
never what restic-orch says about it, so a test comparing them fails when the restore is wrong.
"""

from __future__ import annotations

import fnmatch
import hashlib
import os
import shutil
import stat
import time
from pathlib import Path
from typing import Any

from proxmoxer import ProxmoxAPI

from restic_orch.config import Config, load_config
from restic_orch.lab import pve
from restic_orch.lab.mariadb import mariadb_sql
from restic_orch.lab.postgres import psql
from restic_orch.lab.pve.vzdump import STD_EXCLUDES
from restic_orch.lab.s3 import s3_client
from tests.clihelp import restic_orch

PG_DATABASES = ("inventory", "appdb")
MARIADB_DATABASES = ("blog", "shop")
VMIDS = (101, 102, 103, 104)
# Written into the archive by vzdump and consumed by the restore (PVE leaves an empty pct.fw and the
# directory behind): not part of what the container held before its backup.
VZDUMP_LEFTOVERS = ("etc/vzdump",)
# vzdump's standard excludes (./tmp/?*, ./var/tmp/?*, ./var/run/?*.pid): never in a backup, by design
NOT_BACKED_UP = tuple(STD_EXCLUDES)


# ---------------------------------------------------------------- lab handles
def clean_repos(lab: dict) -> Config:
    """What the `fresh_repos` fixture does (for a module-wide backup): empty local and offsite repositories,
    staging and state cleared."""
    config = load_config(lab["config"])
    for path in (Path(config.repositories.local.url), config.staging_dir, config.state_dir):
        shutil.rmtree(path, ignore_errors=True)
    s3 = s3_client(services(lab)["s3"])
    bucket = services(lab)["s3"]["buckets"]["offsite"]
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        keys = [{"Key": o["Key"]} for o in page.get("Contents", [])]
        if keys:
            s3.delete_objects(Bucket=bucket, Delete={"Objects": keys})
    return config


def repair(lab: dict, *selectors: str) -> None:
    """Best effort, after a failed test only: put back what the test destroyed so later tests find the lab."""
    restic_orch(lab["config"], "restore", "--only", ",".join(selectors), "--force", "--yes", input="")


def services(lab: dict) -> dict[str, Any]:
    return lab["state"]["services"]


def pve_root(lab: dict) -> Path:
    return Path(services(lab)["pve"]["root"])


def pve_api(lab: dict) -> ProxmoxAPI:
    info = services(lab)["pve"]
    token = Path(info["token_file"]).read_text().strip()
    return ProxmoxAPI(info["host"], port=info["port"], user="backup@pve", token_name="restic-orch",
                      token_value=token, verify_ssl=False, backend="https", timeout=60)


def wait_task(api: ProxmoxAPI, upid: str, timeout: float = 120) -> str:
    node = api.nodes("pve1")
    deadline = time.time() + timeout
    while time.time() < deadline:
        status = node.tasks(upid).status.get()
        if status.get("status") == "stopped":
            return str(status.get("exitstatus"))
        time.sleep(0.1)
    raise AssertionError(f"task {upid} still running after {timeout} s")


def destroy_container(lab: dict, vmid: int) -> None:
    """What an operator (or a disk failure) does: stop and destroy the CT through the PVE API."""
    api = pve_api(lab)
    upid = api.nodes("pve1").lxc(vmid).delete(force=1, purge=1)
    status = wait_task(api, upid)
    assert status == "OK" or status.startswith("WARNINGS"), status  # a forced stop is a warning
    assert vmid not in existing_vmids(lab)
    assert not pve.rootfs_dir(pve_root(lab), vmid).exists()


def existing_vmids(lab: dict) -> set[int]:
    return {int(ct["vmid"]) for ct in pve_api(lab).nodes("pve1").lxc.get()}


def api_configs(lab: dict) -> dict[int, dict]:
    """GET .../config of every container, digest included (what PVE shows and changes on any write)."""
    node = pve_api(lab).nodes("pve1")
    return {vmid: node.lxc(vmid).config.get() for vmid in sorted(existing_vmids(lab))}


def task_list(lab: dict) -> list[tuple[str, str, str]]:
    tasks = pve_api(lab).nodes("pve1").tasks.get(limit=10000, source="all")
    return sorted((t["upid"], t["type"], str(t.get("status", ""))) for t in tasks)


# ---------------------------------------------------------------- containers
def tree_fingerprint(root: Path, skip: tuple[str, ...] = VZDUMP_LEFTOVERS) -> dict[str, tuple]:
    """Every path below root: type, mode, owner, and the bytes' sha256 or the symlink's target."""
    found: dict[str, tuple] = {}
    root = Path(root)
    for dirpath, dirnames, filenames in os.walk(root):
        rel_dir = os.path.relpath(dirpath, root)
        for name in sorted(dirnames + filenames):
            full = os.path.join(dirpath, name)
            rel = os.path.normpath(os.path.join(rel_dir, name))
            if any(rel == s or rel.startswith(s + "/") for s in skip) or \
                    any(fnmatch.fnmatchcase("./" + rel, pattern) for pattern in NOT_BACKED_UP):
                continue
            st = os.lstat(full)
            mode = stat.S_IMODE(st.st_mode)
            if stat.S_ISLNK(st.st_mode):
                found[rel] = ("symlink", mode, st.st_uid, st.st_gid, os.readlink(full))
            elif stat.S_ISDIR(st.st_mode):
                found[rel] = ("dir", mode, st.st_uid, st.st_gid)
            elif stat.S_ISREG(st.st_mode):
                found[rel] = ("file", mode, st.st_uid, st.st_gid, hashlib.sha256(Path(full).read_bytes()).hexdigest())
            else:
                found[rel] = ("special", stat.S_IFMT(st.st_mode), mode, st.st_uid, st.st_gid, st.st_rdev)
        # os.walk does not descend into symlinked directories: fine, they are recorded as symlinks
    return found


def tree_diff(before: dict[str, tuple], after: dict[str, tuple]) -> list[str]:
    lines = [f"missing {p}" for p in sorted(set(before) - set(after))]
    lines += [f"extra {p}" for p in sorted(set(after) - set(before))]
    lines += [f"differs {p}: {before[p]} != {after[p]}" for p in sorted(set(before) & set(after))
              if before[p] != after[p]]
    return lines


def rootfs_fingerprint(lab: dict, vmid: int) -> dict[str, tuple]:
    path = pve.rootfs_dir(pve_root(lab), vmid)
    assert path.is_dir(), f"CT {vmid} has no rootfs at {path}"
    return tree_fingerprint(path)


def ct_config(lab: dict, vmid: int) -> dict[str, str]:
    return dict(pve.read_config(pve_root(lab), vmid))


def comparable_config(conf: dict[str, str]) -> dict[str, str]:
    """The config without what PVE itself changes on a restore over an existing CT: the rootfs volume name
    (a new subvol beside the old one), keeping the storage and size."""
    conf = dict(conf)
    rootfs = conf.pop("rootfs", "")
    storage = rootfs.split(":", 1)[0]
    size = [p for p in rootfs.split(",") if p.startswith("size=")]
    conf["rootfs"] = f"{storage}:<volume>,{','.join(size)}"
    return conf


def containers_snapshot(lab: dict, vmids: tuple[int, ...] = VMIDS) -> dict[int, tuple[dict, dict]]:
    return {vmid: (ct_config(lab, vmid), rootfs_fingerprint(lab, vmid)) for vmid in vmids}


# what a restore in place brings back unchanged (vmgenid is new on every qmrestore, digest with any write)
VM_KEYS = ("name", "memory", "cores", "sockets", "ostype", "scsihw", "boot", "agent", "net0", "scsi0", "smbios1")


def vm_snapshot(lab: dict, vmid: int = 200) -> tuple[dict, str, str]:
    """A VM's kept config keys, the sha256 of its disk image as the storage holds it, and its status."""
    from restic_orch.lab.pve import qemu as fake_qemu

    guest = pve_api(lab).nodes("pve1").qemu(vmid)
    config = guest.config.get()
    volid = config["scsi0"].split(",")[0]
    digest = hashlib.sha256(fake_qemu.image_path(pve_root(lab), volid).read_bytes()).hexdigest()
    return {k: config.get(k) for k in VM_KEYS}, digest, guest.status.current.get()["status"]


def running(lab: dict, vmid: int) -> bool:
    return pve_api(lab).nodes("pve1").lxc(vmid).status.current.get()["status"] == "running"


# ---------------------------------------------------------------- databases
def pg_info(lab: dict) -> dict:
    return services(lab)["postgres"]


def my_info(lab: dict) -> dict:
    return services(lab)["mariadb"]


def pg_databases(lab: dict) -> set[str]:
    out = psql(pg_info(lab), "SELECT datname FROM pg_database WHERE NOT datistemplate;")
    return {line for line in out.splitlines() if line}


def pg_fingerprint(lab: dict, db: str) -> dict[str, tuple[int, str]]:
    """table -> (row count, md5 of every row as text, ordered)."""
    info = pg_info(lab)
    tables = [t for t in psql(info, "SELECT tablename FROM pg_tables WHERE schemaname = 'public'"
                                    " ORDER BY tablename;", db).splitlines() if t]
    assert tables, f"database {db} has no table"
    result = {}
    for table in tables:
        out = psql(info, f"SELECT count(*), md5(coalesce(string_agg(t::text, E'\\n' ORDER BY t::text), ''))"
                         f" FROM public.\"{table}\" t;", db).strip()
        count, digest = out.split("|")
        result[table] = (int(count), digest)
    return result


def my_databases(lab: dict) -> set[str]:
    return {line for line in mariadb_sql(my_info(lab), "SHOW DATABASES;").splitlines() if line}


def my_fingerprint(lab: dict, db: str) -> dict[str, tuple[int, str]]:
    """table -> (row count, sha256 of `SELECT md5(every column as hex) ... ORDER BY` every column)."""
    info = my_info(lab)
    tables = [t for t in mariadb_sql(info, "SELECT table_name FROM information_schema.tables WHERE table_schema"
                                           f" = '{db}' AND table_type = 'BASE TABLE' ORDER BY table_name;")
              .splitlines() if t]
    assert tables, f"database {db} has no table"
    result = {}
    for table in tables:
        columns = [c for c in mariadb_sql(info, "SELECT column_name FROM information_schema.columns WHERE"
                                                f" table_schema = '{db}' AND table_name = '{table}'"
                                                " ORDER BY ordinal_position;").splitlines() if c]
        row = ", ".join(f"COALESCE(HEX(`{c}`), 'NULL')" for c in columns)
        order = ", ".join(f"`{c}`" for c in columns)
        out = mariadb_sql(info, f"SELECT MD5(CONCAT_WS('|', {row})) FROM `{table}` ORDER BY {order};", db)
        result[table] = (out.count("\n"), hashlib.sha256(out.encode()).hexdigest())
    return result


def databases_snapshot(lab: dict) -> dict[str, dict]:
    data: dict[str, dict] = {}
    for db in PG_DATABASES:
        data[f"pg/{db}"] = pg_fingerprint(lab, db)
    for db in MARIADB_DATABASES:
        data[f"mariadb/{db}"] = my_fingerprint(lab, db)
    return data


# ---------------------------------------------------------------- terraform state and vault files
def tf_bucket(lab: dict) -> str:
    return services(lab)["s3"]["buckets"]["tfstate"]


def tf_objects(lab: dict) -> dict[str, bytes]:
    s3 = s3_client(services(lab)["s3"])
    bucket = tf_bucket(lab)
    found = {}
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        for obj in page.get("Contents", []):
            found[obj["Key"]] = s3.get_object(Bucket=bucket, Key=obj["Key"])["Body"].read()
    return found


def vault_files(lab: dict) -> dict[str, tuple[bytes, int]]:
    vault = lab["state"]["vault"]
    return {path: (Path(path).read_bytes(), stat.S_IMODE(os.stat(path).st_mode))
            for path in vault["encrypted"] + vault["plaintext"]}


def whole_lab(lab: dict) -> dict[str, Any]:
    """Everything a restore may change, to prove that one changed nothing."""
    return {"containers": containers_snapshot(lab), "databases": databases_snapshot(lab),
            "tfstate": tf_objects(lab), "vault": vault_files(lab), "vmids": existing_vmids(lab)}
