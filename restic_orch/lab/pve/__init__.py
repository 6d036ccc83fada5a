"""A faithful fake Proxmox VE API node for tests and benchmarks (driven via proxmoxer).

Public helpers:
    create_node(root, node="pve1", containers=None, size_bytes=3 MiB, seed=0, vms=None)
    add_vm(root, vm, seed=0): a QEMU guest (config, state, seeded raw disk)
    serve(root, host, port, certfile=None, keyfile=None)
    token_secret(root), unlock(root, vmid), set_lock(root, vmid, lock), write_faults(root, **faults)
"""

from __future__ import annotations

from .layout import (
    TOKEN_ID,
    TOKEN_NAME,
    TOKEN_USER,
    dump_dir,
    read_faults,
    rootfs_dir,
    token_secret,
    write_faults,
)
from .node import DEFAULT_CONTAINERS, DEFAULT_VMS, add_container, create_node, read_config, set_lock, unlock
from .server import serve
from .vms import add_vm

__all__ = [
    "DEFAULT_CONTAINERS", "DEFAULT_VMS", "TOKEN_ID", "TOKEN_NAME", "TOKEN_USER", "add_container", "add_vm",
    "create_node", "dump_dir",
    "read_config", "read_faults", "rootfs_dir", "serve", "set_lock", "token_secret", "unlock", "write_faults",
]
