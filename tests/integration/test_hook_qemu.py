"""The VM hook against the fake PVE node: a VM dumped into <day>/qemu/, restored beside itself and in place,
its disk's bytes and config checked, the drill's copy destroyed, a missing right named.

One node per module (CT 101 and VM 200), one night that backs up both guest types through every hook the
configuration makes; the restores reuse that night's artifacts.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
from pve_helpers import FakePve, running_node

from restic_orch.config import Config
from restic_orch.hooks import build_hooks
from restic_orch.hooks.base import Artifact, DumpContext, DumpOutcome, RestoreOptions
from restic_orch.hooks.qemu import QemuHook
from restic_orch.lab.pve import dump_dir, token_secret
from restic_orch.lab.pve import qemu as fake_qemu
from restic_orch.lab.pve.pveum import doc_commands
from restic_orch.lab.pve.qmconf import parse_drive
from restic_orch.lab.secrets import write_secret
from tests.hookhelp import fetch_from, one_source_config

pytestmark = pytest.mark.filterwarnings("ignore::urllib3.exceptions.InsecureRequestWarning")
SPARE = 9200


@pytest.fixture(scope="module")
def pve(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FakePve]:
    with running_node(tmp_path_factory.mktemp("qemu") / "R", containers=[{"vmid": 101}],
                      vms=[{"vmid": 200, "name": "haos", "agent": 1}], size_bytes=64 * 1024) as server:
        yield server


@pytest.fixture(scope="module")
def config(pve: FakePve, tmp_path_factory: pytest.TempPathFactory) -> Config:
    tmp = tmp_path_factory.mktemp("qemucfg")
    token = write_secret(tmp / "secrets" / "pve-token", token_secret(pve.root) + "\n")
    return one_source_config(tmp, "proxmox", {
        "host": pve.host, "port": pve.port, "user": "backup@pve", "token_name": "restic-orch",
        "token_file": str(token), "verify_ssl": False, "node": pve.node, "storage": "local",
        "restore_storage": "local-zfs", "vmids": [101, 200, 999]})


@pytest.fixture(scope="module")
def night(config: Config, tmp_path_factory: pytest.TempPathFactory):
    """Every hook of the configuration dumps once, as `backup` does: the day, each hook's outcome, progress."""
    day = tmp_path_factory.mktemp("qemuday")
    progress: list[tuple[str, float | None]] = []
    ctx = DumpContext(config=config, day_dir=day, run_id="t", log=logging.getLogger("t"),
                      progress=lambda label, fraction: progress.append((label, fraction)))
    outcomes = {hook.kind: hook.dump(ctx) for hook in build_hooks(config)}
    return day, outcomes, progress


def _vm_artifact(night) -> Artifact:
    _, outcomes, _ = night
    (artifact,) = outcomes["qemu"].artifacts
    return artifact


def _disk_bytes(pve: FakePve, vmid: int) -> bytes:
    conf = pve.root_api().nodes(pve.node).qemu(vmid).config.get()
    return fake_qemu.image_path(pve.root, parse_drive(conf["scsi0"])["file"]).read_bytes()


def _hook(config: Config) -> QemuHook:
    (hook,) = QemuHook.from_config(config)
    assert isinstance(hook, QemuHook)
    return hook


def test_one_night_backs_up_each_guest_by_its_type(night, pve: FakePve):
    day, outcomes, progress = night
    ct: DumpOutcome = outcomes["proxmox"]
    vm: DumpOutcome = outcomes["qemu"]
    assert [a.component for a in ct.artifacts] == ["ct:101"]
    # the listed VMID that is no guest: one failure, from one hook
    assert [(f.component, f.message) for f in ct.failures] == [
        ("ct:999", "container 999 does not exist on node pve1, nor does a VM: no guest has this VMID")]
    assert not vm.failures, vm.failures
    artifact = _vm_artifact(night)
    assert artifact.component == "vm:200" and artifact.kind == "qemu"
    assert Path(artifact.path).parent == Path("qemu")
    assert Path(artifact.path).name.startswith("vzdump-qemu-200-") and artifact.path.endswith(".vma")
    assert (day / artifact.path).stat().st_size == artifact.size
    assert (day / artifact.path).with_suffix(".log").is_file()
    meta = artifact.meta
    assert meta["compress"] == "0" and meta["mode_used"] == "snapshot" and meta["status"] == "running"
    assert meta["config"]["name"] == "haos" and "digest" not in meta["config"]
    # agent=1 on a running VM: vzdump's log shows the guest agent's fs-freeze
    assert meta["fs_frozen"] is True and meta["fs_freeze"] == "frozen"
    # the archive was moved out of the dump storage
    assert not list(dump_dir(pve.root).glob("vzdump-qemu-200-*"))
    fractions = [f for label, f in progress if label == "VM 200"]
    assert fractions[0] == 0.0 and fractions[-1] == 1.0 and fractions == sorted(fractions)
    assert ("CT 101", None) in progress


def test_restore_beside_the_original_then_the_drill_clean_up(night, config: Config, pve: FakePve):
    day, _, _ = night
    artifact = _vm_artifact(night)
    hook = _hook(config)
    options = RestoreOptions(drill=True, params={"as_vmid": SPARE})
    outcome = hook.restore(artifact, fetch_from(day, artifact), options)
    assert outcome.ok, outcome.message
    assert outcome.checks["config"] == "ok" and outcome.checks["started"].startswith("not started: restored beside")
    assert outcome.created["vmid"] == SPARE and outcome.restored_to == f"VM {SPARE}"
    node = pve.root_api().nodes(pve.node)
    # a copy keeps the static address set inside the guest: it stays stopped beside production
    assert node.qemu(SPARE).status.current.get()["status"] == "stopped"
    assert _disk_bytes(pve, SPARE) == _disk_bytes(pve, 200)
    original, copy = node.qemu(200).config.get(), node.qemu(SPARE).config.get()
    for key in ("name", "memory", "cores", "sockets", "ostype", "scsihw", "boot", "agent", "cpu"):
        assert copy.get(key) == original.get(key), key
    # unique=1: a copy beside the original gets its own MAC, vmgenid and SMBIOS uuid
    assert copy["net0"] != original["net0"] and copy["vmgenid"] != original["vmgenid"]
    # onboot=0: a copy left behind never starts at the host's next boot next to production
    assert artifact.meta["config"]["onboot"] == 1 and original["onboot"] == 1
    assert copy["onboot"] == 0 and outcome.checks["onboot"].startswith("0 (restored beside the original")
    assert hook.discard(artifact, outcome, options) == f"destroyed VM {SPARE}"
    assert SPARE not in {int(g["vmid"]) for g in node.qemu.get()}
    assert not fake_qemu.owned_volumes(pve.root, SPARE)


def test_restore_in_place_needs_force_and_keeps_the_mac(night, config: Config, pve: FakePve):
    day, _, _ = night
    artifact = _vm_artifact(night)
    hook = _hook(config)
    refused = hook.restore(artifact, lambda dest: pytest.fail("fetched"), RestoreOptions())
    assert not refused.ok and "VM 200 exists on pve1: refusing to overwrite it without --force" in refused.message
    before = _disk_bytes(pve, 200)
    mac = pve.root_api().nodes(pve.node).qemu(200).config.get()["net0"]
    outcome = hook.restore(artifact, fetch_from(day, artifact), RestoreOptions(force=True))
    assert outcome.ok, outcome.message
    assert outcome.created == {}  # it replaced a VM: a drill's clean-up must never destroy it
    node = pve.root_api().nodes(pve.node)
    assert node.qemu(200).status.current.get()["status"] == "running"
    assert node.qemu(200).config.get()["net0"] == mac
    assert _disk_bytes(pve, 200) == before
    # in place the backed-up onboot comes back: production starts at boot as before
    assert node.qemu(200).config.get()["onboot"] == 1 and "onboot" not in outcome.checks


def _restore_privs() -> list[str]:
    """The documented ResticOrchRestore role's privileges (the lab's token is made from those lines)."""
    (argv,) = [a for a in doc_commands() if a[:3] == ["role", "add", "ResticOrchRestore"]]
    return argv[argv.index("--privs") + 1].split(",")


def test_restore_without_vm_allocate_names_it(night, config: Config, pve: FakePve):
    day, _, _ = night
    artifact = _vm_artifact(night)
    privs = ",".join(_restore_privs())
    pve.pveum("role", "modify", "ResticOrchRestore", "--privs", privs.replace("VM.Allocate,", ""))
    try:
        hook = _hook(config)
        assert any(m.right == "VM.Allocate on /vms/200" for m in hook.missing_rights("restore"))
        outcome = hook.restore(artifact, lambda dest: pytest.fail("fetched"),
                               RestoreOptions(params={"as_vmid": SPARE + 1}))
    finally:
        pve.pveum("role", "modify", "ResticOrchRestore", "--privs", privs)
    assert not outcome.ok
    assert f"missing VM.Allocate on /vms/{SPARE + 1} (needed to create the restored VM)" in outcome.message
    assert "pveum role modify ResticOrchRestore --append 1 --privs VM.Allocate" in outcome.message
    assert SPARE + 1 not in {int(g["vmid"]) for g in pve.root_api().nodes(pve.node).qemu.get()}


def test_a_drill_keeps_room_on_the_restore_storage(night, config: Config, pve: FakePve):
    """A drill restores next to production: with drill_min_free_percent above what the storage has free, the VM
    is refused before anything is created, and the message gives the figures."""
    day, _, _ = night
    artifact = _vm_artifact(night)
    crowded = QemuHook(config.sources.proxmox.model_copy(update={"drill_min_free_percent": 100.0}))
    outcome = crowded.restore(artifact, fetch_from(day, artifact), RestoreOptions(drill=True,
                                                                                params={"as_vmid": SPARE}))
    assert not outcome.ok and not outcome.created
    assert "storage local-zfs has" in outcome.message and "drill_min_free_percent" in outcome.message
    assert SPARE not in {int(g["vmid"]) for g in pve.root_api().nodes(pve.node).qemu.get()}


def test_a_copy_beside_needs_vm_config_options(night, config: Config, pve: FakePve,
                                               monkeypatch: pytest.MonkeyPatch):
    """onboot=0 is checked by PVE as an edit of the copy's options: without VM.Config.Options the product names
    the right before anything is fetched, and PVE itself (the fake, preflight skipped) answers its 403."""
    day, _, _ = night
    artifact = _vm_artifact(night)
    privs = _restore_privs()
    assert "VM.Config.Options" in privs
    pve.pveum("role", "modify", "ResticOrchRestore", "--privs", ",".join(p for p in privs if p != "VM.Config.Options"))
    try:
        hook = _hook(config)
        assert hook.drill_vmids is not None
        listed = [m.right for m in hook.missing_rights("all")]
        assert listed == [f"VM.Config.Options on /vms/{hook.drill_vmids[0]}"], listed
        options = RestoreOptions(params={"as_vmid": SPARE + 2})
        refused = hook.restore(artifact, lambda dest: pytest.fail("fetched"), options)
        assert not refused.ok and f"VM.Config.Options on /vms/{SPARE + 2}" in refused.message
        assert "pveum role modify ResticOrchRestore --append 1 --privs VM.Config.Options" in refused.message
        monkeypatch.setattr(QemuHook, "missing", lambda self, needs: [])
        raw = _hook(config).restore(artifact, fetch_from(day, artifact), options)
    finally:
        pve.pveum("role", "modify", "ResticOrchRestore", "--privs", ",".join(privs))
    assert not raw.ok and f"Permission check failed (/vms/{SPARE + 2}, VM.Config.Options)" in raw.message
    assert not raw.created and SPARE + 2 not in {int(g["vmid"]) for g in pve.root_api().nodes(pve.node).qemu.get()}
