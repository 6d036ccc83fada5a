"""The benchmark's own models: where day 2's in-place writes go, and how a logged freeze is judged."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from bench.lab import churn_containers
from bench.report import _freeze_bound, _freeze_cell, vi1_target
from restic_orch.lab.pve.rootfs_profiles import build_tree


def _container(root: Path, vmid: int, profile: str) -> Path:
    rootfs = root / "lxc" / str(vmid) / "rootfs"
    for entry in build_tree(profile, vmid, 2 * 2**20, seed=1).entries:
        if entry.kind != "file":
            continue
        path = rootfs / entry.path
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(os.urandom(entry.size or 0))
    (rootfs / "srv").mkdir(exist_ok=True)
    return rootfs


def test_page_writes_go_into_files_services_rewrite_in_place(tmp_path: Path):
    rootfs = _container(tmp_path, 104, "apps")
    sqlite = rootfs / "srv/data/app.sqlite"
    before = sqlite.read_bytes()
    _stats, touched = churn_containers(tmp_path, 0.02, pages_into="data")
    assert {Path(p).relative_to(rootfs).as_posix() for p in touched["pages"]} == {"srv/data/app.sqlite"}
    after = sqlite.read_bytes()
    assert len(after) == len(before) and after != before


def test_the_first_model_still_pages_the_largest_files_of_any_kind(tmp_path: Path):
    rootfs = _container(tmp_path, 104, "apps")
    _stats, touched = churn_containers(tmp_path, 0.02, pages_into="largest")
    paged = {Path(p).relative_to(rootfs).as_posix() for p in touched["pages"]}
    assert "srv/data/app.sqlite" in paged and any(p.startswith("srv/uploads/") for p in paged)


def test_unknown_page_target_is_refused(tmp_path: Path):
    with pytest.raises(ValueError, match="pages_into"):
        churn_containers(tmp_path, 0.02, pages_into="random")


def test_freeze_is_judged_on_its_upper_bound():
    assert _freeze_bound({"freeze_seconds": 3.0, "freeze_seconds_max": 4.0}) == 4.0
    assert _freeze_bound({"freeze_seconds": 5.0}) == 6.0  # results written before freeze_seconds_max
    assert _freeze_bound({"freeze_seconds": None}) is None  # not measured, never a freeze of 0 s
    assert _freeze_cell({"freeze_seconds": 0.0, "freeze_seconds_max": 1.0}) == "< 1"
    assert _freeze_cell({"freeze_seconds": 3.0, "freeze_seconds_max": 4.0}) == "3 (< 4)"
    assert _freeze_cell({}) == "not measured"


def test_vi1_verdict_is_not_measured_unless_every_freeze_was():
    snapshot = {"mode_used": "snapshot", "freeze_seconds": None, "freeze_seconds_max": None}
    probe = {"mode_used": "suspend", "freeze_seconds": 2.0, "freeze_seconds_max": 3.0}
    row = vi1_target([snapshot, snapshot])
    assert (row["met"], row["verdict"]) == (None, "not measured") and row["measured"].startswith("not measured")
    row = vi1_target([snapshot, probe])
    assert (row["met"], row["verdict"]) == (None, "not measured") and "1 of 2 not measured" in row["measured"]
    assert vi1_target([probe, probe]) == {"target": "VI1: container freeze <= 5 s", "met": True,
                                          "measured": "every measured freeze < 3 s (vzdump's whole-second "
                                                      "readings + 1)"}
    row = vi1_target([snapshot, {"freeze_seconds": 6.0, "freeze_seconds_max": 7.0}])
    assert row["met"] is False and "verdict" not in row  # a measured miss is a miss
