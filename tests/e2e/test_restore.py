"""The restore issue's acceptance tests, on the whole lab: real restic, moto S3, PostgreSQL, MariaDB, the fake PVE.

One backup for the module (`backed_up`); each test destroys or changes something, restores it through the real
CLI (or scripts/restore.sh), and compares what is really there — rootfs trees, container configs, table rows,
S3 object bytes, vault file bytes and modes — with the fingerprints taken just before that backup. Every test
puts back what it destroyed, so the next one finds the lab as the snapshot holds it.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pexpect
import pytest
import yaml

from restic_orch.lab.mariadb import mariadb_sql
from restic_orch.lab.postgres import psql
from restic_orch.lab.s3 import s3_client
from tests.clihelp import CLI, restic_orch, run_json
from tests.e2e import restore_helpers as rh

pytestmark = [pytest.mark.e2e,
              pytest.mark.filterwarnings("ignore::urllib3.exceptions.InsecureRequestWarning")]  # the fake PVE

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "restore.sh"
COMPONENTS_SEEDED = 28  # 4 containers, 1 VM, 7 databases (+globals/users), 4 states, 4 vault files, 8 host files


@pytest.fixture(scope="module")
def backed_up(lab):
    """One backup of the whole lab, and the fingerprints of everything just before it."""
    config = rh.clean_repos(lab)
    baseline = rh.whole_lab(lab)
    summary = run_json(lab["config"], "backup")
    assert summary["status"] == "success", summary["failures"]
    assert summary["snapshots"].get("local") and summary["snapshots"].get("offsite"), summary
    return {"config": config, "baseline": baseline, "summary": summary}


def last_restore(config) -> dict:
    return json.loads((config.state_dir / "last-restore.json").read_text())


def restore_json(lab, *args: str, expect: int) -> dict:
    result = restic_orch(lab["config"], "--json", "restore", *args, input="")
    assert result.returncode == expect, f"exit {result.returncode}\n{result.stdout}\n{result.stderr}"
    return json.loads(result.stdout)


def assert_container_as_backed_up(lab, base, vmid: int, *, same_volume: bool) -> None:
    before_conf, before_tree = base["containers"][vmid]
    after_conf = rh.ct_config(lab, vmid)
    if same_volume:
        assert after_conf == before_conf
    else:  # restored over an existing CT: PVE allocates a new subvol, everything else must be equal
        assert rh.comparable_config(after_conf) == rh.comparable_config(before_conf)
    diff = rh.tree_diff(before_tree, rh.rootfs_fingerprint(lab, vmid))
    assert not diff, f"CT {vmid} rootfs differs from the backed-up one:\n" + "\n".join(diff[:40])
    assert rh.running(lab, vmid), f"CT {vmid} was running when backed up and is not after the restore"


def new_tasks(before: list, after: list) -> list[tuple[str, str]]:
    """(type, vmid) of the PVE tasks that appeared between two task lists."""
    return sorted((t[1], t[0].split(":")[6]) for t in set(after) - set(before))


# ---------------------------------------------------------------- 1. disaster
def test_disaster_everything_lost_comes_back_from_offsite(lab, backed_up):
    config, base = backed_up["config"], backed_up["baseline"]
    vault_file = lab["state"]["vault"]["encrypted"][0]
    tf_key = "env:/prod/infra/terraform.tfstate"
    assert tf_key in base["tfstate"]
    repo_dir = Path(config.repositories.local.url)
    repo_aside = repo_dir.with_name(repo_dir.name + ".lost-in-disaster")
    s3 = s3_client(rh.services(lab)["s3"])

    rh.destroy_container(lab, 102)
    psql(rh.pg_info(lab), "DROP DATABASE appdb WITH (FORCE);")
    mariadb_sql(rh.my_info(lab), "DROP DATABASE shop;")
    s3.delete_object(Bucket=rh.tf_bucket(lab), Key=tf_key)
    os.unlink(vault_file)
    os.rename(repo_dir, repo_aside)  # the local repository is gone (kept aside for the later tests)
    try:
        assert "appdb" not in rh.pg_databases(lab) and "shop" not in rh.my_databases(lab)
        assert tf_key not in rh.tf_objects(lab) and not os.path.exists(vault_file)

        # disaster day brings Terraform's own key for the state bucket (the host holds a read-only one)
        writer = rh.services(lab)["s3"]["tfstate_writer_env_file"]
        data = yaml.safe_load(lab["config"].read_text())
        data["sources"]["terraform_state"]["restore_env_file"] = writer
        with_writer = lab["dir"] / "config-disaster-day.yml"
        with_writer.write_text(yaml.safe_dump(data, sort_keys=False))
        os.chmod(with_writer, 0o600)
        result = subprocess.run([str(SCRIPT), "--config", str(with_writer), "--yes", "--from", "offsite"],
                                capture_output=True, text=True, timeout=600, stdin=subprocess.DEVNULL)
        out = result.stdout + result.stderr
        summary = last_restore(config)
        assert summary["extra"]["repository"] == "offsite", out
        # what still existed is refused (no --force), what was lost is back: a partial success, exit 3
        refused = {f["component"]: f["message"] for f in summary["failures"]}
        assert set(refused) == {"ct:101", "ct:103", "ct:104", "vm:200", "db:pg/inventory", "db:mariadb/blog"}, out
        assert all("refusing" in message for message in refused.values()), refused
        assert result.returncode == 3, out
        for component in ("ct:102", "db:pg/appdb", "db:mariadb/shop", f"tfstate:{tf_key}", f"vault:{vault_file}",
                          "db:pg/@globals", "db:mariadb/@users"):
            assert component in summary["components"], (component, out)

        # container 102: same config, same tree, byte for byte; the others untouched
        assert rh.existing_vmids(lab) == set(rh.VMIDS)
        assert_container_as_backed_up(lab, base, 102, same_volume=True)
        for vmid in (101, 103, 104):
            assert rh.ct_config(lab, vmid) == base["containers"][vmid][0]
            assert not rh.tree_diff(base["containers"][vmid][1], rh.rootfs_fingerprint(lab, vmid)), vmid
        # every table's rows, the dropped databases and the kept ones
        assert rh.databases_snapshot(lab) == base["databases"]
        # the state object's bytes (and no other object appeared or changed in the bucket)
        assert rh.tf_objects(lab) == base["tfstate"]
        # the vault file's bytes and mode, and nothing kept aside next to the identical ones
        assert rh.vault_files(lab) == base["vault"]
        assert not list(Path(lab["state"]["vault"]["root"]).rglob("*.bak*"))
    finally:
        if repo_dir.exists():  # whatever the restore may have created in its place
            shutil.rmtree(repo_dir)
        os.rename(repo_aside, repo_dir)
        if 102 not in rh.existing_vmids(lab):
            rh.repair(lab, "ct:102")


# ---------------------------------------------------------------- 2. partial restore (VI3)
def test_restore_one_container_only_leaves_everything_else_alone(lab, backed_up):
    base = backed_up["baseline"]
    root = rh.pve.rootfs_dir(rh.pve_root(lab), 101)
    others = rh.containers_snapshot(lab, (102, 103, 104))
    databases, states, vaults = rh.databases_snapshot(lab), rh.tf_objects(lab), rh.vault_files(lab)
    tasks = rh.task_list(lab)
    # someone broke CT 101: a changed file, a lost file, a stray file, a changed mode
    (root / "etc/hostname").write_text("tampered\n")
    (root / "etc/nginx/nginx.conf").unlink()
    (root / "etc/stray.conf").write_text("not in the backup\n")
    os.chmod(root / "etc/hosts", 0o600)
    assert rh.tree_diff(base["containers"][101][1], rh.rootfs_fingerprint(lab, 101))

    summary = restore_json(lab, "--only", "ct:101", "--force", "--yes", expect=0)
    assert [(s["component"], s["result"]) for s in summary["extra"]["steps"]] == [("ct:101", "ok")]

    assert_container_as_backed_up(lab, base, 101, same_volume=False)
    assert rh.containers_snapshot(lab, (102, 103, 104)) == others
    assert rh.databases_snapshot(lab) == databases
    assert rh.tf_objects(lab) == states and rh.vault_files(lab) == vaults
    assert {vmid for _, vmid in new_tasks(tasks, rh.task_list(lab))} == {"101"}


# ---------------------------------------------------------------- 3. refusals and errors
def test_existing_things_are_refused_without_force(lab, backed_up):
    s3 = s3_client(rh.services(lab)["s3"])
    bucket, key = rh.tf_bucket(lab), "infra/terraform.tfstate"
    original = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
    newer = json.loads(original)
    newer["serial"] += 1  # someone ran terraform apply after the backup
    s3.put_object(Bucket=bucket, Key=key, Body=json.dumps(newer, indent=2).encode())
    try:
        before, tasks, configs = rh.whole_lab(lab), rh.task_list(lab), rh.api_configs(lab)
        summary = restore_json(lab, "--only", f"ct:101,db:pg/inventory,db:mariadb/blog,tfstate:{key}", "--yes",
                               expect=1)
        steps = {s["component"]: s for s in summary["extra"]["steps"]}
        assert set(steps) == {"ct:101", "db:pg/inventory", "db:mariadb/blog", f"tfstate:{key}"}
        for component, step in steps.items():
            assert step["result"] == "failed" and "refusing" in step["message"], (component, step)
            assert "force" in step["message"], step
        assert "newer" in steps[f"tfstate:{key}"]["message"]
        assert summary["status"] == "failure" and summary["components"] == []
        # nothing changed: not the container (not even stopped), not the databases, not the bucket
        assert rh.whole_lab(lab) == before
        assert rh.api_configs(lab) == configs
        assert rh.task_list(lab) == tasks
    finally:
        for stray in set(rh.tf_objects(lab)) - set(backed_up["baseline"]["tfstate"]):
            s3.delete_object(Bucket=bucket, Key=stray)
        s3.put_object(Bucket=bucket, Key=key, Body=original)


@pytest.fixture
def lost_vault_file(lab):
    """One vault file gone (moved aside): a restore that wrongly ran would bring it back."""
    path = Path(lab["state"]["vault"]["encrypted"][1])
    aside = path.with_name(".aside-" + path.name)
    os.rename(path, aside)
    yield path
    os.replace(aside, path)


def test_bad_snapshot_or_unknown_component_exits_2_and_touches_nothing(lab, backed_up, lost_vault_file):
    before, tasks = _lab_without_vault(lab), rh.task_list(lab)
    cases = [
        (("--snapshot", "deadbeef", "--only", "vault", "--yes"), "no snapshot 'deadbeef'"),
        (("--snapshot", "1999-01-01", "--only", "vault", "--yes"), "no snapshot of 1999-01-01"),
        (("--only", "vault,ct:999", "--yes"), "unknown component 'ct:999'"),
        (("--only", "vault,db:pg/nosuchdb", "--yes"), "unknown component 'db:pg/nosuchdb'"),
        (("--only", "vault,frobnicate", "--yes"), "unknown selector 'frobnicate'"),
    ]
    for args, message in cases:
        result = restic_orch(lab["config"], "restore", *args, input="")
        assert result.returncode == 2, (args, result.stdout, result.stderr)
        assert message in result.stderr, (args, result.stderr)
        if "unknown component" in message:
            assert "ct:101" in result.stderr  # it says what the snapshot holds
        assert not lost_vault_file.exists(), f"{args}: the vault step ran although the command was refused"
    assert _lab_without_vault(lab) == before
    assert rh.task_list(lab) == tasks


def _lab_without_vault(lab) -> dict:
    return {"containers": rh.containers_snapshot(lab), "databases": rh.databases_snapshot(lab),
            "tfstate": rh.tf_objects(lab), "vmids": rh.existing_vmids(lab)}


def test_destructive_restore_without_yes_and_without_tty_is_refused(lab, backed_up, lost_vault_file):
    before, tasks = _lab_without_vault(lab), rh.task_list(lab)
    for only in ("vault", "ct:104,vault"):
        result = restic_orch(lab["config"], "restore", "--only", only, input="")  # stdin: a pipe, not a tty
        assert result.returncode == 2, (only, result.stdout, result.stderr)
        assert "refusing to change production without a terminal" in result.stderr
        assert "--yes" in result.stderr and str(lost_vault_file) in result.stderr
        assert not lost_vault_file.exists()
    assert _lab_without_vault(lab) == before
    assert rh.task_list(lab) == tasks


def test_dry_run_prints_the_plan_and_changes_nothing(lab, backed_up, lost_vault_file):
    before, tasks = _lab_without_vault(lab), rh.task_list(lab)
    result = restic_orch(lab["config"], "restore", "--dry-run", input="")
    assert result.returncode == 0, result.stderr
    plan = [line for line in result.stdout.splitlines() if re.match(r"^\d+\. ", line)]
    assert len(plan) == COMPONENTS_SEEDED, result.stdout
    text = "\n".join(plan)
    for vmid in rh.VMIDS:
        assert f"restore container {vmid} " in text
    assert "restore VM 200 (haos) as VM 200 [changes production]" in text
    for db in ("pg/appdb", "pg/inventory", "mariadb/blog", "mariadb/shop"):
        assert f"{db} into database {db.split('/')[1]}" in text
    for key in backed_up["baseline"]["tfstate"]:
        assert f"tfstate:{key}" in text
    assert f"vault:{lost_vault_file}" in text
    # host files go to the review directory unless --force: the only steps that leave production alone
    assert all(line.endswith("[changes production]") for line in plan if "review directory" not in line)
    assert sum("review directory" in line for line in plan) == 8
    data = json.loads(restic_orch(lab["config"], "--json", "restore", "--dry-run", "--only", "ct:102,vault",
                                  input="", check=True).stdout)
    assert data["dry_run"] is True
    assert [s["component"] for s in data["plan"]][0] == "ct:102" and len(data["plan"]) == 5
    assert not lost_vault_file.exists()
    assert _lab_without_vault(lab) == before
    assert rh.task_list(lab) == tasks


def test_show_json_is_the_snapshots_manifest(lab, backed_up):
    shown = run_json(lab["config"], "show", "latest")
    assert shown["run_id"] == backed_up["summary"]["run_id"] and shown["status"] == "complete"
    components = {a["component"] for a in shown["artifacts"]}
    assert {f"ct:{vmid}" for vmid in rh.VMIDS} <= components and "db:pg/appdb" in components
    assert all(len(a["sha256"]) == 64 for a in shown["artifacts"])


# ---------------------------------------------------------------- 4. interactive
def test_interactive_restore_of_one_container(lab, backed_up):
    base = backed_up["baseline"]
    rh.destroy_container(lab, 104)
    try:
        others = rh.containers_snapshot(lab, (101, 102, 103))
        databases, states, vaults = rh.databases_snapshot(lab), rh.tf_objects(lab), rh.vault_files(lab)
        tasks = rh.task_list(lab)
        child = pexpect.spawn(CLI[0], CLI[1:] + ["--config", str(lab["config"]), "restore"], encoding="utf-8",
                              timeout=180, dimensions=(60, 200))
        transcript: list[str] = []
        try:
            child.expect(r"Snapshot \[\d+\]: ")
            transcript.append(child.before + child.after)
            listed = re.findall(r"^\s*(\d+)\) ", child.before, re.MULTILINE)
            assert listed, child.before
            child.sendline(str(max(int(n) for n in listed)))  # newest last
            child.expect(r"Components to restore.*: ")
            transcript.append(child.before + child.after)
            numbers = dict((c, n) for n, c in re.findall(r"^\s*(\d+)\) (\S+)\s*$", child.before, re.MULTILINE))
            assert "ct:104" in numbers and "db:pg/appdb" in numbers, child.before
            child.sendline(numbers["ct:104"])
            child.expect(r"Proceed: (.*)\? \[y/N\]: ")
            transcript.append(child.before + child.after)
            plan = re.findall(r"^\s*\d+\. (.*)$", child.before, re.MULTILINE)
            assert "Plan:" in child.before
            assert len(plan) == 1 and "restore container 104" in plan[0], child.before
            assert "container 104" in child.match.group(1)
            child.sendline("y")
            child.expect(pexpect.EOF)
            transcript.append(child.before)
        finally:
            child.close()
        assert child.exitstatus == 0, "".join(transcript)
        assert_container_as_backed_up(lab, base, 104, same_volume=True)
        assert rh.containers_snapshot(lab, (101, 102, 103)) == others
        assert rh.databases_snapshot(lab) == databases
        assert rh.tf_objects(lab) == states and rh.vault_files(lab) == vaults
        assert {vmid for _, vmid in new_tasks(tasks, rh.task_list(lab))} == {"104"}
    finally:
        if 104 not in rh.existing_vmids(lab):
            rh.repair(lab, "ct:104")


# ---------------------------------------------------------------- 5. bootstrap without the configuration
def test_bootstrap_restore_without_configuration(lab, backed_up):
    config, base = backed_up["config"], backed_up["baseline"]
    rh.destroy_container(lab, 103)
    psql(rh.pg_info(lab), "DROP DATABASE appdb WITH (FORCE);")
    config_path = Path(lab["config"])
    aside = config_path.with_name(config_path.name + ".lost")
    os.rename(config_path, aside)
    try:
        others = rh.containers_snapshot(lab, (101, 102, 104))
        kept_dbs = {"inventory": rh.pg_fingerprint(lab, "inventory"), "blog": rh.my_fingerprint(lab, "blog"),
                    "shop": rh.my_fingerprint(lab, "shop")}
        states, vaults = rh.tf_objects(lab), rh.vault_files(lab)
        secrets = Path(lab["dir"]) / "secrets"
        env = {k: v for k, v in os.environ.items() if k != "RESTIC_ORCH_CONFIG"}
        env["RESTIC_ORCH_CONFIG"] = str(config_path)  # does not exist: nothing may be read from a file
        result = restic_orch(None, "restore", "--repo", config.repositories.offsite.url,
                             "--password-file", str(secrets / "restic-offsite"),
                             "--s3-env-file", str(secrets / "s3.env"),
                             "--only", "ct:103,db:pg/appdb", "--yes", env=env, input="")
        assert not config_path.exists()
        assert result.returncode == 0, result.stdout + result.stderr
        assert "Configuration stored in the snapshot" in result.stderr
        assert "proxmox: https://127.0.0.1:" in result.stderr
        assert_container_as_backed_up(lab, base, 103, same_volume=True)
        assert rh.pg_fingerprint(lab, "appdb") == base["databases"]["pg/appdb"]
        assert rh.containers_snapshot(lab, (101, 102, 104)) == others
        assert {"inventory": rh.pg_fingerprint(lab, "inventory"), "blog": rh.my_fingerprint(lab, "blog"),
                "shop": rh.my_fingerprint(lab, "shop")} == kept_dbs
        assert rh.tf_objects(lab) == states and rh.vault_files(lab) == vaults
    finally:
        os.rename(aside, config_path)
        missing = ([] if 103 in rh.existing_vmids(lab) else ["ct:103"]) + \
            ([] if "appdb" in rh.pg_databases(lab) else ["db:pg/appdb"])
        if missing:
            rh.repair(lab, *missing)


# ---------------------------------------------------------------- 6. one file out of a container backup
def test_one_file_out_of_a_container_backup(lab, backed_up, tmp_path):
    base = backed_up["baseline"]
    tree = base["containers"][102][1]
    wanted = "etc/postgresql/15/main/postgresql.conf"
    if wanted not in tree:
        wanted = max((p for p, e in tree.items() if p.startswith("etc/") and e[0] == "file"),
                     key=lambda p: (Path(rh.pve.rootfs_dir(rh.pve_root(lab), 102)) / p).stat().st_size)
    original = rh.pve.rootfs_dir(rh.pve_root(lab), 102) / wanted
    containers, configs, tasks = rh.containers_snapshot(lab), rh.api_configs(lab), rh.task_list(lab)
    target = tmp_path / "out"

    summary = restore_json(lab, "--only", f"ct:102:/{wanted}", "--target-dir", str(target), "--yes", expect=0)
    steps = summary["extra"]["steps"]
    assert [(s["component"], s["result"]) for s in steps] == [(f"ct:102:/{wanted}", "ok")], steps
    written = target / wanted
    assert written.read_bytes() == original.read_bytes()
    assert tree[wanted][4] == rh.tree_fingerprint(target)[wanted][4]  # the bytes as they were when backed up
    assert (written.stat().st_mode & 0o7777) == (original.stat().st_mode & 0o7777)
    assert sorted(str(p.relative_to(target)) for p in target.rglob("*") if not p.is_dir()) == [wanted]
    # no container was touched: not its files, not its config (digest), no PVE task at all
    assert rh.containers_snapshot(lab) == containers
    assert rh.api_configs(lab) == configs
    assert rh.task_list(lab) == tasks

    listing = restic_orch(lab["config"], "ls", "latest", "ct:102:/etc/", input="")
    assert listing.returncode == 0, listing.stderr
    rows = {line.split()[-1]: line.split() for line in listing.stdout.splitlines() if line.strip()}
    assert f"/{wanted}" in rows, listing.stdout
    assert int(rows[f"/{wanted}"][2]) == original.stat().st_size
    assert all(path.startswith("/etc") for path in rows), listing.stdout
    assert "/etc/hostname" in rows

