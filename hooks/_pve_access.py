"""What the Proxmox hooks (containers and VMs) need from their API token, path by path, and how to grant what
is missing.

Each need comes from the check PVE 8 makes (docs/pve-permissions.md has the table with the sources); a VM
needs the same privileges as a container (qemu-server PVE/API2/Qemu.pm create_vm, destroy_vm, vm_start):
- list, config and status of a guest: VM.Audit on /vms/<vmid> (pve-container PVE/API2/LXC.pm);
- vzdump: VM.Backup on each guest, Datastore.AllocateSpace on the dump storage (pve-manager
  PVE/API2/VZDump.pm); removing our own archive afterwards needs the same two (pve-storage
  PVE/API2/Storage/Content.pm delete);
- restore: VM.Allocate on the target VMID, Datastore.AllocateSpace on the target storage, the archive's
  access (the original guest's VM.Backup when restoring beside it, PVE/Storage.pm check_volume_access),
  SDN.Use on every bridge of the restored network config (PVE::GuestHelpers check_vnet_access; for a VM
  qemu-server PVE/QemuServer.pm check_restore_permissions -> check_bridge_access, run in the restore task);
- restore beside the original: the restore POST also gives onboot=0 (hooks/_pve_guest.py BESIDE_OVERRIDES),
  which PVE checks as an edit of that option on the new VMID: VM.Config.Options on /vms/<target>
  (qemu-server PVE/API2/Qemu.pm create_vm -> $check_vm_modify_config_perm, onboot in $generaloptions;
  pve-container PVE/API2/LXC.pm create_vm -> PVE/LXC.pm check_ct_modify_config_perm, its default branch);
- start/stop: VM.PowerMgmt; destroying a drill's guest: VM.Allocate.
"""

from __future__ import annotations

from dataclasses import dataclass

# The roles of docs/getting-started.md that hold each privilege, and the ACL path they are granted on.
BACKUP_ROLE, RESTORE_ROLE = "ResticOrchBackup", "ResticOrchRestore"


@dataclass(frozen=True)
class Need:
    path: str          # the path PVE checks, e.g. /vms/101
    priv: str          # e.g. VM.Backup
    why: str           # the operation that fails without it
    role: str          # the documented role that carries it
    acl_path: str      # where the docs grant that role

    def label(self) -> str:
        return f"{self.priv} on {self.path}"

    def grant(self, user: str, tokenid: str) -> str:
        """The pveum commands that grant it the documented way (both are idempotent)."""
        return (f"pveum role modify {self.role} --append 1 --privs {self.priv} && "
                f"pveum acl modify {self.acl_path} --users {user} --tokens '{tokenid}' --roles {self.role}")


def _vm(vmid: int | None) -> str:
    return f"/vms/{vmid}" if vmid else "/vms"


def backup_needs(vmids: list[int] | None, storage: str, noun: str = "container") -> list[Need]:
    """vmids None: every guest (`vmids: all`), which needs the rights on /vms itself; noun names the guest."""
    needs = []
    for vmid in vmids or [None]:
        path = _vm(vmid)
        needs.append(Need(path, "VM.Audit", f"list and read the {noun}", BACKUP_ROLE, "/vms"))
        needs.append(Need(path, "VM.Backup", f"vzdump the {noun}", BACKUP_ROLE, "/vms"))
    needs.append(Need(f"/storage/{storage}", "Datastore.AllocateSpace", "write vzdump archives to the storage",
                      BACKUP_ROLE, f"/storage/{storage}"))
    return needs


def restore_needs(targets: list[tuple[int | None, int | None]], storage: str, restore_storage: str,
                  bridges: list[str], noun: str = "container") -> list[Need]:
    """targets: (target vmid, original vmid or None when the same) of each guest to restore."""
    needs = []
    for target, original in targets:
        path = _vm(target)
        needs.append(Need(path, "VM.Allocate", f"create the restored {noun}", RESTORE_ROLE, "/vms"))
        needs.append(Need(path, "VM.Audit", "read the restored config back", BACKUP_ROLE, "/vms"))
        needs.append(Need(path, "VM.PowerMgmt", f"stop the old and start the restored {noun}", RESTORE_ROLE,
                          "/vms"))
        if original is not None and original != target:
            needs.append(Need(_vm(original), "VM.Backup", f"read the original {noun}'s archive", BACKUP_ROLE,
                              "/vms"))
            # the copy's onboot=0 is checked as an option edit of the new guest (see the module's docstring)
            needs.append(Need(path, "VM.Config.Options", f"keep the copy beside the original {noun} from starting"
                              " at the host's next boot (onboot=0)", RESTORE_ROLE, "/vms"))
    needs.append(Need(f"/storage/{storage}", "Datastore.AllocateSpace", "put the archive into the dump storage",
                      BACKUP_ROLE, f"/storage/{storage}"))
    needs.append(Need(f"/storage/{restore_storage}", "Datastore.AllocateSpace", f"create the {noun}'s volumes",
                      RESTORE_ROLE, f"/storage/{restore_storage}"))
    for bridge in sorted(set(bridges)):
        needs.append(Need(f"/sdn/zones/localnetwork/{bridge}", "SDN.Use", f"attach the {noun} to {bridge}",
                          RESTORE_ROLE, "/sdn/zones/localnetwork"))
    return needs


def unique(needs: list[Need]) -> list[Need]:
    seen: dict[tuple[str, str], Need] = {}
    for need in needs:
        seen.setdefault((need.path, need.priv), need)
    return list(seen.values())
