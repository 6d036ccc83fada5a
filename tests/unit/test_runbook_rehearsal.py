"""Scenario 1 of the runbook is rehearsed as written: every shell block is marked, and the parser sees them all."""

from __future__ import annotations

from pathlib import Path

import pytest

from restic_orch.lab.rehearsal import RUNBOOK, RehearsalError, _script, runbook_blocks


def test_every_shell_block_of_the_host_lost_scenario_is_marked():
    blocks = runbook_blocks()
    section = RUNBOOK.read_text().split("## 1. ", 1)[1].split("\n## ", 1)[0]
    assert len(blocks) == section.count("```sh") + section.count("```bash")
    assert all(b.mode == "run" or b.reason for b in blocks), [b for b in blocks if b.mode == "manual"]
    ran = [b.step for b in blocks if b.mode == "run"]
    # the steps that bring the host back are run, not described
    assert {"step 2", "step 3", "step 6", "step 7", "step 8"} <= set(ran)
    install = next(b for b in blocks if b.step == "step 6")
    assert "--bootstrap" in install.text and "pip" not in install.text and "git clone" not in install.text


def test_an_unmarked_block_is_refused(tmp_path: Path):
    doc = tmp_path / "runbook.md"
    doc.write_text("## 1. Host lost\n\n1. Do it:\n\n   ```sh\n   echo hi\n   ```\n\n## 2. Next\n")
    with pytest.raises(RehearsalError, match=r"runbook.md:5: shell block without a rehearsal marker \(step 1\)"):
        runbook_blocks(doc)


def test_blocks_keep_their_order_text_and_reason(tmp_path: Path):
    doc = tmp_path / "runbook.md"
    doc.write_text("## 1. Host lost\n\n1. First:\n\n   <!-- rehearsal: manual: needs a console -->\n   ```sh\n"
                   "   boot\n   ```\n\n2. Then:\n\n   <!-- rehearsal: run -->\n   ```sh\n   echo a \\\n"
                   "       b\n   ```\n\n## 2. Other\n\n```sh\nnot read\n```\n")
    blocks = runbook_blocks(doc)
    assert [(b.step, b.mode, b.reason, b.text) for b in blocks] == [
        ("step 1", "manual", "needs a console", "boot"), ("step 2", "run", "", "echo a \\\n    b")]
    script = _script(blocks, tmp_path / "times")
    assert "boot" not in script and "__step 1\necho a \\\n    b\n__step end" in script
    assert script.startswith("set -euo pipefail\n")


def test_the_escrow_sheets_first_commands_are_the_runbooks(tmp_path: Path):
    """The sheet's filled-in commands and the rehearsed runbook must not drift: the bootstrap lines are the same."""
    from restic_orch.config import Config
    from restic_orch.escrow import collect_secrets, first_commands

    config = Config.model_validate({"repositories": {"offsite": {
        "url": "s3:https://s3.gra.io.cloud.ovh.net/infra-oldevops-backups/restic",
        "password_file": str(tmp_path / "pw"), "env_file": str(tmp_path / "s3.env"),
        "retention": {"keep_last": 1}}}})
    sheet = first_commands(config, collect_secrets(config)).splitlines()
    bootstrap = sheet[: next(i for i, line in enumerate(sheet) if "--bootstrap" in line) + 1]
    runbook = "\n".join(b.text for b in runbook_blocks() if b.mode == "run")
    assert len(bootstrap) >= 5
    missing = [line for line in bootstrap if line not in runbook.splitlines()]
    assert not missing, missing
