"""A restore fetches what its steps need with one `restic restore` (not one `restic dump` per artifact), and a
prefetched file is checked against the manifest exactly like a dumped one.

Real restic, the real CLI, a small host tree backed up by the `files` kind (no lab needed: fast).
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from collections import Counter
from contextlib import contextmanager
from pathlib import Path

import pytest
import yaml

from restic_orch import prefetch, restore
from restic_orch.browse import locate
from restic_orch.config import load_config
from restic_orch.hooks.base import Artifact, RestoreOptions
from restic_orch.repos import open_all
from tests.clihelp import restic_orch
from tests.hookhelp import one_source_config

pytestmark = pytest.mark.e2e

FILES = {  # glob characters and a space in names: each --include must match its path and nothing else
    "etc/app[1]/we*rd?.conf": b"weird\n",
    "etc/app1/weXrdY.conf": b"a sibling the pattern above would match unescaped\n",
    "etc/a b/c.txt": b"spaced\n",
    "etc/hosts": b"127.0.0.1 localhost\n",
    "etc/big.bin": os.urandom(300_000),
}


@pytest.fixture(scope="module")
def backed_up(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("prefetch")
    host = tmp / "host"
    for rel, data in FILES.items():
        (host / rel).parent.mkdir(parents=True, exist_ok=True)
        (host / rel).write_bytes(data)
    data = json.loads(one_source_config(tmp, "files", {"paths": [f"{host}/etc"]}).model_dump_json())
    data["auto_init"] = True
    data["limits"].update(min_free_bytes=0, cpu_percent=None)
    path = tmp / "config.yml"
    path.write_text(yaml.safe_dump(data))
    os.chmod(path, 0o600)
    backup = restic_orch(path, "--json", "backup", check=True)
    assert json.loads(backup.stdout)["status"] == "success", backup.stdout
    return {"tmp": tmp, "host": host, "path": path, "config": load_config(path)}


def restic_subcommands(log_file: str) -> Counter:
    """The restic subcommands the run started, read from its run log (one line per child command)."""
    found: Counter = Counter()
    for line in Path(log_file).read_text().splitlines():
        item = json.loads(line)
        words = str(item.get("argv", "")).split() if item.get("msg") == "command" else []
        if any(Path(w).name == "restic" for w in words):
            found[next((w for w in words if w in ("restore", "dump", "snapshots", "ls", "cat")), "?")] += 1
    return found


def test_one_restic_restore_fetches_every_artifact_of_the_restore(backed_up, tmp_path):
    target = tmp_path / "out"
    result = restic_orch(backed_up["path"], "--json", "restore", "--only", "files", "--target-dir", str(target),
                         "--yes", input="")
    assert result.returncode == 0, result.stdout + result.stderr
    summary = json.loads(result.stdout)
    steps = summary["extra"]["steps"]
    assert len(steps) == len(FILES) and all(s["result"] == "ok" for s in steps), steps
    for rel, data in FILES.items():
        assert (target / str(backed_up["host"]).lstrip("/") / rel).read_bytes() == data
    assert restic_subcommands(summary["log_file"]) == Counter({"restore": 1})
    assert summary["extra"]["prefetch"]["artifacts"] == len(FILES)
    staging = backed_up["config"].staging_dir
    assert not list(staging.glob(prefetch.SCRATCH_PREFIX + "*")), "the scratch directory is removed"


@contextmanager
def nothing_prefetched(*_args, **_kwargs):
    yield {}


def test_a_corrupted_prefetched_file_is_refused_like_a_corrupted_dump(backed_up, tmp_path, monkeypatch, caplog):
    config = backed_up["config"]
    repo = open_all(config)["local"]
    snap = repo.snapshots(tags=["restic-orch"])[-1]
    repo.restore(snap.id, tmp_path / "snap")
    day = tmp_path / "snap" / snap.paths[0].lstrip("/")
    manifest = json.loads((day / "manifest.json").read_text())
    victim = Artifact.from_json(next(a for a in manifest["artifacts"] if a["path"].endswith("big.bin")))
    staged = day / victim.path
    data = bytearray(staged.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped byte: same size, another sha256
    staged.write_bytes(bytes(data))
    tampered = repo.backup([day], tags=snap.tags, host=config.host)
    located = locate(repo, tampered.snapshot_id)

    def restore_victim(where: str) -> dict:
        options = RestoreOptions(target_dir=tmp_path / where)
        steps = restore.plan_steps(located, ["files"], options, config)
        with caplog.at_level(logging.INFO, logger="restic_orch"):
            caplog.clear()
            summary = restore.execute(config, located, steps, options)
            commands = [r.argv for r in caplog.records if r.getMessage() == "command"]
        by_component = {s["component"]: s for s in summary.extra["steps"]}
        assert all(s["result"] == "ok" for c, s in by_component.items() if c != victim.component)
        assert not (tmp_path / where / victim.meta["original_path"].lstrip("/")).exists(), "never put in place"
        return {"step": by_component[victim.component], "commands": commands, "status": summary.status}

    fetched_at_once = restore_victim("prefetched")
    assert [c for c in fetched_at_once["commands"] if " dump " in c] == []
    assert len([c for c in fetched_at_once["commands"] if " restore " in c]) == 1
    monkeypatch.setattr(prefetch, "prefetched", nothing_prefetched)
    dumped = restore_victim("dumped")
    assert len([c for c in dumped["commands"] if " dump " in c]) == len(FILES)
    for run in (fetched_at_once, dumped):
        assert run["status"] == "partial" and run["step"]["result"] == "failed"
        assert "sha256" in run["step"]["message"] and "differs from the manifest" in run["step"]["message"]
    assert fetched_at_once["step"]["message"] == dumped["step"]["message"]


def test_what_does_not_fit_is_left_to_be_fetched_one_at_a_time():
    def art(name: str, size: int) -> Artifact:
        return Artifact(name, "k", "s", name, size, "0" * 64)

    small, medium, big = art("small", 10), art("medium", 500), art("big", 2000)
    chosen, left = prefetch.fitting([big, small, medium], free=1000)  # 900 usable: a tenth is kept
    assert [a.path for a in chosen] == ["small", "medium"] and [a.path for a in left] == ["big"]
    chosen, left = prefetch.fitting([big, small, medium], free=10**9)
    assert not left and len(chosen) == 3


def test_prefetch_never_fails_the_restore_and_leaves_nothing_behind(backed_up, tmp_path):
    config = backed_up["config"]
    located = locate(open_all(config)["local"], "latest")
    with prefetch.prefetched(located, located.artifacts, tmp_path / "no-such-dir") as files:
        assert files == {}  # each artifact is then dumped on its own
    with prefetch.prefetched(located, located.artifacts, tmp_path) as files:
        assert sorted(files) == sorted(a.path for a in located.artifacts)
        assert all(oct(p.stat().st_mode & 0o777) == oct(0o600) for p in files.values())
        [scratch] = tmp_path.glob(prefetch.SCRATCH_PREFIX + "*")
        assert oct(scratch.stat().st_mode & 0o777) == oct(0o700)
    assert not scratch.exists()


@pytest.mark.skipif(not Path("/dev/shm").is_dir(), reason="needs a second filesystem")
def test_a_prefetched_file_crosses_filesystems_as_a_private_copy(tmp_path):
    source = tmp_path / "artifact"
    source.write_bytes(b"bytes")
    with tempfile.TemporaryDirectory(dir="/dev/shm") as other:
        if os.stat(other).st_dev == os.stat(tmp_path).st_dev:
            pytest.skip("/dev/shm is on the same filesystem here")
        dest = Path(other) / "dest"
        prefetch.move_into(source, dest)
        assert dest.read_bytes() == b"bytes" and not source.exists()
        assert dest.stat().st_mode & 0o777 == 0o600
