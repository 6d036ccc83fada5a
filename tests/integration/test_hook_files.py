"""The host's own files (`files` kind) on a real tree: dump, restore for review / elsewhere / in place, and a
backup and restore through the real CLI and restic."""

from __future__ import annotations

import json
import logging
import os
import stat
from datetime import UTC, datetime
from pathlib import Path

import pytest
import yaml

from restic_orch import restic
from restic_orch.browse import Located, SelectionError
from restic_orch.config import Config, ConfigError, load_config
from restic_orch.hooks import build_hooks, registry
from restic_orch.hooks import host_files as hf
from restic_orch.hooks.base import DumpContext, RestoreOptions, sha256_file
from restic_orch.restore import plan_steps
from restic_orch.staging import Manifest
from tests.clihelp import restic_orch
from tests.hookhelp import fetch_from, one_source_config

ROOT = os.geteuid() == 0
MTIME_NS = 1_700_000_000_123_456_789


@pytest.fixture
def host(tmp_path) -> Path:
    """A small PVE host tree: /etc/pve with a private key, guest configs and pmxcfs's links and status files."""
    root = tmp_path / "host"
    files = {
        "etc/pve/storage.cfg": ("dir: local\n\tpath /var/lib/vz\n", 0o640),
        "etc/pve/user.cfg": ("user:root@pam:1:0:::root@example.invalid:::\n", 0o640),
        "etc/pve/datacenter.cfg": ("keyboard: fr\n", 0o640),
        "etc/pve/firewall/cluster.fw": ("[OPTIONS]\nenable: 1\n", 0o640),
        "etc/pve/nodes/pve1/lxc/101.conf": ("arch: amd64\nhostname: proxy\n", 0o640),
        "etc/pve/priv/authkey.key": ("-----BEGIN PRIVATE KEY-----\nx\n", 0o600),
        "etc/pve/.members": ('{"nodename": "pve1"}\n', 0o440),
        "etc/pve/storage.cfg.dpkg-old": ("old\n", 0o644),
        "etc/network/interfaces": ("auto vmbr0\niface vmbr0 inet static\n\taddress 192.0.2.2/24\n", 0o644),
        "etc/hosts": ("127.0.0.1 localhost\n192.0.2.2 pve1.example.invalid pve1\n", 0o644),
        "outside/secret.txt": ("not to be followed\n", 0o600),
    }
    for rel, (text, mode) in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        os.chmod(path, mode)
        os.utime(path, ns=(MTIME_NS, MTIME_NS))
    (root / "etc/pve/local").symlink_to("nodes/pve1")  # a link to a directory: kept as a link, not walked
    (root / "etc/resolv.conf").symlink_to(root / "outside/secret.txt")  # outside the selection: not followed
    if ROOT:
        os.chown(root / "etc/pve/storage.cfg", 0, 33)  # root:www-data, as pmxcfs shows it
    return root


def config_for(tmp_path: Path, host: Path, **source) -> Config:
    return one_source_config(tmp_path, "files", {
        "paths": [f"{host}/etc/pve", f"{host}/etc/network/interfaces", f"{host}/etc/hosts",
                  f"{host}/etc/resol*.conf"],
        "exclude": ["*.dpkg-old", f"{host}/etc/pve/.*"], **source})


def dump(tmp_path: Path, config: Config):
    [hook] = build_hooks(config, {"files"})
    day = tmp_path / "staging" / "2026-01-02"
    day.mkdir(parents=True)
    ctx = DumpContext(config=config, day_dir=day, run_id="t", log=logging.getLogger("test"))
    return hook, ctx, hook.dump(ctx)


def by_path(outcome) -> dict:
    return {a.meta["original_path"]: a for a in outcome.artifacts}


def restore(hook, ctx, artifact, **options):
    return hook.restore(artifact, fetch_from(ctx.day_dir, artifact), RestoreOptions(**options))


# ---------------------------------------------------------------- configuration
def test_configuration(tmp_path, host):
    assert hf.HostFilesHook.from_config(one_source_config(tmp_path, "files", None)) == []
    off = one_source_config(tmp_path, "files", {"paths": ["/etc/hosts"], "enabled": False})
    assert hf.HostFilesHook.from_config(off) == []
    [hook] = hf.HostFilesHook.from_config(config_for(tmp_path, host))
    assert hook.review_dir == tmp_path / "state" / "review"
    elsewhere = config_for(tmp_path, host, review_dir=str(tmp_path / "r"))
    assert hf.HostFilesHook.from_config(elsewhere)[0].review_dir == tmp_path / "r"


@pytest.mark.parametrize(("source", "field", "words"), [
    ({"paths": ["etc/hosts"]}, "sources.files.paths", "absolute"),
    ({"paths": []}, "sources.files", "preset"),
    ({"preset": "pbs-host"}, "sources.files.preset", "pve-host"),
    ({"preset": "pve-host", "review_dir": "review"}, "sources.files.review_dir", "absolute"),
    ({"paths": ["/etc/hosts"], "excludes": ["x"]}, "sources.files.excludes", "unknown key"),
])
def test_bad_configuration_names_the_field(tmp_path, source, field, words):
    path = tmp_path / "config.yml"
    local = {"url": "/r", "password_file": "/pw", "retention": {"keep_last": 1}}
    path.write_text(yaml.safe_dump({"repositories": {"local": local}, "sources": {"files": source}}))
    with pytest.raises(ConfigError) as info:
        load_config(path, check_files=False)
    [problem] = info.value.problems
    assert problem.field == field and words in problem.message, problem


def test_the_pve_host_preset_lists_what_the_docs_promise():
    listed = {p for entry in hf.PRESETS["pve-host"] for p in entry}
    assert {"/etc/pve", "/etc/network/interfaces", "/etc/hosts", "/etc/vzdump.conf",
            "/etc/restic-orch/config.yml", "/etc/cron.d/restic-orch"} <= listed
    docs = (Path(__file__).resolve().parents[2] / "docs" / "host-files.md").read_text()
    assert all(f"`{p}`" in docs for p in listed), listed


# ---------------------------------------------------------------- dump
def test_dump_keeps_each_file_with_its_metadata(tmp_path, host):
    _, ctx, outcome = dump(tmp_path, config_for(tmp_path, host))
    assert outcome.failures == [] and outcome.notices == []
    found = by_path(outcome)
    etc = f"{host}/etc"
    assert sorted(found) == sorted([
        f"{etc}/hosts", f"{etc}/network/interfaces", f"{etc}/pve/datacenter.cfg", f"{etc}/pve/firewall/cluster.fw",
        f"{etc}/pve/local", f"{etc}/pve/nodes/pve1/lxc/101.conf", f"{etc}/pve/priv/authkey.key",
        f"{etc}/pve/storage.cfg", f"{etc}/pve/user.cfg", f"{etc}/resolv.conf"])  # no .members, no .dpkg-old
    for original, artifact in found.items():
        assert artifact.component == f"files:{original}" and artifact.kind == "files"
        assert artifact.path == "files/" + original.lstrip("/")
        assert artifact.meta["mtime_ns"] == os.lstat(original).st_mtime_ns
        staged = ctx.day_dir / artifact.path
        assert artifact.sha256 == sha256_file(staged)
        if artifact.meta["type"] == "file":
            assert staged.read_bytes() == Path(original).read_bytes()
            assert artifact.meta["mode"] == f"{stat.S_IMODE(os.stat(original).st_mode):04o}"
    assert found[f"{etc}/pve/priv/authkey.key"].meta["mode"] == "0600"
    assert found[f"{etc}/pve/storage.cfg"].meta["mode"] == "0640"
    if ROOT:
        assert (found[f"{etc}/pve/storage.cfg"].meta["uid"], found[f"{etc}/pve/storage.cfg"].meta["gid"]) == (0, 33)
    # links are recorded as links: nothing is read through them
    link = found[f"{etc}/pve/local"].meta
    assert (link["type"], link["target"]) == ("symlink", "nodes/pve1")
    resolv = found[f"{etc}/resolv.conf"]
    assert resolv.meta["type"] == "symlink" and resolv.meta["target"] == f"{host}/outside/secret.txt"
    assert b"not to be followed" not in b"".join(p.read_bytes() for p in ctx.day_dir.rglob("*") if p.is_file())
    assert hf.HostFilesHook.details(found[f"{etc}/pve/storage.cfg"].meta)[0] == "mode=0640"
    assert hf.HostFilesHook.details(resolv.meta) == [f"-> {host}/outside/secret.txt"]


def test_a_configured_path_that_matches_nothing_fails_a_preset_one_is_a_notice(tmp_path, host, monkeypatch):
    monkeypatch.setitem(hf.PRESETS, "pve-host", (
        (f"{host}/etc/pve",), (f"{host}/etc/vzdump.conf",),
        (f"{host}/etc/cron.d/restic-orch", f"{host}/etc/systemd/system/restic-orch-*"),
        (f"{host}/etc/hosts",)))
    monkeypatch.setitem(hf.PRESET_EXCLUDES, "pve-host", (f"{host}/etc/pve/.*",))
    (host / "etc/systemd/system").mkdir(parents=True)
    (host / "etc/systemd/system/restic-orch-backup.timer").write_text("[Timer]\n")
    config = one_source_config(tmp_path, "files", {
        "preset": "pve-host", "paths": [f"{host}/etc/hosts", f"{host}/etc/nosuch.conf", f"{host}/srv/*.yml"]})
    _, _, outcome = dump(tmp_path, config)
    assert {(f.component, f.message) for f in outcome.failures} == {
        (f"files:{host}/etc/nosuch.conf", f"{host}/etc/nosuch.conf matches no file"),
        (f"files:{host}/srv/*.yml", f"{host}/srv/*.yml matches no file")}
    assert [n.message for n in outcome.notices] == [
        f"preset pve-host: {host}/etc/vzdump.conf matched nothing on this host"]
    found = by_path(outcome)
    assert f"{host}/etc/systemd/system/restic-orch-backup.timer" in found  # one of the schedule's forms
    assert f"{host}/etc/pve/storage.cfg" in found and f"{host}/etc/pve/.members" not in found


def test_an_unreadable_file_fails_naming_it(tmp_path, host):
    # reading a process's memory at offset 0 fails (EIO), even for root: a file that lists but cannot be read
    config = one_source_config(tmp_path, "files", {"paths": [f"{host}/etc/hosts", "/proc/self/mem"]})
    _, _, outcome = dump(tmp_path, config)
    [failure] = outcome.failures
    assert failure.component == "files:/proc/self/mem", failure
    assert failure.message.startswith("cannot read /proc/self/mem: "), failure
    assert sorted(by_path(outcome)) == [f"{host}/etc/hosts"]  # the others are still kept


def test_a_glob_does_not_follow_a_linked_directory(tmp_path, host):
    config = one_source_config(tmp_path, "files", {"paths": [f"{host}/etc/pve/**/*.conf"]})
    _, _, outcome = dump(tmp_path, config)
    # pmxcfs's /etc/pve/local -> nodes/<node>: each guest config once, by its real path
    assert sorted(by_path(outcome)) == [f"{host}/etc/pve/nodes/pve1/lxc/101.conf"]


# ---------------------------------------------------------------- restore
def test_restore_goes_to_the_review_directory_by_default(tmp_path, host):
    hook, ctx, outcome = dump(tmp_path, config_for(tmp_path, host))
    before = {p: Path(p).read_bytes() for p in by_path(outcome) if not os.path.islink(p)}
    review = tmp_path / "state" / "review"
    for original, artifact in by_path(outcome).items():
        text, destructive = hf.HostFilesHook.describe_restore(artifact, RestoreOptions())
        assert not destructive and "review" in text
        result = restore(hook, ctx, artifact)
        assert result.ok, result.message
        restored = review / original.lstrip("/")
        assert result.restored_to == str(restored)
        assert os.lstat(restored).st_mtime_ns == artifact.meta["mtime_ns"] == os.lstat(original).st_mtime_ns
        if artifact.meta["type"] == "symlink":
            assert os.readlink(restored) == artifact.meta["target"] and result.checks["target_ok"]
        else:
            assert restored.read_bytes() == Path(original).read_bytes()
            assert stat.S_IMODE(restored.stat().st_mode) == int(artifact.meta["mode"], 8)
            assert result.checks["sha256"] is True and result.checks["mode_ok"] is True
    assert stat.S_IMODE(review.stat().st_mode) == 0o700  # it holds /etc/pve/priv's keys
    if ROOT:
        assert (review / str(host).lstrip("/") / "etc/pve/storage.cfg").stat().st_gid == 33
    assert {p: Path(p).read_bytes() for p in before} == before  # the host's files untouched
    # again: identical, nothing to do, nothing kept aside
    artifact = by_path(outcome)[f"{host}/etc/hosts"]
    again = restore(hook, ctx, artifact)
    assert again.ok and "nothing to do" in again.message
    assert not list(review.rglob("*.bak*"))


def test_restore_into_a_target_directory(tmp_path, host):
    hook, ctx, outcome = dump(tmp_path, config_for(tmp_path, host))
    target = tmp_path / "drill" / "files"
    artifact = by_path(outcome)[f"{host}/etc/network/interfaces"]
    text, destructive = hf.HostFilesHook.describe_restore(artifact, RestoreOptions(target_dir=target, force=True))
    assert not destructive and str(target) in text
    result = restore(hook, ctx, artifact, target_dir=target, force=True, drill=True)
    assert result.ok, result.message
    assert (target / artifact.meta["original_path"].lstrip("/")).read_bytes() == (
        host / "etc/network/interfaces").read_bytes()
    assert not (tmp_path / "state" / "review").exists()


def test_in_place_only_with_force_and_the_old_file_kept_aside(tmp_path, host):
    hook, ctx, outcome = dump(tmp_path, config_for(tmp_path, host))
    interfaces = host / "etc/network/interfaces"
    good = interfaces.read_bytes()
    interfaces.write_bytes(b"auto eth0\n")  # somebody changed it since
    os.chmod(interfaces, 0o600)
    artifact = by_path(outcome)[str(interfaces)]

    assert restore(hook, ctx, artifact).ok  # no --force: the review copy, the host's file untouched
    assert interfaces.read_bytes() == b"auto eth0\n"

    text, destructive = hf.HostFilesHook.describe_restore(artifact, RestoreOptions(force=True))
    assert destructive and "in place" in text
    result = restore(hook, ctx, artifact, force=True)
    assert result.ok, result.message
    bak = interfaces.with_name("interfaces.bak")
    assert interfaces.read_bytes() == good and stat.S_IMODE(interfaces.stat().st_mode) == 0o644
    assert bak.read_bytes() == b"auto eth0\n" and result.checks["kept_previous"] == str(bak)
    assert interfaces.stat().st_mtime_ns == MTIME_NS

    # a link changed in place is kept aside as a link, never through it
    resolv = host / "etc/resolv.conf"
    resolv.unlink()
    resolv.symlink_to("/nonexistent/elsewhere")
    result = restore(hook, ctx, by_path(outcome)[str(resolv)], force=True)
    assert result.ok, result.message
    assert os.readlink(resolv) == f"{host}/outside/secret.txt"
    assert os.readlink(resolv.with_name("resolv.conf.bak")) == "/nonexistent/elsewhere"
    # a lost file comes back, nothing left behind
    (host / "etc/pve/user.cfg").unlink()
    assert restore(hook, ctx, by_path(outcome)[f"{host}/etc/pve/user.cfg"], force=True).ok
    assert sorted(p.name for p in (host / "etc/pve").iterdir() if p.name.startswith(".")) == [".members"]


def test_a_damaged_copy_is_refused(tmp_path, host):
    hook, ctx, outcome = dump(tmp_path, config_for(tmp_path, host))
    artifact = by_path(outcome)[f"{host}/etc/hosts"]
    (ctx.day_dir / artifact.path).write_bytes(b"tampered\n")
    result = restore(hook, ctx, artifact, force=True)
    assert not result.ok and "sha256" in result.message
    assert (host / "etc/hosts").read_bytes().startswith(b"127.0.0.1")


# ---------------------------------------------------------------- selection through the registry
def test_one_file_is_selected_by_its_component(tmp_path, host):
    config = config_for(tmp_path, host)
    _, ctx, outcome = dump(tmp_path, config)
    manifest = Manifest.from_json({"artifacts": [a.to_json() for a in outcome.artifacts]})
    snap = restic.Snapshot("a" * 64, "aaaaaaaa", datetime.now(UTC), "pve1", [str(ctx.day_dir)])
    located = Located(repo=None, snapshot=snap, root=str(ctx.day_dir), manifest=manifest)  # type: ignore[arg-type]
    wanted = f"files:{host}/etc/network/interfaces"
    [step] = plan_steps(located, [wanted], RestoreOptions(), config)
    assert (step.component, step.kind, step.destructive) == (wanted, "files", False)
    assert plan_steps(located, [wanted], RestoreOptions(force=True), config)[0].destructive
    assert len(plan_steps(located, ["files"], RestoreOptions(), config)) == len(outcome.artifacts)
    assert len(plan_steps(located, [], RestoreOptions(), config)) == len(outcome.artifacts)
    with pytest.raises(SelectionError, match="unknown component"):
        plan_steps(located, [f"files:{host}/etc/nosuch"], RestoreOptions(), config)
    assert "files:/etc/network/interfaces" in registry.selector_help()


# ---------------------------------------------------------------- through the real CLI and restic
def test_backup_and_restore_one_file_through_the_cli(tmp_path, host):
    config = config_for(tmp_path, host)
    data = json.loads(config.model_dump_json())
    data["auto_init"] = True
    data["limits"].update(min_free_bytes=0, cpu_percent=None)
    path = tmp_path / "config.yml"
    path.write_text(yaml.safe_dump(data))
    os.chmod(path, 0o600)
    backup = restic_orch(path, "--json", "backup", check=True)
    assert json.loads(backup.stdout)["status"] == "success", backup.stdout

    wanted = f"{host}/etc/pve/storage.cfg"
    assert "mode=0640 owner=" in restic_orch(path, "show", "latest", check=True).stdout
    plan = json.loads(restic_orch(path, "--json", "restore", "--dry-run", input="", check=True).stdout)["plan"]
    assert f"files:{wanted}" in {step["component"] for step in plan}
    assert not any(step["destructive"] for step in plan)  # for review: nothing to confirm
    result = restic_orch(path, "--json", "restore", "--only", f"files:{wanted}", input="", check=True)
    steps = json.loads(result.stdout)["extra"]["steps"]
    restored = tmp_path / "state" / "review" / wanted.lstrip("/")
    assert [(s["component"], s["result"], s["restored_to"]) for s in steps] == [
        (f"files:{wanted}", "ok", str(restored))]
    assert restored.read_bytes() == Path(wanted).read_bytes()
    assert stat.S_IMODE(restored.stat().st_mode) == 0o640
