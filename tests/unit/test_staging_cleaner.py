"""The staged day is removed in the background once a snapshot holds it; a failure is a notice, not a crash."""

from __future__ import annotations

import os
from datetime import date
from pathlib import Path

from restic_orch import staging
from restic_orch.pipeline import _staging_removed
from restic_orch.report import RunSummary


def _day(tmp_path: Path) -> Path:
    staging.prepare(tmp_path / "staging")
    day = staging.day_dir(tmp_path / "staging", date(2026, 11, 26))
    (day / "postgres").mkdir()
    (day / "postgres" / "app.dump").write_bytes(os.urandom(4096))
    return day


def test_the_day_is_removed_and_logged(tmp_path: Path, caplog):
    day = _day(tmp_path)
    summary = RunSummary("backup", "r1", "pve1", "2026-11-26T03:00:00+00:00")
    caplog.set_level("INFO", logger="restic_orch")
    _staging_removed(staging.Cleaner(day), summary)
    assert not day.exists() and (tmp_path / "staging" / staging.MARKER).exists()
    assert summary.notices == []
    assert any(r.getMessage() == "staging removed" for r in caplog.records)


def test_a_day_that_cannot_be_removed_is_a_notice_naming_it(tmp_path: Path):
    staging.prepare(tmp_path / "staging")
    day = tmp_path / "staging" / "2026-11-26"
    day.write_text("not a directory")  # rmtree refuses it: a real OSError, not a simulated one
    summary = RunSummary("backup", "r1", "pve1", "2026-11-26T03:00:00+00:00")
    _staging_removed(staging.Cleaner(day), summary)
    assert day.exists()
    assert len(summary.notices) == 1 and str(day) in summary.notices[0]["message"]
    assert "next run removes it" in summary.notices[0]["message"]


def test_a_directory_that_is_not_ours_is_left_alone(tmp_path: Path):
    day = tmp_path / "elsewhere" / "2026-11-26"
    day.mkdir(parents=True)
    (day / "keep").write_text("x")
    assert staging.Cleaner(day).wait() is None
    assert (day / "keep").exists()  # no staging marker beside it: never ours to remove
