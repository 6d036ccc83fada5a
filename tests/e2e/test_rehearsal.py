"""The disaster rehearsal at lab size: the host-lost runbook, run as written on a blank host (issue 17 part 4).

One lab of its own (the rehearsal destroys it). The runbook's blocks run once with a wrong bundle sum on the
escrow sheet (the runbook must stop there, nothing restored), then as written: everything comes back, checked
here against fingerprints read from the lab's parts before the disaster, not against what restic-orch says.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

from restic_orch.config import load_config
from restic_orch.lab import manager, rehearsal
from tests.e2e import restore_helpers as rh

pytestmark = pytest.mark.timeout(900)


@pytest.fixture(scope="module")
def own_lab():
    lab_dir = Path(tempfile.mkdtemp(prefix="restic-orch-rehearsal-", dir="/tmp"))
    os.chmod(lab_dir, 0o755)  # noqa: S103
    state = manager.up(lab_dir)
    yield {"dir": lab_dir, "config": Path(state["config"]), "state": state}
    manager.down(lab_dir)
    shutil.rmtree(lab_dir, ignore_errors=True)


def _host_files(root: Path) -> dict[str, bytes]:
    """The node's files as the `files` preset backs them up: pmxcfs's dot files (.members...) are live status,
    left out by the preset (hooks/host_files.py)."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
            and not p.is_symlink() and not (p.name.startswith(".") and p.parent.name == "pve")}


def test_rehearsal_runs_the_runbook_from_the_escrow_sheet_alone(own_lab):
    lab, work = own_lab, Path(own_lab["dir"]) / "rehearsal"
    config = load_config(lab["config"])
    before = {"containers": rh.containers_snapshot(lab), "vm": rh.vm_snapshot(lab),
              "databases": rh.databases_snapshot(lab), "tfstate": rh.tf_objects(lab), "vault": rh.vault_files(lab)}
    host_root = Path(lab["state"]["host"]["root"])
    host_files = _host_files(host_root)
    review = rehearsal._review_dir(config)

    disaster = rehearsal.prepare(lab["dir"], lab["state"], config, work)
    assert not rh.pve.layout.list_guest_vmids(rh.pve_root(lab)) and not lab["config"].exists()
    assert rh.tf_objects(lab) == {} and not any(Path(p).exists() for p in before["vault"])
    assert sorted(p.name for p in (work / "items").iterdir()) == sorted(disaster.items)

    # a wrong sum on the sheet: the runbook stops at the bundle check, nothing is installed or restored
    items = (work / "items" / "escrow.env").read_text()
    (work / "bad").mkdir()
    for item in (work / "items").iterdir():
        shutil.copy(item, work / "bad" / item.name)
    (work / "bad" / "escrow.env").write_text(_wrong_sum(items))
    bad = rehearsal.run_blocks(rehearsal.runbook_blocks(), rehearsal.fresh_new_host(work, work / "bad"),
                               disaster.pve_root)
    assert bad.exit_code != 0
    failed = [s for s in bad.steps if s.result == "failed"]
    assert [s.step for s in failed] == ["step 6"], bad.steps
    assert "FAILED" in bad.output  # sha256sum -c on the sheet's sum
    assert not (work / "new-host" / "opt" / "restic-orch").exists()
    assert not rh.pve.layout.list_guest_vmids(rh.pve_root(lab))

    rehearsal.reset_pve(disaster.pve_root)  # the pveum lines ran: a new install again
    result = rehearsal.play(config, disaster, rehearsal.fresh_new_host(work, work / "items"))
    assert result.passed, result.problems + [result.played.output[-3000:]]
    assert {s.step for s in result.played.steps if s.mode == "run"} <= {s.step for s in result.played.steps
                                                                          if s.result == "ok"}
    assert {c["component"] for c in result.components} >= set(disaster.expected)

    # the new token is the one the runbook made; the helpers read the fake through it
    token = (work / "new-host" / "root" / "pve-token").read_text()
    Path(lab["state"]["services"]["pve"]["token_file"]).write_text(token)
    assert rh.containers_snapshot(lab) == before["containers"]
    assert all(rh.running(lab, vmid) for vmid in rh.VMIDS)
    # the VM: same disk bytes, same config keys, running again as it was backed up
    assert rh.vm_snapshot(lab) == before["vm"] and before["vm"][2] == "running"
    assert rh.databases_snapshot(lab) == before["databases"]
    assert rh.tf_objects(lab) == before["tfstate"]
    assert rh.vault_files(lab) == before["vault"]
    restored = _host_files(review / host_root.relative_to("/"))
    assert restored == host_files and host_files

    report = rehearsal.write_report(result, work / "report", {str(lab["dir"]): "<lab>"})
    text = report[0].read_text()
    assert "PASSED" in text and str(lab["dir"]) not in text and str(lab["dir"]) not in report[1].read_text()
    assert "| manual |" in text and "installing Proxmox VE from the ISO" in text


def _wrong_sum(env_text: str) -> str:
    lines = []
    for line in env_text.splitlines():
        if line.startswith("BUNDLE_SHA256="):
            value = line.split("=", 1)[1].strip("'\"")
            line = "BUNDLE_SHA256=" + ("0" if value[0] != "0" else "1") + value[1:]
        lines.append(line)
    return "\n".join(lines) + "\n"
