"""PVE 8's permission model in the fake, the documented token, and the product working with exactly it.

Every privilege of the roles in docs/getting-started.md is taken away once: the operation that needs
it fails with the product's message naming it, the preflight lists it, and without the preflight the
fake PVE itself refuses the call (so the docs list nothing that is not needed).
"""

from __future__ import annotations

import logging
import re
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from proxmoxer import ProxmoxAPI
from proxmoxer.core import ResourceException
from pve_helpers import FakePve, running_node

from restic_orch.config import Config
from restic_orch.hooks.base import DumpContext, RestoreOptions
from restic_orch.hooks.proxmox import ProxmoxHook
from restic_orch.lab.pve import access, token_secret
from restic_orch.lab.pve.privileges import BUILTIN_ROLES
from restic_orch.lab.pve.pveum import DOCS, doc_commands
from restic_orch.lab.secrets import write_secret
from tests.hookhelp import fetch_from, one_source_config

pytestmark = pytest.mark.filterwarnings("ignore::urllib3.exceptions.InsecureRequestWarning")
TOKEN = "backup@pve!restic-orch"


def documented_roles() -> dict[str, list[str]]:
    roles = {}
    for argv in doc_commands():
        if argv[:2] == ["role", "add"]:
            roles[argv[2]] = argv[argv.index("--privs") + 1].split(",")
    return roles


@pytest.fixture(scope="module")
def pve(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FakePve]:
    with running_node(tmp_path_factory.mktemp("perms") / "R", seed=5) as server:
        yield server


@pytest.fixture(scope="module")
def config(pve: FakePve, tmp_path_factory: pytest.TempPathFactory) -> Config:
    tmp = tmp_path_factory.mktemp("permcfg")
    token = write_secret(tmp / "secrets" / "pve-token", token_secret(pve.root) + "\n")
    return one_source_config(tmp, "proxmox", {
        "host": pve.host, "port": pve.port, "user": "backup@pve", "token_name": "restic-orch",
        "token_file": str(token), "verify_ssl": False, "node": pve.node, "storage": "local",
        "restore_storage": "local-zfs", "vmids": [101]})


@pytest.fixture(scope="module")
def backed_up(config: Config, tmp_path_factory: pytest.TempPathFactory):
    """CT 101 dumped once with the documented token (the restore tests restore it)."""
    (hook,) = ProxmoxHook.from_config(config)
    day = tmp_path_factory.mktemp("permday")
    outcome = hook.dump(DumpContext(config=config, day_dir=day, run_id="t", log=logging.getLogger("t")))
    assert not outcome.failures, outcome.failures
    return day, outcome.artifacts[0]


# --- the model --------------------------------------------------------------------------------------
def test_lab_token_is_made_by_the_documented_commands(pve: FakePve):
    acc = access.load(pve.root)
    assert acc["tokens"][TOKEN]["privsep"] == 1
    documented = {(argv[2], argv[argv.index("--roles") + 1]) for argv in doc_commands()
                  if argv[:2] == ["acl", "modify"]}
    granted = {(a["path"], a["roleid"]) for a in acc["acl"] if a["ugid"] == TOKEN}
    assert granted == documented
    assert {r: sorted(p) for r, p in acc["roles"].items()} == {r: sorted(p) for r, p in documented_roles().items()}
    assert "pveum user token add backup@pve restic-orch --privsep 1" in DOCS.read_text()


def test_propagation_replacement_privsep_and_noaccess(pve: FakePve):
    pve.pveum("user", "add", "alice@pve")
    pve.pveum("user", "token", "add", "alice@pve", "t1", "--privsep", "1")
    pve.pveum("user", "token", "add", "alice@pve", "t0", "--privsep", "0")
    pve.pveum("acl", "modify", "/vms", "--users", "alice@pve", "--roles", "PVEVMUser")
    pve.pveum("acl", "modify", "/vms/102", "--users", "alice@pve", "--roles", "PVEAuditor")
    pve.pveum("acl", "modify", "/storage", "--users", "alice@pve", "--roles", "PVEDatastoreUser", "--propagate", "0")
    pve.pveum("acl", "modify", "/vms", "--tokens", "alice@pve!t1", "--roles", "PVEVMAdmin")
    pve.pveum("acl", "modify", "/vms/103", "--users", "alice@pve", "--roles", "NoAccess")
    acc = access.load(pve.root)
    assert "VM.Backup" in access.permissions(acc, "alice@pve", "/vms/101")
    # a deeper ACL replaces what was inherited; it does not add to it
    assert set(access.permissions(acc, "alice@pve", "/vms/102")) == BUILTIN_ROLES["PVEAuditor"]
    assert access.permissions(acc, "alice@pve", "/vms/103") == {}
    # propagate 0: on the path itself, not below it
    assert "Datastore.AllocateSpace" in access.permissions(acc, "alice@pve", "/storage")
    assert access.permissions(acc, "alice@pve", "/storage/local") == {}
    # privsep token: its own ACLs cut down to its user's; without privsep: the user's
    user_privs = access.permissions(acc, "alice@pve", "/vms/101")
    assert set(access.permissions(acc, "alice@pve!t1", "/vms/101")) == set(user_privs)
    assert "VM.Allocate" not in access.permissions(acc, "alice@pve!t1", "/vms/101")
    assert access.permissions(acc, "alice@pve!t0", "/vms/102") == access.permissions(acc, "alice@pve", "/vms/102")
    assert access.permissions(acc, "alice@pve!t1", "/storage") == {}
    # the API answers a token's question about itself
    api = pve.api()
    own = api.access.permissions.get(path="/vms/101")
    assert set(own["/vms/101"]) >= {"VM.Audit", "VM.Backup", "VM.Allocate", "VM.PowerMgmt"}
    with pytest.raises(ResourceException) as exc:
        api.access.permissions.get(userid="alice@pve")
    assert exc.value.status_code == 403 and "(/access, Sys.Audit)" in str(exc.value)


def test_forbidden_calls_answer_403_like_pve(pve: FakePve):
    api = pve.api()
    with pytest.raises(ResourceException) as exc:
        api.storage("local").get()
    assert exc.value.status_code == 403
    assert "Permission check failed (/storage/local, Datastore.Allocate)" in str(exc.value)
    # the index is filtered, not refused: only the storages the token may allocate space on
    assert {s["storage"] for s in api.storage.get()} == {"local", "local-zfs"}
    with pytest.raises(ResourceException) as exc:
        api.nodes(pve.node).vzdump.post(vmid="101", storage="local", bwlimit=1000)
    assert "Permission check failed (/, Sys.Modify)" in str(exc.value)
    with pytest.raises(ResourceException) as exc:
        api.access.roles.post(roleid="Mine", privs="VM.Audit")
    assert exc.value.status_code == 403
    # the host's token cannot widen or erase its own grants
    with pytest.raises(ResourceException) as exc:
        api.access.acl.put(path="/vms", roles="ResticOrchBackup", tokens=TOKEN, delete=1)
    assert "Permission check failed (/vms, Permissions.Modify)" in str(exc.value)
    assert sum(a["ugid"] == TOKEN for a in access.load(pve.root)["acl"]) == 5
    # vzdump needs space on its storage before any task starts
    pve.pveum("user", "add", "bob@pve")
    secret = pve.pveum("user", "token", "add", "bob@pve", "bt", "--privsep", "0")["value"]
    pve.pveum("acl", "modify", "/vms", "--users", "bob@pve", "--roles", "PVEVMUser")
    bob = ProxmoxAPI(pve.host, port=pve.port, user="bob@pve", token_name="bt", token_value=secret,
                     verify_ssl=False, backend="https", timeout=30)
    with pytest.raises(ResourceException) as exc:
        bob.nodes(pve.node).vzdump.post(vmid="101", storage="local")
    assert exc.value.status_code == 403
    assert "Permission check failed (/storage/local, Datastore.AllocateSpace)" in str(exc.value)


def test_a_task_is_seen_by_its_owner_only(pve: FakePve):
    root = pve.root_api().nodes(pve.node)
    upid = root.lxc(104).status.stop.post()
    with pytest.raises(ResourceException) as exc:
        pve.api().nodes(pve.node).tasks(upid).status.get()
    assert "(/nodes/pve1, Sys.Audit)" in str(exc.value)
    assert upid not in {t["upid"] for t in pve.api().nodes(pve.node).tasks.get(source="all")}
    pve.wait_task(upid)
    own = pve.api().nodes(pve.node).lxc(104).status.start.post()
    assert pve.wait_task(own)["exitstatus"] == "OK"


# --- each documented privilege is needed, and named when missing --------------------------------------
def _cases() -> list[tuple[str, str]]:
    return [(role, priv) for role, privs in documented_roles().items() for priv in privs]


# What PVE itself answers when the product skips its preflight. VM.Audit hides the guest from the list
# (PVE/API2/LXC.pm vmlist filters on it), Datastore.AllocateSpace hides the storage from the index
# (PVE/API2/Storage/Config.pm index); the other refusals are PVE's own check messages.
PVE_REFUSAL = {
    ("ResticOrchBackup", "VM.Audit"): "container 101 does not exist on node pve1",
    ("ResticOrchBackup", "VM.Backup"): "Permission check failed (/vms/101, VM.Backup)",
    ("ResticOrchBackup", "Datastore.AllocateSpace"): "storage local is not visible to backup@pve!restic-orch",
    ("ResticOrchRestore", "VM.Allocate"): "Permission check failed",
    ("ResticOrchRestore", "VM.PowerMgmt"): "Permission check failed (/vms/101, VM.PowerMgmt)",
    ("ResticOrchRestore", "Datastore.AllocateSpace"):
        "Permission check failed (/storage/local-zfs, Datastore.AllocateSpace)",
    ("ResticOrchRestore", "SDN.Use"): "Permission check failed (/sdn/zones/localnetwork/vmbr0, SDN.Use)",
    ("ResticOrchRestore", "VM.Config.Options"): "Permission check failed (/vms/9950, VM.Config.Options)",
}


def test_every_documented_privilege_has_a_case():
    assert set(PVE_REFUSAL) == set(_cases())


@pytest.mark.parametrize(("role", "priv"), _cases())
def test_each_documented_privilege_is_needed(pve: FakePve, config: Config, backed_up, tmp_path: Path,
                                             role: str, priv: str, monkeypatch: pytest.MonkeyPatch):
    privs = documented_roles()[role]
    day, artifact = backed_up
    operation = "backup" if role == "ResticOrchBackup" else "restore"
    pve.pveum("role", "modify", role, "--privs", ",".join(p for p in privs if p != priv))
    try:
        (hook,) = ProxmoxHook.from_config(config)
        listed = [m.right for m in hook.missing_rights("all")]
        assert any(r.startswith(f"{priv} on ") for r in listed), listed
        message = _attempt(hook, operation, config, day, artifact, tmp_path)
        assert priv in message and "pveum role modify" in message
        # without the product's preflight, PVE itself refuses: the privilege is really needed
        monkeypatch.setattr(ProxmoxHook, "missing", lambda self, needs: [])
        (bare,) = ProxmoxHook.from_config(config)
        raw = _attempt(bare, operation, config, day, artifact, tmp_path)
        assert PVE_REFUSAL[(role, priv)] in raw, raw
    finally:
        pve.pveum("role", "modify", role, "--privs", ",".join(privs))
        _remove_spare(pve)


def _attempt(hook: ProxmoxHook, operation: str, config: Config, day: Path, artifact, tmp_path: Path) -> str:
    """Run the operation; return the failure message ('' when it worked)."""
    if operation == "backup":
        out = tmp_path / f"day-{len(list(tmp_path.iterdir()))}"
        out.mkdir()
        outcome = hook.dump(DumpContext(config=config, day_dir=out, run_id="t", log=logging.getLogger("t")))
        return " | ".join(f.message for f in outcome.failures)
    # a running CT restored in place: stop, create, start; and a copy beside it: the original's archive
    messages = []
    for options in (RestoreOptions(force=True), RestoreOptions(params={"as_vmid": 9950})):
        outcome = hook.restore(artifact, fetch_from(day, artifact), options)
        if not outcome.ok:
            messages.append(outcome.message)
    return " | ".join(messages)


def _remove_spare(pve: FakePve) -> None:
    root = pve.root_api().nodes(pve.node)
    if any(int(c["vmid"]) == 9950 for c in root.lxc.get()):
        pve.wait_task(root.lxc(9950).delete())
    if not any(int(c["vmid"]) == 101 and c["status"] == "running" for c in root.lxc.get()):
        if any(int(c["vmid"]) == 101 for c in root.lxc.get()):
            pve.wait_task(root.lxc(101).status.start.post())


def test_restore_with_the_documented_token_works(pve: FakePve, config: Config, backed_up):
    day, artifact = backed_up
    (hook,) = ProxmoxHook.from_config(config)
    assert hook.missing_rights("all") == []
    outcome = hook.restore(artifact, fetch_from(day, artifact), RestoreOptions(params={"as_vmid": 9950}))
    assert outcome.ok, outcome.message
    assert outcome.created["vmid"] == 9950
    assert hook.discard(artifact, outcome, RestoreOptions(params={"as_vmid": 9950})) == "destroyed CT 9950"


def test_storage_without_path_and_content_dirs(pve: FakePve, config: Config, backed_up):
    from restic_orch.lab.pve import layout

    day, artifact = backed_up
    node = layout.load_node(pve.root)
    saved = dict(node["storages"]["local"])
    try:
        node["storages"]["local"]["content-dirs"] = "backup=custom/backups"
        (layout.storage_path(pve.root, saved) / "custom/backups").mkdir(parents=True, exist_ok=True)
        layout.save_node(pve.root, node)
        (hook,) = ProxmoxHook.from_config(config)
        assert hook.dump_dir() == layout.storage_path(pve.root, saved) / "custom/backups"
        outcome = hook.restore(artifact, fetch_from(day, artifact), RestoreOptions(params={"as_vmid": 9951}))
        assert outcome.ok, outcome.message
        hook.discard(artifact, outcome, RestoreOptions(params={"as_vmid": 9951}))
        node["storages"]["local"] = {"type": "pbs", "content": "backup", "path": saved["path"]}
        layout.save_node(pve.root, node)
        with pytest.raises(Exception, match=r"storage local \(pbs\) has no local path"):
            hook.dump_dir()
    finally:
        node["storages"]["local"] = saved
        layout.save_node(pve.root, node)


def test_same_archive_left_by_pve_is_used(pve: FakePve, config: Config, backed_up):
    """delete_after: false leaves PVE's copy in the dump storage: restoring that night reuses it."""
    from restic_orch.lab.pve import dump_dir

    day, artifact = backed_up
    name = Path(artifact.path).name
    shutil.copyfile(day / artifact.path, dump_dir(pve.root) / name)
    (hook,) = ProxmoxHook.from_config(config)
    outcome = hook.restore(artifact, lambda dest: pytest.fail("fetched again"),
                           RestoreOptions(params={"as_vmid": 9952}))
    assert outcome.ok, outcome.message
    assert (dump_dir(pve.root) / name).is_file()  # PVE's own copy is left where it was
    hook.discard(artifact, outcome, RestoreOptions(params={"as_vmid": 9952}))
    (dump_dir(pve.root) / name).write_bytes(b"not the archive")
    outcome = hook.restore(artifact, fetch_from(day, artifact), RestoreOptions(params={"as_vmid": 9952}))
    assert not outcome.ok and "differs from the backed-up archive" in outcome.message
    (dump_dir(pve.root) / name).unlink()
    assert re.match(r"vzdump-lxc-101-", name)


def test_storage_prune_policy_is_no_hard_cap(pve: FakePve, config: Config, tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch):
    """remove=0 turns on vzdump's max-backups check: a storage keeping 1 archive must not fail the night."""
    from restic_orch.lab.pve import dump_dir, layout

    node = layout.load_node(pve.root)
    saved = dict(node["storages"]["local"])
    node["storages"]["local"]["prune-backups"] = "keep-last=1"
    layout.save_node(pve.root, node)
    source = config.sources.proxmox.model_copy(update={"delete_after": False})
    hook = ProxmoxHook(source)

    def night(name: str):
        day = tmp_path / name
        day.mkdir()
        return hook.dump(DumpContext(config=config, day_dir=day, run_id=name, log=logging.getLogger("t")))

    try:
        first = night("d1")
        assert not first.failures and not first.notices, (first.failures, first.notices)
        kept = sorted(p.name for p in dump_dir(pve.root).glob("vzdump-lxc-101-*.tar*"))
        assert len(kept) == 1
        with monkeypatch.context() as m:  # what remove=0 alone would do: the guest fails
            m.setattr(ProxmoxHook, "remove_param", lambda self, vmid, limit: 0)
            capped = night("d2")
        assert capped.failures and "max backup limit of 1" in capped.failures[0].message
        time.sleep(1.1)  # archive names carry the second
        second = night("d3")
        assert not second.failures, second.failures
        assert any("pruned by that policy" in n.message and kept[0] in n.message for n in second.notices)
        now = sorted(p.name for p in dump_dir(pve.root).glob("vzdump-lxc-101-*.tar*"))
        assert len(now) == 1 and now != kept
    finally:
        node["storages"]["local"] = saved
        layout.save_node(pve.root, node)
        for path in dump_dir(pve.root).glob("vzdump-lxc-101-*"):
            path.unlink()


def test_runbook_token_grants_what_getting_started_grants(tmp_path: Path):
    """The 3 a.m. runbook rebuilds the token with its own lines: they must give the same rights."""
    from restic_orch.lab.pve import create_node
    from restic_orch.lab.pve.pveum import provision_from_docs

    runbook = DOCS.parent / "runbooks" / "disaster-recovery.md"
    role_readme = DOCS.parent.parent / "ansible" / "roles" / "backup" / "README.md"
    views = []
    for name, doc in (("first-day", DOCS), ("disaster-day", runbook), ("role-readme", role_readme)):
        root = tmp_path / name
        create_node(root, containers=[{"vmid": 101}], size_bytes=16 * 1024, provision=False)
        tokens = provision_from_docs(root, doc)
        assert list(tokens) == [TOKEN]
        views.append(access.effective_permissions(access.load(root), TOKEN))
    assert views[0] == views[1] == views[2]
    assert "SDN.Use" in views[1]["/sdn/zones/localnetwork"]


def test_backup_to_a_storage_without_path_fails_before_vzdump(pve: FakePve, config: Config, tmp_path: Path):
    from restic_orch.lab.pve import layout

    node = layout.load_node(pve.root)
    saved = dict(node["storages"]["local"])
    node["storages"]["local"] = {"type": "pbs", "content": "backup", "path": saved["path"]}
    layout.save_node(pve.root, node)
    index = pve.root / "tasks" / "index"
    before = index.read_text() if index.exists() else ""
    try:
        (hook,) = ProxmoxHook.from_config(config)
        outcome = hook.dump(DumpContext(config=config, day_dir=tmp_path, run_id="t", log=logging.getLogger("t")))
    finally:
        node["storages"]["local"] = saved
        layout.save_node(pve.root, node)
    assert [f.component for f in outcome.failures] == ["ct:*"]
    assert "storage local (pbs) has no local path" in outcome.failures[0].message
    assert ":vzdump:" not in (index.read_text() if index.exists() else "")[len(before):]


def test_a_failed_restore_in_place_starts_the_container_again(pve: FakePve, config: Config, backed_up):
    """The old CT is stopped for an in-place restore: when PVE then refuses, it must not stay down."""
    day, artifact = backed_up
    source = config.sources.proxmox.model_copy(update={"restore_storage": "local"})  # holds no CT volumes
    hook = ProxmoxHook(source)
    node = pve.root_api().nodes(pve.node)
    assert node.lxc(101).status.current.get()["status"] == "running"
    outcome = hook.restore(artifact, fetch_from(day, artifact), RestoreOptions(force=True))
    assert not outcome.ok
    assert "does not support container directories" in outcome.message and "was started again" in outcome.message
    assert node.lxc(101).status.current.get()["status"] == "running"
