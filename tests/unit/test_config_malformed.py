"""Bad input leaves no trace: a malformed configuration, or a usage error with a valid one, is refused with
exit 2 and a message naming FILE:LINE: field, before anything is created on disk (issue 19).

Every case runs the command line from the test's own directory (the working directory), so a relative path
that slipped through would show up there too. In process: a case costs milliseconds, not an interpreter start.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from restic_orch.cli import main
from restic_orch.config import load_config
from tests.configs import host_dirs


def _secret(path: Path, text: str) -> Path:
    path.parent.mkdir(exist_ok=True)
    path.write_text(text + "\n")
    os.chmod(path, 0o600)
    return path


def _base(tmp_path: Path) -> str:
    """A valid configuration that sets every field the cases break; its directories under tmp_path."""
    secrets = tmp_path / "secrets"
    _secret(secrets / "restic", "restic-password")
    _secret(secrets / "token", "pve-token")
    return host_dirs(tmp_path) + f"""\
repositories:
  local:
    url: {tmp_path}/repo
    password_file: {secrets}/restic
    options: {{local.connections: 4}}
    retention:
      keep_within_daily: 7d
sources:
  proxmox:
    host: 127.0.0.1
    port: 8006
    user: backup@pve
    token_name: restic-orch
    token_file: {secrets}/token
    vmids: [101, 102]
  postgres:
    - name: main
      host: 10.0.0.102
      port: 5432
  terraform_state:
    endpoint: https://s3.gra.io.cloud.ovh.net
    bucket: infra-oldevops-tfstate
  ansible_vault:
    paths: [/root/infra/ansible/**/vault.yml]
monitoring:
  textfile_dir: {tmp_path}/metrics
restore:
  redeploy:
    - [terraform, apply]
"""


# (case, text replaced in the base, its replacement, the field named, words of the message)
CASES = [
    ("ftp-repository", "url: {tmp}/repo", "url: ftp://backup.example.com/restic", "repositories.local.url",
     "is not a restic repository location"),
    ("s3-bucket-name", "url: {tmp}/repo", "url: s3:https://s3.example.net/Backups_2024/restic",
     "repositories.local.url", "is not an S3 bucket name"),
    ("relative-secret", "password_file: {tmp}/secrets/restic", "password_file: secrets/restic",
     "repositories.local.password_file", "must be an absolute path"),
    ("restic-option", "options: {{local.connections: 4}}", "options: {{connections: 4}}",
     "repositories.local.options", "BACKEND.OPTION"),
    ("keep-within-weeks", "keep_within_daily: 7d", "keep_within_daily: 4w",
     "repositories.local.retention.keep_within_daily", "is not a restic duration"),
    ("pve-host-is-url", "host: 127.0.0.1", "host: https://pve1.lan:8006", "sources.proxmox.host",
     "write only the host (pve1.lan)"),
    ("pve-port", "port: 8006", "port: 80060", "sources.proxmox.port", "less than or equal to 65535"),
    ("vmid-below-100", "vmids: [101, 102]", "vmids: [101, 42]", "sources.proxmox.vmids[1]",
     "greater than or equal to 100"),
    ("db-host-with-port", "host: 10.0.0.102", "host: 10.0.0.102:5432", "sources.postgres[0].host",
     "the port has its own field"),
    ("tfstate-endpoint-no-scheme", "endpoint: https://s3.gra.io.cloud.ovh.net", "endpoint: s3.gra.io.cloud.ovh.net",
     "sources.terraform_state.endpoint", "http(s)://HOST[:PORT]"),
    ("tfstate-bucket-name", "bucket: infra-oldevops-tfstate", "bucket: Infra_TFState",
     "sources.terraform_state.bucket", "is not an S3 bucket name"),
    ("vault-relative-glob", "paths: [/root/infra/ansible/**/vault.yml]", "paths: [ansible/**/vault.yml]",
     "sources.ansible_vault.paths", "must be absolute paths or globs"),
    ("relative-staging", "staging_dir: {tmp}/staging", "staging_dir: staging", "staging_dir",
     "must be an absolute path"),
    ("state-inside-staging", "state_dir: {tmp}/state", "state_dir: {tmp}/staging/state", "state_dir",
     "is inside staging_dir"),
    ("relative-metrics", "textfile_dir: {tmp}/metrics", "textfile_dir: metrics", "monitoring.textfile_dir",
     "must be an absolute path"),
    ("empty-redeploy-command", "- [terraform, apply]", "- []", "restore.redeploy[0]", "at least 1 item"),
    ("yaml-syntax", "token_name: restic-orch", "token_name: restic: orch", "(syntax)", "YAML syntax error"),
]


def _tree(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


def _run(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, config: Path, *args: str) -> Result:
    # a relative path that got through would be created here, where _tree sees it
    monkeypatch.chdir(tmp_path)
    return CliRunner().invoke(main, ["--config", str(config), *args], catch_exceptions=False)


def test_the_base_configuration_is_valid(tmp_path):
    path = tmp_path / "config.yml"
    path.write_text(_base(tmp_path))
    config = load_config(path)
    assert config.repositories.local.options == {"local.connections": "4"}  # YAML's number, restic's text


@pytest.mark.parametrize(("old", "new", "field", "words"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_a_malformed_configuration_is_refused_and_creates_nothing(tmp_path, monkeypatch, old, new, field, words):
    text = _base(tmp_path)
    old, new = old.format(tmp=tmp_path), new.format(tmp=tmp_path)
    assert old in text
    text = text.replace(old, new, 1)
    path = tmp_path / "config.yml"
    path.write_text(text)
    line = text[:text.index(new)].count("\n") + 1
    before = _tree(tmp_path)
    result = _run(monkeypatch, tmp_path, path, "backup")
    assert result.exit_code == 2, result.output
    pattern = rf"^{re.escape(str(path))}:{line}: {re.escape(field)}: .*{re.escape(words)}"
    assert re.search(pattern, result.stderr, re.M), f"{pattern!r} not in:\n{result.stderr}"
    assert _tree(tmp_path) == before, "a refused configuration created files"
    for name in ("staging", "state", "log", "metrics"):
        assert not (tmp_path / name).exists()


USAGE_ERRORS = [
    ("backup", "--only", "bogus"),
    ("restore", "--only", "nosuch:thing", "--dry-run"),
    ("restore", "--only", "nosuch:thing", "--yes"),
    ("restore", "--only", "ct:101:etc/hosts", "--dry-run"),
    ("restore", "--snapshot", "last-tuesday", "--dry-run"),
    ("restore", "--snapshot", "2026-02-30", "--dry-run"),
    ("forget", "--repo", "offsite"),
]


@pytest.mark.parametrize("args", USAGE_ERRORS, ids=[" ".join(a) for a in USAGE_ERRORS])
def test_a_usage_error_with_a_valid_configuration_creates_nothing(tmp_path, monkeypatch, args):
    path = tmp_path / "config.yml"
    path.write_text(_base(tmp_path))
    before = _tree(tmp_path)
    result = _run(monkeypatch, tmp_path, path, *args)
    assert result.exit_code == 2, result.output
    assert "error: " in result.stderr and "Traceback" not in result.stderr, result.stderr
    assert _tree(tmp_path) == before, "a refused command created files"


@pytest.fixture(scope="module")
def empty_repo(tmp_path_factory) -> Path:
    """An initialised repository with no snapshot, outside every directory the tests watch."""
    from restic_orch.restic import Repo

    root = tmp_path_factory.mktemp("repo")
    Repo("local", str(root / "repo"), _secret(root / "secrets" / "restic", "restic-password")).init()
    return root


# refused only once the repository was read: restic's cache and the run's lock and log must not be made first
NEEDS_THE_REPOSITORY = [
    ("drill", "--snapshot", "1999-01-01"),
    ("restore", "--only", "db:main/nosuch", "--dry-run"),
    ("check", "--repo", "offsite"),
]


@pytest.mark.parametrize("args", NEEDS_THE_REPOSITORY, ids=[" ".join(a) for a in NEEDS_THE_REPOSITORY])
def test_a_usage_error_found_in_the_repository_creates_nothing(tmp_path, monkeypatch, empty_repo, args):
    path = tmp_path / "config.yml"
    path.write_text(_base(tmp_path).replace(f"url: {tmp_path}/repo", f"url: {empty_repo}/repo")
                    .replace(f"{tmp_path}/secrets/restic", f"{empty_repo}/secrets/restic"))
    before = _tree(tmp_path)
    result = _run(monkeypatch, tmp_path, path, *args)
    assert result.exit_code == 2, result.output
    assert _tree(tmp_path) == before, "a refused command created files"
