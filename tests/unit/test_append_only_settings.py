"""The settings of an append-only offsite and a read-only Terraform state key (docs/security.md).

`retention: null` on the offsite: the run says the retention is left to the trusted host. A Terraform state
source takes a separate key for restores (`restore_env_file`), a secret file checked like the others.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from restic_orch.config import Config, ConfigError, load_config
from restic_orch.hooks.terraform_state import TerraformStateHook
from restic_orch.pipeline import apply_retention
from restic_orch.report import RunSummary
from tests.configs import host_dirs


def _secret(path: Path, text: str, mode: int = 0o600) -> Path:
    path.write_text(text)
    os.chmod(path, mode)
    return path


def _config(tmp_path: Path, **tfstate: str) -> Config:
    password = _secret(tmp_path / "pw", "pw\n")
    return Config.model_validate({
        "host": "pve1", "staging_dir": str(tmp_path / "staging"), "state_dir": str(tmp_path / "state"),
        "log_dir": str(tmp_path / "log"),
        "repositories": {
            "local": {"url": str(tmp_path / "repo"), "password_file": str(password), "retention": None},
            "offsite": {"url": "s3:http://127.0.0.1:9/offsite", "password_file": str(password), "retention": None},
        },
        "sources": {"terraform_state": {"bucket": "tfstate", **tfstate}} if tfstate else {},
    })


def test_retention_null_is_reported_as_left_to_the_trusted_host(tmp_path):
    summary = RunSummary("backup", "r1", "pve1", "")
    apply_retention(_config(tmp_path), {"local": None, "offsite": None}, summary)  # restic is never asked
    assert "left to the trusted host" in summary.retention["offsite"]["skipped"]
    assert "restic-orch forget" in summary.retention["offsite"]["skipped"]
    assert "trusted host" not in summary.retention["local"]["skipped"]
    assert "append-only" in summary.retention["local"]["skipped"]
    phases = {p.name: p for p in summary.phases}
    assert phases["retention:offsite"].ok and "trusted host" in phases["retention:offsite"].detail
    assert phases["retention:local"].ok and summary.failures == []


def test_restore_env_file_is_a_checked_secret(tmp_path):
    env = _secret(tmp_path / "ro.env", "AWS_ACCESS_KEY_ID=a\nAWS_SECRET_ACCESS_KEY=b\n")
    writer = _secret(tmp_path / "tf.env", "AWS_ACCESS_KEY_ID=c\nAWS_SECRET_ACCESS_KEY=d\n", mode=0o644)
    _secret(tmp_path / "pw", "pw\n")
    path = tmp_path / "config.yml"
    path.write_text(host_dirs(tmp_path) + f"""\
repositories:
  local: {{url: {tmp_path}/repo, password_file: {tmp_path}/pw, retention: null}}
sources:
  terraform_state:
    bucket: tfstate
    env_file: {env}
    restore_env_file: {writer}
""")
    with pytest.raises(ConfigError) as exc:
        load_config(path)
    assert "sources.terraform_state.restore_env_file" in str(exc.value) and "chmod 600" in str(exc.value)
    os.chmod(writer, 0o600)
    assert load_config(path).sources.terraform_state.restore_env_file == writer


def test_restore_uses_restore_env_file_and_backups_env_file(tmp_path):
    ro = _secret(tmp_path / "ro.env", "AWS_ACCESS_KEY_ID=AKIAREADONLY\nAWS_SECRET_ACCESS_KEY=ro-secret\n")
    rw = _secret(tmp_path / "tf.env", "AWS_ACCESS_KEY_ID=AKIATERRAFORM\nAWS_SECRET_ACCESS_KEY=tf-secret\n")
    hook = TerraformStateHook.from_config(_config(tmp_path, env_file=str(ro), restore_env_file=str(rw)))[0]
    assert hook.client()._request_signer._credentials.access_key == "AKIAREADONLY"
    assert hook.client(for_restore=True)._request_signer._credentials.access_key == "AKIATERRAFORM"
    # without restore_env_file a restore uses the backup's key
    hook = TerraformStateHook.from_config(_config(tmp_path, env_file=str(ro)))[0]
    assert hook.client(for_restore=True)._request_signer._credentials.access_key == "AKIAREADONLY"
    assert "restore_env_file" in hook._write_denied_hint()
