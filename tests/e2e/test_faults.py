"""Fault injection on the whole lab: every failure must be loud, safe and recoverable.

Each scenario checks three things:
- nothing already stored is lost: every snapshot that existed before the fault is still there (same id, hence
  same content: restic snapshot ids hash the tree), and `restic check` passes where the repository was at risk;
- the exit code (0 success, 1 failure, 3 partial), the `--json` summary and `state_dir/last-run.json` agree and
  tell the truth;
- the lab is left as found: every service running, every PVE fault and container lock cleared.

Set RESTIC_ORCH_RELIABILITY_LOG=FILE to get one JSON line per scenario (used to write docs/reliability.md).
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from restic_orch import tags
from restic_orch.config import load_config
from restic_orch.lab import manager, pve
from restic_orch.repos import open_all
from soak.proctree import descendants, proc_table, run_lock_free
from tests.clihelp import CLI, restic_orch

pytestmark = pytest.mark.e2e

STATUS_OF = {0: "success", 1: "failure", 3: "partial"}
TIMEOUT = 240


# ------------------------------------------------------------------------------------------ helpers
@dataclass
class Run:
    rc: int
    stdout: str
    stderr: str
    summary: dict[str, Any] | None

    def text(self) -> str:
        return f"exit {self.rc}\nstdout:\n{self.stdout[-3000:]}\nstderr:\n{self.stderr[-3000:]}"


def backup(config: Path, *args: str, timeout: float = TIMEOUT, options: tuple[str, ...] = ()) -> Run:
    result = restic_orch(config, "--json", *options, "backup", *args, timeout=timeout)
    return _run_of(result.returncode, result.stdout, result.stderr)


def _run_of(rc: int, stdout: str, stderr: str) -> Run:
    summary = None
    if stdout.strip().startswith("{"):
        summary = json.loads(stdout)
    _LAST_RUN.clear()
    _LAST_RUN.update(exit=rc, status=(summary or {}).get("status"),
                     failures=[f"{f['kind']}/{f['source']} {f['component']}: {f['message'][:160]}"
                               for f in (summary or {}).get("failures", [])])
    return Run(rc, stdout, stderr, summary)


def assert_truthful(run: Run, state_dir: Path, expect: int | tuple[int, ...]) -> dict[str, Any]:
    """Exit code, --json summary and state_dir/last-run.json agree, and say what really happened."""
    codes = (expect,) if isinstance(expect, int) else expect
    assert run.rc in codes, run.text()
    summary = run.summary
    assert summary is not None, run.text()
    assert summary["exit_code"] == run.rc and summary["status"] == STATUS_OF[run.rc], summary
    if run.rc == 0:
        assert summary["failures"] == [], summary["failures"]
    else:
        assert summary["failures"], f"exit {run.rc} without any failure recorded"
    if run.rc == 3:
        assert summary["snapshots"], "partial means a snapshot was saved"
    if run.rc == 1:
        assert not summary["snapshots"], "failure means no snapshot was saved"
    last = json.loads((state_dir / "last-run.json").read_text())
    for key in ("run_id", "status", "exit_code", "failures", "snapshots"):
        assert last[key] == summary[key], (key, last[key], summary[key])
    return summary


_LAST_RUN: dict[str, Any] = {}


def failures_of(summary: dict[str, Any], **match: str) -> list[dict[str, Any]]:
    return [f for f in summary["failures"] if all(f.get(k) == v for k, v in match.items())]


def config_copy(lab: dict, tmp_path: Path, edit: Callable[[dict[str, Any]], None], name: str = "config.yml") -> Path:
    """A private copy of the lab configuration with `edit` applied (the lab's own file is never touched)."""
    data = yaml.safe_load(lab["config"].read_text())
    edit(data)
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    os.chmod(path, 0o600)
    return path


def nightly_config(lab: dict, tmp_path: Path, lock_wait_seconds: int) -> Path:
    """A whole nightly run (no --only, so retention runs) kept quick: only the Terraform and vault sources,
    and a short lock wait to bound what a blocking restic lock can cost. Same repositories, state, staging."""
    def edit(data: dict[str, Any]) -> None:
        data["sources"] = {k: v for k, v in data["sources"].items() if k in ("terraform_state", "ansible_vault")}
        data["limits"]["lock_wait_seconds"] = lock_wait_seconds

    return config_copy(lab, tmp_path, edit, "config-nightly.yml")


def secret_file(tmp_path: Path, name: str, text: str, mode: int = 0o600) -> Path:
    path = tmp_path / name
    path.write_text(text)
    os.chmod(path, mode)
    return path


def lab_config(lab: dict):
    return load_config(lab["config"])


Stored = dict[str, dict[str, tuple[str, str] | None]]


def stored(lab: dict, details: bool = False) -> Stored:
    """Every snapshot of both repositories, {repo: {id: details}}.

    By default read straight from the storage (the directory, the bucket): a restic snapshot file is named
    by the hash of its content, so the same id still there means the very same snapshot. With `details`,
    through restic: {id: (run id, bytes staged)}, which retention and the bytes count need."""
    config = lab_config(lab)
    if details:
        repos = open_all(config)
        return {name: {s.id: (tags.run_id(s), tags.size(s)) for s in repo.snapshots()}
                for name, repo in repos.items()}
    from restic_orch.lab.s3 import s3_client

    local = Path(config.repositories.local.url) / "snapshots"
    info = manager.load(lab["dir"])["services"]["s3"]
    # the repository sits under the lab's offsite prefix (restic/, as in production)
    pages = s3_client(info).get_paginator("list_objects_v2").paginate(
        Bucket=info["buckets"]["offsite"], Prefix="/".join(filter(None, [info.get("offsite_prefix"), "snapshots/"])))
    offsite = [o["Key"].rsplit("/", 1)[1] for page in pages for o in page.get("Contents", [])]
    return {"local": dict.fromkeys(p.name for p in local.iterdir()), "offsite": dict.fromkeys(offsite)}


def _day_of(details: tuple[str, str] | None) -> str:
    """The day a snapshot was taken, from its run id (YYYYmmddTHHMMSSZ-xxxx)."""
    run_id = details[0] if details else ""
    return f"{run_id[:4]}-{run_id[4:6]}-{run_id[6:8]}" if len(run_id) >= 8 else ""


def assert_nothing_lost(lab: dict, before: Stored, *, check: bool = False, scenario: str = "",
                        retention: dict[str, Any] | None = None) -> None:
    """Every snapshot stored before is still there; optionally `restic check` both repositories.

    `retention` (a run summary's) allows what the run's own retention reported forgetting: never more than
    its `removed` count, and only snapshots whose day still has a newer one (keep_within_daily); it needs
    `before` read with details."""
    after = stored(lab, details=bool(retention))
    lost: list[str] = []
    forgotten: list[str] = []
    lost_bytes = 0
    for name, snaps in before.items():
        allowed = int(((retention or {}).get(name) or {}).get("removed") or 0)
        days_left = {_day_of(d) for d in after[name].values()}
        for snap_id, details in snaps.items():
            if snap_id in after[name]:
                continue
            if allowed and _day_of(details) and _day_of(details) in days_left:
                allowed -= 1
                forgotten.append(f"{name}:{snap_id[:8]}")
                continue
            lost.append(f"{name}:{snap_id[:8]}")
            size = details[1] if details else ""
            lost_bytes += int(size) if size.isdigit() else 1  # at least one byte when the size is unknown
    checks = {}
    if check:
        for name, repo in open_all(lab_config(lab)).items():
            result = repo.check()
            checks[name] = result.ok
            assert result.ok, f"restic check {name}: {result.output[-2000:]}"
    _record(scenario, before={k: len(v) for k, v in before.items()}, after={k: len(v) for k, v in after.items()},
            lost=lost, bytes_lost=lost_bytes, forgotten_by_retention=forgotten, checked=checks, **_LAST_RUN)
    _LAST_RUN.clear()
    assert not lost, f"snapshots lost: {lost} (about {lost_bytes} bytes)"


def _record(scenario: str, **data: Any) -> None:
    target = os.environ.get("RESTIC_ORCH_RELIABILITY_LOG")
    if target and scenario:
        with open(target, "a", encoding="utf-8") as handle:
            handle.write(json.dumps({"scenario": scenario, **data}, default=str) + "\n")


def manifest_of(lab: dict, repo_name: str, short_id: str, tmp_path: Path) -> dict[str, Any]:
    repo = open_all(lab_config(lab))[repo_name]
    snap = [s for s in repo.snapshots() if s.short_id == short_id or s.id.startswith(short_id)][0]
    out = tmp_path / f"manifest-{snap.short_id}.json"
    repo.dump_to_file(snap.id, f"{snap.paths[0]}/manifest.json", out)
    return json.loads(out.read_text())


def components(manifest: dict[str, Any]) -> set[str]:
    return {a["component"] for a in manifest["artifacts"]}


def alive(pid: int, argv: list[str]) -> bool:
    try:
        now = [a.decode(errors="replace") for a in Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0") if a]
    except OSError:
        return False
    return now == argv


def kill_tree(proc: subprocess.Popen) -> dict[int, list[str]]:
    """SIGKILL the CLI and everything it started, like a power cut or the OOM killer on the unit's cgroup."""
    os.kill(proc.pid, signal.SIGSTOP)
    children = descendants(proc.pid)
    for pid in [proc.pid, *children]:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    proc.wait(timeout=30)
    return children


def wait_for(predicate: Callable[[], Any], timeout: float, what: str, interval: float = 0.01) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def child_running(proc: subprocess.Popen, name: str, *words: str) -> Callable[[], int | None]:
    def find() -> int | None:
        if proc.poll() is not None:
            raise AssertionError(f"the CLI exited ({proc.returncode}) before {name} {' '.join(words)} ran")
        for pid, argv in descendants(proc.pid).items():
            if argv and Path(argv[0]).name == name and all(w in argv for w in words):
                return pid
        return None
    return find


def start_cli(config: Path, *args: str) -> subprocess.Popen:
    return subprocess.Popen(CLI + ["--config", str(config), "--json", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def finish(proc: subprocess.Popen, timeout: float = TIMEOUT) -> Run:
    out, err = proc.communicate(timeout=timeout)
    return _run_of(proc.returncode, out, err)


def restic_locks(lab: dict, name: str) -> list[str]:
    """The lock objects of a repository, read from the storage itself (directory or bucket)."""
    config = lab_config(lab)
    if name == "local":
        names = [p.name for p in (Path(config.repositories.local.url) / "locks").glob("*")]
    else:
        from restic_orch.lab.s3 import s3_client

        info = manager.load(lab["dir"])["services"]["s3"]
        listing = s3_client(info).list_objects_v2(
            Bucket=info["buckets"]["offsite"], Prefix="/".join(filter(None, [info.get("offsite_prefix"), "locks/"])))
        names = [o["Key"].rsplit("/", 1)[1] for o in listing.get("Contents", [])]
    # restic's local backend writes `<id>-tmp-<n>` first and renames it: such a leftover is not a lock
    return sorted(n for n in names if re.fullmatch(r"[0-9a-f]{64}", n))


def unlock_stale(lab: dict) -> None:
    """`restic unlock` on both repositories: removes only locks whose process is gone (test clean-up)."""
    for repo in open_all(lab_config(lab)).values():
        repo.unlock()


def vzdump_running(lab: dict, vmid: int = 101) -> bool:
    return pve.read_config(pve_root(lab), vmid).get("lock") == "backup"


def pve_root(lab: dict) -> Path:
    return Path(manager.load(lab["dir"])["services"]["pve"]["root"])


def pve_clear(lab: dict) -> None:
    """No fault, no container lock, no vzdump task still running: the PVE fake as the next test expects it."""
    root = pve_root(lab)
    pve.write_faults(root)
    for ct in sorted((root / "lxc").iterdir()):
        if ct.name.isdigit():
            wait_for(lambda ct=ct: "lock" not in pve.read_config(root, int(ct.name)), 30,
                     f"CT {ct.name} to lose its vzdump lock", interval=0.2)
    lockfile = root / "run" / "vzdump.lock"
    if lockfile.exists():
        with lockfile.open("a") as handle:
            def free() -> bool:
                try:
                    fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    fcntl.flock(handle, fcntl.LOCK_UN)
                    return True
                except BlockingIOError:
                    return False
            wait_for(free, 30, "the global vzdump lock", interval=0.2)


def scan_secret(secret: str, texts: dict[str, str]) -> list[str]:
    return [where for where, text in texts.items() if secret in text]


# ------------------------------------------------------------------------------------------ fixtures
@pytest.fixture(scope="module")
def seeded(lab):
    """Empty repositories, then one good snapshot in both: what no fault below may lose."""
    from restic_orch.lab.s3 import s3_client

    config = lab_config(lab)
    for path in (Path(config.repositories.local.url), config.staging_dir, config.state_dir):
        shutil.rmtree(path, ignore_errors=True)
    s3 = s3_client(lab["state"]["services"]["s3"])
    bucket = lab["state"]["services"]["s3"]["buckets"]["offsite"]
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        keys = [{"Key": o["Key"]} for o in page.get("Contents", [])]
        if keys:
            s3.delete_objects(Bucket=bucket, Delete={"Objects": keys})
    run = backup(lab["config"], "--only", "terraform,ansible-vault")
    assert_truthful(run, config.state_dir, 0)
    return config


@pytest.fixture
def before(lab, seeded):
    snaps = stored(lab)
    assert snaps["local"] and snaps["offsite"], snaps
    return snaps


# ------------------------------------------------------------------------------------------ S3
def test_s3_unreachable_at_start_keeps_local_snapshot(lab, seeded, before, tmp_path):
    manager.stop_service(lab["dir"], "s3proxy")
    try:
        run = backup(lab["config"], "--only", "ansible-vault")
    finally:
        manager.up(lab["dir"], services=("s3proxy",))
    summary = assert_truthful(run, seeded.state_dir, 3)
    assert summary["snapshots"].get("local") and "offsite" not in summary["snapshots"]
    offsite = failures_of(summary, source="offsite")
    assert offsite and "connection refused" in offsite[0]["message"], summary["failures"]
    assert "vault:" in " ".join(summary["components"])
    assert_nothing_lost(lab, before, check=True, scenario="S3 unreachable at start")


def test_wrong_s3_secret_is_denied_and_never_printed(lab, seeded, before, tmp_path):
    good = (lab["dir"] / "secrets" / "s3.env").read_text()
    wrong_secret = "WrOnGsEcReT" + os.urandom(8).hex()
    env_text = re.sub(r"(?m)^(AWS_SECRET_ACCESS_KEY=).*$", lambda m: m.group(1) + wrong_secret, good)
    assert wrong_secret in env_text
    env_file = secret_file(tmp_path, "s3-wrong.env", env_text)
    config = config_copy(lab, tmp_path, lambda d: d["repositories"]["offsite"].update(env_file=str(env_file)))
    run = backup(config, "--only", "ansible-vault", options=("-vv",))
    summary = assert_truthful(run, seeded.state_dir, 3)
    offsite = failures_of(summary, source="offsite")
    assert offsite and re.search(r"access denied|signature", offsite[0]["message"], re.I), summary["failures"]
    texts = {"stdout": run.stdout, "stderr": run.stderr}
    for path in [*seeded.log_dir.glob("*.jsonl"), *seeded.state_dir.rglob("*.json")]:
        texts[str(path)] = path.read_text(errors="replace")
    assert scan_secret(wrong_secret, texts) == []
    assert_nothing_lost(lab, before, scenario="wrong S3 secret")


def test_missing_bucket_without_auto_init_is_a_clear_failure(lab, seeded, before, tmp_path):
    from restic_orch.lab.s3 import s3_client

    state_dir = tmp_path / "state"

    def edit(data: dict[str, Any]) -> None:
        data["auto_init"] = False
        data["state_dir"] = str(state_dir)
        offsite = data["repositories"]["offsite"]
        # s3:http://host:port/<bucket>/<prefix> -> another bucket on the same endpoint
        offsite["url"] = "/".join(offsite["url"].split("/")[:3]) + "/no-such-bucket-restic-orch"

    config = config_copy(lab, tmp_path, edit)
    run = backup(config, "--only", "ansible-vault")
    summary = assert_truthful(run, state_dir, 3)
    offsite = failures_of(summary, source="offsite")
    # with the host key's policy (one bucket) S3 answers Access Denied whether or not the bucket exists
    assert offsite and re.search(r"bucket does not exist|not initiali[sz]ed|no repository", offsite[0]["message"]), \
        summary["failures"]
    s3 = s3_client(lab["state"]["services"]["s3"])
    names = {b["Name"] for b in s3.list_buckets()["Buckets"]}
    assert "no-such-bucket-restic-orch" not in names, "auto_init is false: the bucket must not be created"
    assert_nothing_lost(lab, before, scenario="offsite bucket missing, auto_init false")


def test_vanished_local_repository_is_never_silently_recreated(lab, seeded, before, tmp_path):
    """A repository that held our snapshots is not probed before each run (that costs a key derivation);
    when it is gone the backup says so, offsite still gets the day, and no new empty repository appears."""
    state_dir, repo_dir = tmp_path / "state", tmp_path / "local-repo"

    def edit(data: dict[str, Any]) -> None:
        data["auto_init"] = True
        data["state_dir"] = str(state_dir)
        data["repositories"]["local"]["url"] = str(repo_dir)

    config = config_copy(lab, tmp_path, edit)
    first = assert_truthful(backup(config, "--only", "ansible-vault"), state_dir, 0)
    assert (repo_dir / "config").is_file() and first["snapshots"]["offsite"]
    shutil.move(repo_dir, tmp_path / "the-disk-that-died")
    run = backup(config, "--only", "ansible-vault")
    summary = assert_truthful(run, state_dir, 3)
    local = failures_of(summary, source="local")
    assert local and "has disappeared" in local[0]["message"] and first["snapshots"]["local"] in local[0]["message"]
    assert summary["snapshots"].get("offsite"), "offsite must still get the day's snapshot"
    assert not repo_dir.exists(), "a vanished repository must not be re-created empty"
    # another address for `local` is a new repository: probed, and initialised since auto_init is on
    moved = config_copy(lab, tmp_path, lambda d: (edit(d), d["repositories"]["local"].update(
        url=str(tmp_path / "new-local-repo"))), "config-moved.yml")
    assert_truthful(backup(moved, "--only", "ansible-vault"), state_dir, 0)
    assert (tmp_path / "new-local-repo" / "config").is_file()
    assert_nothing_lost(lab, before, scenario="local repository vanished")


# ------------------------------------------------------------------------------------------ databases
def test_mariadb_down_is_partial_and_keeps_the_rest(lab, seeded, before, tmp_path):
    manager.stop_service(lab["dir"], "mariadb")
    try:
        run = backup(lab["config"], "--only", "mysql,ansible-vault")
    finally:
        manager.up(lab["dir"], services=("mariadb",))
    summary = assert_truthful(run, seeded.state_dir, 3)
    assert failures_of(summary, kind="mysql"), summary["failures"]
    manifest = manifest_of(lab, "local", summary["snapshots"]["local"], tmp_path)
    assert not any(c.startswith("db:mariadb/") for c in components(manifest))
    assert any(c.startswith("vault:") for c in components(manifest))
    assert any(f["kind"] == "mysql" for f in manifest["failures"]) and manifest["status"] == "partial"
    assert_nothing_lost(lab, before, scenario="MariaDB down")


def test_wrong_database_password_fails_that_source_only(lab, seeded, before, tmp_path):
    wrong = secret_file(tmp_path, "pg-wrong", "not-the-password-" + os.urandom(6).hex() + "\n")
    config = config_copy(lab, tmp_path, lambda d: d["sources"]["postgres"][0].update(password_file=str(wrong)))
    run = backup(config, "--only", "postgres,ansible-vault")
    summary = assert_truthful(run, seeded.state_dir, 3)
    pg = failures_of(summary, kind="postgres")
    assert pg and "password authentication failed" in pg[0]["message"], summary["failures"]
    manifest = manifest_of(lab, "local", summary["snapshots"]["local"], tmp_path)
    assert not any(c.startswith("db:pg/") for c in components(manifest))
    assert any(c.startswith("vault:") for c in components(manifest))
    assert_nothing_lost(lab, before, scenario="wrong PostgreSQL password")


# pg_dump of appdb only goes through a pipe: "killed" is slowed down so the test can SIGKILL it halfway
# (pipefail reports the death); "cut-exit-0" keeps the first 20 kB and exits 0, the worst case: only
# reading the whole archive back can tell it is truncated.
WRAPPERS = {
    "killed": """#!/bin/bash
case "$*" in *" -Fc "*"dbname='appdb'"*)
  set -o pipefail
  "$@" | python3 "$(dirname "$0")/throttle.py"
  exit $? ;;
esac
exec "$@"
""",
    "cut-exit-0": """#!/bin/bash
case "$*" in *" -Fc "*"dbname='appdb'"*)
  "$@" | head -c 20000
  exit 0 ;;
esac
exec "$@"
""",
}


THROTTLE = """import sys, time
while block := sys.stdin.buffer.read(4096):
    sys.stdout.buffer.write(block)
    sys.stdout.buffer.flush()
    time.sleep(0.05)
"""


@pytest.mark.parametrize("how", sorted(WRAPPERS))
def test_dump_cut_halfway_is_never_reported_good(lab, seeded, before, tmp_path, how):
    wrapper = tmp_path / "pgwrap"
    wrapper.write_text(WRAPPERS[how])
    (tmp_path / "throttle.py").write_text(THROTTLE)
    os.chmod(wrapper, 0o755)
    config = config_copy(lab, tmp_path, lambda d: d["sources"]["postgres"][0].update(exec_prefix=[str(wrapper)]))
    proc = start_cli(config, "backup", "--only", "postgres,ansible-vault")
    try:
        if how == "killed":
            pg_dump = wait_for(child_running(proc, "pg_dump", "-Fc"), 60, "pg_dump of appdb")
            wait_for(lambda: any(p.stat().st_size > 0 for p in seeded.staging_dir.glob(
                "*/postgres/pg/appdb.dump.partial")), 20, "half a dump")
            os.kill(pg_dump, signal.SIGKILL)
        run = finish(proc)
    finally:
        if proc.poll() is None:
            kill_tree(proc)
    summary = assert_truthful(run, seeded.state_dir, 3)
    bad = failures_of(summary, kind="postgres", component="db:pg/appdb")
    assert bad, summary["failures"]
    manifest = manifest_of(lab, "local", summary["snapshots"]["local"], tmp_path)
    assert "db:pg/appdb" not in components(manifest), "a truncated dump was recorded as good"
    assert {"db:pg/inventory", "db:pg/@globals"} <= components(manifest)
    assert any(f["component"] == "db:pg/appdb" for f in manifest["failures"])
    assert_nothing_lost(lab, before, scenario=f"pg_dump {how}")


# ------------------------------------------------------------------------------------------ Proxmox VE
def test_pve_api_down_fails_proxmox_only(lab, seeded, before, tmp_path):
    manager.stop_service(lab["dir"], "pve")
    try:
        run = backup(lab["config"], "--only", "proxmox,ansible-vault")
    finally:
        manager.up(lab["dir"], services=("pve",))
    summary = assert_truthful(run, seeded.state_dir, 3)
    assert failures_of(summary, kind="proxmox"), summary["failures"]
    assert not any(c.startswith("ct:") for c in summary["components"])
    assert any(c.startswith("vault:") for c in summary["components"])
    assert_nothing_lost(lab, before, scenario="PVE API down")


def test_pve_bad_token_says_authentication(lab, seeded, before, tmp_path):
    token = secret_file(tmp_path, "pve-token-wrong", "00000000-0000-0000-0000-000000000000\n")
    config = config_copy(lab, tmp_path, lambda d: d["sources"]["proxmox"].update(token_file=str(token)))
    pve.write_faults(pve_root(lab), auth_delay_seconds=0.2)
    try:
        run = backup(config, "--only", "proxmox,ansible-vault")
    finally:
        pve_clear(lab)
    summary = assert_truthful(run, seeded.state_dir, 3)
    failed = failures_of(summary, kind="proxmox")
    assert failed and re.search(r"authenticat|unauthori[sz]ed", failed[0]["message"], re.I), summary["failures"]
    assert "00000000-0000-0000-0000-000000000000" not in run.stdout + run.stderr
    assert_nothing_lost(lab, before, scenario="PVE bad token")


def test_vzdump_task_failure_fails_that_container(lab, seeded, before, tmp_path):
    pve.write_faults(pve_root(lab), vzdump_fail={"102": "No space left on device"})
    try:
        run = backup(lab["config"], "--only", "proxmox")
    finally:
        pve_clear(lab)
    assert_nothing_lost(lab, before, scenario="vzdump task fails for CT 102")
    summary = assert_truthful(run, seeded.state_dir, 3)
    assert [f["component"] for f in summary["failures"]] == ["ct:102"], summary["failures"]
    assert {"ct:101", "ct:103", "ct:104"} <= set(summary["components"]) and "ct:102" not in summary["components"]
    # the operator must read the cause, not only vzdump's closing "job errors"
    assert "No space left on device" in summary["failures"][0]["message"]


def test_global_vzdump_lock_held_fails_after_lockwait(lab, seeded, before, tmp_path):
    config = config_copy(lab, tmp_path, lambda d: d["sources"]["proxmox"].update(lockwait_minutes=1, vmids=[101, 103]))
    pve.write_faults(pve_root(lab), global_lock_held=True, minute_seconds=1)
    try:
        started = time.monotonic()
        run = backup(config, "--only", "proxmox,ansible-vault")
        elapsed = time.monotonic() - started
    finally:
        pve_clear(lab)
    summary = assert_truthful(run, seeded.state_dir, 3)
    failed = failures_of(summary, kind="proxmox")
    assert {f["component"] for f in failed} == {"ct:101", "ct:103"}, summary["failures"]
    assert all("lock" in f["message"] for f in failed), failed
    assert elapsed < 60
    assert_nothing_lost(lab, before, scenario="global vzdump lock held")


def test_locked_container_fails_alone(lab, seeded, before, tmp_path):
    root = pve_root(lab)
    pve.set_lock(root, 102, "backup")
    try:
        run = backup(lab["config"], "--only", "proxmox")
    finally:
        pve.unlock(root, 102)
        pve_clear(lab)
    assert_nothing_lost(lab, before, scenario="CT 102 locked (backup)")
    summary = assert_truthful(run, seeded.state_dir, 3)
    assert [f["component"] for f in summary["failures"]] == ["ct:102"], summary["failures"]
    assert {"ct:101", "ct:103", "ct:104"} <= set(summary["components"])
    assert "locked" in summary["failures"][0]["message"], summary["failures"]  # vzdump: "CT is locked (backup)"


# ------------------------------------------------------------------------------------------ signals and crashes
def test_sigterm_stops_the_run_cleanly(lab, seeded, before, tmp_path):
    pve.write_faults(pve_root(lab), task_delay_seconds=4)
    proc = start_cli(lab["config"], "backup", "--only", "proxmox,ansible-vault")
    try:
        wait_for(lambda: proc.poll() is not None or vzdump_running(lab), 60, "the vzdump task of CT 101", 0.05)
        time.sleep(0.5)  # mid-task: it runs 4 s
        assert proc.poll() is None, "the run ended before the signal"
        children = descendants(proc.pid)
        signalled = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        run = finish(proc, timeout=60)
        took = time.monotonic() - signalled
    finally:
        if proc.poll() is None:
            kill_tree(proc)
        pve_clear(lab)
    assert run.rc != 0 and took < 10, f"took {took:.1f} s\n{run.text()}"
    summary = assert_truthful(run, seeded.state_dir, 1)
    assert any("SIGTERM" in f["message"] for f in summary["failures"]), summary["failures"]
    assert (seeded.state_dir / "restic-orch.lock").exists() and run_lock_free(seeded.state_dir)
    assert [pid for pid, argv in children.items() if alive(pid, argv)] == []
    leftovers = [argv for argv in (p[1] for p in proc_table().values())
                 if argv and Path(argv[0]).name in ("restic", "pg_dump", "mariadb-dump")
                 and any(str(lab["dir"]) in a for a in argv)]
    assert leftovers == []
    assert_nothing_lost(lab, before, scenario="SIGTERM during a vzdump task")


def test_sigterm_during_a_pve_api_call_still_stops_the_run(lab, seeded, before, tmp_path):
    """The signal may land while proxmoxer waits for an answer (here a 6 s authentication delay)."""
    token = secret_file(tmp_path, "pve-token-wrong", "00000000-0000-0000-0000-000000000000\n")
    staging = tmp_path / "staging"

    def edit(data: dict[str, Any]) -> None:
        data["sources"]["proxmox"]["token_file"] = str(token)
        data["staging_dir"] = str(staging)

    config = config_copy(lab, tmp_path, edit)
    pve.write_faults(pve_root(lab), auth_delay_seconds=6)
    proc = start_cli(config, "backup", "--only", "proxmox,ansible-vault")
    try:
        # the day directory is made right before the pre-hooks; proxmox is the first, its first call waits 6 s
        wait_for(lambda: proc.poll() is not None or any(staging.glob("20*")), 60, "the pre-hooks")
        time.sleep(1.0)
        assert proc.poll() is None
        signalled = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        run = finish(proc, timeout=60)
        took = time.monotonic() - signalled
    finally:
        if proc.poll() is None:
            kill_tree(proc)
        pve_clear(lab)
    assert_nothing_lost(lab, before, scenario="SIGTERM during a PVE API call")
    summary = assert_truthful(run, seeded.state_dir, 1)
    assert any("SIGTERM" in f["message"] and f["kind"] == "run" for f in summary["failures"]), summary["failures"]
    assert took < 10, f"took {took:.1f} s"
    assert stored(lab) == before, "a run stopped by SIGTERM went on and stored a snapshot"


def _sigkill_recovery(lab, seeded, tmp_path, scenario: str, staging_left: bool = True) -> None:
    """After a SIGKILL: the next run succeeds, stale staging is cleaned, stale restic locks are gone.

    staging_left=False: the kill came after the local snapshot was saved, when the staged day is already
    being removed in the background (nothing reads it any more), so whether it is left is a race."""
    if staging_left:
        assert any(seeded.staging_dir.glob("20*")), "the killed run should have left its staging behind"
    assert (seeded.state_dir / "restic-orch.lock").exists() and run_lock_free(seeded.state_dir)

    # the next nightly run, complete with retention (forget needs the exclusive lock a stale lock blocks)
    config = nightly_config(lab, tmp_path, lock_wait_seconds=4)
    pre = stored(lab, details=True)
    try:
        run = backup(config)
        summary = assert_truthful(run, seeded.state_dir, 0)
        if staging_left:
            assert "stale staging" in Path(summary["log_file"]).read_text()
        assert not any(seeded.staging_dir.glob("20*")), "staging not emptied after the successful run"
        assert restic_locks(lab, "local") == [] and restic_locks(lab, "offsite") == []
        assert_nothing_lost(lab, pre, check=True, scenario=scenario + " (recovery run)",
                            retention=summary["retention"])
    finally:
        unlock_stale(lab)  # whatever happened, the next test starts without a stale lock


def test_sigkill_during_pre_hooks_then_next_run_succeeds(lab, seeded, before, tmp_path):
    pve.write_faults(pve_root(lab), task_delay_seconds=2)
    proc = start_cli(lab["config"], "backup", "--only", "proxmox,terraform,ansible-vault")
    try:
        wait_for(lambda: proc.poll() is not None or vzdump_running(lab), 60, "the vzdump task of CT 101", 0.05)
        time.sleep(0.3)
        assert proc.poll() is None
        kill_tree(proc)
    finally:
        if proc.poll() is None:
            kill_tree(proc)
        pve_clear(lab)
    assert_nothing_lost(lab, before, scenario="SIGKILL during pre-hooks")
    _sigkill_recovery(lab, seeded, tmp_path, "SIGKILL during pre-hooks")


def test_sigkill_during_restic_backup_then_next_run_succeeds(lab, seeded, before, tmp_path):
    proc = start_cli(lab["config"], "backup", "--only", "proxmox,terraform,ansible-vault")
    try:
        wait_for(child_running(proc, "restic", "backup"), 90, "restic backup")
        wait_for(lambda: restic_locks(lab, "local"), 10, "restic's lock in the local repository")
        kill_tree(proc)
    finally:
        if proc.poll() is None:
            kill_tree(proc)
    assert restic_locks(lab, "local"), "the crash should have left a stale restic lock"
    assert_nothing_lost(lab, before, scenario="SIGKILL during restic backup")
    _sigkill_recovery(lab, seeded, tmp_path, "SIGKILL during restic backup")


def test_sigkill_during_offsite_copy_then_next_run_succeeds(lab, seeded, before, tmp_path):
    proc = start_cli(lab["config"], "backup", "--only", "terraform,ansible-vault")
    try:
        wait_for(child_running(proc, "restic", "copy"), 90, "restic copy")
        wait_for(lambda: restic_locks(lab, "offsite"), 10, "restic's lock in the offsite repository", 0.05)
        kill_tree(proc)
    finally:
        if proc.poll() is None:
            kill_tree(proc)
    assert restic_locks(lab, "offsite"), "the crash should have left a stale restic lock offsite"
    assert_nothing_lost(lab, before, scenario="SIGKILL during offsite copy")
    _sigkill_recovery(lab, seeded, tmp_path, "SIGKILL during offsite copy", staging_left=False)
    repos = open_all(seeded)
    local_trees = {s.tree for s in repos["local"].snapshots(tags=["restic-orch"])}
    assert local_trees <= {s.tree for s in repos["offsite"].snapshots(tags=["restic-orch"])}


def test_live_restic_lock_is_never_removed(lab, seeded, tmp_path):
    """A lock held by a running restic (an admin's manual command) must survive: only stale ones may go."""
    before = stored(lab, details=True)
    local = open_all(seeded)["local"]
    holder = subprocess.Popen(["restic", "backup", "--stdin", "--stdin-filename", "held-open", "--host",
                               "fault-test", "--tag", "fault-test"], stdin=subprocess.PIPE,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              env={**os.environ, **local.env()})
    try:
        held = wait_for(lambda: restic_locks(lab, "local"), 20, "the live restic lock")
        run = backup(nightly_config(lab, tmp_path, lock_wait_seconds=3))
        assert holder.poll() is None and set(held) <= set(restic_locks(lab, "local")), "a live lock was removed"
    finally:
        holder.send_signal(signal.SIGINT)
        try:
            holder.wait(timeout=30)
        except subprocess.TimeoutExpired:
            holder.kill()
            holder.wait()
        local.unlock()  # stale only
    # the snapshot is saved and copied; retention could not take its exclusive lock: partial, and it says why
    summary = assert_truthful(run, seeded.state_dir, 3)
    assert failures_of(summary, kind="retention", source="local"), summary["failures"]
    assert all("lock" in f["message"] for f in summary["failures"]), summary["failures"]
    assert restic_locks(lab, "local") == []
    assert_nothing_lost(lab, before, scenario="live restic lock kept", retention=summary["retention"])


# ------------------------------------------------------------------------------------------ disk and repositories
@pytest.fixture
def small_tmpfs(tmp_path):
    mount = tmp_path / "staging-tmpfs"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=5m", "tmpfs", str(mount)], check=True)
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def test_staging_too_small_is_refused_by_preflight(lab, seeded, before, tmp_path, small_tmpfs):
    config = config_copy(lab, tmp_path, lambda d: d.update(staging_dir=str(small_tmpfs)))
    run = backup(config, "--only", "ansible-vault")
    summary = assert_truthful(run, seeded.state_dir, 1)
    assert "not enough free space" in summary["failures"][0]["message"], summary["failures"]
    assert stored(lab) == before, "a refused run must store nothing"
    assert_nothing_lost(lab, before, scenario="staging disk too small (preflight)")


def test_staging_disk_full_during_dumps_fails_cleanly(lab, seeded, before, tmp_path, small_tmpfs):
    def edit(data: dict[str, Any]) -> None:
        data["staging_dir"] = str(small_tmpfs)
        data["limits"]["min_free_bytes"] = 0

    config = config_copy(lab, tmp_path, edit)
    run = backup(config, "--only", "proxmox,terraform")
    pve_clear(lab)
    summary = assert_truthful(run, seeded.state_dir, (1, 3))
    assert any("No space left on device" in f["message"] for f in summary["failures"]), summary["failures"]
    if run.rc == 3:
        # every artifact the manifest calls good is byte-for-byte what restic returns
        import hashlib

        repo = open_all(seeded)["local"]
        manifest = manifest_of(lab, "local", summary["snapshots"]["local"], tmp_path)
        snap = [s for s in repo.snapshots() if s.short_id == summary["snapshots"]["local"]][0]
        for artifact in manifest["artifacts"]:
            out = tmp_path / "artifact.bin"
            repo.dump_to_file(snap.id, f"{snap.paths[0]}/{artifact['path']}", out)
            assert hashlib.sha256(out.read_bytes()).hexdigest() == artifact["sha256"], artifact["path"]
    assert_nothing_lost(lab, before, check=True, scenario="staging disk full during dumps")


def test_wrong_restic_password_loses_nothing(lab, seeded, before, tmp_path):
    wrong = secret_file(tmp_path, "restic-wrong", "definitely-not-the-password\n")
    config = config_copy(lab, tmp_path, lambda d: d["repositories"]["local"].update(password_file=str(wrong)))
    run = backup(config, "--only", "ansible-vault")
    summary = assert_truthful(run, seeded.state_dir, (1, 3))
    local = failures_of(summary, source="local")
    assert local and "wrong password" in local[0]["message"], summary["failures"]
    assert "local" not in summary["snapshots"]
    assert stored(lab)["local"] == before["local"], "the local repository must be untouched"
    assert_nothing_lost(lab, before, check=True, scenario="wrong restic password (local)")


def _data_packs(repo) -> dict[str, int]:
    """Pack id -> size for the packs holding only data blobs (read from restic's own index)."""
    env = {**os.environ, **repo.env()}
    ids = subprocess.run(["restic", "list", "index"], env=env, capture_output=True, text=True,
                         check=True).stdout.split()
    packs: dict[str, int] = {}
    for index_id in ids:
        raw = subprocess.run(["restic", "cat", "index", index_id], env=env, capture_output=True, text=True,
                             check=True).stdout
        for pack in json.loads(raw)["packs"]:
            if all(b["type"] == "data" for b in pack["blobs"]):
                packs[pack["id"]] = sum(b["length"] for b in pack["blobs"])
    return packs


def test_corrupted_local_pack_is_reported_and_offsite_still_restores(lab, seeded, before, tmp_path):
    copy = tmp_path / "repo-copy"
    shutil.copytree(seeded.repositories.local.url, copy)
    state_dir = tmp_path / "state"

    def edit(data: dict[str, Any]) -> None:
        data["repositories"]["local"]["url"] = str(copy)
        data["state_dir"] = str(state_dir)

    config = config_copy(lab, tmp_path, edit)
    repo = open_all(load_config(config))["local"]
    packs = _data_packs(repo)
    pack_id = max(packs, key=lambda p: packs[p])
    pack = copy / "data" / pack_id[:2] / pack_id
    os.chmod(pack, 0o600)
    data = bytearray(pack.read_bytes())
    middle = len(data) // 2
    data[middle:middle + 64] = bytes(b ^ 0xFF for b in data[middle:middle + 64])
    pack.write_bytes(bytes(data))
    # bit rot inside a data pack: only reading the data finds it
    result = restic_orch(config, "check", "--repo", "local", "--read-data-subset", "100%", timeout=TIMEOUT)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "PROBLEMS FOUND" in result.stdout and pack_id[:8] in result.stdout, result.stdout
    # a pack cut short (disk full, interrupted write): the plain check finds it
    with open(pack, "r+b") as handle:
        handle.truncate(len(data) // 3)
    result = restic_orch(config, "--json", "check", "--repo", "local", timeout=TIMEOUT)
    assert result.returncode == 1, result.stdout + result.stderr
    report = json.loads(result.stdout)["repositories"]["local"]
    assert report["ok"] is False and pack_id[:8] in report["output"], report
    # the offsite copy still gives the Terraform state back
    offsite = open_all(seeded)["offsite"]
    with_tf = [s for s in offsite.snapshots(tags=["restic-orch"]) if "kind:terraform" in s.tags]
    assert with_tf, "no offsite snapshot holds the Terraform state"
    target = tmp_path / "restored"
    result = restic_orch(config, "--json", "restore", "--from", "offsite", "--snapshot", with_tf[-1].short_id,
                         "--only", "tfstate", "--target-dir", str(target), "--yes", timeout=TIMEOUT)
    assert result.returncode == 0, result.stdout + result.stderr
    states = sorted(target.rglob("*.tfstate"))
    assert len(states) >= 3, states
    from restic_orch.lab.s3 import s3_client

    info = lab["state"]["services"]["s3"]
    s3 = s3_client(info)
    for key in ("infra/terraform.tfstate", "env:/prod/infra/terraform.tfstate"):
        want = json.loads(s3.get_object(Bucket=info["buckets"]["tfstate"], Key=key)["Body"].read())
        got = [json.loads(p.read_text()) for p in states if p.read_text().count(want["lineage"])]
        assert any(g["serial"] == want["serial"] for g in got), key
    assert_nothing_lost(lab, before, check=True, scenario="corrupted local pack (copy); restore from offsite")


# ------------------------------------------------------------------------------------------ configuration
def _line_of(text: str, needle: str) -> int:
    for number, line in enumerate(text.splitlines(), 1):
        if needle in line:
            return number
    raise AssertionError(f"{needle!r} not in the configuration")


def _bad_config(case: str, lab: dict, tmp_path: Path) -> tuple[Path, str]:
    """Write a broken configuration; return it and the FILE:LINE: field pattern its error must match."""
    fresh = tmp_path / "untouched"

    def isolate(data: dict[str, Any]) -> None:
        data["staging_dir"] = str(fresh / "staging")
        data["state_dir"] = str(fresh / "state")
        data["log_dir"] = str(fresh / "log")

    if case == "syntax":
        path = config_copy(lab, tmp_path, isolate)
        text = path.read_text().replace("  nice: 10\n", "  nice: [10\n")
        path.write_text(text)
        line = _line_of(text, "nice: [10")
        return path, rf"{re.escape(str(path))}:({line}|{line + 1}|{line + 2}): \(syntax\)"
    if case == "unknown-key":
        path = config_copy(lab, tmp_path, lambda d: (isolate(d), d["limits"].update(nicenes=5)))
        return path, rf"{re.escape(str(path))}:{_line_of(path.read_text(), 'nicenes:')}: limits\.nicenes: unknown key"
    if case == "wrong-type":
        path = config_copy(lab, tmp_path, lambda d: (isolate(d), d["limits"].update(lock_wait_seconds="soon")))
        line = _line_of(path.read_text(), "lock_wait_seconds:")
        return path, rf"{re.escape(str(path))}:{line}: limits\.lock_wait_seconds: "
    if case == "missing-secret":
        missing = tmp_path / "no-such-password"
        path = config_copy(lab, tmp_path, lambda d: (isolate(d), d["repositories"]["local"].update(
            password_file=str(missing))))
        line = _line_of(path.read_text(), str(missing))
        return path, rf"{re.escape(str(path))}:{line}: repositories\.local\.password_file: .*does not exist"
    if case == "world-readable-secret":
        loose = secret_file(tmp_path, "pg-password-0644", "whatever\n", mode=0o644)
        path = config_copy(lab, tmp_path, lambda d: (isolate(d), d["sources"]["postgres"][0].update(
            password_file=str(loose))))
        line = _line_of(path.read_text(), str(loose))
        return path, rf"{re.escape(str(path))}:{line}: sources\.postgres\[0\]\.password_file: .*readable by group"
    raise ValueError(case)


@pytest.mark.parametrize("case", ["syntax", "unknown-key", "wrong-type", "missing-secret", "world-readable-secret"])
def test_bad_configuration_exits_2_and_touches_nothing(lab, seeded, before, tmp_path, case):
    path, pattern = _bad_config(case, lab, tmp_path)
    result = restic_orch(path, "backup", timeout=60)
    assert result.returncode == 2, result.stdout + result.stderr
    assert re.search(pattern, result.stderr), f"{pattern!r} not in:\n{result.stderr}"
    assert not (tmp_path / "untouched").exists(), "a refused configuration created staging, state or logs"
    assert stored(lab) == before
    _record(f"bad configuration: {case}", lost=[], bytes_lost=0, exit=result.returncode,
            message=result.stderr.strip().splitlines()[0])


# ------------------------------------------------------------------------------------------ one operation at a time
@pytest.mark.parametrize("holder", ["drill", "check"])
def test_backup_refused_while_a_drill_or_check_runs(lab, seeded, before, tmp_path, holder):
    if holder == "drill":
        proc = start_cli(lab["config"], "drill", "--scenario", "tfstate")
        lock = seeded.state_dir / "restic-orch.lock"
        ready = lambda: proc.poll() is not None or (  # noqa: E731
            lock.exists() and lock.read_text().startswith(f"pid {proc.pid} drill"))
    else:
        proc = start_cli(lab["config"], "check")
        ready = child_running(proc, "restic", "check")  # noqa: E731 - the check is in progress from here on
    try:
        wait_for(ready, 60, f"the {holder} to start")
        assert proc.poll() is None, f"the {holder} ended too early"
        os.kill(proc.pid, signal.SIGSTOP)  # hold it mid-way for as long as the test needs
        try:
            result = restic_orch(lab["config"], "backup", "--only", "ansible-vault", timeout=120)
        finally:
            os.kill(proc.pid, signal.SIGCONT)
        done = finish(proc, timeout=120)
    finally:
        if proc.poll() is None:
            kill_tree(proc)
    assert result.returncode == 1, f"exit {result.returncode}\n{result.stdout}\n{result.stderr}"
    assert f"pid {proc.pid} {holder}" in result.stderr, result.stderr
    assert done.rc in (0, 1), done.text()
    assert_nothing_lost(lab, before, scenario=f"backup while a {holder} runs")
