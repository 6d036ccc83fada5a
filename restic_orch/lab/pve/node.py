"""Lay out a fake node on disk, and small helpers for tests (pct-like actions)."""

from __future__ import annotations

import os
import random
import shutil
import uuid
from pathlib import Path
from typing import Any

from . import access, layout, pctconf
from . import containers as ctmod
from .rootfs import Tree, volume_dir, write_tree
from .rootfs_profiles import build_tree
from .vms import add_vm

DEFAULT_CONTAINERS: tuple[dict[str, Any], ...] = (
    {"vmid": 101, "hostname": "proxy", "cores": 1, "memory": 512},
    {"vmid": 102, "hostname": "database", "cores": 2, "memory": 2048},
    {"vmid": 103, "hostname": "monitoring", "cores": 2, "memory": 1024},
    {"vmid": 104, "hostname": "apps", "cores": 2, "memory": 1024},
)

# The default lab's QEMU guest: a small Home Assistant OS-like VM with the guest agent (every e2e run
# backs it up, so its disk stays a few MiB).
DEFAULT_VMS: tuple[dict[str, Any], ...] = (
    {"vmid": 200, "name": "haos", "cores": 2, "memory": 2048, "agent": 1},
)

DEFAULT_STORAGES: dict[str, dict[str, Any]] = {
    # Like a stock PVE install: 'local' is a dir storage that cannot hold container volumes.
    "local": {"type": "dir", "path": "storage/local", "content": "backup,iso,vztmpl"},
    "local-zfs": {"type": "zfspool", "path": "storage/local-zfs", "content": "images,rootdir",
                  "pool": "rpool/data", "sparse": 1},
}


def _mac(rng: random.Random) -> str:
    # BC:24:11 is the OUI PVE uses for generated container MAC addresses.
    return "BC:24:11:" + ":".join(f"{rng.randrange(256):02X}" for _ in range(3))


def _volname(scfg: dict[str, Any], vmid: int, disk: int) -> str:
    return f"subvol-{vmid}-disk-{disk}" if scfg["type"] != "dir" else f"{vmid}/subvol-{vmid}-disk-{disk}.subvol"


def _mountpoint_specs(ct: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """(mpN, spec) for ct['mountpoints']: a spec's 'key' or else mp0, mp1, ... in list order."""
    specs = []
    for index, spec in enumerate(ct.get("mountpoints") or ()):
        if not str(spec.get("mp", "")).startswith("/") or ".." in str(spec["mp"]).split("/"):
            raise ValueError(f"mount point needs an absolute 'mp' path: {spec!r}")
        specs.append((str(spec.get("key", f"mp{index}")), spec))
    return specs


def _mountpoint_conf(ct: dict[str, Any], storages: dict[str, dict[str, Any]]) -> dict[str, str]:
    """The mpN lines, volumes numbered after the rootfs (disk-1, disk-2, ...) like PVE's create_disks."""
    vmid = int(ct["vmid"])
    res: dict[str, str] = {}
    disk = 0
    for key, spec in _mountpoint_specs(ct):
        volume = spec.get("volume")
        if volume is None:
            disk += 1
            storage = spec.get("storage", ct.get("storage", "local-zfs"))
            volume = f"{storage}:{_volname(storages[storage], vmid, disk)}"
        mp: dict[str, Any] = {"volume": volume, "mp": spec["mp"]}
        if spec.get("backup", 1):
            mp["backup"] = 1
        if pctconf.mountpoint_type(str(volume)) == "volume":
            mp["size"] = pctconf.parse_size(str(spec.get("size", "1G")))
        mp.update(spec.get("options") or {})
        res[key] = pctconf.print_ct_mountpoint(mp, nomp=False)
    return res


def container_conf(ct: dict[str, Any], storages: dict[str, dict[str, Any]], seed: int) -> dict[str, Any]:
    vmid = int(ct["vmid"])
    storage = ct.get("storage", "local-zfs")
    scfg = storages[storage]
    volname = _volname(scfg, vmid, 0)
    rng = random.Random(f"mac:{seed}:{vmid}")
    conf: dict[str, Any] = {
        "arch": "amd64",
        "cores": str(ct.get("cores", 1)),
        "hostname": ct.get("hostname", f"CT{vmid}"),
        "memory": str(ct.get("memory", 512)),
        "swap": str(ct.get("swap", 512)),
        "net0": f"name=eth0,bridge=vmbr0,firewall=1,gw=10.0.0.1,hwaddr={_mac(rng)},"
                f"ip=10.0.0.{vmid % 200 + 10}/24,type=veth",
        "onboot": str(ct.get("onboot", 1)),
        "ostype": ct.get("ostype", "debian"),
        "rootfs": f"{storage}:{volname},size={ct.get('disk_size', '8G')}",
        "unprivileged": str(ct.get("unprivileged", 1)),
    }
    for key in ("tags", "lock", "description", "protection"):
        if key in ct:
            conf[key] = str(ct[key])
    conf.update(_mountpoint_conf(ct, storages))
    return conf


def _mountpoint_tree(ct: dict[str, Any], key: str, spec: dict[str, Any], seed: int) -> Tree:
    """A mount point volume's content: spec['files'] ({path: text or bytes}), else a README and one
    seeded payload file of spec['size_bytes'] (64 KiB)."""
    tree = Tree()
    if spec.get("files") is not None:
        for path, data in spec["files"].items():
            tree.text(path, data)
        return tree
    vmid = int(ct["vmid"])
    tree.text("README", f"mount point {key} ({spec['mp']}) of CT {vmid}\n")
    tree.blob("data.bin", 1.0, seed=f"mp:{seed}:{vmid}:{key}")
    tree.scale_to(int(spec.get("size_bytes", 64 * 1024)))
    return tree


def create_node(root: Path, node: str = "pve1", containers: list[dict[str, Any]] | None = None,
                size_bytes: int = 3 * 1024 * 1024, seed: int = 0, provision: bool = True,
                vms: list[dict[str, Any]] | None = None) -> None:
    """Create the fake node below root (which may exist but must not hold a node yet).

    containers: dicts with vmid plus optional hostname, storage ('local-zfs'), status
    ('running'), cores, memory, swap, unprivileged (1), onboot (1), ostype, disk_size ('8G'),
    size_bytes (per-container override), profile (proxy|database|monitoring|apps), tags, lock.
    Default: 101 proxy, 102 database, 103 monitoring, 104 apps, all running on local-zfs.
    vms: QEMU guests (see vms.add_vm). Default: VM 200 'haos' when `containers` is not given either (the
    default lab), else none, so a test that lists its containers gets exactly those guests.
    provision: run the pveum lines of docs/getting-started.md (user, token, roles, ACLs), as a user
    setting up a real host would; without it only root@pam exists.
    """
    cts = [dict(c) for c in (containers if containers is not None else DEFAULT_CONTAINERS)]
    root = Path(root)
    if layout.node_file(root).exists():
        raise FileExistsError(f"{root} already holds a fake node")
    root.mkdir(parents=True, exist_ok=True)
    storages = {k: dict(v) for k, v in DEFAULT_STORAGES.items()}
    layout.save_node(root, {
        "node": node,
        "storages": storages,
        "access": access.initial_access(),
        "tokens": {},
    })
    for scfg in storages.values():
        base = layout.storage_path(root, scfg)
        base.mkdir(parents=True, exist_ok=True)
        if scfg["type"] == "dir":
            for sub in ("dump", "template/cache", "template/iso", "images", "private"):
                (base / sub).mkdir(parents=True, exist_ok=True)
    layout.tasks_dir(root).mkdir(exist_ok=True)
    layout.run_dir(root).mkdir(exist_ok=True)
    owners = os.geteuid() == 0
    for ct in cts:
        add_container(root, ct, size_bytes=int(ct.get("size_bytes", size_bytes)), seed=seed, owners=owners)
    for vm in vms if vms is not None else (DEFAULT_VMS if containers is None else ()):
        add_vm(root, dict(vm), seed=seed)
    if provision:
        from .pveum import provision_from_docs

        provision_from_docs(root)


def add_root_token(root: Path, name: str = "lab") -> tuple[str, str]:
    """A root@pam API token without privilege separation (full rights), for tests that act as the admin."""
    acc = access.load(root)
    tokenid = f"{access.ROOT}!{name}"
    secret = str(uuid.uuid4())
    acc["tokens"][tokenid] = {"privsep": 0, "expire": 0, "secret": secret}
    access.save(root, acc)
    return tokenid, secret


def add_container(root: Path, ct: dict[str, Any], size_bytes: int, seed: int = 0, owners: bool | None = None) -> None:
    """Add one container (config, state, generated rootfs) to an existing fake node.

    ct['mountpoints'] (optional): a list of mount points, mp0, mp1, ... in order (or each its 'key'), each a
    dict with 'mp' (the path in the CT, required), 'storage' (the CT's), 'size' ('1G'), 'backup' (1; 0
    leaves the flag out, so vzdump skips it), 'options' (more mount point options, e.g. {'ro': 1}),
    'volume' (an explicit volume or a host path for a bind mount), and the volume's content: 'files'
    ({relative path: text or bytes}) or a generated README plus 'size_bytes' (64 KiB) of payload.
    The volume tree lives in rootfs.volume_dir(root, vmid, 'mpN'); the rootfs gets the empty mount point.
    """
    vmid = int(ct["vmid"])
    if ctmod.exists(root, vmid) or vmid in layout.list_qemu_vmids(root):
        raise FileExistsError(f"CT {vmid} already exists")
    conf = container_conf(ct, layout.storages(root), seed)
    tree = build_tree(conf["hostname"], vmid, size_bytes, seed, ct.get("profile"))
    mountpoints = _mountpoint_specs(ct)
    for _key, spec in mountpoints:
        tree.dir(spec["mp"].strip("/"))
    if owners is None:
        owners = os.geteuid() == 0
    # Unprivileged containers own their files as host uid 100000+n, like real PVE.
    shift = (100000 if conf["unprivileged"] == "1" else 0) if owners else None
    write_tree(layout.rootfs_dir(root, vmid), tree, shift)
    for key, spec in mountpoints:
        if pctconf.mountpoint_type(pctconf.parse_mountpoint(conf[key])["volume"]) == "volume":
            write_tree(volume_dir(root, vmid, key), _mountpoint_tree(ct, key, spec, seed), shift)
    ctmod.write(root, vmid, conf)
    ctmod.set_running(root, vmid, ct.get("status", "running") == "running")


def unlock(root: Path, vmid: int) -> None:
    """What `pct unlock <vmid>` does: drop any config lock (e.g. after a crashed backup)."""
    node = layout.load_node(root)["node"]

    def _drop(conf: dict[str, Any]) -> None:
        conf.pop("lock", None)

    ctmod.update(Path(root), vmid, node, _drop)


def set_lock(root: Path, vmid: int, lock: str) -> None:
    """Force a config lock, e.g. to simulate the leftover of a crashed backup."""
    node = layout.load_node(root)["node"]

    def _set(conf: dict[str, Any]) -> None:
        conf["lock"] = lock

    ctmod.update(Path(root), vmid, node, _set)


def read_config(root: Path, vmid: int) -> dict[str, Any]:
    """The container config as a dict of strings (pct config)."""
    return pctconf.parse(ctmod.conf_path(Path(root), vmid).read_text())


def remove_node(root: Path) -> None:
    shutil.rmtree(root)
