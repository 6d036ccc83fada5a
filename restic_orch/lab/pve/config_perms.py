"""The per-option privilege checks PVE 8 makes on the config keys given to a create or restore call.

A restore's POST may carry config keys beside the archive (e.g. `onboot=0`): PVE applies them over the
backed-up config and checks each one like an edit of that option, on /vms/<new vmid>:
- VMs: qemu-server PVE/API2/Qemu.pm `$check_vm_modify_config_perm` (create_vm calls it with the keys left
  after node, vmid, archive, storage, force, unique, pool, bwlimit, start... are extracted), with the
  `$cpuoptions`, `$memoryoptions`, `$hwtypeoptions`, `$generaloptions`, ... tables below.
- Containers: pve-container PVE/LXC.pm `check_ct_modify_config_perm` (create_vm calls it with what is left
  after ostemplate, storage, restore, unique, force, pool, password, ... are extracted).
root@pam passes both; a failed check is `check_vm_perm`'s 403 `Permission check failed (/vms/<id>, <priv>)`.
Not modelled: pools (`check_vm_perm` tries /pool/<pool> first; the fake has none), value-dependent checks
(a container's mount point volumes and feature flags beyond root-only/nesting; `tags` is checked as
VM.Config.Options, GuestHelpers assert_tag_permissions' plain case).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from . import access, pctconf
from .app import Ctx
from .errors import ApiError

# qemu-server PVE/API2/Qemu.pm, the option tables of check_vm_modify_config_perm
_QM_GROUPS: tuple[tuple[frozenset[str], str], ...] = (
    (frozenset({"cores", "cpu", "runningcpu", "cpulimit", "cpuunits", "numa", "smp", "sockets", "vcpus"}),
     "VM.Config.CPU"),
    (frozenset({"memory", "balloon", "shares", "allow-ksm"}), "VM.Config.Memory"),
    (frozenset({"acpi", "hotplug", "kvm", "machine", "runningmachine", "scsihw", "smbios1", "tablet", "vga",
                "watchdog", "audio0", "rng0"}), "VM.Config.HWType"),
    (frozenset({"agent", "autostart", "bios", "description", "keyboard", "localtime", "migrate_downtime",
                "migrate_speed", "name", "onboot", "ostype", "protection", "reboot", "startdate", "startup", "tdf",
                "template"}), "VM.Config.Options"),
    (frozenset({"freeze"}), "VM.PowerMgmt"),
    (frozenset({"boot", "bootdisk", "vmstatestorage"}), "VM.Config.Disk"),
)
_QM_CLOUDINIT = frozenset({"cicustom", "cipassword", "citype", "ciuser", "ciupgrade", "nameserver", "searchdomain",
                           "sshkeys"})
# keys check_vm_modify_config_perm leaves to value-dependent checks elsewhere
_QM_SKIPPED = re.compile(r"(ide|sata|scsi|virtio|efidisk|tpmstate)\d+|cdrom|tags"
                         r"|(unused|serial|usb|hostpci|virtiofs)\d+")


def check_qemu_options(ctx: Ctx, vmid: int, keys: Iterable[str]) -> None:
    """qemu-server PVE/API2/Qemu.pm $check_vm_modify_config_perm for the given keys (403 on the first lack)."""
    if ctx.is_root:
        return
    path = f"/vms/{vmid}"
    for key in keys:
        if _QM_SKIPPED.fullmatch(key):
            continue
        priv = "VM.Config.CPU" if re.fullmatch(r"numa\d+", key) else next(
            (p for names, p in _QM_GROUPS if key in names), None)
        if priv is not None:
            ctx.check(path, priv)
            if key == "startup":  # changes the host's behaviour
                ctx.check("/", "Sys.Modify")
        elif re.fullmatch(r"net\d+", key) or key == "running-nets-host-mtu":
            ctx.check(path, "VM.Config.Network")
        elif key in _QM_CLOUDINIT or re.fullmatch(r"ipconfig\d+", key):
            ctx.check(path, "VM.Config.Cloudinit", "VM.Config.Network", any_=True)
        elif key == "vmstate":
            ctx.check(path, "VM.Config.Disk", "VM.PowerMgmt")
        else:
            raise ApiError(500, f"only root can set '{key}' config\n")  # a plain die


def check_ct_options(ctx: Ctx, vmid: int, params: dict[str, Any], unprivileged: bool) -> None:
    """pve-container PVE/LXC.pm check_ct_modify_config_perm for a new container's given keys (no old config);
    `unprivileged` is the parameter given beside them (create_vm extracts it first)."""
    if ctx.is_root:
        return
    path = f"/vms/{vmid}"
    for key in params:
        if key in ("cores", "cpuunits", "cpulimit"):
            ctx.check(path, "VM.Config.CPU")
        elif key == "rootfs" or re.fullmatch(r"mp\d+", key):
            ctx.check(path, "VM.Config.Disk")
        elif key in ("memory", "swap"):
            ctx.check(path, "VM.Config.Memory")
        elif re.fullmatch(r"net\d+", key):
            ctx.check(path, "VM.Config.Network")
            net = pctconf.parse_network(str(params[key]))  # then check_bridge_access on the new value
            ctx.check(f"/sdn/zones/localnetwork/{net.get('bridge', '')}" + (f"/{net['tag']}" if net.get("tag") else ""),
                      "SDN.Use")
        elif key in ("nameserver", "searchdomain", "hostname"):
            ctx.check(path, "VM.Config.Network")
        elif re.fullmatch(r"dev\d+", key):
            raise access.perm_error("configuring device passthrough is only allowed for root@pam")
        elif key == "hookscript":
            raise access.perm_error("changing the hookscript is only allowed for root@pam")
        elif key == "features":
            _ct_features(ctx, path, str(params[key]), unprivileged)
        else:
            ctx.check(path, "VM.Config.Options")


def _ct_features(ctx: Ctx, path: str, value: str, unprivileged: bool) -> None:
    if not unprivileged:
        raise access.perm_error("changing feature flags for privileged container is only allowed for root@pam")
    names = {part.split("=", 1)[0] for part in value.split(",") if part}
    if names - {"nesting"}:
        raise access.perm_error("changing feature flags (except nesting) is only allowed for root@pam")
    if names:
        ctx.check(path, "VM.Allocate")
