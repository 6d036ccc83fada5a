"""PVE 8's privileges and built-in roles (pve-access-control `PVE/AccessControl.pm`, `$privgroups` and
`create_roles`, stable-bookworm 8.2.3; docs/pve-permissions.md lists them with their sources).

VM.GuestAgent.* and VM.Replicate only arrive with PVE 9 (which drops VM.Monitor): a PVE 8 role naming
them fails with `invalid privilege`.
"""

from __future__ import annotations

ALL_PRIVS: frozenset[str] = frozenset({
    "Datastore.Allocate", "Datastore.AllocateSpace", "Datastore.AllocateTemplate", "Datastore.Audit",
    "Group.Allocate", "Mapping.Audit", "Mapping.Modify", "Mapping.Use", "Permissions.Modify", "Pool.Allocate",
    "Pool.Audit", "Realm.Allocate", "Realm.AllocateUser", "SDN.Allocate", "SDN.Audit", "SDN.Use",
    "Sys.AccessNetwork", "Sys.Audit", "Sys.Console", "Sys.Incoming", "Sys.Modify", "Sys.PowerMgmt", "Sys.Syslog",
    "User.Modify", "VM.Allocate", "VM.Audit", "VM.Backup", "VM.Clone", "VM.Config.CDROM", "VM.Config.CPU",
    "VM.Config.Cloudinit", "VM.Config.Disk", "VM.Config.HWType", "VM.Config.Memory", "VM.Config.Network",
    "VM.Config.Options", "VM.Console", "VM.Migrate", "VM.Monitor", "VM.PowerMgmt", "VM.Snapshot",
    "VM.Snapshot.Rollback",
})

BUILTIN_ROLES: dict[str, frozenset[str]] = {
    "Administrator": ALL_PRIVS,
    "NoAccess": frozenset(),
    "PVEAdmin": ALL_PRIVS - {"Sys.PowerMgmt", "Sys.Modify", "Sys.Incoming", "Sys.AccessNetwork", "Realm.Allocate",
                             "Permissions.Modify", "Mapping.Modify"},
    "PVEAuditor": frozenset({"Datastore.Audit", "Mapping.Audit", "Pool.Audit", "SDN.Audit", "Sys.Audit", "VM.Audit"}),
    "PVEDatastoreAdmin": frozenset({"Datastore.Allocate", "Datastore.AllocateSpace", "Datastore.AllocateTemplate",
                                    "Datastore.Audit"}),
    "PVEDatastoreUser": frozenset({"Datastore.AllocateSpace", "Datastore.Audit"}),
    "PVEMappingAdmin": frozenset({"Mapping.Audit", "Mapping.Modify", "Mapping.Use"}),
    "PVEMappingUser": frozenset({"Mapping.Audit", "Mapping.Use"}),
    "PVEPoolAdmin": frozenset({"Pool.Allocate", "Pool.Audit"}),
    "PVEPoolUser": frozenset({"Pool.Audit"}),
    "PVESDNAdmin": frozenset({"SDN.Allocate", "SDN.Audit", "SDN.Use"}),
    "PVESDNUser": frozenset({"SDN.Audit", "SDN.Use"}),
    "PVESysAdmin": frozenset({"Sys.Audit", "Sys.Console", "Sys.Syslog"}),
    "PVETemplateUser": frozenset({"VM.Audit", "VM.Clone"}),
    "PVEUserAdmin": frozenset({"Group.Allocate", "Realm.AllocateUser", "User.Modify"}),
    "PVEVMAdmin": frozenset(p for p in ALL_PRIVS if p.startswith("VM.")),
    "PVEVMUser": frozenset({"VM.Audit", "VM.Backup", "VM.Config.CDROM", "VM.Config.Cloudinit", "VM.Console",
                            "VM.PowerMgmt"}),
}
