"""Helpers shared by the hook tests."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from restic_orch.config import Config
from restic_orch.hooks.base import Artifact
from restic_orch.lab.secrets import write_secret


def fetch_from(day: Path, artifact: Artifact):
    """A fetch() that copies the artifact out of the staging day, as restic dump would."""
    return lambda dest: Path(shutil.copyfile(day / artifact.path, dest))


def by_component(outcome) -> dict[str, Artifact]:
    return {a.component: a for a in outcome.artifacts}


def our_child(entry: Path) -> bool:
    """A process this test process started (its parent is us): the only kind a test may kill."""
    try:
        return entry.name.isdigit() and int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1]) == os.getpid()
    except OSError:
        return False


def staged_files(day: Path) -> list[str]:
    return sorted(str(p.relative_to(day)) for p in day.rglob("*") if p.is_file())


def one_source_config(tmp_path: Path, kind: str, source: dict | None) -> Config:
    """The smallest valid configuration around one source: a local repository, dirs under tmp_path."""
    password = write_secret(tmp_path / "secrets" / "restic-pass", "dummy-restic-password\n")
    return Config.model_validate({
        "host": "pve1", "staging_dir": str(tmp_path / "staging"), "state_dir": str(tmp_path / "state"),
        "log_dir": str(tmp_path / "log"),
        "repositories": {"local": {"url": str(tmp_path / "repo"), "password_file": str(password),
                                   "retention": {"keep_last": 3}}},
        "sources": {kind: source} if source is not None else {},
    })
