"""restic_orch/constraints.txt pins every runtime dependency to the version the tests ran with.

The role's pip install and the disaster-day install (ansible/roles/backup/README.md) both pass it with
`-c`, so a host gets the dependency versions this suite exercised, not whatever the index has that day.
Regenerate after changing the venv:  .venv/bin/python tests/unit/test_constraints.py > restic_orch/constraints.txt
"""

from __future__ import annotations

import importlib.metadata as md
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

REPO = Path(__file__).resolve().parents[2]
CONSTRAINTS = REPO / "restic_orch" / "constraints.txt"
HEADER = """\
# restic-orch's runtime dependencies, pinned to the versions its test suite ran with.
# Used with `pip install -c` by the Ansible role (ansible/roles/backup) and by the disaster-day install
# (ansible/roles/backup/README.md, "Installing restic-orch"). Only the runtime closure (no lab or dev extras).
# Regenerate from the project venv: .venv/bin/python tests/unit/test_constraints.py > restic_orch/constraints.txt
"""


def _applies(req: Requirement) -> bool:
    return req.marker is None or req.marker.evaluate({"extra": ""})


def runtime_requirements() -> list[Requirement]:
    """The [project] dependencies of pyproject.toml (no extras)."""
    data = tomllib.loads((REPO / "pyproject.toml").read_text())
    return [Requirement(r) for r in data["project"]["dependencies"]]


def installed_closure() -> dict[str, str]:
    """name -> installed version for every runtime dependency, transitively, as this venv has them."""
    found: dict[str, str] = {}
    todo = [r for r in runtime_requirements() if _applies(r)]
    while todo:
        req = todo.pop()
        name = canonicalize_name(req.name)
        if name in found:
            continue
        dist = md.distribution(req.name)
        found[name] = dist.version
        todo += [r for r in map(Requirement, dist.requires or []) if _applies(r)]
    return dict(sorted(found.items()))


def render() -> str:
    return HEADER + "".join(f"{name}=={version}\n" for name, version in installed_closure().items())


def pins() -> dict[str, str]:
    out: dict[str, str] = {}
    for line in CONSTRAINTS.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            req = Requirement(line)
            assert not req.extras and not req.marker and not req.url, line
            [spec] = list(req.specifier)
            assert spec.operator == "==", f"{line}: pin with =="
            out[canonicalize_name(req.name)] = spec.version
    return out


def test_every_runtime_dependency_is_pinned_to_what_the_tests_run_with():
    assert pins() == installed_closure(), (
        "restic_orch/constraints.txt differs from the venv the tests run in; regenerate it with"
        " .venv/bin/python tests/unit/test_constraints.py > restic_orch/constraints.txt")


def test_the_pins_satisfy_the_declared_requirements():
    pinned = pins()
    for req in runtime_requirements():
        assert Version(pinned[canonicalize_name(req.name)]) in req.specifier, req


def test_constraints_ship_inside_the_package(tmp_path):
    """Package data: the wheel (what pip installs into /opt/restic-orch) carries restic_orch/constraints.txt."""
    pip = Path(sys.executable).parent / "pip"
    if not pip.exists():
        pytest.skip("no pip in this venv")
    source = tmp_path / "src"
    source.mkdir()
    for entry in ("pyproject.toml", "README.md", "LICENSE", "restic_orch", "hooks"):
        if (REPO / entry).is_dir():
            shutil.copytree(REPO / entry, source / entry, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        elif (REPO / entry).exists():
            (source / entry).write_bytes((REPO / entry).read_bytes())
    proc = subprocess.run([pip, "wheel", "--no-deps", "-q", "-w", tmp_path / "dist", source],
                          capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    [wheel] = (tmp_path / "dist").glob("restic_orch-*.whl")
    with zipfile.ZipFile(wheel) as zf:
        assert zf.read("restic_orch/constraints.txt").decode() == CONSTRAINTS.read_text()


if __name__ == "__main__":
    sys.stdout.write(render())
