"""The soak's own record of what the lab held on a night, read straight from the lab's parts.

Every value comes from the real thing (the fake node's files, PostgreSQL, MariaDB, the S3 bucket, the vault and
host files), never from what restic-orch says, and is named by the product's component (ct:101, vm:200,
db:pg/appdb...) so a restored copy can be compared with it. Compact JSON-able values: a tree's entries, a disk
image's sha256, a table's row digest.
"""

from __future__ import annotations

import fnmatch
import hashlib
import os
import stat
from pathlib import Path
from typing import Any

from restic_orch.lab import pve
from restic_orch.lab.mariadb import mariadb_sql
from restic_orch.lab.postgres import psql
from restic_orch.lab.pve import qemu, qmconf
from restic_orch.lab.pve.layout import list_qemu_vmids, list_vmids
from restic_orch.lab.pve.vzdump import STD_EXCLUDES
from restic_orch.lab.s3 import s3_client

from .lab import Lab

SANDBOX_VMID = 9990          # restored containers go to 9990.. (the drill's spare range), then are destroyed
SANDBOX_DB = "soak_"         # restored databases: soak_<name>, dropped after the comparison
MARIADB_SYSTEM = {"information_schema", "mysql", "performance_schema", "sys"}
# written into the archive by vzdump and consumed by the restore: not part of what the container held
VZDUMP_LEFTOVERS = ("etc/vzdump",)
# what a VM restored in place keeps (qemu-server's restore: vmgenid is always new, a copy beside gets new MACs
# and a new smbios1 uuid, and is not compared with this)
VM_KEPT = ("name", "memory", "cores", "net0", "scsi0", "smbios1")

Record = dict[str, Any]


def take(lab: Lab) -> Record:
    """Every component of the lab and its fingerprint, now."""
    record: Record = {}
    record.update(containers(lab))
    record.update(vms(lab))
    record.update(databases(lab))
    record.update(states(lab))
    record.update(plain_files(lab))
    return record


# ---------------------------------------------------------------- containers
def tree(root: Path) -> dict[str, list[Any]]:
    """Every path below root: type, mode, owner, and the bytes' sha256 or the symlink's target."""
    found: dict[str, list[Any]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        rel_dir = os.path.relpath(dirpath, root)
        for name in sorted(dirnames + filenames):
            full = os.path.join(dirpath, name)
            rel = os.path.normpath(os.path.join(rel_dir, name))
            if any(rel == s or rel.startswith(s + "/") for s in VZDUMP_LEFTOVERS) or \
                    any(fnmatch.fnmatchcase("./" + rel, pattern) for pattern in STD_EXCLUDES):
                continue  # vzdump's standard excludes: never in a backup, by design
            found[rel] = _entry(full)
    return found


def _entry(path: str) -> list[Any]:
    st = os.lstat(path)
    head = [stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid]
    if stat.S_ISLNK(st.st_mode):
        return ["symlink", *head, os.readlink(path)]
    if stat.S_ISDIR(st.st_mode):
        return ["dir", *head]
    if stat.S_ISREG(st.st_mode):
        return ["file", *head, hashlib.sha256(Path(path).read_bytes()).hexdigest()]
    return ["special", stat.S_IFMT(st.st_mode), *head, st.st_rdev]


def ct_config(root: Path, vmid: int) -> dict[str, str]:
    """The config a restore beside the original must bring back: all but the NIC (new MACs), the volume name."""
    conf = dict(pve.read_config(root, vmid))
    size = [p for p in conf.pop("rootfs", "").split(",") if p.startswith("size=")]
    conf = {k: v for k, v in conf.items() if not k.startswith("net") and k not in ("lock", "digest")}
    return {**conf, "rootfs": ",".join(size)}


def containers(lab: Lab) -> Record:
    root = lab.pve_root
    return {f"ct:{vmid}": {"config": ct_config(root, vmid), "rootfs": tree(pve.rootfs_dir(root, vmid))}
            for vmid in list_vmids(root) if vmid < SANDBOX_VMID}


# ---------------------------------------------------------------- virtual machines
def vm_images(root: Path, vmid: int) -> dict[str, Path]:
    """Each disk of a VM (CD-ROMs are not backed up) and the raw image the fake node keeps for it."""
    conf = qmconf.parse(qemu.conf_path(root, vmid).read_text())
    return {key: qemu.image_path(root, str(drive["file"])) for key, drive in qmconf.drives(conf)
            if not qmconf.is_cdrom(drive)}


def vm(root: Path, vmid: int) -> Record:
    """A VM's fingerprint: the config keys an in-place restore keeps, and the sha256 of each disk image."""
    conf = qmconf.parse(qemu.conf_path(root, vmid).read_text())
    disks = {}
    for key, path in vm_images(root, vmid).items():
        with path.open("rb") as handle:
            disks[key] = hashlib.file_digest(handle, "sha256").hexdigest()
    return {"config": {k: str(conf[k]) for k in VM_KEPT if k in conf}, "disks": disks}


def vms(lab: Lab) -> Record:
    root = lab.pve_root
    return {f"vm:{vmid}": vm(root, vmid) for vmid in list_qemu_vmids(root) if vmid < SANDBOX_VMID}


# ---------------------------------------------------------------- databases
def pg_tables(info: dict[str, Any], db: str) -> dict[str, list[Any]]:
    """table -> [row count, md5 of every row as text, ordered]."""
    listing = "SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY tablename;"
    result: dict[str, list[Any]] = {}
    for table in [t for t in psql(info, listing, db).splitlines() if t]:
        digest = "md5(coalesce(string_agg(t::text, E'\\n' ORDER BY t::text), ''))"
        rows = f"SELECT count(*), {digest} FROM public.\"{table}\" t;"  # noqa: S608 - the lab's own tables
        count, md5 = psql(info, rows, db).strip().split("|")
        result[table] = [int(count), md5]
    return result


def my_tables(info: dict[str, Any], db: str) -> dict[str, list[Any]]:
    """table -> [row count, sha256 of each row's md5 over every column as hex, ordered by every column]."""
    where = f"table_schema = '{db}' AND table_type = 'BASE TABLE'"
    listing = f"SELECT table_name FROM information_schema.tables WHERE {where} ORDER BY 1;"  # noqa: S608
    result: dict[str, list[Any]] = {}
    for table in [t for t in mariadb_sql(info, listing).splitlines() if t]:
        where = f"table_schema = '{db}' AND table_name = '{table}'"
        names = f"SELECT column_name FROM information_schema.columns WHERE {where} ORDER BY ordinal_position;"  # noqa: S608
        columns = [c for c in mariadb_sql(info, names).splitlines() if c]
        row = ", ".join(f"COALESCE(HEX(`{c}`), 'NULL')" for c in columns)
        order = ", ".join(f"`{c}`" for c in columns)
        query = f"SELECT MD5(CONCAT_WS('|', {row})) FROM `{table}` ORDER BY {order};"  # noqa: S608
        out = mariadb_sql(info, query, db)
        result[table] = [out.count("\n"), hashlib.sha256(out.encode()).hexdigest()]
    return result


def pg_names(info: dict[str, Any]) -> list[str]:
    return [d for d in psql(info, "SELECT datname FROM pg_database WHERE NOT datistemplate ORDER BY 1;").splitlines()
            if d and not d.startswith(SANDBOX_DB)]


def my_names(info: dict[str, Any]) -> list[str]:
    return [d for d in mariadb_sql(info, "SHOW DATABASES;").splitlines()
            if d and d not in MARIADB_SYSTEM and not d.startswith(SANDBOX_DB)]


def databases(lab: Lab) -> Record:
    """Each database's rows, and the server-wide accounts (their dump is checked for every name)."""
    services = lab.services()
    pg, my = services["postgres"], services["mariadb"]
    record: Record = {f"db:pg/{db}": pg_tables(pg, db) for db in pg_names(pg)}
    record.update({f"db:mariadb/{db}": my_tables(my, db) for db in my_names(my)})
    roles = psql(pg, "SELECT rolname FROM pg_roles WHERE rolname !~ '^pg_' ORDER BY 1;").split()
    record["db:pg/@globals"] = {"roles": roles}
    users = mariadb_sql(my, "SELECT DISTINCT user FROM mysql.user WHERE user <> '' AND user NOT IN"
                            " ('mariadb.sys', 'root', 'mysql') ORDER BY 1;").split()
    record["db:mariadb/@users"] = {"users": users}
    return record


# ---------------------------------------------------------------- state, vault and host files
def states(lab: Lab) -> Record:
    info = lab.services()["s3"]
    s3, bucket = s3_client(info), info["buckets"]["tfstate"]
    keys = [o["Key"] for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket)
            for o in page.get("Contents", [])]
    return {f"tfstate:{key}": hashlib.sha256(s3.get_object(Bucket=bucket, Key=key)["Body"].read()).hexdigest()
            for key in keys}


def file_entry(path: Path) -> list[Any]:
    """A vault or host file as a restore must give it back: its bytes (or link target) and its mode."""
    if path.is_symlink():
        return ["symlink", os.readlink(path)]
    return ["file", stat.S_IMODE(path.stat().st_mode), hashlib.sha256(path.read_bytes()).hexdigest()]


def plain_files(lab: Lab) -> Record:
    config = lab.config
    record: Record = {}
    vault = config.sources.ansible_vault
    for pattern in vault.paths if vault else []:
        for path in sorted(Path("/").glob(str(pattern).lstrip("/"))):
            record[f"vault:{path}"] = file_entry(path)
    files = config.sources.files
    excluded = [str(p) for p in (files.exclude if files else [])]
    for base in files.paths if files else []:
        for path in _walk(Path(base)):
            if not any(fnmatch.fnmatchcase(str(path), pattern) for pattern in excluded):
                record[f"files:{path}"] = file_entry(path)
    return record


def _walk(base: Path) -> list[Path]:
    if base.is_symlink() or not base.is_dir():
        return [base]
    found = []
    for dirpath, dirnames, filenames in os.walk(base):
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            if path.is_symlink() or path.is_file():
                found.append(path)
    return sorted(found)
