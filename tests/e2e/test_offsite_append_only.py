"""An offsite the host cannot erase (docs/security.md), on the lab's S3 with the docs' policies enforced.

The host holds the key of docs/s3-policies/offsite-host.json (list, read, write; delete restic's lock files
only) and its offsite repository has `retention: null`; a trusted machine holds the key of offsite-admin.json
and runs the 30-day retention. The bucket is versioned: a policy cannot forbid PutObject over an existing key,
so what the host's key overwrites keeps its previous version, which the admin key can copy back.
"""

from __future__ import annotations

import json
import os
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from botocore.exceptions import ClientError

from restic_orch.config import load_config
from restic_orch.lab.s3 import s3_client
from restic_orch.masking import read_env_file
from restic_orch.repos import open_all
from tests.clihelp import run_json

pytestmark = pytest.mark.e2e


def _s3(lab: dict) -> dict[str, Any]:
    return lab["state"]["services"]["s3"]


def _write(path: Path, data: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    os.chmod(path, 0o600)
    return path


def host_config(lab: dict, tmp_path: Path) -> Path:
    """The lab configuration as the host runs it: the host's offsite key with `retention: null` offsite, the
    read-only Terraform state key, and Terraform's own key for restores into the state bucket."""
    s3 = _s3(lab)
    data = yaml.safe_load(lab["config"].read_text())
    offsite = data["repositories"]["offsite"]
    offsite.update(env_file=s3["env_file"], retention=None)
    offsite.pop("prune_every_days", None)
    if data["sources"].get("terraform_state"):
        data["sources"]["terraform_state"].update(env_file=s3["tfstate_env_file"],
                                                  restore_env_file=s3["tfstate_writer_env_file"])
    return _write(tmp_path / "config-host.yml", data)


def trusted_config(lab: dict, tmp_path: Path) -> Path:
    """The trusted machine's configuration: only the offsite repository, the admin key, the 30-day policy."""
    data = yaml.safe_load(lab["config"].read_text())
    offsite = dict(data["repositories"]["offsite"], env_file=_s3(lab)["admin_env_file"],
                   retention={"keep_within_daily": "30d"}, prune_every_days=0)
    trusted = tmp_path / "trusted"
    return _write(tmp_path / "config-trusted.yml", {
        "host": data["host"], "staging_dir": str(trusted / "staging"), "state_dir": str(trusted / "state"),
        "log_dir": str(trusted / "log"), "repositories": {"offsite": offsite}})


def _restic(lab: dict, config: Path, key_field: str, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    """Plain restic on the offsite repository with one of the lab's keys, as someone with a shell would."""
    offsite = load_config(config).repositories.offsite
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "RESTIC_"))}
    env.update(read_env_file(Path(_s3(lab)[key_field])))
    env.update(RESTIC_REPOSITORY=offsite.url, RESTIC_PASSWORD_FILE=str(offsite.password_file),
               RESTIC_CACHE_DIR=str(config.parent / f"cache-{key_field}"))
    argv = ["restic", *[a for k, v in offsite.options.items() for a in ("-o", f"{k}={v}")], *args]
    return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=timeout)


def _denied(call: Any) -> str:
    with pytest.raises(ClientError) as exc:
        call()
    return exc.value.response["Error"]["Code"]


def restore_overwritten(client: Any, bucket: str, prefix: str = "") -> list[str]:
    """docs/security.md's recovery, with the admin key: restic writes every object once (names are content
    hashes, lock files are new names), so an object with more than one version was overwritten after restic
    wrote it, and its oldest version is restic's; copy that one back over the newest."""
    versions: dict[str, list[dict[str, Any]]] = {}
    for page in client.get_paginator("list_object_versions").paginate(Bucket=bucket, Prefix=prefix):
        for version in page.get("Versions", []):
            versions.setdefault(version["Key"], []).append(version)
    restored = []
    for key, found in sorted(versions.items()):
        if len(found) < 2:
            continue
        # S3 lists a key's versions newest first; LastModified has whole seconds and may tie
        oldest = found[-1]
        client.copy_object(Bucket=bucket, Key=key,
                           CopySource={"Bucket": bucket, "Key": key, "VersionId": oldest["VersionId"]})
        restored.append(key)
    return restored


def test_nightly_with_the_host_key_is_green_and_the_trusted_host_applies_30_days(lab, fresh_repos, tmp_path):
    config_path = host_config(lab, tmp_path)
    config = load_config(config_path)
    repos = open_all(config)
    repos["local"].init()
    repos["offsite"].init(copy_chunker_from=repos["local"])
    seed = tmp_path / "retention-seed" / "2026-01-01"
    seed.mkdir(parents=True)
    (seed / "manifest.json").write_text("{}")
    now = datetime.now(UTC).replace(microsecond=0)
    for days in range(1, 41):
        when = (now - timedelta(days=days)).replace(tzinfo=None)
        repos["local"].backup([seed], tags=["restic-orch", "kind:seed"], host=config.host, when=when)
    repos["offsite"].copy_from(repos["local"])  # restic copy with the host's key
    assert len(repos["offsite"].snapshots()) == 40

    # the whole nightly run (every source, then retention) with the host's keys: green, and it says why
    # the offsite keeps everything
    summary = run_json(config_path, "backup")
    assert summary["status"] == "success" and summary["exit_code"] == 0, summary["failures"]
    skipped = summary["retention"]["offsite"]["skipped"]
    assert "left to the trusted host" in skipped, summary["retention"]
    phase = next(p for p in summary["phases"] if p["name"] == "retention:offsite")
    assert phase["ok"] and "trusted host" in phase["detail"]
    assert {s.time.date() for s in repos["local"].snapshots()} >= {now.date()}
    assert len({s.time.date() for s in repos["local"].snapshots()}) == 7
    assert len(repos["offsite"].snapshots()) == 41

    # on the trusted machine, with the admin key: the 30-day policy, then prune
    trusted = trusted_config(lab, tmp_path)
    dry = run_json(trusted, "forget", "--dry-run")
    assert dry["retention"]["offsite"]["removed"] == 11 and len(repos["offsite"].snapshots()) == 41
    done = run_json(trusted, "forget")
    assert done["status"] == "success", done["failures"]
    assert done["retention"]["offsite"] == {"kept": 30, "removed": 11, "pruned": True}
    offsite_days = {s.time.date() for s in repos["offsite"].snapshots()}
    assert len(offsite_days) == 30 and max(offsite_days) == now.date(), sorted(offsite_days)
    assert min(offsite_days) >= (now - timedelta(days=30)).date()
    checked = _restic(lab, trusted, "admin_env_file", "check", "--read-data")
    assert checked.returncode == 0, checked.stderr


def test_an_attacker_with_the_host_key_cannot_erase_the_offsite(lab, fresh_repos, tmp_path):
    config_path = host_config(lab, tmp_path)
    for _ in range(2):
        run_json(config_path, "backup", "--only", "terraform,ansible-vault")
    offsite = open_all(load_config(config_path))["offsite"]
    before = sorted(s.id for s in offsite.snapshots())
    assert len(before) == 2
    s3 = _s3(lab)
    bucket, prefix = s3["buckets"]["offsite"], s3["offsite_prefix"]
    owner = s3_client(s3)  # the bucket owner's view, to look at what really is there
    keys = {o["Key"] for page in owner.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
            for o in page.get("Contents", [])}
    original = {k: owner.get_object(Bucket=bucket, Key=k)["Body"].read() for k in keys}

    def under(kind: str) -> str:
        return sorted(k for k in keys if k.startswith(f"{prefix + '/' if prefix else ''}{kind}/"))[0]

    # restic's own forget --prune with the host's key: every removal is refused (restic retries, then fails)
    attack = _restic(lab, config_path, "env_file", "forget", "--keep-last", "1", "--prune")
    assert attack.returncode != 0 and "Access Denied" in attack.stderr, attack.stderr[-2000:]

    host = s3_client(s3, key="offsite")
    # what the host must keep: removing restic's own lock files (else stale locks block the admin's prune);
    # the nightly runs above left none behind
    locks = f"{prefix + '/' if prefix else ''}locks/"
    assert not owner.list_objects_v2(Bucket=bucket, Prefix=locks).get("Contents")
    host.put_object(Bucket=bucket, Key=locks + "probe", Body=b"lock")
    host.delete_object(Bucket=bucket, Key=locks + "probe")
    assert not owner.list_objects_v2(Bucket=bucket, Prefix=locks).get("Contents")
    config_key = f"{prefix}/config" if prefix else "config"
    targets = [under("data"), under("keys"), under("snapshots"), under("index"), config_key]
    for key in targets:
        assert _denied(lambda key=key: host.delete_object(Bucket=bucket, Key=key)) == "AccessDenied", key
    batch = host.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": k} for k in targets]})
    assert sorted(e["Key"] for e in batch.get("Errors", [])) == sorted(targets) and not batch.get("Deleted")
    version = owner.list_object_versions(Bucket=bucket, Prefix=under("data"))["Versions"][0]["VersionId"]
    # nor purge a version, read or list old versions, switch versioning off, expire objects, or open the bucket
    for call in (lambda: host.delete_object(Bucket=bucket, Key=under("data"), VersionId=version),
                 lambda: host.get_object(Bucket=bucket, Key=under("data"), VersionId=version),
                 lambda: host.list_object_versions(Bucket=bucket),
                 lambda: host.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Suspended"}),
                 lambda: host.put_bucket_lifecycle_configuration(Bucket=bucket, LifecycleConfiguration={"Rules": [
                     {"ID": "gone", "Status": "Enabled", "Filter": {"Prefix": ""}, "Expiration": {"Days": 1}}]}),
                 lambda: host.put_bucket_policy(Bucket=bucket, Policy=json.dumps(
                     {"Version": "2012-10-17", "Statement": []})),
                 lambda: host.delete_bucket(Bucket=bucket)):
        assert _denied(call) == "AccessDenied"
    assert {o["Key"] for o in owner.list_objects_v2(Bucket=bucket, Prefix=prefix).get("Contents", [])} >= keys

    # an overwrite cannot be forbidden by a policy (PutObject is what backups need): it goes through,
    # the repository is broken, and the versioned bucket still holds what restic wrote
    overwritten = [under("data"), under("keys"), under("snapshots"), under("index")]
    for key in overwritten:
        host.put_object(Bucket=bucket, Key=key, Body=b"encrypted by ransomware")
    assert _restic(lab, config_path, "env_file", "check").returncode != 0

    admin = s3_client(s3, key="offsite_admin")
    assert restore_overwritten(admin, bucket, prefix) == sorted(overwritten)
    for key in overwritten:
        assert owner.get_object(Bucket=bucket, Key=key)["Body"].read() == original[key]

    checked = _restic(lab, config_path, "env_file", "check", "--read-data")
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "no errors were found" in checked.stdout
    assert sorted(s.id for s in offsite.snapshots()) == before
