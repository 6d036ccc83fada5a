"""The fake Proxmox VE node, driven through the real proxmoxer client.

These tests pin the behaviour the product relies on: shapes, error texts, task
semantics and real backup archives whose bytes must round-trip through restore.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import shutil
import signal
import stat
import subprocess
import tarfile
import time
from pathlib import Path

import pytest
import requests
from proxmoxer import ResourceException
from proxmoxer.tools import Tasks
from pve_helpers import FakePve, running_node, start_fake_pve

from restic_orch.lab.pve import create_node, read_config, rootfs_dir, set_lock, token_secret, unlock
from restic_orch.lab.pve.archive import compressor
from restic_orch.lab.pve.layout import load_node, save_node

NODE = "pve1"
EXTRA_CT = {"vmid": 105, "hostname": "legacy", "storage": "local", "profile": "apps"}
IS_ROOT = os.geteuid() == 0

pytestmark = pytest.mark.filterwarnings("ignore::urllib3.exceptions.InsecureRequestWarning")


@pytest.fixture(scope="module")
def pve(tmp_path_factory: pytest.TempPathFactory):
    from restic_orch.lab.pve.node import DEFAULT_CONTAINERS

    with running_node(tmp_path_factory.mktemp("fakepve") / "R", containers=[*DEFAULT_CONTAINERS, EXTRA_CT],
                      seed=7) as server:
        yield server


@pytest.fixture(autouse=True)
def _reset_faults(request: pytest.FixtureRequest):
    yield
    if "pve" in request.fixturenames:
        request.getfixturevalue("pve").faults()


@pytest.fixture
def api(pve: FakePve):
    return pve.api().nodes(NODE)


def run_task(pve: FakePve, upid: str) -> tuple[dict, list[str]]:
    status = pve.wait_task(upid)
    return status, pve.task_log(upid)


def backups(api, vmid: int) -> list[dict]:
    return api.storage("local").content.get(content="backup", vmid=vmid)


def newest_backup(api, vmid: int) -> dict:
    return max(backups(api, vmid), key=lambda b: b["volid"])


def archive_path(pve: FakePve, volid: str) -> Path:
    return pve.root / "storage/local/dump" / volid.split("/", 1)[1]


def tree(root: Path, skip: tuple[str, ...] = ()) -> dict[str, dict]:
    """Path -> type, mode, owner and content digest / link target, for a directory tree."""
    res: dict[str, dict] = {}
    inodes: dict[int, str] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in sorted(dirnames + filenames):
            path = Path(dirpath) / name
            rel = str(path.relative_to(root))
            if any(rel == s or rel.startswith(s + "/") for s in skip):
                continue
            st = path.lstat()
            item = {"uid": st.st_uid, "gid": st.st_gid}
            if stat.S_ISLNK(st.st_mode):
                item.update(type="link", target=os.readlink(path))
            elif stat.S_ISDIR(st.st_mode):
                item.update(type="dir", mode=stat.S_IMODE(st.st_mode))
            else:
                # Hard links must survive as links, not as copies.
                first = inodes.setdefault(st.st_ino, rel) if st.st_nlink > 1 else rel
                item.update(type="file", mode=stat.S_IMODE(st.st_mode), first=first,
                            sha=hashlib.sha256(path.read_bytes()).hexdigest())
            res[rel] = item
    return res


def owners(entries: dict[str, dict], shift: int | None) -> dict[str, dict]:
    """Shift owners by -shift, or drop them (None) when ownership cannot be compared."""
    out = {}
    for rel, item in entries.items():
        item = dict(item)
        if shift is None:
            item.pop("uid"), item.pop("gid")
        else:
            item["uid"] -= shift
            item["gid"] -= shift
        out[rel] = item
    return out


# Scratch paths vzdump's stdexcludes leave out of the archive.
SCRATCH = ("tmp/sess_0001", "var/tmp/build.tmp")


def test_authentication_failures(pve: FakePve):
    pve.faults(auth_delay_seconds=0.3)
    wrong = pve.api(token_value="00000000-0000-0000-0000-000000000000")
    started = time.monotonic()
    with pytest.raises(ResourceException) as exc:
        wrong.version.get()
    assert exc.value.status_code == 401
    assert exc.value.content == "invalid token value!"
    assert time.monotonic() - started >= 0.3

    with pytest.raises(ResourceException) as exc:
        pve.api(token_name="nope").nodes.get()
    assert exc.value.status_code == 401
    assert exc.value.content == "no such token 'nope' for user 'backup@pve'"

    resp = requests.get(f"{pve.url}/version", verify=False, timeout=10)
    assert (resp.status_code, resp.reason, resp.content) == (401, "No ticket", b"")


def test_version_nodes_and_cluster_resources(pve: FakePve):
    px = pve.api()
    assert set(px.version.get()) == {"version", "release", "repoid"}
    (node,) = px.nodes.get()
    assert node["node"] == NODE and node["status"] == "online" and node["id"] == "node/pve1"
    assert re.fullmatch(r"([0-9A-F]{2}:){31}[0-9A-F]{2}", node["ssl_fingerprint"])

    vms = px.cluster.resources.get(type="vm")
    by_id = {r["id"]: r for r in vms}
    assert set(by_id) >= {"lxc/101", "lxc/102", "lxc/103", "lxc/104", "lxc/105"}
    ct = by_id["lxc/102"]
    assert (ct["type"], ct["vmid"], ct["name"], ct["node"]) == ("lxc", 102, "database", NODE)
    assert ct["status"] == "running"
    assert ct["maxmem"] == 2048 * 1024 * 1024 and ct["maxdisk"] == 8 * 1024**3
    assert {r["type"] for r in vms} == {"lxc"}

    # storage entries need Datastore.Audit, which the documented token does not hold
    assert px.cluster.resources.get(type="storage") == []
    stores = {r["storage"]: r for r in pve.root_api().cluster.resources.get(type="storage")}
    assert stores["local"]["id"] == "storage/pve1/local" and stores["local"]["plugintype"] == "dir"
    assert stores["local-zfs"]["content"] == "images,rootdir"

    with pytest.raises(ResourceException) as exc:
        px.cluster.resources.get(type="qemu")
    assert exc.value.status_code == 400
    enum_msg = "value 'qemu' does not have a value in the enumeration 'vm, storage, node, sdn'"
    assert exc.value.errors == {"type": enum_msg}


def test_lxc_list_config_status_and_errors(pve: FakePve, api):
    listed = {ct["vmid"]: ct for ct in api.lxc.get()}
    assert listed[101]["name"] == "proxy" and listed[101]["status"] == "running" and listed[101]["type"] == "lxc"
    assert isinstance(listed[101]["pid"], int) and listed[101]["maxswap"] == 512 * 1024 * 1024

    conf = api.lxc(101).config.get()
    text = (pve.root / "lxc/101/pct.conf").read_text()
    assert conf["digest"] == hashlib.sha1(text.encode()).hexdigest()  # noqa: S324
    assert conf["rootfs"] == "local-zfs:subvol-101-disk-0,size=8G"
    assert (conf["cores"], conf["memory"], conf["unprivileged"], conf["onboot"]) == (1, 512, 1, 1)
    assert "lock" not in conf

    status = api.lxc(104).status.current.get()
    assert status["status"] == "running" and status["ha"] == {"managed": 0} and status["vmid"] == 104

    with pytest.raises(ResourceException) as exc:
        api.lxc(999).config.get()
    assert exc.value.status_code == 500
    assert exc.value.content == "Configuration file 'nodes/pve1/lxc/999.conf' does not exist"
    with pytest.raises(ResourceException) as exc:
        api.lxc("abc").config.get()
    assert exc.value.errors == {"vmid": "type check ('integer') failed - got 'abc'"}
    with pytest.raises(ResourceException) as exc:
        api.foo.get()
    assert (exc.value.status_code, exc.value.content) == (501, "Method 'GET /nodes/pve1/foo' not implemented")


def test_vzdump_snapshot_zstd_archive_matches_rootfs(pve: FakePve, api, tmp_path: Path):
    upid = api.vzdump.post(vmid="101", compress="zstd", storage="local", mode="snapshot")
    assert upid.startswith("UPID:pve1:") and upid.endswith(":vzdump:101:backup@pve!restic-orch:")
    assert Tasks.decode_upid(upid)["id"] == "101"
    status, log = run_task(pve, upid)
    assert (status["exitstatus"], status["user"], status["tokenid"]) == ("OK", "backup@pve", "restic-orch")
    for line in ("INFO: Starting Backup of VM 101 (lxc)", "INFO: backup mode: snapshot",
                 "INFO: create storage snapshot 'vzdump'", "INFO: Backup job finished successfully", "TASK OK"):
        assert line in log
    assert "INFO: trying 'suspend' mode instead" not in log
    assert any(re.fullmatch(r"INFO: Total bytes written: \d+ \(.+, .+/s\)", line) for line in log)
    assert re.fullmatch(r"INFO: Finished Backup of VM 101 \(\d\d:\d\d:\d\d\)", log[-4])

    entry = newest_backup(api, 101)
    assert re.fullmatch(r"local:backup/vzdump-lxc-101-\d{4}_\d\d_\d\d-\d\d_\d\d_\d\d\.tar\.zst", entry["volid"])
    assert (entry["format"], entry["subtype"], entry["vmid"], entry["content"]) == ("tar.zst", "lxc", 101, "backup")
    path = archive_path(pve, entry["volid"])
    assert entry["size"] == path.stat().st_size
    assert time.strftime("%Y_%m_%d-%H_%M_%S", time.localtime(entry["ctime"])) in path.name
    assert path.with_name(path.name[: -len(".tar.zst")] + ".log").read_text().count("INFO: Starting Backup") == 1

    names = subprocess.run(["tar", "--zstd", "-tf", str(path)], check=True, capture_output=True,
                           text=True).stdout.splitlines()
    assert names[:3] == ["./etc/vzdump/pct.conf", "./etc/vzdump/pct.fw", "./"]
    out = tmp_path / "x"
    out.mkdir()
    subprocess.run(["tar", "--zstd", "-xpf", str(path), "-C", str(out), "--numeric-owner"], check=True)
    conf = (out / "etc/vzdump/pct.conf").read_text()
    assert "hostname: proxy\n" in conf and "lock" not in conf
    assert (out / "etc/vzdump/pct.fw").read_bytes() == b""
    shutil.rmtree(out / "etc/vzdump")
    # The archive holds container ids; on disk the unprivileged CT uses host ids 100000+n.
    original = owners(tree(rootfs_dir(pve.root, 101), skip=SCRATCH), 100000 if IS_ROOT else None)
    extracted = owners(tree(out), 0 if IS_ROOT else None)
    assert extracted == original
    assert "tmp/sess_0001" not in extracted and "tmp" in extracted
    assert extracted["usr/share/doc/naïve-tools/Übersicht.txt"]["type"] == "file"
    assert extracted["etc/ssl/private/proxy.key"]["mode"] == 0o600
    assert extracted["etc/nginx/sites-enabled/default"]["target"] == "../sites-available/default"
    assert extracted["usr/bin/perl5.36.0"]["first"] == "usr/bin/perl"  # still a hard link
    if IS_ROOT:
        assert extracted["var/www/html/index.html"]["uid"] == 33


def test_multi_guest_job_uncompressed(pve: FakePve, api):
    upid = api.vzdump.post(vmid="102,103", storage="local")
    assert Tasks.decode_upid(upid)["id"] == ""
    status, log = run_task(pve, upid)
    assert status["exitstatus"] == "OK"
    assert [line for line in log if "Starting Backup" in line] == [
        "INFO: Starting Backup of VM 102 (lxc)", "INFO: Starting Backup of VM 103 (lxc)"]
    for vmid in (102, 103):
        entry = newest_backup(api, vmid)
        assert entry["format"] == "tar" and entry["volid"].endswith(".tar")
        with tarfile.open(archive_path(pve, entry["volid"])) as tar:
            assert tar.getnames()[:2] == ["./etc/vzdump/pct.conf", "./etc/vzdump/pct.fw"]


def test_suspend_fallback_on_dir_storage(pve: FakePve, api):
    pve.faults(suspend_freeze_seconds=1.0)
    upid = api.vzdump.post(vmid="105", compress="gzip", storage="local")
    status, log = run_task(pve, upid)
    assert status["exitstatus"] == "OK"
    i = log.index("INFO: mode failure - some volumes do not support snapshots")
    assert log[i + 1:i + 3] == ["INFO: trying 'suspend' mode instead", "INFO: backup mode: suspend"]
    assert "INFO: suspending guest" in log and "INFO: resuming guest" in log
    assert any(re.fullmatch(r"INFO: guest is online again after [1-9]\d* seconds", line) for line in log)
    assert any(line.startswith("INFO: starting first sync /proc/") for line in log)
    assert newest_backup(api, 105)["format"] == "tar.gz"


def test_suspend_freeze_under_a_second_logs_less_than_one(pve: FakePve, api):
    # vzdump subtracts two whole-second clock readings: start just after a second ticks so a 0.2 s
    # freeze ends within the same second (retried, in case a slow machine crosses it anyway)
    pve.faults(suspend_freeze_seconds=0.2)
    for _ in range(3):
        time.sleep(1.02 - time.time() % 1)
        status, log = run_task(pve, api.vzdump.post(vmid="105", storage="local"))
        assert status["exitstatus"] == "OK"
        online = [line for line in log if line.startswith("INFO: guest is online again after ")]
        assert len(online) == 1 and re.fullmatch(r"INFO: guest is online again after (<1|1) seconds", online[0])
        if online[0] == "INFO: guest is online again after <1 seconds":
            return
    pytest.fail(f"a 0.2 s freeze never logged '<1': {online}")


def _extract(path: Path, out: Path) -> None:
    out.mkdir()
    subprocess.run(["tar", "-xpf", str(path), "-C", str(out), "--numeric-owner"], check=True)


def test_vzdump_exclude_path_leaves_out_only_the_matches(pve: FakePve, api, tmp_path: Path):
    # a list goes out as repeated form fields: PVE joins them NUL-separated and vzdump splits them
    upid = api.vzdump.post(vmid="102", storage="local", compress="zstd",
                           **{"exclude-path": ["/var/lib/postgresql", "syslog*"]})
    status, log = run_task(pve, upid)
    assert status["exitstatus"] == "OK"
    job = next(line for line in log if line.startswith("INFO: starting new backup job: vzdump 102 "))
    assert " --exclude-path /var/lib/postgresql --exclude-path 'syslog*'" in job
    out = tmp_path / "x"
    _extract(archive_path(pve, newest_backup(api, 102)["volid"]), out)
    assert "hostname: database\n" in (out / "etc/vzdump/pct.conf").read_text()
    shutil.rmtree(out / "etc/vzdump")
    rootfs = rootfs_dir(pve.root, 102)
    syslogs = [str(p.relative_to(rootfs)) for p in rootfs.rglob("syslog*")]
    assert "var/log/syslog" in syslogs and (rootfs / "var/lib/postgresql/15/main/PG_VERSION").is_file()
    extracted = owners(tree(out), 0 if IS_ROOT else None)
    assert "var/lib/postgresql" not in extracted and "var/lib" in extracted
    assert not [rel for rel in extracted if rel.rsplit("/", 1)[-1].startswith("syslog")]
    assert "var/log/auth.log" in extracted
    # everything else: same bytes, modes, owners and links
    skip = (*SCRATCH, "var/lib/postgresql", *syslogs)
    assert extracted == owners(tree(rootfs, skip=skip), 100000 if IS_ROOT else None)


def test_vzdump_exclude_path_with_trailing_slash_only_warns(pve: FakePve, api):
    status, log = run_task(pve, api.vzdump.post(vmid="103", storage="local", **{"exclude-path": "/var/log/"}))
    assert status["exitstatus"] == "WARNINGS: 1" and log[-1] == "TASK WARNINGS: 1"
    warn = log.index("WARN: tar does not match exclusion with a trailing slash '/var/log/'")
    assert log[warn - 1].startswith("INFO: creating vzdump archive '")
    with tarfile.open(archive_path(pve, newest_backup(api, 103)["volid"])) as tar:
        assert "./var/log/syslog" in tar.getnames()


def test_vzdump_exclude_path_with_trailing_slash_in_suspend_mode(pve: FakePve, api):
    # suspend mode copies the CT with rsync first, which leaves out directories matching 'dir/'
    status, log = run_task(pve, api.vzdump.post(vmid="105", storage="local", **{"exclude-path": "/var/log/"}))
    assert status["exitstatus"] == "OK" and "INFO: backup mode: suspend" in log
    assert not [line for line in log if line.startswith("WARN:")]
    with tarfile.open(archive_path(pve, newest_backup(api, 105)["volid"])) as tar:
        names = tar.getnames()
    assert not [n for n in names if n == "./var/log" or n.startswith("./var/log/")] and "./var/lib" in names


def test_vzdump_exclude_path_matching_the_config_drops_it_like_tar(pve: FakePve, api, tmp_path: Path):
    # tar's excludes apply to vzdump's ./etc/vzdump/pct.conf too: such an archive cannot be restored
    run_task(pve, api.vzdump.post(vmid="104", storage="local", **{"exclude-path": "/etc"}))
    with tarfile.open(archive_path(pve, newest_backup(api, 104)["volid"])) as tar:
        names = tar.getnames()
    assert not [n for n in names if n == "./etc" or n.startswith("./etc/")] and "./usr" in names


def test_zstd_runs_like_pve_8():
    assert compressor(".zst", {}) == ["zstd", "--threads=1"]
    assert compressor(".zst", {"zstd": 0}) == ["zstd", f"--threads={((os.cpu_count() or 1) + 1) // 2}"]
    assert compressor(".gz", {}) == ["gzip", "--rsyncable"]
    assert compressor(".gz", {"pigz": 4}) == ["pigz", "-p", "4", "--rsyncable"]


def test_lock_visible_while_backup_runs(pve: FakePve, api):
    pve.faults(task_delay_seconds=1.5)
    upid = api.vzdump.post(vmid="103", storage="local", compress="zstd")
    seen = set()
    while api.tasks(upid).status.get()["status"] == "running":
        seen.add(api.lxc(103).config.get().get("lock"))
        seen.add(api.lxc(103).status.current.get().get("lock"))
        time.sleep(0.1)
    assert "backup" in seen
    assert api.tasks(upid).status.get()["exitstatus"] == "OK"
    assert "lock" not in api.lxc(103).config.get()


def test_vzdump_write_failure(pve: FakePve, api):
    before = {b["volid"] for b in backups(api, 104)}
    pve.faults(vzdump_fail="No space left on device")
    status, log = run_task(pve, api.vzdump.post(vmid="104", storage="local", compress="zstd"))
    assert status["exitstatus"] == "job errors"
    assert "INFO: tar: -: Cannot write: No space left on device" in log
    errors = [line for line in log if line.startswith("ERROR: ")]
    assert len(errors) == 1 and errors[0].startswith("ERROR: Backup of VM 104 failed - command 'set -o pipefail")
    assert " --no-anchored '--exclude=lost+found' --anchored '--exclude=./tmp/?*'" in errors[0]
    assert " | zstd '--threads=1' >" in errors[0] and "rsyncable" not in errors[0]
    assert "INFO: Backup job finished with errors" in log and log[-1] == "TASK ERROR: job errors"
    assert {b["volid"] for b in backups(api, 104)} == before
    dump = pve.root / "storage/local/dump"
    assert not list(dump.glob("vzdump-lxc-104-*.dat")) and not list(dump.glob("*.tmp"))
    assert "lock" not in api.lxc(104).config.get()


def test_stopping_a_running_backup(pve: FakePve, api):
    pve.faults(task_delay_seconds=20)
    upid = api.vzdump.post(vmid="103,104", storage="local")
    while api.lxc(103).config.get().get("lock") != "backup":
        time.sleep(0.05)
    assert api.tasks(upid).delete() is None
    status, log = run_task(pve, upid)
    assert status["exitstatus"] == "interrupted by signal"
    assert "ERROR: Backup of VM 103 failed - interrupted by signal" in log
    assert "ERROR: Backup job failed - interrupted by signal" in log
    assert not any("VM 104" in line for line in log)
    assert "lock" not in api.lxc(103).config.get()


def test_locked_container_fails_until_unlocked(pve: FakePve, api):
    set_lock(pve.root, 104, "backup")  # what a crashed backup leaves behind
    status, log = run_task(pve, api.vzdump.post(vmid="104", storage="local"))
    assert status["exitstatus"] == "job errors"
    assert "ERROR: Backup of VM 104 failed - CT is locked (backup)" in log
    assert api.lxc(104).config.get()["lock"] == "backup"
    unlock(pve.root, 104)
    status, _ = run_task(pve, api.vzdump.post(vmid="104", storage="local"))
    assert status["exitstatus"] == "OK"


def test_global_vzdump_lock(pve: FakePve, api):
    pve.faults(global_lock_held=True, minute_seconds=0.5)
    started = time.monotonic()
    status, log = run_task(pve, api.vzdump.post(vmid="101", storage="local", lockwait=1))
    assert time.monotonic() - started >= 0.5
    # The real worker exit()s here, so the log has no TASK line.
    assert status["exitstatus"] == "unexpected status"
    lockfile = pve.root / "run/vzdump.lock"
    assert log == ["INFO: trying to get global lock - waiting...",
                   f"ERROR: can't acquire lock '{lockfile}' - got timeout"]
    status, log = run_task(pve, api.vzdump.post(vmid="101", storage="local", lockwait=0))
    assert log == [f"ERROR: can't acquire lock '{lockfile}' (wait = 0)"]

    # A real flock held by someone else: the job waits, and proceeds once it is released.
    pve.faults(minute_seconds=20)
    with lockfile.open("a") as holder:
        fcntl.flock(holder, fcntl.LOCK_EX)
        upid = api.vzdump.post(vmid="101", storage="local", lockwait=1)
        deadline = time.monotonic() + 10
        while "INFO: trying to get global lock - waiting..." not in pve.task_log(upid):
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert api.tasks(upid).status.get()["status"] == "running"
    status, log = run_task(pve, upid)
    assert status["exitstatus"] == "OK"
    assert log[:2] == ["INFO: trying to get global lock - waiting...", "INFO: got global lock"]


@pytest.mark.parametrize(("params", "errors"), [
    ({"vmid": "101", "all": 1}, {"all": "option conflicts with option 'vmid'"}),
    ({"vmid": "101", "dumpdir": "/tmp"}, {"dumpdir": "Only root may set this option."}),
    ({"vmid": "101", "stdout": 1}, {"stdout": "option is only allowed on the command line interface."}),
    ({"vmid": "101", "compress": "xz"},
     {"compress": "value 'xz' does not have a value in the enumeration '0, 1, gzip, lzo, zstd'"}),
    ({"vmid": "101", "color": "red"},
     {"color": "property is not defined in schema and the schema does not allow additional properties"}),
    ({"vmid": "101", "remove": True}, {"remove": "type check ('boolean') failed - got 'True'"}),
    ({"vmid": "99"}, {"vmid": "invalid format - value does not look like a valid VM ID\n"}),
    ({"vmid": "101", "exclude-path": ""}, {"exclude-path": "type check ('array') failed"}),
    ({"storage": "local"}, {"vmid": "property is missing"}),
])
def test_vzdump_parameter_errors(api, params, errors):
    with pytest.raises(ResourceException) as exc:
        api.vzdump.post(**params)
    assert (exc.value.status_code, exc.value.content, exc.value.errors) == (
        400, "Parameter verification failed.", errors)


def test_notes_template_warning_ends_task_with_warnings(pve: FakePve, api):
    status, log = run_task(pve, api.vzdump.post(vmid="103", storage="local", **{"notes-template": "{{bogus}}"}))
    assert status["exitstatus"] == "WARNINGS: 1" and log[-1] == "TASK WARNINGS: 1"
    assert "WARN: unable to add notes - unexpected variable name 'bogus'" in log
    assert "notes" not in newest_backup(api, 103)


def test_storage_content_delete_and_protection(pve: FakePve, api):
    run_task(pve, api.vzdump.post(vmid="103", storage="local"))
    entry = newest_backup(api, 103)
    path = archive_path(pve, entry["volid"])
    log_file = path.with_name(path.name[: -len(".tar")] + ".log")
    assert log_file.is_file()

    api.storage("local").content(entry["volid"]).put(protected=1)
    assert newest_backup(api, 103)["protected"] == 1
    status, log = run_task(pve, api.storage("local").content(entry["volid"]).delete())
    assert status["exitstatus"] == f"cannot remove protected archive '{path}'"
    assert path.is_file()

    api.storage("local").content(entry["volid"]).put(protected=0)
    upid = api.storage("local").content(entry["volid"]).delete()
    assert Tasks.decode_upid(upid)["type"] == "imgdel" and Tasks.decode_upid(upid)["id"] == "103@local"
    status, log = run_task(pve, upid)
    assert status["exitstatus"] == "OK" and log == [f"Removed volume '{entry['volid']}'", "TASK OK"]
    assert not path.exists() and not log_file.exists()
    assert entry["volid"] not in {b["volid"] for b in backups(api, 103)}


def test_prune_by_storage_policy_and_notes(pve: FakePve, api):
    node = load_node(pve.root)
    node["storages"]["local"]["prune-backups"] = "keep-last=2"
    save_node(pve.root, node)
    try:
        for old in backups(api, 102):
            run_task(pve, api.storage("local").content(old["volid"]).delete())
        volids = []
        for _ in range(3):
            status, log = run_task(pve, api.vzdump.post(vmid="102", storage="local",
                                                        **{"notes-template": "{{guestname}} on {{node}}"}))
            assert status["exitstatus"] == "OK"
            volids.append(newest_backup(api, 102)["volid"])
            time.sleep(1.05)  # archive names have one-second resolution
    finally:
        del node["storages"]["local"]["prune-backups"]
        save_node(pve.root, node)
    assert "INFO: prune older backups with retention: keep-last=2" in log
    assert f"INFO: removing backup '{volids[0]}'" in log
    assert "INFO: pruned 1 backup(s) not covered by keep-retention policy" in log
    left = backups(api, 102)
    assert sorted(b["volid"] for b in left) == sorted(volids[1:])
    assert {b["notes"] for b in left} == {"database on pve1"}


def test_restore_into_new_vmid_equals_original(pve: FakePve, api):
    run_task(pve, api.vzdump.post(vmid="102", storage="local", compress="zstd"))
    volid = newest_backup(api, 102)["volid"]
    upid = api.lxc.post(vmid=202, ostemplate=volid, restore=1, storage="local-zfs")
    assert Tasks.decode_upid(upid)["type"] == "vzrestore"
    status, log = run_task(pve, upid)
    assert status["exitstatus"] == "OK", log[-8:]
    assert log[:2] == [f"recovering backed-up configuration from '{volid}'", f"restoring '{volid}' now.."]
    assert "Detected container architecture: amd64" in log and "merging backed-up and given configuration.." in log

    original = tree(rootfs_dir(pve.root, 102), skip=SCRATCH)
    restored = tree(rootfs_dir(pve.root, 202), skip=("etc/vzdump",))
    assert restored == original
    # PVE leaves an empty pct.fw behind in the restored container.
    assert (rootfs_dir(pve.root, 202) / "etc/vzdump/pct.fw").read_bytes() == b""

    src, new = read_config(pve.root, 102), read_config(pve.root, 202)
    assert new.pop("rootfs") == "local-zfs:subvol-202-disk-0,size=8G"
    src.pop("rootfs")
    assert new == src
    assert api.lxc(202).status.current.get()["status"] == "stopped"


def test_restore_refusals(pve: FakePve, api):
    run_task(pve, api.vzdump.post(vmid="101", storage="local"))
    volid = newest_backup(api, 101)["volid"]
    cases = [
        (dict(vmid=101, storage="local-zfs"), 500, "CT 101 already exists on node 'pve1'", None),
        (dict(vmid=101, storage="local-zfs", force=1), 500, "can't overwrite running container", None),
        (dict(vmid=210), 400, "Parameter verification failed.",
         {"storage": "storage 'local' does not support container directories"}),
    ]
    for params, code, content, errors in cases:
        with pytest.raises(ResourceException) as exc:
            api.lxc.post(ostemplate=volid, restore=1, **params)
        assert (exc.value.status_code, exc.value.content, exc.value.errors) == (code, content, errors)
    with pytest.raises(ResourceException) as exc:
        api.lxc.post(vmid=210, ostemplate=str(archive_path(pve, volid)), restore=1, storage="local-zfs")
    assert exc.value.content.startswith("Only root can pass arbitrary filesystem paths.")
    assert not (pve.root / "lxc/210").exists()


def test_restore_of_truncated_archive_fails(pve: FakePve, api):
    run_task(pve, api.vzdump.post(vmid="101", storage="local", compress="zstd"))
    good = archive_path(pve, [b for b in backups(api, 101) if b["format"] == "tar.zst"][-1]["volid"])
    bad = good.with_name("vzdump-lxc-101-2001_01_01-00_00_00.tar.zst")
    bad.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    try:
        status, log = run_task(pve, api.lxc.post(vmid=206, ostemplate=f"local:backup/{bad.name}", restore=1,
                                                 storage="local-zfs"))
    finally:
        bad.unlink()
    assert status["exitstatus"].startswith("unable to restore CT 206 - command 'lxc-usernsexec")
    assert "tar: Unexpected EOF in archive" in log and log[-1].startswith("TASK ERROR: unable to restore CT 206")
    with pytest.raises(ResourceException):
        api.lxc(206).config.get()
    assert 206 not in {ct["vmid"] for ct in api.lxc.get()}


def test_start_stop_destroy(pve: FakePve, api):
    run_task(pve, api.vzdump.post(vmid="104", storage="local"))
    run_task(pve, api.lxc.post(vmid=204, ostemplate=newest_backup(api, 104)["volid"], restore=1,
                               storage="local-zfs", start=1))
    deadline = time.monotonic() + 10
    while api.lxc(204).status.current.get()["status"] != "running" and time.monotonic() < deadline:
        time.sleep(0.05)
    assert api.lxc(204).status.current.get()["status"] == "running"
    with pytest.raises(ResourceException) as exc:
        api.lxc(204).status.start.post()
    assert exc.value.content == "CT 204 already running"
    with pytest.raises(ResourceException) as exc:
        api.lxc(204).delete()
    assert exc.value.content == "unable to destroy CT 204 - container is running"

    status, _ = run_task(pve, api.lxc(204).status.stop.post())
    assert status["exitstatus"] == "OK" and status["type"] == "vzstop"
    assert api.lxc(204).status.current.get()["status"] == "stopped"
    status, _ = run_task(pve, api.lxc(204).status.start.post())
    assert status["type"] == "vzstart" and api.lxc(204).status.current.get()["status"] == "running"
    run_task(pve, api.lxc(204).status.shutdown.post(timeout=5))
    status, _ = run_task(pve, api.lxc(204).delete())
    assert (status["type"], status["exitstatus"]) == ("vzdestroy", "OK")
    assert 204 not in {ct["vmid"] for ct in api.lxc.get()}
    assert not rootfs_dir(pve.root, 204).exists()


def test_task_log_paging_and_task_list(pve: FakePve, api):
    status, log = run_task(pve, api.vzdump.post(vmid="101", storage="local"))
    upid = status["upid"]
    page = api.tasks(upid).log.get(start=2, limit=3)
    assert page == [{"n": 3, "t": log[2]}, {"n": 4, "t": log[3]}, {"n": 5, "t": log[4]}]
    raw = requests.get(f"{pve.url}/nodes/{NODE}/tasks/{upid}/log", params={"limit": 2}, verify=False, timeout=10,
                       headers={"Authorization": f"PVEAPIToken=backup@pve!restic-orch={token_secret(pve.root)}"}).json()
    assert raw["total"] == len(log) and len(raw["data"]) == 2
    listed = api.tasks.get(typefilter="vzdump", vmid=101, limit=1)
    assert listed[0]["upid"] == upid and listed[0]["status"] == "OK" and listed[0]["endtime"] >= listed[0]["starttime"]


def test_crash_leaves_lock_and_api_down(tmp_path: Path):
    root = tmp_path / "crash"
    create_node(root, containers=[{"vmid": 101, "hostname": "proxy"}], size_bytes=128 * 1024)
    server = start_fake_pve(root)
    try:
        server.faults(task_delay_seconds=30)
        api = server.api().nodes(NODE)
        upid = api.vzdump.post(vmid="101", storage="local")
        while api.lxc(101).config.get().get("lock") != "backup":
            time.sleep(0.05)
        server.stop(signal.SIGKILL)
        with pytest.raises(requests.exceptions.ConnectionError):
            api.version.get()
    finally:
        server.stop()
    server = start_fake_pve(root)
    try:
        server.faults()
        api = server.api().nodes(NODE)
        assert api.lxc(101).config.get()["lock"] == "backup"
        assert api.tasks(upid).status.get()["exitstatus"] == "unexpected status"
        unlock(root, 101)
        assert "lock" not in api.lxc(101).config.get()
    finally:
        server.stop()
    assert server.proc.returncode == 0  # SIGTERM shuts down cleanly
    assert json.loads((root / "node.json").read_text())["node"] == NODE
