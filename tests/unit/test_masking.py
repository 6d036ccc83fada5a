"""Known secrets are masked wherever text leaves the process; the reporting side masks without the runner."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from restic_orch import masking, runner

PACKAGE = Path(__file__).resolve().parents[2] / "restic_orch"


@pytest.fixture(autouse=True)
def _own_registry(monkeypatch):
    # the registry is process-wide: these tests' values must not mask other tests' text
    monkeypatch.setattr(masking, "_secrets", set())


def test_a_registered_secret_is_masked_and_a_short_one_is_not():
    masking.register_secret("  s3cr3t-value\n")
    masking.register_secret("abc")
    assert masking.mask("pw=s3cr3t-value abc") == "pw=**** abc"


def test_the_longest_secret_is_masked_whole():
    masking.register_secret("token")
    masking.register_secret("token-and-more")
    assert masking.mask("x token-and-more y token") == "x **** y ****"


def test_secret_files_register_what_they_hold(tmp_path):
    (tmp_path / "pw").write_text("hunter2-pass\nsecond line\n")
    (tmp_path / "empty").write_text("")
    (tmp_path / "env").write_text("# c\nexport AWS_SECRET_ACCESS_KEY='secret-key-1'\nAWS_ACCESS_KEY_ID=AKIAPUBLIC\n")
    assert masking.read_secret(tmp_path / "pw") == "hunter2-pass"
    assert masking.read_secret(tmp_path / "empty") == ""
    env = masking.read_env_file(tmp_path / "env")
    assert env == {"AWS_SECRET_ACCESS_KEY": "secret-key-1", "AWS_ACCESS_KEY_ID": "AKIAPUBLIC"}
    assert masking.mask("hunter2-pass secret-key-1 AKIAPUBLIC") == "**** **** AKIAPUBLIC"


def test_a_malformed_env_line_names_the_file_and_line(tmp_path):
    (tmp_path / "env").write_text("OK=1\nnot a pair\n")
    with pytest.raises(ValueError, match=r"env:2: expected KEY=VALUE"):
        masking.read_env_file(tmp_path / "env")


def test_the_runner_still_offers_the_same_functions():
    assert runner.mask is masking.mask and runner.register_secret is masking.register_secret
    assert runner.read_secret is masking.read_secret and runner.read_env_file is masking.read_env_file
    runner.register_secret("via-runner")
    assert masking.mask("via-runner") == "****"


@pytest.mark.parametrize("module", ["report.py", "notify.py", "logs.py", "status.py", "staging.py", "tags.py"])
def test_reporting_modules_mask_without_importing_the_runner(module):
    tree = ast.parse((PACKAGE / module).read_text(encoding="utf-8"))
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            imported |= {node.module or ""} | {f"{node.module or ''}.{a.name}" for a in node.names}
        elif isinstance(node, ast.Import):
            imported |= {a.name for a in node.names}
    assert not any(name.split(".")[-1] == "runner" for name in imported), imported
