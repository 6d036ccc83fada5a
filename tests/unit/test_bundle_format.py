"""The bootstrap bundle's format (the contract with scripts/restore.sh --bootstrap), built for real from this checkout
with real pip: SHA256SUMS sorted and `sha256sum -c` clean, the digest, bundle.json, pip --no-index resolving every
dependency from the wheels alone; a failed build keeps the previous bundle; verify() catches a changed byte."""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
from click.testing import CliRunner

from restic_orch import bundle
from restic_orch.cli import main
from tests.configs import host_dirs

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, bundle.BundleInfo]:
    out = tmp_path_factory.mktemp("state") / "bootstrap"
    return out, bundle.build(out, REPO)


def _pins() -> dict[str, str]:
    lines = (REPO / "restic_orch/constraints.txt").read_text().splitlines()
    return dict(line.lower().replace("_", "-").split("==") for line in lines if line and not line.startswith("#"))


def test_the_bundle_holds_what_the_contract_says(built: tuple[Path, bundle.BundleInfo]) -> None:
    out, info = built
    sums = (out / "SHA256SUMS").read_text()
    paths = [line.split("  ", 1)[1] for line in sums.splitlines()]
    assert paths == sorted(paths) and len(paths) == info.files
    assert {"bundle.json", "restore.sh", "disaster-recovery.md", "constraints.txt"} <= set(paths)
    assert (out / "restore.sh").read_bytes() == (REPO / "scripts/restore.sh").read_bytes()
    assert (out / "disaster-recovery.md").read_bytes() == (REPO / "docs/runbooks/disaster-recovery.md").read_bytes()
    assert (out / "constraints.txt").read_bytes() == (REPO / "restic_orch/constraints.txt").read_bytes()
    assert info.digest == hashlib.sha256(sums.encode()).hexdigest()
    on_disk = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    assert on_disk == sorted([*paths, "SHA256SUMS"])
    # coreutils reads it as the shell side will
    check = subprocess.run(["sha256sum", "-c", "--strict", "SHA256SUMS"], cwd=out, capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    meta = json.loads((out / "bundle.json").read_text())
    assert meta["format"] == 1 and meta["restic_orch_version"] == info.version == "0.1.0"
    assert meta["python"] == info.python == f"{sys.version_info[0]}.{sys.version_info[1]}"
    assert meta["platform"].startswith("linux-") and meta["made"].endswith("+00:00")
    assert meta["wheel"] == "restic_orch-0.1.0-py3-none-any.whl" and f"wheels/{meta['wheel']}" in paths
    # every pinned dependency has its wheel, at the pinned version
    wheels = {p.removeprefix("wheels/").split("-")[0].lower().replace("_", "-"): p.split("-")[1]
              for p in paths if p.startswith("wheels/")}
    assert {name: wheels.get(name) for name in _pins()} == _pins()
    assert bundle.verify(out) == [] and bundle.read_bundle(out) == info


def test_pip_resolves_restic_orch_from_the_wheels_alone(built: tuple[Path, bundle.BundleInfo]) -> None:
    out, _ = built
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
    result = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--no-index", "--isolated",
         "--find-links", out / "wheels", "-c", out / "constraints.txt", "restic-orch"],
        capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Would install" in result.stdout and "restic-orch-0.1.0" in result.stdout


def test_a_failed_build_keeps_the_previous_bundle(built: tuple[Path, bundle.BundleInfo], tmp_path: Path) -> None:
    out = tmp_path / "bootstrap"
    shutil.copytree(built[0], out)
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    # pip cannot run: the build fails after its temporary directory was made
    with pytest.raises(bundle.BundleError, match="pip wheel failed"):
        bundle.build(out, REPO, python="/bin/false")
    # a source without restore.sh: bad input, named
    source = tmp_path / "src"
    source.mkdir()
    (source / "pyproject.toml").write_text("[project]\nname = 'x'\n")
    with pytest.raises(bundle.BundleInputError, match="scripts/restore.sh is missing"):
        bundle.build(out, source)
    with pytest.raises(bundle.BundleInputError, match="neither a restic-orch source directory"):
        bundle.build(out, source / "pyproject.toml")
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bootstrap", "src"], "a temporary directory was left"


def test_verify_catches_a_changed_byte_a_missing_and_an_unlisted_file(built: tuple[Path, bundle.BundleInfo],
                                                                       tmp_path: Path) -> None:
    out = tmp_path / "bootstrap"
    shutil.copytree(built[0], out)
    wheel = next((out / "wheels").glob("restic_orch-*.whl"))
    data = bytearray(wheel.read_bytes())
    data[len(data) // 2] ^= 1
    wheel.write_bytes(bytes(data))
    assert bundle.verify(out) == [f"wheels/{wheel.name}: its sha256 differs from SHA256SUMS"]
    (out / "restore.sh").unlink()
    (out / "wheels" / "extra.whl").write_text("x")
    assert bundle.verify(out) == ["restore.sh: listed in SHA256SUMS but missing",
                                  f"wheels/{wheel.name}: its sha256 differs from SHA256SUMS",
                                  "wheels/extra.whl: not listed in SHA256SUMS"]
    lines = (out / "SHA256SUMS").read_text().splitlines()
    (out / "SHA256SUMS").write_text("\n".join([lines[1], lines[0], "garbage", *lines[2:]]) + "\n")
    problems = bundle.verify(out)
    assert "SHA256SUMS line 3: not '<sha256>  <path>'" in problems
    assert "SHA256SUMS: lines are not sorted by path" in problems
    (out / "SHA256SUMS").unlink()
    assert bundle.verify(out) == [f"{out}/SHA256SUMS: missing: no bundle built (restic-orch bundle build)"]
    assert bundle.read_bundle(out) is None


def test_restore_sh_and_the_runbook_come_out_of_the_roles_archive(tmp_path: Path) -> None:
    """The Ansible role hands the build its source archive (files/pack_source.py: everything under restic-orch/)."""
    archive = tmp_path / "restic-orch-src.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        for rel in ["pyproject.toml", *bundle.FROM_SOURCE.values()]:
            body = (REPO / rel).read_bytes()
            member = tarfile.TarInfo(f"restic-orch/{rel}")
            member.size = len(body)
            tar.addfile(member, io.BytesIO(body))
    work = tmp_path / "work"
    work.mkdir()
    bundle._copy_from_source(archive, work)
    for name, rel in bundle.FROM_SOURCE.items():
        assert (work / name).read_bytes() == (REPO / rel).read_bytes(), name
    with tarfile.open(tmp_path / "short.tar.gz", "w:gz") as tar:
        member = tarfile.TarInfo("restic-orch/pyproject.toml")
        tar.addfile(member, io.BytesIO(b""))
    with pytest.raises(bundle.BundleInputError, match="scripts/restore.sh is not in the archive.*backup_package_paths"):
        bundle._copy_from_source(tmp_path / "short.tar.gz", work)


def test_the_commands_exit_2_naming_what_is_missing(built: tuple[Path, bundle.BundleInfo], tmp_path: Path) -> None:
    config = tmp_path / "config.yml"
    secret = tmp_path / "pw"
    secret.write_text("password-1234\n")
    secret.chmod(0o600)
    config.write_text(host_dirs(tmp_path) + f"repositories:\n  local:\n    url: {tmp_path}/repo\n"
                      f"    password_file: {secret}\n    retention: {{keep_last: 1}}\n")
    runner = CliRunner()
    nothing = runner.invoke(main, ["--config", str(config), "bundle", "publish"])
    assert nothing.exit_code == 2 and "no bundle built yet: run `restic-orch bundle build` first" in nothing.stderr
    shutil.copytree(built[0], tmp_path / "state" / "bootstrap")
    no_s3 = runner.invoke(main, ["--config", str(config), "bundle", "publish"])
    assert no_s3.exit_code == 2, no_s3.output
    assert f"repositories.local.url: {tmp_path}/repo is not an S3 repository" in no_s3.stderr
    bad_source = runner.invoke(main, ["--config", str(config), "bundle", "build", "--source", str(tmp_path / "nope")])
    assert bad_source.exit_code == 2 and "--source" in bad_source.stderr and "does not exist" in bad_source.stderr
