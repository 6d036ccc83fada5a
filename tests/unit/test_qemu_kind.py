"""QEMU VMs as a source kind: selectors, the `guests` setting, vzdump's VM log lines, the key-by-key check."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from restic_orch.config import ProxmoxSource
from restic_orch.hooks import build_hooks, registry
from restic_orch.hooks._vzdump_log import FsFreeze, fs_freeze, fs_freeze_window, last_progress, progress_line
from restic_orch.hooks.base import Artifact, RestoreOptions
from restic_orch.hooks.proxmox import ProxmoxHook
from restic_orch.hooks.qemu import QemuHook, _relay, agent_enabled, config_diffs, freeze_state, not_in_backup
from tests.hookhelp import one_source_config

# The task log of a running VM's snapshot backup, as PVE 8 writes it (pve-manager PVE/VZDump.pm and
# qemu-server PVE/VZDump/QemuServer.pm; a few lines left out)
VM_TASK_LOG = """\
INFO: starting new backup job: vzdump 200 --mode snapshot --storage local --compress 0 --remove 0 --node pve1
INFO: Starting Backup of VM 200 (qemu)
INFO: Backup started at 2024-05-01 03:10:00
INFO: status = running
INFO: VM Name: web
INFO: include disk 'scsi0' 'local-zfs:vm-200-disk-0' 32G
INFO: backup mode: snapshot
INFO: ionice priority: 7
INFO: creating vzdump archive '/var/lib/vz/dump/vzdump-qemu-200-2024_05_01-03_10_00.vma'
INFO: issuing guest-agent 'fs-freeze' command
INFO: issuing guest-agent 'fs-thaw' command
INFO: started backup task '5a0b1c2d-0000-4000-8000-000000000000'
INFO: resuming VM again
INFO:   0% (0.0 B of 32.0 GiB) in 0s, read: 0 B/s, write: 0 B/s
INFO:  12% (3.9 GiB of 32.0 GiB) in 3s, read: 1.3 GiB/s, write: 190.2 MiB/s
INFO: 100% (32.0 GiB of 32.0 GiB) in 25s, read: 1.5 GiB/s, write: 0 B/s
INFO: backup is sparse: 28.10 GiB (87%) total zero data
INFO: transferred 32.00 GiB in 25 seconds (1.3 GiB/s)
INFO: archive file size: 3.90GB
INFO: Finished Backup of VM 200 (00:00:27)
"""

VM_CONFIG = {
    "name": "web", "memory": "2048", "cores": 2, "sockets": 1, "ostype": "l26", "scsihw": "virtio-scsi-single",
    "boot": "order=scsi0;net0", "agent": "1", "vmgenid": "1f0e0000-0000-4000-8000-000000000001",
    "smbios1": "uuid=2a2a0000-0000-4000-8000-000000000002",
    "scsi0": "local-zfs:vm-200-disk-0,iothread=1,size=32G", "ide2": "none,media=cdrom",
    "net0": "virtio=BC:24:11:00:00:01,bridge=vmbr0,firewall=1,tag=20",
}


# --- the kind in the registry -------------------------------------------------------------------
def test_vm_selectors_and_their_place_in_the_restore_order():
    assert registry.parse("vm:200") == registry.Selector("vm", "200")
    assert registry.parse("vm:all") == registry.Selector("vm")
    assert registry.kinds_of("vm") == {"qemu"} and registry.hook_class("qemu") is QemuHook
    assert registry.prefixes()[:3] == ["ct", "vm", "db"]
    assert registry.scenarios()["vm"] == ["vm"]
    assert not registry.has_inner_paths("vm")  # a VMA archive is no file tree to pick paths from
    assert "vm:200" in registry.selector_help()
    # one --as-vmid for both guest types
    assert [o.flag for o in registry.restore_options()].count("--as-vmid") == 1
    assert registry.rank("qemu") < registry.rank("redeploy") < registry.rank("postgres")


def test_describe_restore_and_the_drill_sandbox():
    art = Artifact("vm:200", "qemu", "proxmox", "qemu/vzdump-qemu-200-x.vma", 1, "0" * 64, {"vmid": 200, "name": "web"})
    assert QemuHook.describe_restore(art, RestoreOptions()) == ("restore VM 200 (web) as VM 200", True)
    text, destructive = QemuHook.describe_restore(art, RestoreOptions(params={"as_vmid": 9001}))
    assert text.endswith("as VM 9001") and not destructive

    class Spare:
        day = "2024-05-01"

        def spare_id(self) -> int:
            return 9901

    options = RestoreOptions(drill=True)
    QemuHook.sandbox_options(art, options, Spare())
    assert options.param("as_vmid") == 9901


# --- configuration ------------------------------------------------------------------------------
def _source(**extra) -> dict:
    return {"host": "pve.lan", "user": "backup@pve", "token_name": "restic-orch", "token_file": "/etc/t",
            **extra}


@pytest.mark.parametrize(("guests", "kinds"), [("all", ["proxmox", "qemu"]), ("lxc", ["proxmox"]),
                                               ("qemu", ["qemu"])])
def test_guests_chooses_the_hooks(tmp_path: Path, guests: str, kinds: list[str]):
    config = one_source_config(tmp_path, "proxmox", _source(guests=guests))
    hooks = build_hooks(config)
    assert [h.kind for h in hooks] == kinds
    # each hook reports the listed VMIDs that are no guest at all: exactly one does
    assert [h.reports_unknown for h in hooks] == [True] + [False] * (len(kinds) - 1)


def test_guests_defaults_to_all_and_rejects_other_types():
    assert ProxmoxSource.model_validate(_source()).guests == "all"
    with pytest.raises(ValidationError, match="guests"):
        ProxmoxSource.model_validate(_source(guests="kvm"))


def test_exclude_paths_stay_a_container_setting():
    with pytest.raises(ValidationError, match="container VMID"):
        ProxmoxSource.model_validate(_source(exclude_paths={"vm": ["/srv"]}))


# --- vzdump's log of a VM -----------------------------------------------------------------------
def test_percentage_lines():
    found = progress_line("INFO:  12% (3.9 GiB of 32.0 GiB) in 3s, read: 1.3 GiB/s, write: 190.2 MiB/s")
    assert found is not None and found.percent == 12 and found.fraction == pytest.approx(0.12)
    assert (found.done, found.total, found.elapsed) == ("3.9 GiB", "32.0 GiB", "3s")
    assert (found.read, found.write) == ("1.3 GiB/s", "190.2 MiB/s")
    stamped = progress_line("2024-05-01 03:10:31 INFO: 100% (32.0 GiB of 32.0 GiB) in 1m 5s, read: 1 GiB/s,"
                            " write: 0 B/s")
    assert stamped is not None and stamped.fraction == 1.0 and stamped.elapsed == "1m 5s"
    assert progress_line("INFO: backup is sparse: 28.10 GiB (87%) total zero data") is None
    assert progress_line("INFO: Total bytes written: 1048576 (1.0MiB, 256KiB/s)") is None
    assert last_progress(VM_TASK_LOG.splitlines()).percent == 100
    assert last_progress(VM_TASK_LOG.splitlines()[:15]).percent == 12
    assert last_progress(["INFO: creating vzdump archive 'x.tar'"]) is None  # a container's tar logs no %


def test_progress_relay_reports_each_new_fraction_once():
    seen: list[tuple[str, float | None]] = []
    watch = _relay(lambda label, fraction: seen.append((label, fraction)), "VM 200")
    lines = VM_TASK_LOG.splitlines()
    for end in (10, 14, 14, 15, 16, len(lines)):
        watch(lines[:end])
    assert seen == [("VM 200", 0.0), ("VM 200", 0.12), ("VM 200", 1.0)]


def test_fs_freeze_states():
    assert fs_freeze(VM_TASK_LOG) == FsFreeze("frozen") and fs_freeze(VM_TASK_LOG).frozen
    failed = VM_TASK_LOG.replace("INFO: issuing guest-agent 'fs-thaw' command",
                                 "ERROR: VM 200 qmp command 'guest-fsfreeze-freeze' failed - got timeout\n"
                                 "INFO: issuing guest-agent 'fs-thaw' command")
    assert fs_freeze(failed) == FsFreeze("failed", "VM 200 qmp command 'guest-fsfreeze-freeze' failed - got timeout")
    not_running = "INFO: skipping guest-agent 'fs-freeze', agent configured but not running?\n"
    assert fs_freeze(not_running).state == "agent-not-running"
    assert fs_freeze("INFO: skipping guest-agent 'fs-freeze', disabled in VM options").state == \
        "disabled-in-vm-options"
    silent = "\n".join(line for line in VM_TASK_LOG.splitlines() if "guest-agent" not in line)
    assert fs_freeze(silent) == FsFreeze("not-logged")


def test_why_a_vm_was_not_frozen():
    silent = FsFreeze("not-logged")
    assert freeze_state(silent, VM_CONFIG, "running", "stop") == "stop-mode"
    assert freeze_state(silent, VM_CONFIG, "stopped", "snapshot") == "not-running"
    assert freeze_state(silent, {**VM_CONFIG, "agent": "0"}, "running", "snapshot") == "no-agent"
    assert freeze_state(silent, {"name": "x"}, "running", "snapshot") == "no-agent"
    assert freeze_state(FsFreeze("frozen"), VM_CONFIG, "running", "snapshot") == "frozen"
    assert agent_enabled({"agent": "enabled=1,fstrim_cloned_disks=1"}) and agent_enabled({"agent": 1})
    assert not agent_enabled({"agent": "enabled=0"}) and not agent_enabled({})


def test_fs_freeze_window_from_the_per_guest_log():
    guest_log = ("2024-05-01 03:10:00 INFO: creating vzdump archive 'x.vma'\n"
                 "2024-05-01 03:10:01 INFO: issuing guest-agent 'fs-freeze' command\n"
                 "2024-05-01 03:10:03 INFO: issuing guest-agent 'fs-thaw' command\n")
    window = fs_freeze_window(guest_log)
    assert window is not None and (window.lower, window.upper) == (1.0, 3.0)
    assert window.source == "fs-freeze-timestamps"
    assert fs_freeze_window(VM_TASK_LOG) is None  # the task log has no timestamps


# --- the restored config, key by key ------------------------------------------------------------
def test_config_check_key_by_key():
    beside = {**VM_CONFIG, "scsi0": "local-lvm:vm-9001-disk-0,iothread=1,size=32G",
              "net0": "virtio=BC:24:11:99:99:99,bridge=vmbr0,firewall=1,tag=20",
              "vmgenid": "00000000-0000-4000-8000-00000000abcd", "smbios1": "uuid=00000000-0000-4000-8000-00000000ef01"}
    assert config_diffs(VM_CONFIG, beside, beside=True) == {}
    # in place the MAC must stay
    assert set(config_diffs(VM_CONFIG, beside, beside=False)) == {"net0 MAC"}
    changed = {**beside, "memory": "1024", "net0": "e1000=BC:24:11:99:99:99,bridge=vmbr1,tag=20"}
    changed.pop("agent")
    diffs = config_diffs(VM_CONFIG, changed, beside=True)
    assert diffs["memory"] == {"expected": "2048", "found": "1024"}
    assert diffs["agent"] == {"expected": "1", "found": None}
    assert diffs["net0"]["found"]["model"] == "e1000" and diffs["net0"]["found"]["bridge"] == "vmbr1"
    shrunk = {**beside, "scsi0": "local-lvm:vm-9001-disk-0,size=16G"}
    shrunk.pop("ide2")
    assert config_diffs(VM_CONFIG, shrunk, beside=True) == {"scsi0": {"expected": "32G", "found": "16G"}}
    lost = {k: v for k, v in beside.items() if k != "scsi0"}
    assert config_diffs(VM_CONFIG, lost, beside=True) == {"scsi0": {"expected": "32G", "found": None}}


def test_a_disk_left_out_of_the_backup_is_no_difference():
    # backup=0: vzdump leaves the disk out, qmrestore writes its line back commented out (no scsi1 key)
    expected = {**VM_CONFIG, "scsi1": "local-zfs:vm-200-disk-1,backup=0,size=500G"}
    assert not_in_backup(expected) == ["scsi1"] and not_in_backup(VM_CONFIG) == []
    assert config_diffs(expected, VM_CONFIG, beside=False) == {}
    # a disk that was backed up and did not come back still is one
    assert config_diffs({**expected, "scsi2": "local-zfs:vm-200-disk-2,size=8G"}, VM_CONFIG, beside=False) == {
        "scsi2": {"expected": "8G", "found": None}}


def test_rights_messages_name_the_vm():
    from restic_orch.hooks import _pve_access

    needs = _pve_access.restore_needs([(9001, 200)], "local", "local-zfs", ["vmbr0/20"], QemuHook.noun)
    whys = {n.label(): n.why for n in needs}
    assert whys["VM.Allocate on /vms/9001"] == "create the restored VM"
    assert whys["VM.Backup on /vms/200"] == "read the original VM's archive"
    assert whys["SDN.Use on /sdn/zones/localnetwork/vmbr0/20"] == "attach the VM to vmbr0/20"
    # beside the original the restore gives onboot=0, an option edit PVE checks on the new VMID
    options = next(n for n in needs if n.priv == "VM.Config.Options")
    assert (options.path, options.role) == ("/vms/9001", "ResticOrchRestore") and "onboot=0" in options.why
    assert "--append 1 --privs VM.Config.Options" in options.grant("backup@pve", "backup@pve!restic-orch")
    in_place = _pve_access.restore_needs([(200, None)], "local", "local-zfs", [], QemuHook.noun)
    assert not [n for n in in_place if n.priv == "VM.Config.Options"]
    # the container's wording is unchanged
    ct = _pve_access.backup_needs([101], "local")
    assert ct[0].why == "list and read the container" and ProxmoxHook.noun == "container"
