"""The nightly backup end to end on the whole lab: real restic, moto S3, PostgreSQL, MariaDB, the fake PVE."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from restic_orch.lab import manager
from restic_orch.repos import open_all
from tests.clihelp import CLI, restic_orch, run_json

pytestmark = pytest.mark.e2e


def manifest_of(repo, snapshot_id: str) -> dict:
    snap = [s for s in repo.snapshots() if s.id.startswith(snapshot_id) or s.short_id == snapshot_id][0]
    out = Path(f"/tmp/manifest-{os.getpid()}-{snap.short_id}.json")
    repo.dump_to_file(snap.id, f"{snap.paths[0]}/manifest.json", out)
    data = json.loads(out.read_text())
    out.unlink()
    return data


def lab_secrets(lab_dir: Path) -> list[str]:
    """The values of the lab's secrets: passwords, the PVE token, the S3 secret key."""
    secrets_dir = lab_dir / "secrets"
    secrets = [(secrets_dir / name).read_text().strip()
               for name in ("restic-local", "restic-offsite", "pg-password", "mysql-password", "pve-token")]
    secrets += [line.split("=", 1)[1].strip() for line in (secrets_dir / "s3.env").read_text().splitlines()
                if "SECRET" in line]
    assert all(len(s) >= 8 for s in secrets)
    return secrets


def test_full_backup_holds_every_source_locally_and_offsite(lab, fresh_repos):
    config = fresh_repos
    summary = run_json(lab["config"], "backup")
    assert summary["status"] == "success" and summary["exit_code"] == 0, summary["failures"]
    repos = open_all(config)
    local = manifest_of(repos["local"], summary["snapshots"]["local"])
    components = {a["component"] for a in local["artifacts"]}
    assert {"ct:101", "ct:102", "ct:103", "ct:104"} <= components
    assert {"db:pg/inventory", "db:pg/appdb", "db:pg/@globals", "db:mariadb/blog", "db:mariadb/shop",
            "db:mariadb/@users"} <= components
    assert {"tfstate:infra/terraform.tfstate", "tfstate:env:/staging/infra/terraform.tfstate",
            "tfstate:env:/prod/infra/terraform.tfstate"} <= components
    assert sum(c.startswith("vault:") for c in components) >= 3
    assert local["failures"] == [] and local["status"] == "complete"
    # the manifest carries the configuration for disaster day: secret files named by path, never their contents
    stored = local["config"]["repositories"]
    assert stored["local"]["password_file"] == str(config.repositories.local.password_file)
    assert stored["offsite"]["env_file"] == str(config.repositories.offsite.env_file)
    manifest_text = json.dumps(local)
    for secret in lab_secrets(lab["dir"]):
        assert secret not in manifest_text, "a secret's value is in the manifest"
    # offsite holds the same snapshot content (restic copy: same tree)
    offsite_snaps = repos["offsite"].snapshots(tags=["restic-orch"])
    local_snaps = repos["local"].snapshots(tags=["restic-orch"])
    assert [s.tree for s in offsite_snaps] == [s.tree for s in local_snaps]
    # what restic dump returns matches the staged sha256, for every artifact
    snap = local_snaps[-1]
    for artifact in local["artifacts"]:
        dest = lab["dir"] / "check.bin"
        repos["offsite"].dump_to_file(offsite_snaps[-1].id, f"{snap.paths[0]}/{artifact['path']}", dest)
        assert hashlib.sha256(dest.read_bytes()).hexdigest() == artifact["sha256"], artifact["path"]
        dest.unlink()
    # staging emptied after a successful run; summary and metrics written
    assert not any(p.name[:2] == "20" for p in config.staging_dir.iterdir())
    last = json.loads((config.state_dir / "last-run.json").read_text())
    assert last["run_id"] == summary["run_id"]
    # restic's own archiving time, apart from the phase's wall time (start-up, index load, teardown)
    own = summary["extra"]["restic_total_duration"]["local"]
    phase = next(p["seconds"] for p in summary["phases"] if p["name"] == "backup:local")
    assert 0 < own <= phase
    metrics = (config.monitoring.textfile_dir / "restic_orch.prom").read_text()
    assert 'restic_orch_last_run_status{command="backup"} 0' in metrics


def test_retention_keeps_7_days_local_and_leaves_offsite_to_the_trusted_host(lab, fresh_repos):
    config = fresh_repos
    repos = open_all(config)
    for repo in repos.values():
        repo.init() if repo.name == "local" else repo.init(copy_chunker_from=repos["local"])
    seed = lab["dir"] / "retention-seed" / "2026-01-01"
    seed.mkdir(parents=True, exist_ok=True)
    (seed / "manifest.json").write_text("{}")
    now = datetime.now(UTC).replace(microsecond=0)
    for days in range(1, 41):
        when = (now - timedelta(days=days)).replace(tzinfo=None)
        repos["local"].backup([seed], tags=["restic-orch", "kind:seed"], host=config.host, when=when)
    repos["offsite"].copy_from(repos["local"])
    assert len(repos["offsite"].snapshots()) == 40
    summary = run_json(lab["config"], "backup")
    assert summary["status"] == "success", summary["failures"]
    local_days = {s.time.date() for s in repos["local"].snapshots()}
    assert len(local_days) == 7, sorted(local_days)
    assert max(local_days) == now.date()
    # the host's offsite key is append-only: its 30 days are applied by the trusted machine
    # (tests/e2e/test_offsite_append_only.py), the host keeps every offsite snapshot and says why
    assert len(repos["offsite"].snapshots()) == 41
    assert "trusted host" in summary["retention"]["offsite"]["skipped"]


def test_postgres_down_is_partial_and_keeps_everything_else(lab, fresh_repos):
    manager.stop_service(lab["dir"], "postgres")
    try:
        result = restic_orch(lab["config"], "--json", "backup")
        assert result.returncode == 3, result.stderr
        summary = json.loads(result.stdout)
        assert summary["status"] == "partial"
        assert any(f["kind"] == "postgres" for f in summary["failures"])
        local = manifest_of(open_all(fresh_repos)["local"], summary["snapshots"]["local"])
        components = {a["component"] for a in local["artifacts"]}
        assert {"ct:101", "ct:104", "db:mariadb/blog", "db:mariadb/shop"} <= components
        assert not any(c.startswith("db:pg/") for c in components)
        assert any(f["kind"] == "postgres" for f in local["failures"]) and local["status"] == "partial"
    finally:
        manager.up(lab["dir"], services=("postgres",))


def test_s3_down_during_copy_then_next_run_catches_up(lab, fresh_repos):
    manager.stop_service(lab["dir"], "s3proxy")
    try:
        first = restic_orch(lab["config"], "--json", "backup", "--only", "terraform,ansible-vault")
        assert first.returncode in (1, 3), first.stderr
    finally:
        manager.up(lab["dir"], services=("s3proxy",))
    # with S3 unreachable at start there is no offsite repo; run again with it up: offsite initialised and filled
    ok = run_json(lab["config"], "backup", "--only", "terraform")
    repos = open_all(fresh_repos)
    assert {s.tree for s in repos["local"].snapshots()} == {s.tree for s in repos["offsite"].snapshots()}
    assert ok["status"] == "success"
    # now cut S3 in the middle of a copy: the local snapshot stays, exit 3
    killer = threading.Timer(0.5, manager.stop_service, args=(lab["dir"], "s3proxy"))
    try:
        killer.start()
        mid = restic_orch(lab["config"], "--json", "backup")
        summary = json.loads(mid.stdout)
        assert mid.returncode == 3 and summary["snapshots"].get("local"), mid.stderr
        assert any(f["source"] == "offsite" for f in summary["failures"])
    finally:
        killer.cancel()
        manager.up(lab["dir"], services=("s3proxy",))
    assert repos["local"].check().ok
    after = run_json(lab["config"], "backup", "--only", "terraform")
    assert after["status"] == "success"
    local_trees = {s.tree for s in repos["local"].snapshots()}
    assert local_trees == {s.tree for s in repos["offsite"].snapshots()}


def test_second_concurrent_run_is_refused(lab, fresh_repos):
    first = subprocess.Popen(CLI + ["--config", str(lab["config"]), "backup"], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    try:
        lock = fresh_repos.state_dir / "restic-orch.lock"
        deadline = time.time() + 30
        while time.time() < deadline and not (lock.exists() and lock.read_text().strip()):
            time.sleep(0.05)
        second = restic_orch(lab["config"], "backup")
        assert second.returncode == 1
        assert f"pid {first.pid}" in second.stderr
    finally:
        out, err = first.communicate(timeout=600)
    assert first.returncode == 0, err


def test_no_secret_in_argv_logs_or_summary(lab, fresh_repos):
    config = fresh_repos
    secrets_dir = lab["dir"] / "secrets"
    secrets = lab_secrets(lab["dir"])
    seen: list[str] = []
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            for pid in os.listdir("/proc"):
                if pid.isdigit():
                    try:
                        seen.append(Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(
                            errors="replace"))
                    except OSError:
                        pass
            time.sleep(0.02)

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        result = restic_orch(lab["config"], "--json", "-vv", "backup")
    finally:
        stop.set()
        sampler.join()
    assert result.returncode == 0, result.stderr
    assert any("pg_dump" in c for c in seen) and any("restic" in c for c in seen)
    texts = {"argv": "\n".join(seen), "stdout": result.stdout, "stderr": result.stderr}
    for path in list(config.log_dir.glob("*.jsonl")) + list(config.state_dir.rglob("*.json")):
        texts[str(path)] = path.read_text()
    for where, text in texts.items():
        for secret in secrets:
            assert secret not in text, f"a secret leaked into {where}"
    for name in os.listdir(secrets_dir):
        assert (secrets_dir / name).stat().st_mode & 0o077 == 0, name
    # what is stored is not readable by other users either
    for path in (Path(config.repositories.local.url), Path(config.repositories.local.url) / "data",
                 config.staging_dir, config.log_dir):
        assert path.stat().st_mode & 0o007 == 0, path
