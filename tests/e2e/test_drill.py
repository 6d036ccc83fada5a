"""The restore drill on the whole lab: a sandbox that touches nothing in production, and a report that tells."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from proxmoxer import ProxmoxAPI

from restic_orch.lab.postgres import psql
from restic_orch.repos import open_all
from tests.clihelp import restic_orch, run_json

pytestmark = pytest.mark.e2e


def pve(lab) -> ProxmoxAPI:
    info = lab["state"]["services"]["pve"]
    token = Path(info["token_file"]).read_text().strip()
    return ProxmoxAPI(info["host"], port=info["port"], user="backup@pve", token_name="restic-orch",
                      token_value=token, verify_ssl=False)


def production_view(lab) -> dict:
    api = pve(lab)
    node = api.nodes("pve1")
    cts = {int(c["vmid"]): node.lxc(c["vmid"]).config.get()["digest"] for c in node.lxc.get()}
    vms = {int(v["vmid"]): node.qemu(v["vmid"]).config.get()["digest"] for v in node.qemu.get()}
    query = "SELECT string_agg(datname, ',' ORDER BY datname) FROM pg_database"
    dbs = psql(lab["state"]["services"]["postgres"], query)
    host = Path(lab["dir"]) / "host"
    files = {str(p.relative_to(host)): (p.read_bytes(), p.stat().st_mtime_ns)
             for p in sorted(host.rglob("*")) if p.is_file() and not p.is_symlink()}
    return {"containers": cts, "vms": vms, "pg_databases": dbs.strip(), "host_files": files}


def test_full_drill_passes_writes_report_and_leaves_production_untouched(lab, fresh_repos, tmp_path):
    run_json(lab["config"], "backup", expect=(0, 3))
    before = production_view(lab)
    result = restic_orch(lab["config"], "--json", "drill", "--scenario", "full", "--report-dir", str(tmp_path))
    assert result.returncode == 0, result.stdout + result.stderr
    summary = json.loads(result.stdout)
    md, js = (Path(p) for p in summary["extra"]["report_files"])
    report = json.loads(js.read_text())
    assert report["passed"] and report["rto"]["ok"] and report["rpo"]["ok"]
    kinds = {s["component"].split(":")[0] for s in report["steps"]}
    assert kinds == {"ct", "vm", "db", "tfstate", "vault", "files"}
    assert all(s["result"] == "ok" for s in report["steps"])
    # the VM came back into a spare VMID of the drill's range, its config checked key by key, then destroyed
    vm = next(s for s in report["steps"] if s["component"] == "vm:200")
    assert vm["checks"]["config"] == "ok" and vm["checks"]["sha256"] is True, vm
    assert any(s["checks"].get("row_counts") == "ok" for s in report["steps"])
    assert any(s["checks"].get("config") == "ok" for s in report["steps"])
    text = md.read_text()
    assert "# Restore drill" in text and "Measured RTO" in text and "## Problems met" in text
    # spare guests destroyed, drill_ databases dropped, the host's own files not touched
    assert production_view(lab) == before and before["host_files"] and before["vms"]
    assert json.loads((fresh_repos.state_dir / "last-drill.json").read_text())["status"] == "success"
    assert "restic_orch_last_drill_passed 1" in (fresh_repos.monitoring.textfile_dir / "restic_orch.prom").read_text()


def test_drill_on_a_tampered_archive_fails_and_names_the_check(lab, fresh_repos, tmp_path):
    run_json(lab["config"], "backup", "--only", "proxmox")
    local = open_all(fresh_repos)["local"]
    snap = local.snapshots(tags=["restic-orch"])[-1]
    target = tmp_path / "restored"
    local.restore(snap.id, target)
    day = target / snap.paths[0].lstrip("/")
    manifest = json.loads((day / "manifest.json").read_text())
    victim = next(a for a in manifest["artifacts"] if a["component"] == "ct:103")
    archive = day / victim["path"]
    data = bytearray(archive.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped byte in the middle of the tar
    archive.write_bytes(bytes(data))
    tampered = local.backup([day], tags=["restic-orch", "status:complete", "kind:proxmox"], host=fresh_repos.host)
    result = restic_orch(lab["config"], "--json", "drill", "--scenario", "container", "--snapshot",
                         tampered.snapshot_id[:8], "--report-dir", str(tmp_path / "reports"))
    assert result.returncode == 1, result.stdout + result.stderr
    report = json.loads(Path(json.loads(result.stdout)["extra"]["report_files"][1]).read_text())
    assert not report["passed"]
    failed = [s for s in report["steps"] if s["result"] != "ok"]
    assert [s["component"] for s in failed] == ["ct:103"]
    assert "sha256" in failed[0]["message"] and "differs from the manifest" in failed[0]["message"]
    assert any(p["step"] == "ct:103" for p in report["problems"])
    md = Path(json.loads(result.stdout)["extra"]["report_files"][0]).read_text()
    assert "FAILED" in md and "ct:103" in md


def test_drill_never_touches_a_guest_in_its_vmid_range(lab, fresh_repos, tmp_path):
    """A user's container sits at the first VMID of drill.vmid_range: the drill picks another and leaves it."""
    from restic_orch.lab.pve import add_container

    root = Path(lab["state"]["services"]["pve"]["root"])
    node = pve(lab).nodes("pve1")
    if not any(int(c["vmid"]) == 9900 for c in node.lxc.get()):
        add_container(root, {"vmid": 9900, "hostname": "users-own", "profile": "proxy"}, size_bytes=64 * 1024)
    try:
        before = node.lxc(9900).config.get()["digest"], node.lxc(9900).status.current.get()["status"]
        run_json(lab["config"], "backup", "--only", "proxmox")
        result = restic_orch(lab["config"], "--json", "drill", "--scenario", "container", "--report-dir",
                             str(tmp_path))
        assert result.returncode == 0, result.stdout + result.stderr
        report = json.loads(Path(json.loads(result.stdout)["extra"]["report_files"][1]).read_text())
        assert report["passed"], report["problems"]
        restored_to = {s["restored_to"] for s in report["steps"] if s["component"].startswith("ct:")}
        assert "CT 9900" not in restored_to and restored_to
        assert all(c["result"].startswith("destroyed CT 99") for c in report["cleanup"])
        assert (node.lxc(9900).config.get()["digest"], node.lxc(9900).status.current.get()["status"]) == before
        assert not any(int(c["vmid"]) in range(9901, 10000) for c in node.lxc.get())
    finally:
        # the lab is shared by the session: the user's container must not reach the other tests' backups
        shutil.rmtree(root / "lxc" / "9900", ignore_errors=True)


def test_drills_alternate_local_and_offsite(lab, fresh_repos, tmp_path):
    """Without --from, each drill restores from the repository the previous one did not use: the weekly
    drill times the host-lost path (offsite) every other week."""
    run_json(lab["config"], "backup", "--only", "terraform")
    used = []
    for _ in range(3):
        summary = run_json(lab["config"], "drill", "--scenario", "tfstate", "--report-dir", str(tmp_path))
        used.append(summary["extra"]["repository"])
        assert all(s["result"] == "ok" for s in summary["extra"]["steps"]) and summary["extra"]["steps"]
    assert used == ["local", "offsite", "local"]
    forced = run_json(lab["config"], "drill", "--scenario", "tfstate", "--from", "local", "--report-dir",
                      str(tmp_path))
    assert forced["extra"]["repository"] == "local"
