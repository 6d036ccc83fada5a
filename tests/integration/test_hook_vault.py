"""The Ansible Vault hook on a tree really encrypted by ansible-vault."""

from __future__ import annotations

import logging
import os
import shutil
import stat
from pathlib import Path

import pytest

from restic_orch.config import Config
from restic_orch.hooks.ansible_vault import AnsibleVaultHook, vault_header
from restic_orch.hooks.base import DumpContext, RestoreOptions, sha256_file
from restic_orch.lab import vault
from tests.hookhelp import one_source_config


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    base = tmp_path_factory.mktemp("vaultlab")
    info = vault.make_vault_tree(base)
    os.chmod(info["encrypted"][1], 0o640)  # a mode that is not the default, to see it kept
    return info


def _config(tmp_path: Path, source: dict | None) -> Config:
    return one_source_config(tmp_path, "ansible_vault", source)


def _dump(tmp_path: Path, tree: dict, **extra):
    globs = [f"{tree['root']}/{g}" for g in tree["globs"]]
    # overlapping globs: every file must still be staged once
    source = {"paths": [*globs, f"{tree['ansible_dir']}/group_vars/**/*.yml", f"{tree['root']}/nothing/*.vault"],
              "password_file": tree["password_file"], **extra}
    config = _config(tmp_path, source)
    hooks = AnsibleVaultHook.from_config(config)
    assert len(hooks) == 1
    day = tmp_path / "staging" / "2024-05-01"
    day.mkdir(parents=True)
    ctx = DumpContext(config=config, day_dir=day, run_id="t", log=logging.getLogger("test"))
    return hooks[0], ctx, hooks[0].dump(ctx)


def _fetcher(ctx: DumpContext, artifact):
    def fetch(dest: Path) -> Path:
        shutil.copyfile(ctx.day_dir / artifact.path, dest)
        return dest
    return fetch


def test_from_config(tmp_path):
    assert AnsibleVaultHook.from_config(_config(tmp_path, None)) == []
    assert AnsibleVaultHook.from_config(_config(tmp_path, {"paths": ["/x/*"], "enabled": False})) == []


def test_dump_stages_encrypted_and_flags_plaintext(tmp_path, tree):
    _, ctx, outcome = _dump(tmp_path, tree)
    assert outcome.failures == []
    by_path = {a.meta["original_path"]: a for a in outcome.artifacts}
    main_yml = f"{tree['ansible_dir']}/group_vars/all/main.yml"
    assert sorted(by_path) == sorted([*tree["encrypted"], *tree["plaintext"], main_yml])
    assert len(outcome.artifacts) == len(by_path)  # no duplicates despite the overlapping globs
    assert [a.meta["original_path"] for a in outcome.artifacts] == sorted(by_path)
    for original in tree["encrypted"]:
        artifact = by_path[original]
        staged = ctx.day_dir / artifact.path
        assert artifact.path == "ansible-vault/" + original.lstrip("/")
        assert staged.read_bytes() == Path(original).read_bytes()
        assert artifact.component == f"vault:{original}" and artifact.kind == "ansible-vault"
        assert artifact.meta["encrypted"] is True and artifact.meta["vault_format"] == "1.1;AES256"
        mode = stat.S_IMODE(os.stat(original).st_mode)
        assert artifact.meta["mode"] == f"{mode:04o}" and stat.S_IMODE(staged.stat().st_mode) == mode
        assert artifact.sha256 == sha256_file(Path(original))
    assert by_path[tree["encrypted"][1]].meta["mode"] == "0640"
    messages = [n.message for n in outcome.notices]
    for original in [*tree["plaintext"], main_yml]:
        assert by_path[original].meta["encrypted"] is False
        assert (ctx.day_dir / by_path[original].path).read_bytes() == Path(original).read_bytes()
        assert any(original in m and "not encrypted" in m for m in messages)
    assert not any(e in m for e in tree["encrypted"] for m in messages)
    assert any("nothing/*.vault" in m and "matched no file" in m for m in messages)
    # the password file is not in the backup unless asked for
    assert tree["password_file"] not in by_path


def test_dump_with_password_file(tmp_path, tree):
    _, ctx, outcome = _dump(tmp_path, tree, include_password_file=True)
    artifact = next(a for a in outcome.artifacts if a.meta["original_path"] == tree["password_file"])
    assert artifact.meta["is_password_file"] is True and artifact.meta["mode"] == "0600"
    assert (ctx.day_dir / artifact.path).read_bytes() == Path(tree["password_file"]).read_bytes()
    assert any(tree["password_file"] in n.message and "restic" in n.message for n in outcome.notices)
    # the password file is not itself reported as a plaintext vault file
    assert not any(tree["password_file"] in n.message and "not encrypted" in n.message for n in outcome.notices)


def test_vault_header_with_vault_id():
    assert vault_header(b"$ANSIBLE_VAULT;1.2;AES256;prod\n") == {
        "encrypted": True, "vault_format": "1.2;AES256", "vault_id": "prod"}
    assert vault_header(b"$ANSIBLE_VAULT;1.1;AES256\r\n") == {"encrypted": True, "vault_format": "1.1;AES256"}
    assert vault_header(b"---\n") == {"encrypted": False}


def test_restore_keeps_previous_file(tmp_path, tree):
    hook, ctx, outcome = _dump(tmp_path, tree)
    original = Path(tree["encrypted"][1])
    artifact = next(a for a in outcome.artifacts if a.meta["original_path"] == str(original))
    good = original.read_bytes()
    try:
        # identical file in place: nothing to do, nothing kept aside
        result = hook.restore(artifact, _fetcher(ctx, artifact), RestoreOptions())
        assert result.ok and "nothing to do" in result.message
        assert not original.with_name(original.name + ".bak").exists()

        original.write_bytes(b"$ANSIBLE_VAULT;1.1;AES256\n3131\n")  # somebody re-encrypted it since
        os.chmod(original, 0o600)
        result = hook.restore(artifact, _fetcher(ctx, artifact), RestoreOptions())
        assert result.ok, result.message
        bak = original.with_name(original.name + ".bak")
        assert bak.read_bytes() == b"$ANSIBLE_VAULT;1.1;AES256\n3131\n" and str(bak) in result.message
        assert original.read_bytes() == good and stat.S_IMODE(original.stat().st_mode) == 0o640
        assert result.checks["sha256"] is True and result.restored_to == str(original)

        # a second restore over another change: .bak stays as it was, the new one is .bak.1
        original.write_bytes(b"changed again\n")
        result = hook.restore(artifact, _fetcher(ctx, artifact), RestoreOptions())
        assert result.ok
        assert bak.read_bytes() == b"$ANSIBLE_VAULT;1.1;AES256\n3131\n"
        assert original.with_name(original.name + ".bak.1").read_bytes() == b"changed again\n"
        assert original.read_bytes() == good

        # a lost file comes back too
        original.unlink()
        result = hook.restore(artifact, _fetcher(ctx, artifact), RestoreOptions())
        assert result.ok and original.read_bytes() == good
        assert stat.S_IMODE(original.stat().st_mode) == 0o640
    finally:
        original.write_bytes(good)
        os.chmod(original, 0o640)
        for leftover in original.parent.glob(original.name + ".bak*"):
            leftover.unlink()
    assert sorted(p.name for p in original.parent.iterdir()) == [original.name]  # no temp file left


def test_restore_into_target_dir(tmp_path, tree):
    hook, ctx, outcome = _dump(tmp_path, tree, include_password_file=True)
    target = tmp_path / "drill"
    before = {p: Path(p).read_bytes() for p in tree["files"]}
    for artifact in outcome.artifacts:
        original = artifact.meta["original_path"]
        result = hook.restore(artifact, _fetcher(ctx, artifact), RestoreOptions(target_dir=target))
        assert result.ok, result.message
        restored = target / original.lstrip("/")
        assert result.restored_to == str(restored)
        assert restored.read_bytes() == Path(original).read_bytes()
        assert stat.S_IMODE(restored.stat().st_mode) == int(artifact.meta["mode"], 8)
    assert {p: Path(p).read_bytes() for p in tree["files"]} == before
    assert not list(target.rglob("*.bak*"))
