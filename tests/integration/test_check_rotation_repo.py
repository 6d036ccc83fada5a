"""`check` with check.rotation_parts on a tiny real repository: N runs read parts 1/N..N/N, an explicit
--read-data-subset leaves the rotation alone, and then status and the metrics show all data verified."""

from __future__ import annotations

import json
import os
from pathlib import Path

from restic_orch import restic, rotation, tags
from tests.clihelp import run_json
from tests.configs import host_dirs


def _config(tmp_path: Path) -> Path:
    pw = tmp_path / "local.pw"
    pw.write_text("correct horse battery\n")
    os.chmod(pw, 0o600)
    data = tmp_path / "data"
    data.mkdir()
    (data / "blob").write_bytes(os.urandom(200_000))
    repo = restic.Repo("local", str(tmp_path / "repo"), pw, cache_dir=tmp_path / "cache")
    repo.init()
    repo.backup([data], tags=tags.backup_tags("20260101T000000Z-abcd", "complete", 200_000, []), host="pve1")
    config = tmp_path / "config.yml"
    config.write_text(host_dirs(tmp_path) + f"repositories:\n  local:\n    url: {tmp_path}/repo\n"
                      f"    password_file: {pw}\n    retention: {{keep_last: 1}}\n"
                      f"monitoring:\n  textfile_dir: {tmp_path}/metrics\n"
                      "check:\n  rotation_parts: 3\n  verified_within_days: 30\n")
    return config


def _argv_subsets(log_dir: Path) -> list[str]:
    """The --read-data-subset values restic check was run with, from the run logs (runner logs each argv)."""
    found = []
    for log in sorted(log_dir.glob("*.jsonl"), key=lambda p: p.stat().st_mtime_ns):
        for record in map(json.loads, log.read_text().splitlines()):
            argv = str(record.get("argv", "")).split()
            if "check" in argv and "--read-data-subset" in argv:
                found.append(argv[argv.index("--read-data-subset") + 1])
    return found


def test_three_checks_read_the_three_parts_then_all_data_is_verified(tmp_path: Path) -> None:
    config = _config(tmp_path)
    state = tmp_path / "state"
    assert run_json(config, "status")["repositories"]["local"]["data_verified"]["started"] is False
    subsets = [run_json(config, "check")["repositories"]["local"]["read_data_subset"] for _ in range(2)]
    explicit = run_json(config, "check", "--read-data-subset", "100%")["repositories"]["local"]
    assert explicit["ok"] and explicit["read_data_subset"] == "100%"
    assert rotation.load(state)["local"]["next"] == 3  # the explicit run did not move the rotation
    partial = run_json(config, "status", expect=0)["repositories"]["local"]["data_verified"]
    assert (partial["parts_read"], partial["complete"], partial["ok"]) == (2, False, True)
    subsets.append(run_json(config, "check")["repositories"]["local"]["read_data_subset"])
    assert subsets == ["1/3", "2/3", "3/3"]
    assert _argv_subsets(tmp_path / "log") == ["1/3", "2/3", "100%", "3/3"]
    entry = rotation.load(state)["local"]
    assert (entry["next"], sorted(entry["read"])) == (1, ["1", "2", "3"])
    status = run_json(config, "status")
    verified = status["repositories"]["local"]["data_verified"]
    assert status["ok"] and verified["complete"] and verified["ok"] and verified["age_seconds"] < 600
    metrics = (tmp_path / "metrics" / "restic_orch.prom").read_text()
    assert 'restic_orch_data_verified_age_seconds{repo="local"} ' in metrics
