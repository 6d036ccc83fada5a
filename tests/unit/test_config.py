import os
import subprocess
import sys
from pathlib import Path

import pytest

from restic_orch.config import ConfigError, load_config


def secret(path: Path, text: str = "s3cret-value", mode: int = 0o600) -> Path:
    path.write_text(text + "\n")
    os.chmod(path, mode)
    return path


@pytest.fixture
def secrets_dir(tmp_path):
    d = tmp_path / "secrets"
    d.mkdir()
    secret(d / "restic")
    secret(d / "token")
    return d


def write(tmp_path, text: str) -> Path:
    path = tmp_path / "config.yml"
    path.write_text(text)
    return path


def good(secrets_dir) -> str:
    return f"""\
host: pve1
staging_dir: /tmp/ro-staging
state_dir: /tmp/ro-state
log_dir: /tmp/ro-log
repositories:
  local:
    url: /tmp/ro-repo
    password_file: {secrets_dir}/restic
    retention:
      keep_within_daily: 7d
sources:
  proxmox:
    host: 127.0.0.1
    user: backup@pve
    token_name: restic-orch
    token_file: {secrets_dir}/token
    vmids: [101, 102]
"""


def test_valid_config_loads(tmp_path, secrets_dir):
    config = load_config(write(tmp_path, good(secrets_dir)))
    assert config.host == "pve1"
    assert config.sources.proxmox.vmids == [101, 102]
    assert config.sources.proxmox.compress == "0"
    assert config.repositories.local.retention.restic_args() == ["--keep-within-daily", "7d"]


def test_every_problem_is_listed_with_file_line_and_field(tmp_path, secrets_dir):
    text = good(secrets_dir).replace("host: pve1", "host: pve1\nbogus_key: 1").replace(
        "vmids: [101, 102]", "vmids: [101, banana]\n    port: not-a-port")
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as err:
        load_config(path)
    messages = [str(p) for p in err.value.problems]
    assert any(m.startswith(f"{path}:2: bogus_key: unknown key") for m in messages), messages
    assert any("sources.proxmox.vmids[1]" in m and f"{path}:18:" in m for m in messages), messages
    assert not any(m.endswith("Input should be 'all'") for m in messages), messages
    assert any("sources.proxmox.port" in m and f"{path}:19:" in m for m in messages), messages


def test_yaml_syntax_error_names_line(tmp_path, secrets_dir):
    path = write(tmp_path, "repositories:\n  local: [unclosed\n")
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert str(err.value).startswith(f"{path}:")
    assert "syntax" in str(err.value)


def test_missing_and_world_readable_secret_files_are_refused(tmp_path, secrets_dir):
    os.chmod(secrets_dir / "token", 0o644)
    text = good(secrets_dir).replace(f"{secrets_dir}/restic", f"{secrets_dir}/nope")
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as err:
        load_config(path)
    messages = "\n".join(str(p) for p in err.value.problems)
    assert f"repositories.local.password_file: secret file {secrets_dir}/nope does not exist" in messages
    assert "sources.proxmox.token_file" in messages and "readable by group or others" in messages
    assert "chmod 600" in messages


def test_relative_paths_and_empty_retention_are_errors(tmp_path, secrets_dir):
    text = good(secrets_dir).replace("staging_dir: /tmp/ro-staging", "staging_dir: staging").replace(
        "keep_within_daily: 7d", "{}")
    with pytest.raises(ConfigError) as err:
        load_config(write(tmp_path, text))
    fields = {p.field for p in err.value.problems}
    assert "staging_dir" in fields
    assert "repositories.local.retention" in fields


def test_cli_validate_exit_codes(tmp_path, secrets_dir):
    path = write(tmp_path, good(secrets_dir))
    ok = subprocess.run([sys.executable, "-m", "restic_orch.cli", "--config", str(path), "config", "validate"],
                        capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    bad = write(tmp_path, good(secrets_dir).replace("user: backup@pve", "user: 42\n    colour: blue"))
    res = subprocess.run([sys.executable, "-m", "restic_orch.cli", "--config", str(bad), "config", "validate"],
                         capture_output=True, text=True)
    assert res.returncode == 2
    assert "sources.proxmox.colour: unknown key" in res.stderr
    assert "sources.proxmox.user" in res.stderr


def test_config_show_never_prints_secret_values(tmp_path, secrets_dir):
    path = write(tmp_path, good(secrets_dir))
    res = subprocess.run([sys.executable, "-m", "restic_orch.cli", "--config", str(path), "config", "show"],
                         capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert "s3cret-value" not in res.stdout
    assert f"{secrets_dir}/restic" in res.stdout


@pytest.mark.parametrize(("url", "words"), [
    ("ftp://backup.example.com/restic", "is not a restic repository location"),
    ("backups/restic", "is not a restic repository location"),
    ("local:restic", "absolute path"),
    ("s3:https://s3.gra.io.cloud.ovh.net", "needs an endpoint and a bucket"),
    ("rclone:", "location is empty"),
])
def test_a_repository_url_restic_cannot_use_is_refused_at_load(tmp_path, secrets_dir, url, words):
    path = write(tmp_path, good(secrets_dir).replace("url: /tmp/ro-repo", f"url: '{url}'"))
    with pytest.raises(ConfigError) as err:
        load_config(path)
    messages = [str(p) for p in err.value.problems]
    assert any(m.startswith(f"{path}:7: repositories.local.url:") and words in m for m in messages), messages


@pytest.mark.parametrize("url", ["/var/backups/infra-oldevops/restic", "local:/srv/restic",
                                 "s3:https://s3.gra.io.cloud.ovh.net/infra-oldevops-backups/restic",
                                 "s3:s3.amazonaws.com/bucket", "sftp:backup@nas:/srv/restic",
                                 "rest:https://nas:8000/pve1", "b2:bucket:pve1", "rclone:nas:restic"])
def test_every_restic_location_form_is_accepted(tmp_path, secrets_dir, url):
    config = load_config(write(tmp_path, good(secrets_dir).replace("url: /tmp/ro-repo", f"url: '{url}'")))
    assert config.repositories.local.url == url
