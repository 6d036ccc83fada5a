"""The bootstrap bundle published beside the offsite repository, on the lab's S3 with the docs' policies enforced:
a real bundle (built once from this checkout) goes under bootstrap/ with the host's key, SHA256SUMS last and only
when it changed; the runbook's first commands fetch and check it with curl and sha256sum; the keys may do what
docs/s3-policies say; the nightly backup publishes it, and a failed publish is a warning, not a failed backup."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError, ConnectionClosedError

from restic_orch import bundle, escrow
from restic_orch.config import Config, load_config
from restic_orch.lab.s3 import empty_bucket, s3_client
from tests.clihelp import run_json

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
REAL_CLIENT = bundle.s3_client


@pytest.fixture(scope="module")
def real_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("bundle") / "bootstrap"
    bundle.build(out, REPO)
    return out


def _s3(lab: dict) -> dict[str, Any]:
    return lab["state"]["services"]["s3"]


@pytest.fixture
def host(lab, fresh_repos, real_bundle) -> Config:
    """The lab's host with the real bundle built in <state_dir>/bootstrap and nothing under bootstrap/ offsite;
    both removed after the test, so no later backup of the session publishes it."""
    info = _s3(lab)
    empty_bucket(info, info["buckets"]["offsite"], f"{bundle.PREFIX}/")
    shutil.copytree(real_bundle, bundle.default_dir(fresh_repos))
    yield fresh_repos
    shutil.rmtree(bundle.default_dir(fresh_repos), ignore_errors=True)
    empty_bucket(info, info["buckets"]["offsite"], f"{bundle.PREFIX}/")


def remote(lab: dict) -> dict[str, int]:
    """{key: number of versions} under bootstrap/, as the bucket's owner sees it."""
    info = _s3(lab)
    listing = s3_client(info).list_object_versions(Bucket=info["buckets"]["offsite"], Prefix=f"{bundle.PREFIX}/")
    found: dict[str, int] = {}
    for version in listing.get("Versions", []):
        found[version["Key"]] = found.get(version["Key"], 0) + 1
    return found


def observe_puts(monkeypatch: pytest.MonkeyPatch, fail_at: int | None = None) -> list[str]:
    """The keys publish() puts, in order, seen on its real boto3 client; the connection drops at put `fail_at`."""
    keys: list[str] = []

    def put(params: dict[str, Any], **_: Any) -> None:
        if fail_at is not None and len(keys) + 1 == fail_at:
            raise ConnectionClosedError(endpoint_url="the lab's S3")
        keys.append(params["Key"])

    def observed(where: bundle.Target) -> Any:
        client = REAL_CLIENT(where)
        client.meta.events.register("provide-client-params.s3.PutObject", put)
        return client

    monkeypatch.setattr(bundle, "s3_client", observed)
    return keys


def listed(bundle_dir: Path) -> list[str]:
    return [line.split("  ", 1)[1] for line in (bundle_dir / bundle.SUMS).read_text().splitlines()]


def test_publish_puts_sha256sums_last_and_only_what_changed(lab, host, monkeypatch):
    bundle_dir = bundle.default_dir(host)
    expected = [f"bootstrap/{rel}" for rel in listed(bundle_dir)] + ["bootstrap/SHA256SUMS"]
    # a connection lost half-way: what is there never looks like a complete bundle
    puts = observe_puts(monkeypatch, fail_at=3)
    with pytest.raises(bundle.BundleError, match="publishing to .*/offsite/bootstrap"):
        bundle.publish(host, bundle_dir)
    assert puts == expected[:2] and sorted(remote(lab)) == sorted(expected[:2])
    assert not (host.state_dir / bundle.RECORD).exists()

    puts = observe_puts(monkeypatch)
    result = bundle.publish(host, bundle_dir)
    assert puts == result.uploaded == expected
    assert sorted(remote(lab)) == sorted(expected)
    info = _s3(lab)
    # path-style, at the bucket's root beside the repository's restic/
    assert result.url == f"{escrow.parse_s3_url(host.repositories.offsite.url).endpoint}/offsite/bootstrap"
    assert result.region == info["region"]
    record = json.loads((host.state_dir / bundle.RECORD).read_text())
    digest = hashlib.sha256((bundle_dir / bundle.SUMS).read_bytes()).hexdigest()
    assert record == {"digest": digest, "url": result.url, "region": info["region"], "published": result.published,
                      "version": "0.1.0"}

    # the next publish (the next night) finds the same SHA256SUMS there and uploads nothing
    again = run_json(lab["config"], "bundle", "publish")
    assert again["uploaded"] == [] and again["skipped"] and again["digest"] == digest
    # (the two objects of the cut-off attempt were put twice)
    assert remote(lab) == {key: 2 if key in expected[:2] else 1 for key in expected}


def _sh(command: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", "-euc", command], cwd=cwd, env=env, capture_output=True, text=True, timeout=120)


def test_the_runbooks_commands_fetch_and_check_it_with_the_host_key(lab, host, tmp_path):
    published = run_json(lab["config"], "bundle", "publish")
    info = _s3(lab)
    env_text = escrow.escrow_env(host, bundle.load_published(host.state_dir))
    commands = escrow.first_commands(host, escrow.collect_secrets(host)).splitlines()
    # the escrow sheet's lines 3 to 5, with the lab's S3 keys file where a new host has /root/s3.env
    fetch, outer, inner = (line.replace(escrow.RUNBOOK_S3_ENV, info["env_file"]) for line in commands[2:5])
    assert outer.startswith('echo "$BUNDLE_SHA256  SHA256SUMS"') and inner.startswith("sha256sum -c")
    (tmp_path / "escrow.env").write_text(env_text)
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    for line in (fetch, outer, inner):
        done = _sh(f". {tmp_path / 'escrow.env'}; {line}", tmp_path, env)
        assert done.returncode == 0, f"{line}\n{done.stdout}{done.stderr}"
    assert (tmp_path / "restore.sh").read_bytes() == (REPO / "scripts/restore.sh").read_bytes()
    assert hashlib.sha256((tmp_path / "SHA256SUMS").read_bytes()).hexdigest() == published["digest"]

    # a wrong sum on the sheet stops there
    (tmp_path / "escrow.env").write_text(env_text.replace(published["digest"], "0" * 64))
    wrong = _sh(f". {tmp_path / 'escrow.env'}; {outer}", tmp_path, env)
    assert wrong.returncode != 0 and "FAILED" in wrong.stdout

    # every file read back with the host's key verifies as a whole
    here = tmp_path / "fetched"
    client = s3_client(info, key="offsite")
    for rel in [*listed(bundle.default_dir(host)), bundle.SUMS]:
        (here / rel).parent.mkdir(parents=True, exist_ok=True)
        body = client.get_object(Bucket=info["buckets"]["offsite"], Key=f"bootstrap/{rel}")["Body"].read()
        (here / rel).write_bytes(body)
    assert bundle.verify(here) == []


def _denied(call: Any) -> str:
    with pytest.raises(ClientError) as exc:
        call()
    return exc.value.response["Error"]["Code"]


def test_each_key_may_do_with_bootstrap_what_its_policy_says(lab, host):
    run_json(lab["config"], "bundle", "publish")
    info = _s3(lab)
    bucket, key = info["buckets"]["offsite"], "bootstrap/SHA256SUMS"
    host_key, admin = s3_client(info, key="offsite"), s3_client(info, key="offsite_admin")
    # the host's key: read and write, never delete nor touch old versions (docs/s3-policies/offsite-host.json)
    assert host_key.get_object(Bucket=bucket, Key=key)["Body"].read()
    version = s3_client(info).list_object_versions(Bucket=bucket, Prefix=key)["Versions"][0]["VersionId"]
    assert _denied(lambda: host_key.delete_object(Bucket=bucket, Key=key)) == "AccessDenied"
    assert _denied(lambda: host_key.get_object(Bucket=bucket, Key=key, VersionId=version)) == "AccessDenied"
    assert _denied(lambda: host_key.put_object(Bucket=bucket, Key="elsewhere/x", Body=b"x")) == "AccessDenied"
    # the admin key (the trusted machine) may clean bootstrap/ up: old wheels the host cannot delete
    admin.put_object(Bucket=bucket, Key="bootstrap/wheels/old-0.0.0-py3-none-any.whl", Body=b"old")
    admin.delete_object(Bucket=bucket, Key="bootstrap/wheels/old-0.0.0-py3-none-any.whl")
    assert admin.get_object(Bucket=bucket, Key=key)["Body"].read()
    # the Terraform state key reads nothing there
    tfstate = s3_client(info, key="tfstate")
    assert _denied(lambda: tfstate.get_object(Bucket=bucket, Key=key)) == "AccessDenied"


def _phase(summary: dict, name: str) -> dict | None:
    return next((p for p in summary["phases"] if p["name"] == name), None)


def test_the_backup_publishes_the_built_bundle_and_a_failure_is_only_a_warning(lab, host):
    done = run_json(lab["config"], "backup", "--only", "ansible-vault")
    assert done["status"] == "success", done["failures"]
    phase = _phase(done, "publish:bootstrap")
    assert phase and phase["ok"] and "files uploaded" in phase["detail"], done["phases"]
    names = [p["name"] for p in done["phases"]]
    assert names.index("publish:bootstrap") > names.index("copy:offsite")
    info = _s3(lab)
    sums = s3_client(info).get_object(Bucket=info["buckets"]["offsite"], Key="bootstrap/SHA256SUMS")["Body"].read()
    assert sums == (bundle.default_dir(host) / bundle.SUMS).read_bytes()

    # a bundle that no longer verifies is not published; the backup's data is safe and the run stays green
    with open(bundle.default_dir(host) / "restore.sh", "ab") as handle:
        handle.write(b"# changed\n")
    warned = run_json(lab["config"], "backup", "--only", "ansible-vault")
    assert warned["status"] == "success" and warned["exit_code"] == 0 and warned["snapshots"].get("offsite")
    phase = _phase(warned, "publish:bootstrap")
    assert phase and not phase["ok"] and "restore.sh: its sha256 differs from SHA256SUMS" in phase["detail"]
    assert [n for n in warned["notices"] if n["source"] == "bootstrap"], warned["notices"]

    # no bundle built: no phase at all
    shutil.rmtree(bundle.default_dir(host))
    plain = run_json(lab["config"], "backup", "--only", "ansible-vault")
    assert plain["status"] == "success" and _phase(plain, "publish:bootstrap") is None
    assert load_config(lab["config"]).state_dir == host.state_dir
