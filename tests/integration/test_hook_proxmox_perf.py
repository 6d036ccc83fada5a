"""The Proxmox hook against the fake PVE (real proxmoxer over HTTPS): exclude paths, freeze, task polling."""

from __future__ import annotations

import fnmatch
import hashlib
import logging
import os
import stat
import subprocess
import time
from pathlib import Path

import pytest
from proxmoxer.core import ResourceException
from pve_helpers import FakePve, running_node

from restic_orch.config import Config, ConfigError, load_config
from restic_orch.hooks import _vzdump_log as vzdump_log
from restic_orch.hooks import proxmox as proxmox_hook
from restic_orch.hooks.base import DumpContext, DumpOutcome, RestoreOptions
from restic_orch.hooks.proxmox import ProxmoxHook, freeze_bounds, logged_excludes
from restic_orch.lab.pve import rootfs_dir, token_secret
from restic_orch.lab.pve.vzdump import STD_EXCLUDES
from restic_orch.lab.secrets import write_secret
from tests.hookhelp import fetch_from, one_source_config

pytestmark = pytest.mark.filterwarnings("ignore::urllib3.exceptions.InsecureRequestWarning")


@pytest.fixture(scope="module")
def pve(tmp_path_factory: pytest.TempPathFactory):
    with running_node(tmp_path_factory.mktemp("hookpve") / "R", seed=3) as server:
        yield server


@pytest.fixture(autouse=True)
def _reset_faults(pve: FakePve):
    yield
    pve.faults()


def _source(tmp_path: Path, pve: FakePve, **extra) -> dict:
    token = write_secret(tmp_path / "secrets" / "pve-token", token_secret(pve.root) + "\n")
    return {"host": pve.host, "port": pve.port, "user": "backup@pve", "token_name": "restic-orch",
            "token_file": str(token), "verify_ssl": False, "node": pve.node, "storage": "local", **extra}


def _config(tmp_path: Path, source: dict) -> Config:
    return one_source_config(tmp_path, "proxmox", source)


def _dump(tmp_path: Path, config: Config) -> tuple[Path, DumpOutcome]:
    (hook,) = ProxmoxHook.from_config(config)
    day = tmp_path / "staging" / "2024-05-01"
    day.mkdir(parents=True, exist_ok=True)
    outcome = hook.dump(DumpContext(config=config, day_dir=day, run_id="t", log=logging.getLogger("test")))
    assert not outcome.failures, outcome.failures
    return day, outcome


def _files(root: Path, skip: tuple[str, ...] = ()) -> dict[str, tuple]:
    """rel path -> (type, mode, content digest or link target): what must survive the archive unchanged."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            rel = str(path.relative_to(root))
            if any(rel == s or rel.startswith(s + "/") for s in skip):
                continue
            st = path.lstat()
            if stat.S_ISLNK(st.st_mode):
                out[rel] = ("link", os.readlink(path))
            elif stat.S_ISDIR(st.st_mode):
                out[rel] = ("dir", stat.S_IMODE(st.st_mode))
            else:
                out[rel] = ("file", stat.S_IMODE(st.st_mode), hashlib.sha256(path.read_bytes()).hexdigest())
    return out


def _archived(day: Path, artifact, tmp_path: Path) -> dict[str, tuple]:
    out = tmp_path / artifact.component.replace(":", "-")
    out.mkdir()
    subprocess.run(["tar", "-xpf", str(day / artifact.path), "-C", str(out), "--numeric-owner"], check=True)
    return _files(out, skip=("etc/vzdump",))


def test_per_vmid_exclude_paths_reach_only_that_container(pve: FakePve, tmp_path: Path):
    config = _config(tmp_path, _source(tmp_path, pve, vmids=[101, 102],
                                       exclude_paths={"all": ["auth.log"], 102: ["/var/lib/postgresql"]}))
    day, outcome = _dump(tmp_path, config)
    arts = {a.component: a for a in outcome.artifacts}
    assert arts["ct:101"].meta["exclude_paths"] == ["auth.log"]
    assert arts["ct:102"].meta["exclude_paths"] == ["auth.log", "/var/lib/postgresql"]
    assert not outcome.notices
    logs = {vmid: (day / "proxmox" / (Path(arts[f"ct:{vmid}"].path).name.split(".tar")[0] + ".log")).read_text()
            for vmid in (101, 102)}
    assert "--exclude-path /var/lib/postgresql" in logs[102] and "/var/lib/postgresql" not in logs[101]

    for vmid, gone in ((101, ("var/log/auth.log",)), (102, ("var/log/auth.log", "var/lib/postgresql"))):
        archived = _archived(day, arts[f"ct:{vmid}"], tmp_path)
        assert not [rel for rel in archived if any(rel == g or rel.startswith(g + "/") for g in gone)]
        # everything else byte-identical (vzdump's standard excludes aside)
        expected = {rel: item for rel, item in _files(rootfs_dir(pve.root, vmid), skip=gone).items()
                    if not any(fnmatch.fnmatchcase("./" + rel, pattern) for pattern in STD_EXCLUDES)}
        assert archived == expected


def test_restore_says_what_the_backup_left_out(pve: FakePve, tmp_path: Path):
    config = _config(tmp_path, _source(tmp_path, pve, vmids=[102], exclude_paths={102: ["/var/lib/postgresql"]}))
    day, outcome = _dump(tmp_path, config)
    (art,) = outcome.artifacts
    (hook,) = ProxmoxHook.from_config(config)
    options = RestoreOptions(drill=True, params={"as_vmid": 212})
    res = hook.restore(art, fetch_from(day, art), options)
    try:
        assert res.ok, res.message
        assert res.checks["not_in_backup"] == ["/var/lib/postgresql"]
        restored = rootfs_dir(pve.root, 212)
        assert (restored / "var/lib").is_dir() and not (restored / "var/lib/postgresql").exists()
        # onboot=0 beside the original: a copy left behind never starts at the host's next boot; CT 102 keeps 1
        node = pve.root_api().nodes(pve.node)
        assert art.meta["config"]["onboot"] == 1 and node.lxc(102).config.get()["onboot"] == 1
        assert node.lxc(212).config.get()["onboot"] == 0
        assert res.checks["onboot"].startswith("0 (restored beside the original")
    finally:
        hook.discard(art, res, options)


def test_a_config_key_beside_the_archive_needs_its_privilege(pve: FakePve):
    """PVE checks a key given with the restore (the product's onboot=0) as an edit of the new CT's options
    (PVE/LXC.pm check_ct_modify_config_perm), before it even looks at the archive."""
    privs = pve.pveum("role", "list")
    kept = next(r["privs"] for r in privs if r["roleid"] == "ResticOrchRestore").split(",")
    assert "VM.Config.Options" in kept
    pve.pveum("role", "modify", "ResticOrchRestore", "--privs", ",".join(p for p in kept if p != "VM.Config.Options"))
    try:
        with pytest.raises(ResourceException) as exc:
            pve.api().nodes(pve.node).lxc.post(vmid=9213, ostemplate="local:backup/vzdump-lxc-102-x.tar", restore=1,
                                               storage="local", unique=1, onboot=0)
    finally:
        pve.pveum("role", "modify", "ResticOrchRestore", "--privs", ",".join(kept))
    assert exc.value.status_code == 403
    assert "Permission check failed (/vms/9213, VM.Config.Options)" in str(exc.value)
    assert 9213 not in {int(c["vmid"]) for c in pve.root_api().nodes(pve.node).lxc.get()}


@pytest.mark.parametrize(("snippet", "message"), [
    ("exclude_paths: [/var/cache]", "must map 'all' or a container VMID to a list of paths"),
    ("exclude_paths: {cache: [/var/cache]}", "key 'cache': use 'all' or a container VMID"),
    ("exclude_paths: {102: /var/cache}", "102: must be a list of paths"),
    ("exclude_paths: {102: [/var/cache/]}", "102[0] '/var/cache/': ends with '/'"),
    ("exclude_paths: {all: [/etc]}", "all[0] '/etc': would also leave out ./etc/vzdump/pct.conf"),
    ("exclude_paths: {all: ['*.conf']}", "would also leave out ./etc/vzdump/pct.conf"),
    ("exclude_paths: {all: ['']}", "all[0] '': must be a non-empty path"),
    ("exclude_paths: {105: [/srv]}", "105: CT 105 is not in vmids [101, 102]"),
    ("exclude_paths: {101: [/srv]}\n    exclude: [101]", "101: CT 101 is in exclude"),
])
def test_bad_exclude_paths_are_rejected_naming_the_field(tmp_path: Path, snippet: str, message: str):
    vmids = "all" if "exclude:" in snippet else "[101, 102]"
    path = tmp_path / "config.yml"
    path.write_text(f"""repositories:
  local: {{url: /tmp/r, password_file: /tmp/p, retention: {{keep_last: 1}}}}
sources:
  proxmox:
    host: 127.0.0.1
    user: backup@pve
    token_name: restic-orch
    token_file: /tmp/t
    vmids: {vmids}
    {snippet}
""")
    with pytest.raises(ConfigError) as exc:
        load_config(path, check_files=False)
    assert f"{path}:10: sources.proxmox.exclude_paths: " in str(exc.value)
    assert message in str(exc.value)


def test_sub_second_freeze_is_recorded_not_lost(pve: FakePve, tmp_path: Path):
    pve.faults(suspend_freeze_seconds=0.2)
    config = _config(tmp_path, _source(tmp_path, pve, vmids=[103], mode="suspend"))
    for attempt in range(3):
        time.sleep(1.02 - time.time() % 1)  # vzdump subtracts whole seconds: stay within one
        _day, outcome = _dump(tmp_path / str(attempt), config)
        meta = outcome.artifacts[0].meta
        assert meta["mode_used"] == "suspend" and meta["freeze_seconds"] in (0.0, 1.0)
        assert meta["freeze_seconds_max"] == meta["freeze_seconds"] + 1
        if meta["freeze_seconds"] == 0.0:
            assert "INFO: guest is online again after <1 seconds" in meta["log_excerpt"]
            return
    pytest.fail("a 0.2 s freeze never logged '<1'")


def test_snapshot_freeze_is_bounded_from_the_guest_log_or_not_measured(pve: FakePve, tmp_path: Path):
    """VI1 in snapshot mode: vzdump logs no freeze time, the per-guest log's timestamps bound it."""
    pve.faults(snapshot_freeze_seconds=2.0)
    config = _config(tmp_path, _source(tmp_path, pve, vmids=[103]))
    _day, outcome = _dump(tmp_path / "snap", config)
    meta = outcome.artifacts[0].meta
    assert meta["mode_used"] == "snapshot" and meta["freeze_measured_by"] == "snapshot-timestamps"
    assert meta["freeze_seconds"] is None  # vzdump itself logged none
    assert meta["freeze_seconds_min"] <= 2.0 <= meta["freeze_seconds_max"] <= 4.0
    pve.faults()
    # without the per-guest log (vzdump writes it at the end of each guest), nothing is measured: never 0
    original = vzdump_log.snapshot_freeze
    try:
        vzdump_log.snapshot_freeze = lambda text: None  # type: ignore[assignment]
        _day, outcome = _dump(tmp_path / "nolog", config)
    finally:
        vzdump_log.snapshot_freeze = original  # type: ignore[assignment]
    meta = outcome.artifacts[0].meta
    assert meta["freeze_measured_by"] == "not measured"
    assert meta["freeze_seconds_max"] is None and meta["freeze_seconds_min"] is None


def test_freeze_bounds_and_logged_excludes():
    assert freeze_bounds("<1") == (0.0, 1.0)
    assert freeze_bounds("3") == (3.0, 4.0)
    line = "INFO: starting new backup job: vzdump 102 --exclude-path /var/cache --mode snapshot --exclude-path '*.log'"
    assert logged_excludes(line) == ["/var/cache", "*.log"]
    assert logged_excludes("INFO: Starting Backup of VM 102 (lxc)") is None


def test_unconfirmed_excludes_are_not_reported_as_left_out(pve: FakePve, tmp_path: Path):
    (hook,) = ProxmoxHook.from_config(_config(tmp_path, _source(tmp_path, pve)))
    outcome = DumpOutcome()
    log = "INFO: starting new backup job: vzdump 102 --exclude-path /var/cache --storage local"
    assert hook._confirm_excludes(102, ["/var/cache", "/srv"], log, outcome) == ["/var/cache"]
    assert [n.message for n in outcome.notices] == [
        "CT 102: vzdump's command line does not show exclude-path /srv: these may still be in the archive"]
    assert hook._confirm_excludes(102, [], log, DumpOutcome()) == []


def test_task_polling_never_sleeps_more_than_half_a_second(pve: FakePve, tmp_path: Path, monkeypatch):
    pve.faults(task_delay_seconds=2.5)
    (hook,) = ProxmoxHook.from_config(_config(tmp_path, _source(tmp_path, pve)))
    upid = hook.api.nodes(pve.node).vzdump.post(vmid="104", storage="local")
    sleeps: list[float] = []
    real_sleep = time.sleep
    monkeypatch.setattr(proxmox_hook.time, "sleep", lambda s: (sleeps.append(s), real_sleep(s))[1])
    exitstatus, log = hook.wait_task(upid, 60)
    assert exitstatus == "OK" and log[-1] == "TASK OK"
    assert sleeps[0] == pytest.approx(0.1) and max(sleeps) == pytest.approx(0.5)
    assert sleeps == sorted(sleeps)  # grows, then stays at the cap


LEGACY_CT = {"vmid": 105, "hostname": "legacy", "storage": "local", "profile": "apps"}


@pytest.fixture(scope="module")
def pve_dir_storage(tmp_path_factory: pytest.TempPathFactory):
    """A node with one more container whose volume sits on a directory storage: no snapshots there."""
    from restic_orch.lab.pve.node import DEFAULT_CONTAINERS

    with running_node(tmp_path_factory.mktemp("hookpve-dir") / "R", containers=[*DEFAULT_CONTAINERS, LEGACY_CT],
                      seed=5) as server:
        yield server


def test_fallback_to_suspend_is_flagged_with_the_freeze(pve_dir_storage: FakePve, tmp_path: Path):
    pve_dir_storage.faults(suspend_freeze_seconds=1.2)
    try:
        config = _config(tmp_path, _source(tmp_path, pve_dir_storage, vmids=[105], mode="snapshot"))
        _day, outcome = _dump(tmp_path, config)
    finally:
        pve_dir_storage.faults()
    meta = outcome.artifacts[0].meta
    assert (meta["mode_requested"], meta["mode_used"], meta["fallback"]) == ("snapshot", "suspend", True)
    assert meta["freeze_seconds"] is not None and meta["freeze_seconds_max"] == meta["freeze_seconds"] + 1
    assert [n.message for n in outcome.notices] == [
        f"CT 105: vzdump used suspend mode instead of snapshot; guest frozen {meta['freeze_seconds']:g} s"]


def test_require_snapshot_fails_the_container_and_keeps_no_archive(pve_dir_storage: FakePve, tmp_path: Path):
    config = _config(tmp_path, _source(tmp_path, pve_dir_storage, vmids=[105], require_snapshot=True))
    (hook,) = ProxmoxHook.from_config(config)
    day = tmp_path / "staging" / "2024-05-01"
    day.mkdir(parents=True)
    dump_dir = hook.dump_dir()
    before = set(os.listdir(dump_dir))
    outcome = hook.dump(DumpContext(config=config, day_dir=day, run_id="t", log=logging.getLogger("test")))
    assert not outcome.artifacts
    assert any("snapshot mode failed and vzdump fell back to suspend" in str(f) for f in outcome.failures)
    assert not any(n.endswith(".tar") or ".tar." in n for n in set(os.listdir(dump_dir)) - before)
