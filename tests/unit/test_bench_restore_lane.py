"""The restore lane's verdicts: RTO against the story, the lab and the floor, reported PASS/FAIL, never asserted."""

from __future__ import annotations

from bench.lanes.restore import by_kind, ratio, targets
from bench.report import restore_section


def _verdicts(rows: list[dict]) -> list[str]:
    return [row["verdict"] for row in rows]


def test_ratio_is_product_over_floor_and_absent_without_a_floor():
    assert ratio(120.0, 100.0) == 1.2
    assert ratio(130.0, 100.0) == 1.3
    assert ratio(10.0, 0.0) is None


def test_each_target_has_its_own_verdict():
    assert _verdicts(targets(240.0, 200.0, True)) == ["PASS", "PASS", "PASS"]  # 1.2x is within 1.2x
    assert _verdicts(targets(241.0, 200.0, True)) == ["PASS", "PASS", "FAIL"]
    assert _verdicts(targets(300.0, 290.0, True)) == ["PASS", "FAIL", "PASS"]  # 5 min is not under 5 min
    assert _verdicts(targets(1800.0, 1000.0, True)) == ["FAIL", "FAIL", "FAIL"]
    row = targets(240.5, 200.0, True)[2]
    assert row["measured"] == "1.2x (240.5 s vs 200.0 s)" and row["ok"] is False  # judged unrounded


def test_a_restore_that_did_not_bring_everything_back_meets_no_target():
    rows = targets(10.0, 100.0, False)
    assert _verdicts(rows) == ["FAIL", "FAIL", "FAIL"]
    assert all("did not bring everything back" in row["measured"] for row in rows)
    assert targets(10.0, 0.0, True)[2]["measured"] == "no floor measured"


def test_steps_are_summed_per_selector_prefix():
    steps = [{"component": "ct:101", "result": "ok", "seconds": 2.5},
             {"component": "ct:102", "result": "failed", "seconds": 1.0},
             {"component": "tfstate:env:/prod/infra/terraform.tfstate", "result": "ok", "seconds": 0.5}]
    assert by_kind(steps) == {"ct": {"count": 2, "seconds": 3.5, "ok": False},
                              "tfstate": {"count": 1, "seconds": 0.5, "ok": True}}


def test_the_report_section_shows_rto_floor_and_verdicts():
    steps = [{"component": "ct:101", "result": "ok", "seconds": 80.0}]
    run = {"restore": {
        "lane": "uncapped", "gomaxprocs": 1, "priority": "nice -n 10",
        "new_host": {"guests_destroyed": [101], "databases_dropped": {"postgres": ["appdb"]},
                     "state_objects_deleted": 4, "vault_files_removed": 4},
        "product": {"snapshot": "abcd1234", "status": "success", "wall": 90.0, "cpu_pct": 40.0, "steps": steps,
                    "by_kind": by_kind(steps), "commands": {"restic dump": {"count": 1, "seconds": 50.0}}},
        "floor": {"restic_restore": {"wall": 40.0, "bytes": 2**30}, "pve": {"101": {}}, "databases": {},
                  "parts": {"PVE restore and start": 30.0, "database loads": 0.0}, "seconds": 70.0,
                  "restic_plus_pve_seconds": 70.0},
        "targets": targets(90.0, 70.0, True)}}
    text = "\n".join(restore_section(run))
    assert "| **floor total** | | **70.0** | |" in text
    assert "| RTO <= 1.2x the floor | 1.29x (90.0 s vs 70.0 s) | **FAIL** |" in text
    assert "| RTO < 5 min on this lab (ours) | 90.0 s | **PASS** |" in text
    assert restore_section({"restore": {"error": "boom"}})[-1] == "The restore lane failed: boom"
    assert restore_section({}) == []
