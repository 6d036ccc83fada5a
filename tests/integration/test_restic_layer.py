"""The restic layer against the real restic binary and path repositories."""

import hashlib
import json
import os
import subprocess
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from restic_orch import restic, runner


def make_repo(tmp_path: Path, name: str, password: str = "correct horse battery") -> restic.Repo:
    pw = tmp_path / f"{name}.pw"
    pw.write_text(password + "\n")
    os.chmod(pw, 0o600)
    return restic.Repo(name, str(tmp_path / name), pw, cache_dir=tmp_path / "cache")


def chunker_polynomial(repo: restic.Repo) -> str:
    out = subprocess.run(["restic", "--no-cache", "cat", "config"], env={**os.environ, **repo.env()},
                         capture_output=True, text=True, check=True).stdout
    return json.loads(out)["chunker_polynomial"]


@pytest.fixture
def data(tmp_path):
    src = tmp_path / "data" / "2026-11-20"
    (src / "postgres").mkdir(parents=True)
    (src / "postgres" / "db.dump").write_bytes(os.urandom(300_000))
    (src / "manifest.json").write_text('{"ok": true}')
    return src


def test_installed_version_is_detected():
    # parsing each version's text and the features that follow: tests/unit/test_restic_parsers.py
    found = restic.version()
    assert (found.major, found.minor) >= (0, 14)


def test_init_backup_snapshots_dump_roundtrip(tmp_path, data):
    repo = make_repo(tmp_path, "local")
    assert not repo.exists()
    repo.init()
    assert repo.exists()
    summary = repo.backup([data], tags=["restic-orch", "run:x"], host="pve1")
    assert len(summary.snapshot_id) >= 8 and summary.data_added > 0 and not summary.partial
    snaps = repo.snapshots(tags=["restic-orch"], host="pve1")
    assert [s.short_id for s in snaps] == [summary.snapshot_id[:8]]
    assert snaps[0].paths == [str(data)]
    out = tmp_path / "out.dump"
    repo.dump_to_file("latest", str(data / "postgres" / "db.dump"), out)
    assert hashlib.sha256(out.read_bytes()).digest() == hashlib.sha256(
        (data / "postgres" / "db.dump").read_bytes()).digest()
    names = {n.name for n in repo.ls("latest")}
    assert {"db.dump", "manifest.json", "postgres"} <= names
    target = tmp_path / "restore"
    repo.restore("latest", target, include=[str(data / "manifest.json")])
    assert (target / str(data / "manifest.json").lstrip("/")).read_text() == '{"ok": true}'


def test_restore_paths_takes_each_path_literally_in_as_few_commands_as_fit(tmp_path, data, monkeypatch):
    """0.14 has no --include-file: one --include per path, glob characters quoted, split into batches."""
    names = ["a[1].txt", "st*r", "q?", "sp ace", "back\\slash", "d$HOME"]
    decoys = ["a1.txt", "stXr", "qq", "backXslash"]  # what the names would match as globs
    for name in names + decoys:
        (data / name).write_text(name)
    repo = make_repo(tmp_path, "local")
    repo.init()
    repo.backup([data], tags=["restic-orch"], host="pve1")
    wanted = [str(data / n) for n in names] + [str(data / "postgres" / "db.dump")]
    assert repo.restore_paths("latest", wanted, tmp_path / "out") == 1
    day = tmp_path / "out" / str(data).lstrip("/")
    assert sorted(p.name for p in day.iterdir()) == sorted(names + ["postgres"])
    assert (day / "postgres" / "db.dump").read_bytes() == (data / "postgres" / "db.dump").read_bytes()
    monkeypatch.setattr(restic, "INCLUDE_BATCH_PATHS", 3)
    assert repo.restore_paths("latest", wanted, tmp_path / "out3") == 3
    assert sorted(p.name for p in (tmp_path / "out3" / str(data).lstrip("/")).iterdir()) == sorted(names + ["postgres"])


def test_relative_paths_are_refused(tmp_path):
    repo = make_repo(tmp_path, "local")
    with pytest.raises(ValueError, match="absolute"):
        repo.backup([Path("relative/dir")], tags=[], host="h")


def test_missing_source_path_is_an_error_not_a_silent_skip(tmp_path):
    repo = make_repo(tmp_path, "local")
    repo.init()
    with pytest.raises(restic.ResticError, match="does not exist"):
        repo.backup([tmp_path / "nope"], tags=[], host="h")


def test_typed_errors_wrong_password_and_missing_repo(tmp_path, data):
    repo = make_repo(tmp_path, "local")
    repo.init()
    wrong = make_repo(tmp_path, "local", password="not the password")
    with pytest.raises(restic.WrongPassword) as err:
        wrong.snapshots()
    assert "not the password" not in str(err.value)
    missing = make_repo(tmp_path, "missing")
    with pytest.raises(restic.RepoNotFound):
        missing.snapshots()


def test_locked_repository_is_retried_then_reported(tmp_path, data):
    import threading
    import time

    repo = make_repo(tmp_path, "local")
    repo.init()
    # `backup --stdin` waiting for input holds a lock for as long as we keep its stdin open
    holder = runner.Stream(["restic", "--cache-dir", str(tmp_path / "cache"), "backup", "--stdin"],
                           env=repo.env(), stdin=subprocess.PIPE)
    try:
        deadline = time.time() + 20
        while not any((Path(repo.url) / "locks").iterdir()) and time.time() < deadline:
            time.sleep(0.1)
        repo.lock_wait_seconds = 0
        with pytest.raises(restic.RepoLocked):
            repo.prune()
        # with a wait budget, the exclusive operation goes through once the holder is done
        repo.lock_wait_seconds = 30
        threading.Timer(2.0, holder.proc.stdin.close).start()
        repo.prune()
    finally:
        holder.wait(timeout=30, check=False)


def test_forget_by_host_and_tag_with_past_dates(tmp_path, data):
    repo = make_repo(tmp_path, "local")
    repo.init()
    now = datetime(2026, 11, 20, 3, 0, 0)
    for days in range(10):
        repo.backup([data], tags=["restic-orch"], host="pve1", when=now - timedelta(days=days))
    repo.backup([data], tags=["other-tool"], host="pve1", when=now - timedelta(days=40))
    groups = repo.forget(["--keep-within-daily", "7d"], host="pve1", tags=["restic-orch"])
    assert sum(len(g.keep) for g in groups) == 7
    assert sum(len(g.remove) for g in groups) == 3
    repo.prune()
    left = repo.snapshots()
    assert len(left) == 8  # 7 kept + the foreign snapshot, which forget must never touch
    assert any("other-tool" in s.tags for s in left)
    assert repo.forget(["--keep-last", "1"], host="nohost", tags=["restic-orch"]) == []


def test_copy_with_same_chunker_params_and_check(tmp_path, data):
    local = make_repo(tmp_path, "local")
    local.init()
    local.backup([data], tags=["restic-orch"], host="pve1")
    offsite = make_repo(tmp_path, "offsite", password="another password")
    offsite.init(copy_chunker_from=local)
    assert chunker_polynomial(offsite) == chunker_polynomial(local)
    source = local.snapshots()[0]
    first = offsite.copy_from(local, host="pve1", tags=["restic-orch"])
    copies = offsite.snapshots()
    assert len(copies) == 1 and copies[0].tree == source.tree
    # the copy's new id is read from restic's text: it must name the snapshot really saved
    assert [(c.source, c.target, c.skipped) for c in first] == [(source.short_id, copies[0].short_id, False)]
    again = offsite.copy_from(local)  # idempotent: restic copy skips what is there
    assert len(offsite.snapshots()) == 1
    assert [(c.source, c.target, c.skipped) for c in again] == [(source.short_id, copies[0].short_id, True)]
    # the filters reach restic: another host's snapshots are not copied
    assert offsite.copy_from(local, host="elsewhere", tags=["restic-orch"]) == []
    assert offsite.check().ok
    # corrupt one pack file: check must report it
    packs = sorted(p for p in (Path(local.url) / "data").rglob("*") if p.is_file())
    blob = packs[0].read_bytes()
    packs[0].write_bytes(blob[:100] + bytes(b ^ 0xFF for b in blob[100:200]) + blob[200:])
    assert not local.check(read_data_subset="100%").ok
