"""Restore selection and ordering, and --set overrides: pure logic on a manifest."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from restic_orch import restic
from restic_orch.bootstrap import OverrideError, apply_override, summary_lines
from restic_orch.browse import Located, SelectionError
from restic_orch.config import Config
from restic_orch.hooks.base import RestoreOptions
from restic_orch.restore import plan_steps
from restic_orch.staging import Manifest


def art(component: str, kind: str, source: str, **meta) -> dict:
    return {"component": component, "kind": kind, "source": source, "path": f"{kind}/{component}",
            "size": 1, "sha256": "0" * 64, "meta": meta}


MANIFEST = Manifest.from_json({"artifacts": [
    art("ct:101", "proxmox", "proxmox", vmid=101, name="proxy"),
    art("ct:102", "proxmox", "proxmox", vmid=102, name="database"),
    art("db:pg/@globals", "postgres", "pg", globals=True),
    art("db:pg/appdb", "postgres", "pg", database="appdb"),
    art("db:mariadb/blog", "mysql", "mariadb", database="blog"),
    art("tfstate:infra/terraform.tfstate", "terraform", "terraform_state"),
    art("vault:/srv/ansible/vault.yml", "ansible-vault", "ansible_vault"),
]})


@pytest.fixture
def located():
    snap = restic.Snapshot("a" * 64, "aaaaaaaa", datetime.now(UTC), "pve1", ["/staging/2026-11-25"])
    return Located(repo=None, snapshot=snap, root="/staging/2026-11-25", manifest=MANIFEST)  # type: ignore[arg-type]


@pytest.fixture
def config(tmp_path):
    return Config.model_validate({
        "repositories": {"local": {"url": "/r", "password_file": "/pw", "retention": {"keep_last": 1}}},
        "restore": {"redeploy": [["terraform", "apply"], ["ansible-playbook", "site.yml"]]},
    })


def comps(steps):
    return [s.component for s in steps]


def test_everything_in_the_story_order(located, config):
    steps = plan_steps(located, [], RestoreOptions(), config)
    order = comps(steps)
    assert order[:2] == ["ct:101", "ct:102"]
    assert order[2:4] == ["redeploy", "redeploy"]
    assert order.index("db:pg/@globals") < order.index("db:pg/appdb")
    assert order[-2:] == ["tfstate:infra/terraform.tfstate", "vault:/srv/ansible/vault.yml"]
    assert all(s.destructive for s in steps)


def test_selectors(located, config):
    assert comps(plan_steps(located, ["ct:102"], RestoreOptions(), config, skip_redeploy=True)) == ["ct:102"]
    assert comps(plan_steps(located, ["db:pg"], RestoreOptions(), config)) == ["db:pg/@globals", "db:pg/appdb"]
    assert len(plan_steps(located, ["db:all"], RestoreOptions(), config)) == 3
    assert comps(plan_steps(located, ["tfstate", "vault"], RestoreOptions(), config)) == [
        "tfstate:infra/terraform.tfstate", "vault:/srv/ansible/vault.yml"]


def test_beside_or_elsewhere_is_not_destructive(located, config):
    steps = plan_steps(located, ["ct:101", "db:pg/appdb", "vault"], RestoreOptions(
        params={"as_vmid": 9101, "target_db": "appdb_restored"}, target_dir=Path("/tmp/x")), config, skip_redeploy=True)
    assert [s.destructive for s in steps] == [False, False, False]


def test_one_file_out_of_a_container(located, config):
    steps = plan_steps(located, ["ct:102:/etc/nginx/nginx.conf"], RestoreOptions(target_dir=Path("/tmp/o")), config)
    assert comps(steps) == ["ct:102:/etc/nginx/nginx.conf"] and steps[0].inner_path == "/etc/nginx/nginx.conf"
    assert not steps[0].destructive
    with pytest.raises(SelectionError, match="absolute"):
        plan_steps(located, ["ct:102:etc/x"], RestoreOptions(), config)


def test_unknown_component_names_what_exists(located, config):
    with pytest.raises(SelectionError) as err:
        plan_steps(located, ["ct:999"], RestoreOptions(), config)
    assert "ct:999" in str(err.value) and "ct:101" in str(err.value)
    with pytest.raises(SelectionError):
        plan_steps(located, ["db:nosuch/x"], RestoreOptions(), config)


def test_overrides():
    data = {"sources": {"proxmox": {"host": "old"}, "postgres": [{"name": "pg", "port": 5432}]}}
    apply_override(data, "sources.proxmox.host=10.0.0.5")
    apply_override(data, "sources.postgres[0].port=5433")
    assert data["sources"]["proxmox"]["host"] == "10.0.0.5"
    assert data["sources"]["postgres"][0]["port"] == 5433
    with pytest.raises(OverrideError, match="KEY=VALUE"):
        apply_override(data, "sources.proxmox.host")
    with pytest.raises(OverrideError, match="index 3"):
        apply_override(data, "sources.postgres[3].port=1")


def test_bootstrap_summary_flags_every_missing_secret_file(tmp_path):
    """On a new host the stored configuration names files that are not there yet: each is flagged with its --set."""
    present = tmp_path / "tf.env"
    present.write_text("AWS_ACCESS_KEY_ID=x\n")
    config = Config.model_validate({
        "repositories": {"local": {"url": "/r", "password_file": "/pw", "retention": {"keep_last": 1}}},
        "sources": {
            "postgres": [{"name": "pg", "host": "db", "user": "backup", "password_file": str(tmp_path / "pg.pass")}],
            "terraform_state": {"bucket": "tfstate", "endpoint": "https://s3.example.invalid", "env_file": str(present),
                                "restore_env_file": str(tmp_path / "tf-writer.env")},
        },
    })
    lines = "\n".join(summary_lines(config))
    assert "MISSING password file: --set sources.postgres[0].password_file=" in lines
    assert "MISSING key file: --set sources.terraform_state.restore_env_file=" in lines
    assert "sources.terraform_state.env_file=" not in lines  # that one exists


def test_secrets_dir_takes_each_escrowed_secret_by_its_sheet_name(tmp_path):
    """--secrets-dir /root: a secret whose escrow-sheet file is there is used; one that is not keeps its path;
    the repository's own secrets come from --password-file/--s3-env-file, and --set still wins."""
    from restic_orch.bootstrap import escrowed_secrets

    stored = Config.model_validate({
        "repositories": {"offsite": {"url": "/r", "password_file": "/etc/ro/secrets/restic-offsite.pass",
                                     "retention": {"keep_last": 1}}},
        "sources": {
            "postgres": [{"name": "pg", "host": "db", "user": "backup", "password_file": "/etc/ro/secrets/pg.pass"}],
            "terraform_state": {"bucket": "tfstate", "endpoint": "https://s3.example.invalid",
                                "env_file": "/etc/ro/secrets/tf.env", "restore_env_file": "/etc/ro/secrets/tfw.env"},
        },
    })
    (tmp_path / "pg.pass").write_text("x\n")
    (tmp_path / "tfw.env").write_text("AWS_ACCESS_KEY_ID=x\n")
    (tmp_path / "restic-offsite.pass").write_text("not taken: the repository's password is --password-file\n")
    found = escrowed_secrets(stored, tmp_path)
    assert found == [f"sources.postgres[0].password_file={tmp_path / 'pg.pass'}",
                     f"sources.terraform_state.restore_env_file={tmp_path / 'tfw.env'}"]
    with pytest.raises(OverrideError, match="not a directory"):
        escrowed_secrets(stored, tmp_path / "nope")
