"""The fake PVE's snapshot freeze, logs and mount points, against what PVE 8's vzdump does.

Sources (PVE 8): pve-manager PVE/VZDump.pm exec_backup_task; pve-container src/PVE/VZDump/LXC.pm
prepare/snapshot/archive, src/PVE/LXC/Config.pm __snapshot_freeze and mountpoint_backup_enabled,
src/PVE/API2/LXC.pm create_vm (restore); pve-guest-common PVE/VZDump/Plugin.pm debugmsg (per-guest log
lines "%Y-%m-%d %H:%M:%S INFO: ...") and PVE/AbstractConfig.pm snapshot_create.
"""

from __future__ import annotations

import hashlib
import os
import re
import stat
import subprocess
import threading
import time
from pathlib import Path

import pytest
from pve_helpers import FakePve, running_node

from restic_orch.hooks._vzdump_log import guest_freeze, online_again_freeze, snapshot_freeze
from restic_orch.lab.pve import read_config, rootfs_dir
from restic_orch.lab.pve.rootfs import volume_dir
from restic_orch.lab.pve.vzdump import is_frozen

NODE = "pve1"
BLOB = bytes(range(256)) * 64
MP_CT = {"vmid": 150, "hostname": "files", "mountpoints": [
    {"mp": "/srv/data", "backup": 1, "size": "1G",
     "files": {"hello.txt": "hello from mp0\n", "sub/dir/blob.bin": BLOB}},
    {"mp": "/srv/scratch", "backup": 0, "size": "512M", "files": {"cache.tmp": "not backed up\n"}},
]}
EXCLUDED_CT = {"vmid": 151, "hostname": "scratchy", "mountpoints": [
    {"mp": "/srv/scratch", "backup": 0, "files": {"junk.bin": BLOB}},
]}
STAMP = r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d"
# an unprivileged CT's files belong to host ids 100000+n on disk (as root), to n in the archive
SHIFT = 100000 if os.geteuid() == 0 else 0
# vzdump's stdexcludes leave these out of every archive
SCRATCH = re.compile(r"^(tmp|var/tmp)/.+|^var/run/.+\.pid$")

pytestmark = pytest.mark.filterwarnings("ignore::urllib3.exceptions.InsecureRequestWarning")


@pytest.fixture(scope="module")
def pve(tmp_path_factory: pytest.TempPathFactory):
    with running_node(tmp_path_factory.mktemp("freeze") / "R", size_bytes=128 * 1024,
                      containers=[{"vmid": 101, "hostname": "proxy"}, MP_CT, EXCLUDED_CT]) as server:
        yield server


@pytest.fixture(autouse=True)
def _reset_faults(pve: FakePve):
    yield
    pve.faults()


@pytest.fixture
def api(pve: FakePve):
    return pve.api().nodes(NODE)


def backup(pve: FakePve, api, vmid: int, watch: bool = False, **params) -> tuple[list[str], Path, list[str], bool]:
    """Run one vzdump; (task log, archive path, per-guest log lines, whether the CT was seen frozen)."""
    upid = api.vzdump.post(vmid=str(vmid), storage="local", **params)
    seen_frozen = False
    while watch and api.tasks(upid).status.get()["status"] == "running":
        seen_frozen = seen_frozen or is_frozen(pve.root, vmid)
        time.sleep(0.02)
    status = pve.wait_task(upid)
    log = pve.task_log(upid)
    assert status["exitstatus"] == "OK", log
    (archive,) = [m.group(1) for m in map(re.compile(r"INFO: creating vzdump archive '(.+)'").fullmatch, log) if m]
    path = Path(archive)
    guest_log = path.with_name(path.name.split(".tar")[0] + ".log").read_text().splitlines()
    return log, path, guest_log, seen_frozen


def members(path: Path) -> list[str]:
    return subprocess.run(["tar", "-tf", str(path)], check=True, capture_output=True, text=True).stdout.splitlines()


def extract(path: Path, out: Path) -> Path:
    out.mkdir()
    subprocess.run(["tar", "-xpf", str(path), "-C", str(out), "--numeric-owner"], check=True)
    return out


def tree(root: Path, skip: re.Pattern[str] | None = None, shift: int = 0) -> dict[str, tuple]:
    """Relative path -> (type, mode, uid - shift, gid - shift, sha256 or link target) below root."""
    res = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            rel = str(path.relative_to(root))
            if skip and skip.match(rel):
                continue
            st = path.lstat()
            if stat.S_ISLNK(st.st_mode):
                what = ("link", os.readlink(path))
            elif stat.S_ISDIR(st.st_mode):
                what = ("dir", "")
            else:
                what = ("file", hashlib.sha256(path.read_bytes()).hexdigest())
            res[rel] = (what[0], stat.S_IMODE(st.st_mode), st.st_uid - shift, st.st_gid - shift, what[1])
    return res


def in_guest_log(task_log: list[str]) -> list[str]:
    """The task log lines vzdump also writes to the per-guest log: the guest's own, without the two
    'Backup started/finished at' lines it prints without its log file handle."""
    first = next(i for i, line in enumerate(task_log) if line.startswith("INFO: Starting Backup of VM"))
    last = next(i for i, line in enumerate(task_log) if line.startswith("INFO: Finished Backup of VM"))
    return [line for line in task_log[first:last + 1] if not re.match(r"INFO: Backup (started|finished) at ", line)]


def test_snapshot_mode_logs_like_pve_8(pve: FakePve, api):
    before = time.time()
    log, path, guest_log, _ = backup(pve, api, 101, mode="snapshot", compress="zstd")
    after = time.time()
    expected = [
        r"INFO: starting new backup job: vzdump .*",
        r"INFO: Starting Backup of VM 101 \(lxc\)",
        rf"INFO: Backup started at {STAMP}",
        r"INFO: status = running",
        r"INFO: CT Name: proxy",
        r"INFO: including mount point rootfs \('/'\) in backup",
        r"INFO: backup mode: snapshot",
        r"INFO: ionice priority: 7",
        r"INFO: create storage snapshot 'vzdump'",
        rf"INFO: creating vzdump archive '{re.escape(str(path))}'",
        r"INFO: Total bytes written: \d+ \(.+, .+/s\)",
        r"INFO: archive file size: \d+(KB|MB)",
        r"INFO: cleanup temporary 'vzdump' snapshot",
        r"INFO: Finished Backup of VM 101 \(\d\d:\d\d:\d\d\)",
        rf"INFO: Backup finished at {STAMP}",
        r"INFO: Backup job finished successfully",
        r"TASK OK",
    ]
    assert len(log) == len(expected), log
    for line, pattern in zip(log, expected, strict=True):
        assert re.fullmatch(pattern, line), (line, pattern)
    # one volume: the freeze is __snapshot_freeze inside snapshot_create, which logs no time
    assert not any("online again" in line or "suspend" in line for line in log)
    assert guest_freeze("\n".join(log)) is None  # the task log has no timestamps: not measured

    # the per-guest log: the guest's lines in the same order, each with a local timestamp
    stamped = [re.fullmatch(rf"({STAMP}) (INFO: .*)", line) for line in guest_log]
    assert all(stamped), guest_log
    assert [m.group(2) for m in stamped] == in_guest_log(log)
    stamps = [time.mktime(time.strptime(m.group(1), "%Y-%m-%d %H:%M:%S")) for m in stamped]
    assert stamps == sorted(stamps) and int(before) <= stamps[0] and stamps[-1] <= after
    bound = snapshot_freeze("\n".join(guest_log))
    assert bound is not None and bound.source == "snapshot-timestamps" and bound.lower == 0
    assert not is_frozen(pve.root, 101)


def test_snapshot_freeze_fault_is_inside_the_bound(pve: FakePve, api):
    pve.faults(snapshot_freeze_seconds=2)
    log, _path, guest_log, seen_frozen = backup(pve, api, 101, watch=True, mode="snapshot")
    assert seen_frozen and not is_frozen(pve.root, 101)
    assert not any("online again" in line for line in log)
    snap = next(i for i, line in enumerate(guest_log) if line.endswith("INFO: create storage snapshot 'vzdump'"))
    assert guest_log[snap + 1].endswith("INFO: creating vzdump archive '" + str(_path) + "'")
    bound = snapshot_freeze("\n".join(guest_log))
    assert bound is not None and bound.lower <= 2 <= bound.upper and bound.upper <= 4, bound
    assert guest_freeze("\n".join(guest_log)) == bound


def test_two_volumes_suspend_around_the_snapshot(pve: FakePve, api, tmp_path: Path):
    pve.faults(snapshot_freeze_seconds=2)
    log, path, guest_log, seen_frozen = backup(pve, api, 150, watch=True, mode="snapshot")
    assert seen_frozen and not is_frozen(pve.root, 150)
    start = log.index("INFO: CT Name: files")
    assert log[start:start + 10] == [
        "INFO: CT Name: files",
        "INFO: including mount point rootfs ('/') in backup",
        "INFO: including mount point mp0 ('/srv/data') in backup",
        "INFO: excluding volume mount point mp1 ('/srv/scratch') from backup (disabled)",
        "INFO: backup mode: snapshot",
        "INFO: ionice priority: 7",
        "INFO: suspend vm to make snapshot",
        "INFO: create storage snapshot 'vzdump'",
        "INFO: resume vm",
        log[start + 9],
    ]
    assert re.fullmatch(r"INFO: guest is online again after [23] seconds", log[start + 9])
    assert log[start + 10] == f"INFO: creating vzdump archive '{path}'"
    bound = online_again_freeze("\n".join(log))
    assert bound is not None and bound.lower <= 2 <= bound.upper
    assert guest_freeze("\n".join(guest_log)) == bound  # the per-guest log carries the same line

    names = members(path)
    # tar --one-file-system over './' stores the mount point, then './srv/data' brings its content
    assert names.count("./srv/data/") == 2 and names.index("./srv/data/hello.txt") > names.index("./srv/")
    assert {"./srv/data/hello.txt", "./srv/data/sub/dir/blob.bin", "./srv/scratch/"} <= set(names)
    assert not any(n.startswith("./srv/scratch/") and n != "./srv/scratch/" for n in names)
    # the rootfs's own files below a mount path are hidden by the mounted volume (the apps profile has one)
    assert (rootfs_dir(pve.root, 150) / "srv/data/app.sqlite").is_file() and "./srv/data/app.sqlite" not in names
    out = extract(path, tmp_path / "x")
    assert (out / "srv/data/hello.txt").read_text() == "hello from mp0\n"
    assert (out / "srv/data/sub/dir/blob.bin").read_bytes() == BLOB
    assert list((out / "srv/scratch").iterdir()) == []


def test_mount_point_restored_into_a_new_volume(pve: FakePve, api):
    _log, path, _guest_log, _ = backup(pve, api, 150, mode="snapshot", compress="zstd")
    volid = f"local:backup/{path.name}"
    status = pve.wait_task(api.lxc.post(vmid=250, ostemplate=volid, restore=1, storage="local-zfs"))
    assert status["exitstatus"] == "OK", pve.task_log(status["upid"])
    conf = read_config(pve.root, 250)
    # PVE's create_disks: new volumes in key order on the target storage, print_ct_mountpoint's key order
    assert conf["rootfs"] == "local-zfs:subvol-250-disk-0,size=8G"
    assert conf["mp0"] == "local-zfs:subvol-250-disk-1,mp=/srv/data,backup=1,size=1G"
    assert conf["mp1"] == "local-zfs:subvol-250-disk-2,mp=/srv/scratch,size=512M"
    assert tree(volume_dir(pve.root, 250, "mp0")) == tree(volume_dir(pve.root, 150, "mp0"))
    assert (volume_dir(pve.root, 250, "mp0") / "sub/dir/blob.bin").read_bytes() == BLOB
    assert list(volume_dir(pve.root, 250, "mp1").iterdir()) == []  # not backed up: a new, empty volume
    restored = tree(rootfs_dir(pve.root, 250), SCRATCH)
    assert restored.pop("etc/vzdump/pct.fw")[0] == "file"  # PVE leaves the empty pct.fw behind
    assert restored.pop("etc/vzdump")[0] == "dir"
    # what the rootfs held below /srv/data was hidden by the mounted volume, so never backed up
    assert restored == {k: v for k, v in tree(rootfs_dir(pve.root, 150), SCRATCH).items()
                        if not k.startswith("srv/data/")}
    assert list((rootfs_dir(pve.root, 250) / "srv/data").iterdir()) == []  # only the mount point

    # over the existing CT: find_free_diskname still sees the old volumes, which go only afterwards
    (volume_dir(pve.root, 250, "mp1") / "stale").write_text("from before\n")
    status = pve.wait_task(api.lxc.post(vmid=250, ostemplate=volid, restore=1, storage="local-zfs", force=1))
    assert status["exitstatus"] == "OK", pve.task_log(status["upid"])
    conf = read_config(pve.root, 250)
    assert [conf["rootfs"], conf["mp0"], conf["mp1"]] == [
        "local-zfs:subvol-250-disk-3,size=8G", "local-zfs:subvol-250-disk-4,mp=/srv/data,backup=1,size=1G",
        "local-zfs:subvol-250-disk-5,mp=/srv/scratch,size=512M"]
    assert tree(volume_dir(pve.root, 250, "mp0")) == tree(volume_dir(pve.root, 150, "mp0"))
    assert list(volume_dir(pve.root, 250, "mp1").iterdir()) == []
    assert sorted(p.name for p in (pve.root / "lxc/250").iterdir() if p.is_dir()) == ["mp0", "mp1", "rootfs"]


def test_mount_point_without_backup_flag_is_excluded_and_logged(pve: FakePve, api):
    log, path, guest_log, _ = backup(pve, api, 151, mode="snapshot")
    line = "INFO: excluding volume mount point mp0 ('/srv/scratch') from backup (disabled)"
    assert line in log and any(g.endswith(" " + line) for g in guest_log)
    # one volume left: no suspension, the freeze is only bounded by the per-guest log's timestamps
    assert "INFO: suspend vm to make snapshot" not in log and online_again_freeze("\n".join(log)) is None
    assert snapshot_freeze("\n".join(guest_log)) is not None
    names = members(path)
    assert "./srv/scratch/" in names and not [n for n in names if n.startswith("./srv/scratch/") and n[15:]]


@pytest.mark.parametrize("mode", ["suspend", "stop"])
def test_mount_points_in_suspend_and_stop_mode(pve: FakePve, api, tmp_path: Path, mode: str):
    log, path, _guest_log, _ = backup(pve, api, 150, mode=mode)
    assert f"INFO: backup mode: {mode}" in log
    assert "INFO: including mount point mp0 ('/srv/data') in backup" in log
    assert re.fullmatch(r"INFO: guest is online again after (<1|\d+) seconds",
                        next(line for line in log if "online again" in line))
    out = extract(path, tmp_path / "x")
    assert tree(out / "srv/data") == tree(volume_dir(pve.root, 150, "mp0"), shift=SHIFT)
    # suspend mode's rsync copy skips an excluded mount point altogether; stop mode's tar keeps the empty dir
    assert (out / "srv/scratch").exists() == (mode == "stop")
    assert api.lxc(150).status.current.get()["status"] == "running"


def test_a_stopped_task_thaws_the_container(pve: FakePve, api):
    pve.faults(snapshot_freeze_seconds=30)
    upid = api.vzdump.post(vmid="150", storage="local", mode="snapshot")
    deadline = time.monotonic() + 20
    while not is_frozen(pve.root, 150) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert is_frozen(pve.root, 150)
    stopper = threading.Thread(target=api.tasks(upid).delete)
    stopper.start()
    stopper.join()
    status = pve.wait_task(upid)
    log = pve.task_log(upid)
    assert status["exitstatus"] == "interrupted by signal"
    assert not is_frozen(pve.root, 150)
    # vzdump's cleanup resumes the suspended guest and says how long it was frozen
    i = log.index("INFO: resume vm")
    assert re.fullmatch(r"INFO: guest is online again after (<1|\d+) seconds", log[i + 1])
    assert "lock" not in api.lxc(150).config.get()
