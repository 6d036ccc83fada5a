"""The escrow sheet on the whole lab: real restic on the local and the S3 offsite repository, the role's secret files,
the bootstrap bundle published beside the offsite repository, and `check` warning when the sheet on record no
longer holds."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

from restic_orch import bundle
from restic_orch.config import Config, Repository, iter_secret_fields
from restic_orch.escrow import RECORD, REGION_KEYS, dotted
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
    """Every value the configured secret files hold: each line, and each VALUE of an env file's KEY=VALUE (but the
    region: the sheet and escrow.env carry it, the runbook's commands sign with it)."""
    values = []
    for loc, path in iter_secret_fields(config):
        for line in Path(path).read_text().splitlines():
            if line.partition("=")[0] in REGION_KEYS:
                continue
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


def small_bundle(where: Path, wheel_text: str) -> Path:
    """A bundle in the published format with stand-in contents (the real build: tests/unit/test_bundle_format.py)."""
    wheel = "restic_orch-0.0.0-py3-none-any.whl"
    (where / bundle.WHEELS).mkdir(parents=True)
    (where / bundle.WHEELS / wheel).write_text(wheel_text)
    for name in bundle.FROM_SOURCE:
        (where / name).write_text(f"{name}\n")
    (where / bundle.META).write_text(json.dumps({"format": 1, "restic_orch_version": "0.0.0", "python": "3.11",
                                                 "platform": "linux-x86_64", "made": "now", "wheel": wheel}))
    (where / bundle.SUMS).write_text(bundle.sums_text(where))
    return where


def test_escrow_sheet_and_the_stale_warning_of_check(lab, fresh_repos, tmp_path):
    config = fresh_repos
    restic_orch(lab["config"], "init", check=True)
    never = run_json(lab["config"], "check", "--repo", "local")
    assert [w for w in never["warnings"] if w.startswith("no escrow sheet on record")], never["warnings"]
    # without a published bootstrap bundle the sheet is incomplete (exit 3); then one is published
    incomplete = restic_orch(lab["config"], "escrow", "--out", str(tmp_path / "incomplete"))
    assert incomplete.returncode == 3 and "bootstrap bundle: not published" in incomplete.stdout, incomplete.stdout
    small_bundle(bundle.default_dir(config), "one")
    published = run_json(lab["config"], "bundle", "publish")

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
    assert {s["location"]: s["path"] for s in record["secrets"] if s["status"] != "kept by hand"} == expected
    # the lab's host has no Terraform write key, by design: the sheet names where it goes on a new host
    assert [s["new_host"] for s in record["secrets"] if s["status"] == "kept by hand"] == [
        "/root/sources-terraform_state-restore_env_file"]
    assert all(s["status"] in ("ok", "kept by hand") for s in record["secrets"])
    files = [Path(f) for f in record["sheets"]]
    sheet = files[0].read_text()
    for location, path in expected.items():
        assert location in sheet and path in sheet, location
    for repo in record["repositories"].values():
        assert repo["id"] in sheet
    # the bundle: where it is and its sha256, on the sheet and in escrow.env (0640, no secret)
    assert record["bootstrap_bundle"]["digest"] == published["digest"]
    assert published["url"] == f"{offsite['endpoint']}/{offsite['bucket']}/bootstrap"
    assert published["digest"] in sheet and published["url"] in sheet
    env = Path(record["escrow_env"])
    assert stat.S_IMODE(env.stat().st_mode) == 0o640 and env.parent == out
    assert env.read_text() == (f"HOST=pve1\nRESTIC_REPOSITORY={config.repositories.offsite.url}\n"
                               f"BUNDLE_URL={published['url']}\nBUNDLE_SHA256={published['digest']}\n"
                               f"S3_REGION={s3['region']}\n")
    files.append(env)
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
    # a newer bundle published: the sheet names an older one
    shutil.rmtree(bundle.default_dir(config))
    newer = run_json(lab["config"], "bundle", "publish", "--dir", str(small_bundle(tmp_path / "newer", "two")))
    assert newer["uploaded"] and newer["digest"] != published["digest"]
    stale = run_json(lab["config"], "check", "--repo", "local")
    assert stale["warnings"] == [stale["warnings"][0]], stale["warnings"]
    assert f"it names bootstrap bundle {published['digest'][:12]}, {newer['digest'][:12]} is published" \
        in stale["warnings"][0]
