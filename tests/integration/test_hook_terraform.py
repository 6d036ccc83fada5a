"""The Terraform state hook against a real S3 endpoint (moto server, signatures and IAM policies enforced).

On the lab's `tfstate` bucket the hook runs with the keys the docs give it: the backup's read-only key
(docs/s3-policies/tfstate-readonly.json) and, for restores, Terraform's own (`restore_env_file`). The tests of
the hook's own logic copy the states into scratch buckets and use the lab's owner key there."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import uuid
from pathlib import Path

import pytest
from botocore.exceptions import ClientError

from restic_orch.config import Config
from restic_orch.hooks.base import DumpContext, RestoreOptions
from restic_orch.hooks.terraform_state import BACKUP_SUFFIX, TerraformStateHook, key_to_relpath
from restic_orch.lab import procs, s3
from restic_orch.lab.secrets import write_secret
from tests.hookhelp import one_source_config


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    base = tmp_path_factory.mktemp("s3lab")
    info = s3.start_s3(base)
    try:
        info["seed"] = s3.seed_tfstate(info)
        yield info
    finally:
        s3.stop_s3(info)


def _config(tmp_path: Path, source: dict | None) -> Config:
    return one_source_config(tmp_path, "terraform_state", source)


def _hook(tmp_path: Path, lab: dict, bucket: str, **extra) -> TerraformStateHook:
    # the read-only key on the lab's state bucket, as deployed; the owner's key on a test's scratch bucket
    key = lab["tfstate_env_file"] if bucket == lab["buckets"]["tfstate"] else lab["root_env_file"]
    source = {"endpoint": lab["endpoint"], "bucket": bucket, "env_file": key, **extra}
    hooks = TerraformStateHook.from_config(_config(tmp_path, source))
    assert len(hooks) == 1
    return hooks[0]


def _dump(tmp_path: Path, hook: TerraformStateHook):
    day = tmp_path / "staging" / "2024-05-01"
    day.mkdir(parents=True, exist_ok=True)
    ctx = DumpContext(config=_config(tmp_path, {"bucket": hook.source.bucket}), day_dir=day, run_id="t",
                      log=logging.getLogger("test"))
    return ctx, hook.dump(ctx)


def _copy_bucket(lab: dict, name: str) -> str:
    """A fresh bucket holding the seeded states, so a test can change it freely."""
    client = s3.s3_client(lab)
    bucket = f"{name}-{uuid.uuid4().hex[:8]}"
    client.create_bucket(Bucket=bucket)
    for key, state in lab["seed"]["states"].items():
        client.put_object(Bucket=bucket, Key=key, Body=json.dumps(state, indent=2).encode())
    return bucket


def _get(lab: dict, bucket: str, key: str) -> bytes:
    return s3.s3_client(lab).get_object(Bucket=bucket, Key=key)["Body"].read()


def _put_state(lab: dict, bucket: str, key: str, state: dict) -> bytes:
    body = json.dumps(state).encode()
    s3.s3_client(lab).put_object(Bucket=bucket, Key=key, Body=body)
    return body


def test_from_config_disabled(tmp_path, lab):
    config = _config(tmp_path, {"bucket": "tfstate", "enabled": False})
    assert TerraformStateHook.from_config(config) == []
    assert TerraformStateHook.from_config(_config(tmp_path, None)) == []


def test_dump_every_workspace(tmp_path, lab):
    seed = lab["seed"]
    ctx, outcome = _dump(tmp_path, _hook(tmp_path, lab, seed["bucket"]))
    assert outcome.failures == []
    by_key = {a.meta["key"]: a for a in outcome.artifacts}
    # default workspace at <key>, the others at env:/<workspace>/<key>
    assert sorted(by_key) == seed["keys"]
    assert any(k.startswith("env:/prod/") for k in by_key) and any(k.startswith("env:/staging/") for k in by_key)
    for key, artifact in by_key.items():
        state = seed["states"][key]
        staged = ctx.day_dir / artifact.path
        assert staged.resolve().is_relative_to((ctx.day_dir / "terraform").resolve())
        assert artifact.path == str(Path("terraform") / key_to_relpath(key))
        body = _get(lab, seed["bucket"], key)
        assert staged.read_bytes() == body
        assert artifact.sha256 == hashlib.sha256(body).hexdigest() and artifact.size == len(body)
        assert artifact.component == f"tfstate:{key}" and artifact.kind == "terraform"
        meta = artifact.meta
        assert (meta["serial"], meta["lineage"]) == (state["serial"], state["lineage"])
        assert meta["version"] == 4 and meta["terraform_version"] == "1.7.5"
        assert meta["resources"] == len(state["resources"]) and meta["bucket"] == seed["bucket"]
        assert meta["etag"] == hashlib.md5(body, usedforsecurity=False).hexdigest()
        assert meta["last_modified"]
        assert os.stat(staged).st_mode & 0o077 == 0  # a state holds secrets
    # the prod state was uploaded twice: the current version (not the older one) is dumped
    prod = by_key["env:/prod/infra/terraform.tfstate"]
    assert prod.meta["serial"] == 118


def test_dump_prefix_and_invalid_objects(tmp_path, lab):
    bucket = _copy_bucket(lab, "bad")
    client = s3.s3_client(lab)
    client.put_object(Bucket=bucket, Key="infra/broken.tfstate", Body=b"{not json")
    client.put_object(Bucket=bucket, Key="infra/notes.json", Body=b'{"hello": "world"}')
    # a key that would walk out of the staging directory if used as a path
    weird = "infra/../../../escape/terraform.tfstate"
    state = dict(lab["seed"]["states"]["infra/terraform.tfstate"], serial=3)
    client.put_object(Bucket=bucket, Key=weird, Body=json.dumps(state).encode())
    listed = [o["Key"] for o in client.list_objects_v2(Bucket=bucket, Prefix="infra/")["Contents"]]
    assert weird in listed
    ctx, outcome = _dump(tmp_path, _hook(tmp_path, lab, bucket, prefix="infra/"))
    failed = {f.component: f.message for f in outcome.failures}
    assert set(failed) == {"tfstate:infra/broken.tfstate", "tfstate:infra/notes.json"}
    assert "not JSON" in failed["tfstate:infra/broken.tfstate"]
    assert "serial" in failed["tfstate:infra/notes.json"] and "lineage" in failed["tfstate:infra/notes.json"]
    good = {a.meta["key"]: a for a in outcome.artifacts}
    assert set(good) == {"infra/terraform.tfstate", weird}
    assert good[weird].meta["serial"] == 3
    # nothing escaped and nothing invalid was kept as good
    files = sorted(p for p in ctx.day_dir.rglob("*") if p.is_file())
    assert all(p.resolve().is_relative_to((ctx.day_dir / "terraform").resolve()) for p in files)
    assert sorted(str(p.relative_to(ctx.day_dir)) for p in files) == sorted(a.path for a in good.values())
    assert not (tmp_path / "escape").exists() and not (tmp_path / "staging" / "escape").exists()
    assert (ctx.day_dir / good[weird].path).read_bytes() == _get(lab, bucket, weird)


def test_key_to_relpath_is_safe():
    for key in ["../x", "..", "a/../../b", "/abs/key", "env:/prod/k", "a//b", "./c", "%2E%2E/x"]:
        rel = key_to_relpath(key)
        assert not rel.is_absolute() and ".." not in rel.parts and "." not in rel.parts
        assert ":" not in str(rel)
    assert len({key_to_relpath(k) for k in ["..", "%2E%2E", "%252E%252E", ".", "%2E"]}) == 5


def _leaks(lab: dict, text: str) -> bool:
    """Any of the lab's S3 secret keys (the hook uses the tfstate keys, not the offsite one) in text."""
    keys = [lab["secret_key"], *(k["secret_key"] for k in lab.get("iam", {}).values())]
    return any(k and k in text for k in keys)


def test_errors_are_failures_without_secret(tmp_path, lab):
    wrong_secret = "WrongSecretValue-" + uuid.uuid4().hex
    bad_env = write_secret(tmp_path / "secrets" / "bad.env",
                           f"AWS_ACCESS_KEY_ID={lab['access_key']}\nAWS_SECRET_ACCESS_KEY={wrong_secret}\n")
    _, outcome = _dump(tmp_path, _hook(tmp_path, lab, "tfstate", env_file=str(bad_env)))
    assert outcome.artifacts == [] and len(outcome.failures) == 1
    message = outcome.failures[0].message
    assert "s3://tfstate" in message and lab["endpoint"] in message and "SignatureDoesNotMatch" in message
    for failure in outcome.failures:
        assert wrong_secret not in str(failure.to_json()) and not _leaks(lab, str(failure.to_json()))

    _, outcome = _dump(tmp_path, _hook(tmp_path, lab, "no-such-bucket-here"))
    assert len(outcome.failures) == 1 and "s3://no-such-bucket-here" in outcome.failures[0].message
    assert "NoSuchBucket" in outcome.failures[0].message
    assert not _leaks(lab, outcome.failures[0].message)

    down = f"http://127.0.0.1:{procs.free_port()}"
    hook = _hook(tmp_path, lab, "tfstate", endpoint=down)
    _, outcome = _dump(tmp_path, hook)
    assert len(outcome.failures) == 1 and down in outcome.failures[0].message
    assert "unreachable" in outcome.failures[0].message
    assert not _leaks(lab, outcome.failures[0].message)


def test_no_credentials_from_process_environment(tmp_path, lab, monkeypatch):
    # the right key in the environment must not rescue a config without env_file
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", lab["access_key"])
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", lab["secret_key"])
    monkeypatch.setenv("AWS_ENDPOINT_URL", lab["endpoint"])
    source = {"endpoint": lab["endpoint"], "bucket": "tfstate"}
    hook = TerraformStateHook.from_config(_config(tmp_path, source))[0]
    _, outcome = _dump(tmp_path, hook)
    assert outcome.artifacts == [] and "AWS_SECRET_ACCESS_KEY" in outcome.failures[0].message


def _fetcher(ctx: DumpContext, artifact):
    def fetch(dest: Path) -> Path:
        shutil.copyfile(ctx.day_dir / artifact.path, dest)
        return dest
    return fetch


def _backups(lab: dict, bucket: str, key: str) -> list[str]:
    listed = s3.s3_client(lab).list_objects_v2(Bucket=bucket, Prefix=key + BACKUP_SUFFIX)
    return [o["Key"] for o in listed.get("Contents", [])]


def test_restore_refuses_newer_or_foreign_state_unless_forced(tmp_path, lab):
    bucket = _copy_bucket(lab, "restore")
    hook = _hook(tmp_path, lab, bucket)
    ctx, outcome = _dump(tmp_path, hook)
    key = "env:/prod/infra/terraform.tfstate"
    artifact = next(a for a in outcome.artifacts if a.meta["key"] == key)
    dumped = (ctx.day_dir / artifact.path).read_bytes()
    state = json.loads(dumped)

    # terraform applied since the backup: a higher serial of the same lineage
    newer = _put_state(lab, bucket, key, dict(state, serial=state["serial"] + 5))
    result = hook.restore(artifact, _fetcher(ctx, artifact), RestoreOptions())
    assert not result.ok and "refusing" in result.message and "serial" in result.message
    assert _get(lab, bucket, key) == newer and _backups(lab, bucket, key) == []

    # another lineage (a different project's state, even with a lower serial)
    foreign = _put_state(lab, bucket, key, dict(state, serial=1, lineage=str(uuid.uuid4())))
    result = hook.restore(artifact, _fetcher(ctx, artifact), RestoreOptions())
    assert not result.ok and "lineage" in result.message
    assert _get(lab, bucket, key) == foreign and _backups(lab, bucket, key) == []

    # forced: the object in place is saved in the bucket first, then replaced by the backup's bytes
    result = hook.restore(artifact, _fetcher(ctx, artifact), RestoreOptions(force=True))
    assert result.ok, result.message
    saved = _backups(lab, bucket, key)
    assert len(saved) == 1 and saved[0] in result.message
    assert _get(lab, bucket, saved[0]) == foreign
    assert _get(lab, bucket, key) == dumped
    assert result.checks["sha256"] and result.checks["serial"] and result.checks["lineage"]
    assert result.restored_to == f"s3://{bucket}/{key}"

    # again: identical bytes in place, nothing to do, nothing more saved
    result = hook.restore(artifact, _fetcher(ctx, artifact), RestoreOptions())
    assert result.ok and "nothing to do" in result.message and len(_backups(lab, bucket, key)) == 1


def test_restore_older_or_missing_state(tmp_path, lab):
    bucket = _copy_bucket(lab, "older")
    hook = _hook(tmp_path, lab, bucket)
    ctx, outcome = _dump(tmp_path, hook)
    by_key = {a.meta["key"]: a for a in outcome.artifacts}

    # a rolled-back bucket (lower serial, same lineage) is replaced without force, the old object kept
    key = "dns/terraform.tfstate"
    artifact = by_key[key]
    state = json.loads((ctx.day_dir / artifact.path).read_bytes())
    older = _put_state(lab, bucket, key, dict(state, serial=state["serial"] - 3))
    result = hook.restore(artifact, _fetcher(ctx, artifact), RestoreOptions())
    assert result.ok, result.message
    assert [_get(lab, bucket, k) for k in _backups(lab, bucket, key)] == [older]
    assert _get(lab, bucket, key) == (ctx.day_dir / artifact.path).read_bytes()

    # a lost state is simply uploaded
    key = "env:/staging/infra/terraform.tfstate"
    s3.s3_client(lab).delete_object(Bucket=bucket, Key=key)
    result = hook.restore(by_key[key], _fetcher(ctx, by_key[key]), RestoreOptions())
    assert result.ok and _backups(lab, bucket, key) == []
    assert _get(lab, bucket, key) == (ctx.day_dir / by_key[key].path).read_bytes()

    # drill: into a directory, the bucket untouched (even though it holds a higher serial)
    key = "infra/terraform.tfstate"
    in_bucket = _put_state(lab, bucket, key, dict(lab["seed"]["states"][key], serial=999))
    target = tmp_path / "drill"
    result = hook.restore(by_key[key], _fetcher(ctx, by_key[key]), RestoreOptions(target_dir=target))
    assert result.ok, result.message
    written = Path(result.restored_to)
    assert written.is_relative_to(target) and written.read_bytes() == (ctx.day_dir / by_key[key].path).read_bytes()
    assert _get(lab, bucket, key) == in_bucket


def _scratch_state(lab: dict, name: str) -> tuple[str, dict]:
    """A state of its own under a unique prefix of the lab's tfstate bucket, written with Terraform's key."""
    prefix = f"{name}-{uuid.uuid4().hex[:8]}/"
    state = dict(lab["seed"]["states"]["dns/terraform.tfstate"], serial=20, lineage=str(uuid.uuid4()))
    terraform = s3.s3_client(lab, key="tfstate_writer")
    terraform.put_object(Bucket=lab["buckets"]["tfstate"], Key=prefix + "terraform.tfstate",
                         Body=json.dumps(state).encode())
    return prefix, state


def test_readonly_key_dumps_but_cannot_push_a_state_back(tmp_path, lab):
    """The backup's key (tfstate-readonly.json) reads every state and writes nothing: a restore into the
    bucket is refused by S3, says how to get a key that may write, and leaves the bucket as it was."""
    bucket = lab["buckets"]["tfstate"]
    prefix, _state = _scratch_state(lab, "ro")
    try:
        hook = _hook(tmp_path, lab, bucket, prefix=prefix)
        ctx, outcome = _dump(tmp_path, hook)
        assert outcome.failures == [] and len(outcome.artifacts) == 1
        artifact = outcome.artifacts[0]
        key = artifact.meta["key"]
        rolled_back = _put_state(lab, bucket, key, dict(json.loads((ctx.day_dir / artifact.path).read_bytes()),
                                                        serial=3))
        result = hook.restore(artifact, _fetcher(ctx, artifact), RestoreOptions())
        assert not result.ok
        assert "AccessDenied" in result.message and "restore_env_file" in result.message, result.message
        assert not _leaks(lab, result.message)
        assert _get(lab, bucket, key) == rolled_back and _backups(lab, bucket, key) == []
        # the key cannot write anywhere in the bucket, nor read another one
        with pytest.raises(ClientError, match="AccessDenied"):
            s3.s3_client(lab, key="tfstate").put_object(Bucket=bucket, Key=prefix + "probe", Body=b"x")
        with pytest.raises(ClientError, match="AccessDenied"):
            s3.s3_client(lab, key="tfstate").list_objects_v2(Bucket=lab["buckets"]["offsite"])
    finally:
        s3.empty_bucket(lab, bucket, prefix)


def test_restore_env_file_pushes_with_terraforms_key(tmp_path, lab):
    """With restore_env_file (Terraform's key, tfstate-terraform.json) the same restore goes through: the
    dump still reads with the read-only key, the push and the saved previous object use the writer's."""
    bucket = lab["buckets"]["tfstate"]
    prefix, _state = _scratch_state(lab, "rw")
    try:
        hook = _hook(tmp_path, lab, bucket, prefix=prefix, restore_env_file=lab["tfstate_writer_env_file"])
        ctx, outcome = _dump(tmp_path, hook)
        assert outcome.failures == [] and len(outcome.artifacts) == 1
        artifact = outcome.artifacts[0]
        key = artifact.meta["key"]
        dumped = (ctx.day_dir / artifact.path).read_bytes()
        rolled_back = _put_state(lab, bucket, key, dict(json.loads(dumped), serial=3))
        result = hook.restore(artifact, _fetcher(ctx, artifact), RestoreOptions())
        assert result.ok, result.message
        assert _get(lab, bucket, key) == dumped
        assert [_get(lab, bucket, k) for k in _backups(lab, bucket, key)] == [rolled_back]

        # a restore key that may not write is named in the message
        hook = _hook(tmp_path, lab, bucket, prefix=prefix, restore_env_file=lab["tfstate_env_file"])
        _put_state(lab, bucket, key, dict(json.loads(dumped), serial=4))
        result = hook.restore(artifact, _fetcher(ctx, artifact), RestoreOptions())
        assert not result.ok and "AccessDenied" in result.message
        assert f"restore_env_file {lab['tfstate_env_file']}" in result.message, result.message
    finally:
        s3.empty_bucket(lab, bucket, prefix)
