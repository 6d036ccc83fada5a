"""QEMU guests on the fake Proxmox VE node, driven through the real proxmoxer client: listing, vzdump to
a .vma archive, the storage listing it, and qmrestore into a new VMID with the disk bytes intact."""

from __future__ import annotations

import hashlib
import re
import subprocess
from pathlib import Path

import pytest
from proxmoxer import ProxmoxAPI, ResourceException
from pve_helpers import FakePve, running_node

from restic_orch.lab.pve import DEFAULT_VMS, vma
from restic_orch.lab.pve.qemu import image_path

pytestmark = pytest.mark.filterwarnings("ignore::urllib3.exceptions.InsecureRequestWarning")
UNIQUE_KEYS = {"net0", "smbios1", "vmgenid", "scsi0", "digest"}
STATUS_LINE = re.compile(r"^INFO: +\d{1,3}% \(\d+\.\d (B|KiB|MiB) of 6\.0 MiB\) in \d+s, read: [\d.]+ ?[KMG]?i?B/s, "
                         r"write: [\d.]+ ?[KMG]?i?B/s$")


@pytest.fixture(scope="module")
def pve(tmp_path_factory: pytest.TempPathFactory):
    with running_node(tmp_path_factory.mktemp("fakepve-qemu") / "R", containers=[{"vmid": 101, "hostname": "proxy"}],
                      vms=[dict(DEFAULT_VMS[0])], seed=5) as server:
        yield server


@pytest.fixture(scope="module")
def dumped(pve: FakePve) -> tuple[dict, list[str]]:
    """One vzdump of VM 200 with the documented token (zstd), shared by the tests."""
    api = pve.api().nodes(pve.node)
    upid = api.vzdump.post(vmid="200", storage="local", compress="zstd", mode="snapshot")
    status = pve.wait_task(upid)
    return status, pve.task_log(upid)


def _digest(path: Path, size: int) -> str:
    with path.open("rb") as fh:
        return hashlib.sha256(fh.read(size)).hexdigest()


def test_list_config_status_and_cluster_views(pve: FakePve):
    px = pve.api()
    (vm,) = px.nodes(pve.node).qemu.get()
    assert (vm["vmid"], vm["name"], vm["status"], vm["maxdisk"]) == (200, "haos", "running", 6 * 1024 * 1024)
    assert vm["maxmem"] == 2048 * 1024 * 1024 and "type" not in vm
    config = px.nodes(pve.node).qemu(200).config.get()
    assert config["scsi0"] == "local-zfs:vm-200-disk-0,discard=on,iothread=1,size=6M,ssd=1"
    assert re.fullmatch(r"virtio=BC:24:11:[0-9A-F:]{8},bridge=vmbr0,firewall=1", config["net0"])
    assert config["agent"] == "1" and config["cores"] == 2 and len(config["digest"]) == 40
    current = px.nodes(pve.node).qemu(200).status.current.get()
    assert current["agent"] == 1 and current["qmpstatus"] == "running" and current["ha"] == {"managed": 0}
    types = {r["id"]: r["type"] for r in px.cluster.resources.get(type="vm")}
    assert types == {"lxc/101": "lxc", "qemu/200": "qemu"}
    assert str(px.cluster.nextid.get()) == "100"
    with pytest.raises(ResourceException) as exc:
        px.cluster.nextid.get(vmid=200)
    assert exc.value.errors == {"vmid": "VM 200 already exists"}
    with pytest.raises(ResourceException) as exc:
        px.nodes(pve.node).qemu(999).config.get()
    assert exc.value.content == "Configuration file 'nodes/pve1/qemu-server/999.conf' does not exist"


def test_vzdump_writes_a_vma_with_qemu_log_lines(pve: FakePve, dumped):
    status, log = dumped
    assert status["exitstatus"] == "OK", log
    info = [line for line in log if line.startswith("INFO: ")]
    expected_order = ["INFO: Starting Backup of VM 200 (qemu)", "INFO: status = running", "INFO: VM Name: haos",
                      "INFO: include disk 'scsi0' 'local-zfs:vm-200-disk-0' 6M", "INFO: backup mode: snapshot",
                      "INFO: ionice priority: 7", "INFO: creating vzdump archive '",
                      "INFO: issuing guest-agent 'fs-freeze' command", "INFO: issuing guest-agent 'fs-thaw' command",
                      "INFO: started backup task '", "INFO: resuming VM again", "INFO: 100% (6.0 MiB of 6.0 MiB)",
                      "INFO: backup is sparse: ", "INFO: transferred 6.00 MiB in ", "INFO: archive file size: ",
                      "INFO: Finished Backup of VM 200 ("]
    positions = [next(i for i, line in enumerate(info) if line.startswith(prefix)) for prefix in expected_order]
    assert positions == sorted(positions), info
    progress = [line for line in info if STATUS_LINE.match(line)]
    assert len(progress) >= 3 and progress[-1].startswith("INFO: 100% "), info
    assert re.search(r"\.vma\.zst'$", next(line for line in info if "creating vzdump archive" in line))
    assert re.fullmatch(r"INFO: backup is sparse: [\d.]+ (KiB|MiB) \(\d+%\) total zero data",
                        next(line for line in info if "backup is sparse" in line))
    assert pve.api().nodes(pve.node).qemu(200).config.get().get("lock") is None


def test_archive_is_listed_and_holds_the_disk(pve: FakePve, dumped, tmp_path: Path):
    api = pve.api().nodes(pve.node)
    (entry,) = api.storage("local").content.get(content="backup", vmid=200)
    assert (entry["format"], entry["subtype"], entry["vmid"], entry["content"]) == ("vma.zst", "qemu", 200, "backup")
    assert re.fullmatch(r"local:backup/vzdump-qemu-200-\d{4}_\d\d_\d\d-\d\d_\d\d_\d\d\.vma\.zst", entry["volid"])
    path = pve.root / "storage/local/dump" / entry["volid"].split("/", 1)[1]
    assert entry["size"] == path.stat().st_size and isinstance(entry["ctime"], int)
    raw = subprocess.run(["zstd", "-q", "-d", "-c", str(path)], check=True, capture_output=True).stdout
    assert raw[:4] == b"VMA\0"
    header = vma.read_vma(__import__("io").BytesIO(raw), tmp_path)
    conf = header.configs["qemu-server.conf"].decode()
    assert "#qmdump#map:scsi0:drive-scsi0:local-zfs:raw:\n" in conf and "lock:" not in conf
    disk = image_path(pve.root, "local-zfs:vm-200-disk-0")
    assert _digest(tmp_path / "disk-drive-scsi0.raw", disk.stat().st_size) == _digest(disk, disk.stat().st_size)


def test_restore_unique_into_new_vmid(pve: FakePve, dumped):
    api = pve.api().nodes(pve.node)
    (entry,) = api.storage("local").content.get(content="backup", vmid=200)
    status = pve.wait_task(api.qemu.post(vmid=201, archive=entry["volid"], storage="local-zfs", unique=1))
    assert status["exitstatus"] == "OK", pve.task_log(status["upid"])
    log = pve.task_log(status["upid"])
    assert log[0].startswith("restore vma archive: zstd -q -d -c ") and " | vma extract -v -r " in log[0]
    assert "new volume ID is 'local-zfs:vm-201-disk-0'" in log and "progress 100% (read 6291456 bytes" in "\n".join(log)
    assert any(line.startswith("total bytes read 6291456, sparse bytes ") for line in log)
    old, new = api.qemu(200).config.get(), api.qemu(201).config.get()
    kept = {k for k in old if k not in UNIQUE_KEYS}
    assert set(new) - UNIQUE_KEYS == kept and {k: new[k] for k in kept} == {k: old[k] for k in kept}
    assert new["scsi0"] == "local-zfs:vm-201-disk-0,discard=on,iothread=1,size=6M,ssd=1"
    for key in ("net0", "smbios1", "vmgenid"):
        assert new[key] != old[key]
    assert new["net0"].split(",")[1:] == old["net0"].split(",")[1:]
    size = 6 * 1024 * 1024
    assert _digest(image_path(pve.root, "local-zfs:vm-201-disk-0"), size) == \
        _digest(image_path(pve.root, "local-zfs:vm-200-disk-0"), size)
    assert api.qemu(201).status.current.get()["status"] == "stopped"
    assert pve.wait_task(api.qemu(201).delete(purge=1))["exitstatus"] == "OK"
    assert not image_path(pve.root, "local-zfs:vm-201-disk-0").exists()


def test_restore_refusals(pve: FakePve, dumped):
    api = pve.api().nodes(pve.node)
    (entry,) = api.storage("local").content.get(content="backup", vmid=200)
    with pytest.raises(ResourceException) as exc:
        api.qemu.post(vmid=200, archive=entry["volid"], storage="local-zfs")
    assert (exc.value.status_code, exc.value.content) == (500, "unable to restore VM 200 - VM 200 already exists "
                                                                "on node 'pve1'")
    # force passes the VMID check; the worker then refuses a running guest and only drops its 'create' lock
    status = pve.wait_task(api.qemu.post(vmid=200, archive=entry["volid"], force=1))
    assert status["exitstatus"] == "unable to restore VM 200 - vm is running"
    assert "lock" not in api.qemu(200).config.get() and api.qemu(200).status.current.get()["status"] == "running"
    with pytest.raises(ResourceException) as exc:
        api.qemu.post(vmid=101, archive=entry["volid"])
    assert exc.value.content == "unable to restore VM 101 - CT 101 already exists on node 'pve1'"
    with pytest.raises(ResourceException) as exc:
        api.qemu.post(vmid=202, archive=entry["volid"], scsi0="local-zfs:1")
    assert exc.value.errors == {"scsi0": "option conflicts with option 'archive'"}
    # a token that may back up but not allocate guests: create_vm's bare raise_perm_exc()
    token = _new_token_secret(pve, "nocreate")
    weak = ProxmoxAPI(pve.host, port=pve.port, user="backup@pve", token_name="nocreate", token_value=token,
                      verify_ssl=False, backend="https", timeout=30).nodes(pve.node)
    with pytest.raises(ResourceException) as exc:
        weak.qemu.post(vmid=203, archive=entry["volid"], storage="local-zfs")
    assert (exc.value.status_code, exc.value.content) == (403, "Permission check failed")
    assert not (pve.root / "qemu/203").exists()


def test_restore_config_keys_are_checked_then_applied(pve: FakePve, dumped):
    """Keys given beside the archive override the backed-up config (QemuServer.pm restore_merge_config), each
    checked first as an edit of that option on the new VMID (Qemu.pm $check_vm_modify_config_perm)."""
    api = pve.api().nodes(pve.node)
    (entry,) = api.storage("local").content.get(content="backup", vmid=200)
    token = _new_token_secret(pve, "noopts")
    pve.pveum("role", "add", "AllocOnly", "--privs", "VM.Allocate")
    pve.pveum("acl", "modify", "/vms", "--tokens", "backup@pve!noopts", "--roles", "ResticOrchBackup,AllocOnly")
    weak = ProxmoxAPI(pve.host, port=pve.port, user="backup@pve", token_name="noopts", token_value=token,
                      verify_ssl=False, backend="https", timeout=30).nodes(pve.node)
    for key, value, priv in (("onboot", 0, "VM.Config.Options"), ("memory", 256, "VM.Config.Memory"),
                             ("cores", 2, "VM.Config.CPU")):
        with pytest.raises(ResourceException) as exc:
            weak.qemu.post(vmid=204, archive=entry["volid"], storage="local-zfs", unique=1, **{key: value})
        assert (exc.value.status_code, exc.value.content) == (403, f"Permission check failed (/vms/204, {priv})")
    assert not (pve.root / "qemu/204").exists()
    assert api.qemu(200).config.get()["onboot"] == 1
    status = pve.wait_task(api.qemu.post(vmid=204, archive=entry["volid"], storage="local-zfs", unique=1, onboot=0))
    assert status["exitstatus"] == "OK", pve.task_log(status["upid"])
    assert api.qemu(204).config.get()["onboot"] == 0 and api.qemu(200).config.get()["onboot"] == 1
    assert pve.wait_task(api.qemu(204).delete(purge=1))["exitstatus"] == "OK"


def _new_token_secret(pve: FakePve, name: str) -> str:
    secret = pve.pveum("user", "token", "add", "backup@pve", name, "--privsep", "1")["value"]
    pve.pveum("acl", "modify", "/vms", "--tokens", f"backup@pve!{name}", "--roles", "ResticOrchBackup")
    pve.pveum("acl", "modify", "/storage", "--tokens", f"backup@pve!{name}", "--roles", "PVEDatastoreUser")
    return secret


def test_power_actions_and_locks(pve: FakePve):
    api = pve.api().nodes(pve.node)
    assert pve.wait_task(api.qemu(200).status.stop.post())["exitstatus"] == "OK"
    assert api.qemu(200).status.current.get()["status"] == "stopped"
    # a stopped VM is backed up by a QEMU started paused for the job and stopped again
    upid = api.vzdump.post(vmid="200", storage="local", compress="0")
    status = pve.wait_task(upid)
    log = pve.task_log(upid)
    assert status["exitstatus"] == "OK", log
    assert "INFO: backup mode: stop" in log and "INFO: starting kvm to execute backup task" in log
    assert "INFO: stopping kvm after backup task" in log and not any("fs-freeze" in line for line in log)
    assert {b["format"] for b in api.storage("local").content.get(content="backup", vmid=200)} == {"vma", "vma.zst"}
    assert api.qemu(200).status.current.get()["status"] == "stopped"
    upid = api.qemu(200).status.start.post()
    assert pve.wait_task(upid)["exitstatus"] == "OK"
    status = pve.wait_task(api.qemu(200).status.start.post())
    assert status["exitstatus"] == "VM 200 already running"
    with pytest.raises(ResourceException) as exc:
        api.qemu(200).delete()
    assert exc.value.content == "VM 200 is running - destroy failed"
