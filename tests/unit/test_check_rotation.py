"""The check rotation's state (which part next, when each was read), the verified age, and runs/ pruning."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from restic_orch import report, rotation
from restic_orch.status import render

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def test_the_rotation_reads_each_part_in_turn_and_wraps(tmp_path: Path) -> None:
    state: dict = {}
    seen = []
    for week in range(4):
        subset = rotation.next_subset(state, "local", 3, T0)
        seen.append(subset)
        rotation.record_read(state, "local", subset, T0 + timedelta(days=7 * week))
    assert seen == ["1/3", "2/3", "3/3", "1/3"]
    assert state["local"]["read"] == {"1": (T0 + timedelta(days=21)).isoformat(timespec="seconds"),
                                      "2": (T0 + timedelta(days=7)).isoformat(timespec="seconds"),
                                      "3": (T0 + timedelta(days=14)).isoformat(timespec="seconds")}
    rotation.save(tmp_path, state)
    assert rotation.load(tmp_path) == state
    assert oct((tmp_path / rotation.STATE_FILE).stat().st_mode & 0o777) == "0o640"


def test_a_part_not_read_is_asked_again_and_a_new_n_starts_afresh() -> None:
    state: dict = {}
    assert rotation.next_subset(state, "offsite", 12, T0) == "1/12"
    assert rotation.next_subset(state, "offsite", 12, T0) == "1/12"  # asked, never recorded: not moved on
    rotation.record_read(state, "offsite", "1/12", T0)
    assert rotation.next_subset(state, "offsite", 12, T0) == "2/12"
    assert rotation.next_subset(state, "offsite", 4, T0) == "1/4"
    assert state["offsite"]["read"] == {} and state["offsite"]["parts"] == 4
    assert "local" not in state


def test_the_verified_age_is_the_oldest_part_and_unread_parts_count_from_the_start() -> None:
    state: dict = {}
    rotation.next_subset(state, "local", 3, T0)
    rotation.record_read(state, "local", "1/3", T0 + timedelta(days=1))
    now = T0 + timedelta(days=10)
    assert rotation.verified(state["local"], now) == {"age_seconds": 10 * 86400, "parts": 3, "parts_read": 1,
                                                      "complete": False}
    rotation.record_read(state, "local", "2/3", T0 + timedelta(days=2))
    rotation.record_read(state, "local", "3/3", T0 + timedelta(days=3))
    assert rotation.verified(state["local"], now) == {"age_seconds": 9 * 86400, "parts": 3, "parts_read": 3,
                                                      "complete": True}
    rotation.record_read(state, "local", "1/3", T0 + timedelta(days=8))
    assert rotation.verified(state["local"], now)["age_seconds"] == 8 * 86400


def test_metrics_and_status_show_the_verified_age(tmp_path: Path) -> None:
    state: dict = {}
    long_ago = datetime.now(UTC) - timedelta(days=100)
    rotation.next_subset(state, "offsite", 2, long_ago)
    rotation.record_read(state, "offsite", "1/2", long_ago)
    rotation.record_read(state, "offsite", "2/2", long_ago + timedelta(days=1))
    rotation.save(tmp_path, state)
    text = report.write_metrics(tmp_path / "metrics", tmp_path).read_text()
    [line] = [ln for ln in text.splitlines() if ln.startswith("restic_orch_data_verified_age_seconds{")]
    assert line.startswith('restic_orch_data_verified_age_seconds{repo="offsite"} ')
    assert abs(int(line.split()[-1]) - 100 * 86400) < 60
    verified = {**rotation.verified(state["offsite"]), "ok": False, "started": True, "bound_seconds": 90 * 86400}
    data = {"ok": False, "checked_at": "now", "last": {},
            "repositories": {"offsite": {"ok": True, "newest_complete": "abcd1234", "age_seconds": 3600,
                                         "data_verified": verified}}}
    out = render(data)
    assert "offsite: all data verified, oldest read 100.0 d ago (OVER 90 d — DATA NOT VERIFIED IN TIME)" in out


def test_runs_are_pruned_to_the_newest(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    runs.mkdir()
    start = datetime(2026, 1, 1, tzinfo=UTC)
    names = [f"{report.new_run_id(start + timedelta(hours=i))}-backup.json" for i in range(405)]
    for name in reversed(names):  # mtimes in the opposite order: the name decides
        (runs / name).write_text("{}")
    removed = report.prune_runs(runs, 400)
    assert sorted(p.name for p in removed) == names[:5]
    assert sorted(p.name for p in runs.iterdir()) == names[5:]
    summary = report.RunSummary("check", report.new_run_id(start + timedelta(days=30)), "pve1", "")
    summary.finish("success")
    kept = report.save_summary(tmp_path, summary, keep=3)
    assert sorted(p.name for p in runs.iterdir()) == [*names[-2:], kept.name]
