"""A real `restic-orch backup` of a small files source into a local repository: on a terminal it draws restic's
bytes as a live bar; piped (cron), its output is what it always was, with no progress text and no escape codes."""

from __future__ import annotations

import json
import os
import re

import pexpect
import pytest
import yaml

from restic_orch.repo_size import tree_bytes
from tests.clihelp import CLI, restic_orch
from tests.hookhelp import one_source_config

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


@pytest.fixture(scope="module")
def config_path(tmp_path_factory: pytest.TempPathFactory):
    tmp_path = tmp_path_factory.mktemp("progress")
    source = tmp_path / "data"
    source.mkdir()
    # big enough that restic reports the bytes while it reads them, small enough for a second's backup
    (source / "blob.bin").write_bytes(os.urandom(3_000_000))
    (source / "notes.txt").write_text("hello\n")
    data = json.loads(one_source_config(tmp_path, "files", {"paths": [str(source)]}).model_dump_json())
    data["auto_init"] = True
    data["limits"].update(min_free_bytes=0, cpu_percent=None)
    path = tmp_path / "config.yml"
    path.write_text(yaml.safe_dump(data))
    os.chmod(path, 0o600)
    return path


def test_on_a_terminal_the_backup_shows_restics_bytes(config_path) -> None:
    env = {**os.environ, "TERM": "xterm-256color", "COLUMNS": "150", "LINES": "40"}
    env.pop("RESTIC_ORCH_NO_PROGRESS", None)
    child = pexpect.spawn(CLI[0], [*CLI[1:], "--config", str(config_path), "backup"], env=env,
                          dimensions=(40, 150), timeout=120, encoding="utf-8", codec_errors="replace")
    child.expect(pexpect.EOF)
    child.close()
    output = child.before
    assert child.exitstatus == 0, output
    plain = ANSI.sub("", output)
    # the bar of the backup phase with restic's byte counts, then the phase's end line and the result table
    assert re.search(r"backup:local .*\d+(\.\d)? (B|KiB|MiB) / 2\.9 MiB", plain), plain
    assert "backup:local: ok in" in plain and "\x1b[" in output


def test_piped_the_output_is_unchanged(config_path) -> None:
    result = restic_orch(config_path, "backup", timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""  # no terminal: no phase lines, no bar
    assert "\x1b" not in result.stdout and "\r" not in result.stdout and "⠋" not in result.stdout
    assert not re.search(r"\d (B|KiB|MiB) / ", result.stdout) and "preflight ━" not in result.stdout
    assert "│ backup:local     │ ok     │" in result.stdout  # the result table, as before
    summary = json.loads((config_path.parent / "state" / "last-run.json").read_text())
    # the report's figures: what the local repository's directory holds after the run, measured by a walk
    assert summary["stored_bytes"] == {"local": tree_bytes(config_path.parent / "repo")}
    assert summary["stored_bytes"]["local"] > 3_000_000 and summary["bytes_added"] == {}
