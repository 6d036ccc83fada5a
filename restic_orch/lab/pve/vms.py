"""Seeding QEMU guests on a fake node: a qemu-server config like the GUI's create wizard writes, and a
deterministic raw disk image (data, text, whole zero clusters and scattered zero 4 KiB blocks)."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

from . import layout, qemu, qmconf
from .errors import TaskError

DISK_BYTES = 6 * 1024 * 1024
CLUSTER = 64 * 1024
BLOCK = 4096


def vm_conf(vm: dict[str, Any], volid: str, size: int, seed: int) -> dict[str, Any]:
    vmid = int(vm["vmid"])
    rng = random.Random(f"qemu:{seed}:{vmid}")
    scsi0 = {"file": volid, "discard": "on", "iothread": "1", "size": size, "ssd": "1"}
    conf: dict[str, Any] = {
        "boot": "order=scsi0;ide2;net0",
        "cores": str(vm.get("cores", 2)),
        "cpu": "x86-64-v2-AES",
        "ide2": "none,media=cdrom",
        "memory": str(vm.get("memory", 2048)),
        # PVE::QemuServer::MetaInfo::new_meta_info_string: the QEMU version and the creation time
        "meta": f"creation-qemu=8.1.5,ctime={int(vm.get('ctime', 1700000000))}",
        "name": vm.get("name", f"vm{vmid}"),
        "net0": qmconf.print_net({"model": "virtio", "macaddr": qmconf.random_mac(rng), "bridge": "vmbr0",
                                  "firewall": "1"}),
        "numa": "0",
        "onboot": str(vm.get("onboot", 1)),
        "ostype": vm.get("ostype", "l26"),
        "scsi0": qmconf.print_drive(scsi0),
        "scsihw": "virtio-scsi-single",
        "smbios1": f"uuid={qmconf.new_uuid(rng)}",
        "sockets": "1",
        "vmgenid": qmconf.new_uuid(rng),
    }
    if vm.get("agent", 1):
        conf["agent"] = str(vm.get("agent", 1))
    for key in ("tags", "lock", "description", "protection"):
        if key in vm:
            conf[key] = str(vm[key])
    return conf


def _cluster(rng: random.Random, index: int) -> bytes | None:
    """One 64 KiB cluster of the seeded disk; None for an all-zero one."""
    kind = rng.random()
    if index == 0:  # a partition-table-like start: data, then zeros
        return rng.randbytes(512) + bytes(CLUSTER - 512)
    if kind < 0.25:
        return None
    if kind < 0.45:  # text-like, compresses well
        words = [b"haos", b"supervisor", b"addon", b"config", b"entity", b"sensor", b"automation", b"\n"]
        text = b" ".join(rng.choice(words) for _ in range(CLUSTER // 6))
        return text[:CLUSTER].ljust(CLUSTER, b"\n")
    data = bytearray(rng.randbytes(CLUSTER))
    for block in range(0, CLUSTER, BLOCK):  # about a third of the 4 KiB blocks stay zero
        if rng.random() < 0.33:
            data[block:block + BLOCK] = bytes(BLOCK)
    return bytes(data)


def write_disk(path: Path, size: int, seed: str) -> None:
    """A sparse raw image: zero clusters are holes, the rest deterministic from the seed."""
    rng = random.Random(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as fh:
        fh.truncate(size)
        for index in range(-(-size // CLUSTER)):
            data = _cluster(rng, index)
            if data is not None:
                fh.seek(index * CLUSTER)
                fh.write(data[:size - index * CLUSTER])


def add_vm(root: Path, vm: dict[str, Any], seed: int = 0) -> None:
    """Add one QEMU guest to an existing fake node.

    vm: vmid plus optional name, storage ('local-zfs'), disk_bytes (6 MiB), status ('running'), cores (2),
    memory (2048), agent (1; 0 leaves the guest agent off), onboot, ostype ('l26'), tags, lock, protection.
    """
    vmid = int(vm["vmid"])
    if qemu.exists(root, vmid) or vmid in layout.list_vmids(root):
        raise FileExistsError(f"VMID {vmid} already exists")
    sid = str(vm.get("storage", "local-zfs"))
    size = int(vm.get("disk_bytes", DISK_BYTES))
    if size % 1024:
        raise ValueError("disk_bytes must be a multiple of 1 KiB (PVE allocates in KiB)")
    try:
        volid = qemu.alloc_image(root, sid, vmid, size // 1024)
    except TaskError as exc:
        raise ValueError(str(exc)) from None
    write_disk(qemu.image_path(root, volid), size, f"disk:{seed}:{vmid}")
    qemu.write(root, vmid, vm_conf(vm, volid, size, seed))
    qemu.set_running(root, vmid, vm.get("status", "running") == "running")
