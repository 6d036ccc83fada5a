"""The escrow sheet on the whole lab: real restic on the local and the S3 offsite repository, the role's secret files,
and `check` warning when the sheet on record no longer holds."""

from __future__ import annotations

import json
import os
import stat
import subprocess
from pathlib import Path

import pytest

from restic_orch.config import Config, Repository, iter_secret_fields
from restic_orch.escrow import RECORD, dotted
from restic_orch.masking import read_env_file
from tests.clihelp import restic_orch, run_json

pytestmark = pytest.mark.e2e


def restic_id(repo: Repository) -> str:
    """The repository's ID as plain restic prints it, without restic-orch in between."""
    env = dict(os.environ, RESTIC_REPOSITORY=repo.url, RESTIC_PASSWORD_FILE=str(repo.password_file))
    if repo.env_file:
        env.update(read_env_file(repo.env_file))
    options = [arg for key, value in repo.options.items() for arg in ("-o", f"{key}={value}")]
    result = subprocess.run(["restic", "--no-cache", *options, "cat", "config"], env=env, capture_output=True,
                            text=True, timeout=120, check=True)
    return json.loads(result.stdout)["id"]


def secret_values(config: Config) -> list[str]:
    """Every value the configured secret files hold: each line, and each VALUE of an env file's KEY=VALUE."""
    values = []
    for loc, path in iter_secret_fields(config):
        for line in Path(path).read_text().splitlines():
            value = line.partition("=")[2] if str(loc[-1]).endswith("env_file") else line
            if len(value.strip()) >= 6:
                values.append(value.strip())
    assert len(values) >= 6
    return values


def texts_of(config: Config, result: subprocess.CompletedProcess, files: list[Path], logs_before: set[Path]
             ) -> dict[str, str]:
    """The command's output, the files named, the record and the run logs written since logs_before."""
    logs = set(config.log_dir.glob("*.jsonl")) - logs_before
    assert logs, "the escrow run left no log"
    texts = {"stdout and stderr": result.stdout + result.stderr}
    return texts | {str(p): p.read_text() for p in [*files, config.state_dir / RECORD, *logs]}


def test_escrow_sheet_and_the_stale_warning_of_check(lab, fresh_repos, tmp_path):
    config = fresh_repos
    restic_orch(lab["config"], "init", check=True)
    never = run_json(lab["config"], "check", "--repo", "local")
    assert [w for w in never["warnings"] if w.startswith("no escrow sheet on record")], never["warnings"]

    out = tmp_path / "sheet"
    logs_before = set(config.log_dir.glob("*.jsonl"))
    plain = restic_orch(lab["config"], "--json", "escrow", "--out", str(out))
    assert plain.returncode == 0, plain.stdout + plain.stderr
    record = json.loads(plain.stdout)
    for name, repo in config.repositories.items():
        assert record["repositories"][name]["id"] == restic_id(repo), name
        assert record["repositories"][name]["url"] == repo.url
    s3 = lab["state"]["services"]["s3"]
    offsite = record["repositories"]["offsite"]
    assert offsite["bucket"] == s3["buckets"]["offsite"]
    prefix = f"/{offsite['prefix']}" if offsite["prefix"] else ""
    assert f"s3:{offsite['endpoint']}/{offsite['bucket']}{prefix}" == config.repositories.offsite.url
    expected = {dotted(loc): str(path) for loc, path in iter_secret_fields(config)}
    assert {s["location"]: s["path"] for s in record["secrets"]} == expected
    assert all(s["status"] == "ok" for s in record["secrets"])
    files = [Path(f) for f in record["sheets"]]
    sheet = files[0].read_text()
    for location, path in expected.items():
        assert location in sheet and path in sheet, location
    for repo in record["repositories"].values():
        assert repo["id"] in sheet
    secrets = secret_values(config)
    for where, text in texts_of(config, plain, files, logs_before).items():
        leaked = [s for s in secrets if s in text]
        assert leaked == [], f"a secret value is in {where}"

    logs_before = set(config.log_dir.glob("*.jsonl"))
    shown = restic_orch(lab["config"], "escrow", "--out", str(out), "--with-secrets")
    assert shown.returncode == 0, shown.stdout + shown.stderr
    assert "WITH SECRET VALUES" in shown.stdout and "0600" in shown.stdout
    with_values = sorted(out.glob("*-with-secrets.*"))
    assert [p.suffix for p in with_values] == [".html", ".md"]
    for path in with_values:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    assert all(s in with_values[1].read_text() for s in secrets)
    for where, text in texts_of(config, shown, [], logs_before).items():
        assert not [s for s in secrets if s in text], f"a secret value is in {where}"

    fresh = run_json(lab["config"], "check", "--repo", "local")
    assert fresh["warnings"] == [] and fresh["repositories"]["local"]["ok"]
    env_file = config.repositories.offsite.env_file
    original = env_file.read_bytes()
    try:
        env_file.write_bytes(original + b"# rotated\n")  # new content, still a working key
        stale = run_json(lab["config"], "check", "--repo", "local")
        assert len(stale["warnings"]) == 1 and "repositories.offsite.env_file" in stale["warnings"][0]
        human = restic_orch(lab["config"], "check", "--repo", "local")
        assert human.returncode == 0 and "warning: escrow sheet of " in human.stdout, human.stdout
    finally:
        env_file.write_bytes(original)
