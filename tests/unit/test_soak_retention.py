"""The soak's expectations: restic 0.14's keep-within-daily, and what a run may truthfully report under a fault."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from soak import expect
from soak.plan import Fault

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


def nightly(count: int, last: datetime) -> dict[str, datetime]:
    """One snapshot a night at 03:00, the newest at `last`: ids n01 (oldest) .. nNN."""
    return {f"n{i:02d}": last - timedelta(days=count - i) for i in range(1, count + 1)}


# ---------------------------------------------------------------- durations and Go's calendar
@pytest.mark.parametrize(("text", "parts"), [("7d", (0, 0, 7, 0)), ("30d", (0, 0, 30, 0)),
                                              ("1y2m3d4h", (1, 2, 3, 4)), ("2M", (0, 2, 0, 0)), ("12h", (0, 0, 0, 12))])
def test_restic_durations(text, parts):
    assert expect.parse_duration(text) == parts


@pytest.mark.parametrize("text", ["", "7", "7w", "d7", "7d x"])
def test_not_restic_durations(text):
    with pytest.raises(ValueError):
        expect.parse_duration(text)


def test_add_date_rolls_over_like_go():
    # Go: time.Date(2023, 3, 31, ...).AddDate(0, -1, 0) is March 3rd (February 31st normalised)
    assert expect.add_date(datetime(2023, 3, 31, 3, tzinfo=UTC), 0, -1, 0) == datetime(2023, 3, 3, 3, tzinfo=UTC)
    assert expect.add_date(datetime(2024, 1, 5, tzinfo=UTC), -1, 0, -7) == datetime(2022, 12, 29, tzinfo=UTC)
    assert expect.add_date(datetime(2026, 12, 31, tzinfo=UTC), 0, 2, 0) == datetime(2027, 3, 3, tzinfo=UTC)


# ---------------------------------------------------------------- keep-within-daily, restic 0.14
def test_seven_days_keep_seven_nights_the_one_exactly_seven_days_back_goes():
    snaps = nightly(10, datetime(2026, 11, 29, 3, tzinfo=UTC))
    assert expect.keep_within_daily(snaps, "7d", NOW) == {f"n{i:02d}" for i in range(4, 11)}


def test_within_counts_from_the_newest_snapshot_not_from_the_clock():
    # a soak's nights are long past: the clock would keep none of them, restic keeps the newest seven days
    snaps = nightly(10, datetime(2025, 1, 10, 3, tzinfo=UTC))
    assert len(expect.keep_within_daily(snaps, "7d", NOW)) == 7


def test_gaps_are_not_filled_and_the_newest_of_each_day_is_kept():
    last = datetime(2026, 11, 29, 3, tzinfo=UTC)
    snaps = {"a": last, "a-early": last - timedelta(hours=2), "b": last - timedelta(days=3),
             "c": last - timedelta(days=6, hours=23), "d": last - timedelta(days=7), "e": last - timedelta(days=9)}
    assert expect.keep_within_daily(snaps, "7d", NOW) == {"a", "b", "c"}


def test_a_snapshot_dated_after_the_clock_is_not_the_newest():
    snaps = nightly(5, datetime(2026, 11, 29, 3, tzinfo=UTC))
    snaps["future"] = NOW + timedelta(days=20)
    kept = expect.keep_within_daily(snaps, "2d", NOW)
    assert {"n05", "n04", "future"} <= kept and "n03" not in kept


def test_only_the_labs_policy_is_modelled():
    with pytest.raises(NotImplementedError):
        expect.expected_kept({"keep_daily": 7, "keep_within_daily": None}, {}, NOW)
    assert expect.expected_kept({"keep_within_daily": "7d", "keep_last": None}, {}, NOW) == set()


# ---------------------------------------------------------------- a repository against its retention
def test_nothing_may_vanish_without_a_forget():
    before = nightly(3, datetime(2026, 11, 29, 3, tzinfo=UTC))
    after = {k: v for k, v in before.items() if k != "n01"}
    problems = expect.retention_problems("local", before, after, policy={"keep_within_daily": "7d"}, forgot=False,
                                         now=NOW)
    assert problems and "n01" in problems[0] and "no retention ran" in problems[0]
    assert expect.retention_problems("offsite", before, after, policy=None, forgot=True, now=NOW)


def test_after_a_forget_exactly_what_the_policy_keeps():
    policy = {"keep_within_daily": "7d"}
    before = nightly(8, datetime(2026, 11, 28, 3, tzinfo=UTC))
    tonight = {"n09": datetime(2026, 11, 29, 3, tzinfo=UTC)}
    seen = {**before, **tonight}
    kept = {k: v for k, v in seen.items() if k not in ("n01", "n02")}
    assert expect.retention_problems("local", before, kept, policy=policy, forgot=True, now=NOW) == []
    too_many = expect.retention_problems("local", before, seen, policy=policy, forgot=True, now=NOW)
    assert too_many and "still holds" in too_many[0] and "n01" in too_many[0]
    too_few = {k: v for k, v in kept.items() if k != "n05"}
    assert "lost snapshots its retention keeps" in expect.retention_problems(
        "local", before, too_few, policy=policy, forgot=True, now=NOW)[0]
    # a forget killed halfway: anything between the two is fine, never less than the policy keeps
    halfway = {k: v for k, v in seen.items() if k != "n01"}
    assert expect.retention_problems("local", before, halfway, policy=policy, forgot=None, now=NOW) == []
    assert expect.retention_problems("local", before, too_few, policy=policy, forgot=None, now=NOW)


# ---------------------------------------------------------------- the run's account
@pytest.mark.parametrize(("fault", "codes"), [
    (None, (0,)), (Fault("s3-slow", "latency"), (0,)), (Fault("stale-lock", "killed-run"), (0,)),
    (Fault("stale-lock", "foreign"), (0, 3)), (Fault("sigkill", "copy"), ()), (Fault("sigterm", "dump"), (1, 3)),
    (Fault("disk-full", "preflight"), (1,)), (Fault("disk-full", "dumps"), (1, 3)), (Fault("db-down", "mariadb"), (3,)),
    (Fault("s3-down", "copy"), (3,)), (Fault("pve-down", "api"), (3,)), (Fault("vzdump-fail", "102"), (3,))])
def test_expected_exit_codes(fault, codes):
    assert expect.expected_codes(fault) == codes


def summary(rc: int, snapshots: dict, failures: list) -> dict:
    return {"run_id": "r", "exit_code": rc, "status": expect.STATUS_OF[rc], "snapshots": snapshots,
            "failures": failures}


REPOS = {"local", "offsite"}
FAILED = [{"kind": "run", "source": "signal", "component": "", "message": "stopped by SIGTERM"}]


def test_a_truthful_run():
    good = summary(0, {"local": "a", "offsite": "b"}, [])
    assert expect.truth_problems(0, good, good, REPOS) == []
    partial = summary(3, {"local": "a"}, FAILED)
    assert expect.truth_problems(3, partial, dict(partial), REPOS) == []


def test_exit_1_with_a_snapshot_is_not_the_truth():
    # README: 1 is a failure (no snapshot), 3 is partial (a snapshot was made but something failed)
    said = summary(1, {"local": "a"}, FAILED)
    assert any("exit 1" in p for p in expect.truth_problems(1, said, said, REPOS))


def test_disagreements_are_found():
    said = summary(0, {"local": "a", "offsite": "b"}, [])
    assert expect.truth_problems(3, said, said, REPOS)
    assert expect.truth_problems(0, said, {**said, "run_id": "older"}, REPOS)
    assert expect.truth_problems(0, summary(0, {"local": "a"}, []), None, REPOS)
    assert expect.truth_problems(0, None, None, REPOS) == ["exit 0 without a --json summary"]


def test_failures_must_name_the_fault_and_only_what_it_touched():
    pve = Fault("vzdump-fail", "102")
    one = [{"kind": "proxmox", "source": "proxmox", "component": "ct:102", "message": "No space left on device"}]
    assert expect.fault_problems(pve, 3, {"failures": one}) == []
    two = one + [{"kind": "proxmox", "source": "proxmox", "component": "ct:101", "message": "x"}]
    assert expect.fault_problems(pve, 3, {"failures": two})
    down = Fault("db-down", "mariadb")
    assert expect.fault_problems(down, 3, {"failures": [{"kind": "mysql", "message": "refused"}]}) == []
    assert expect.fault_problems(down, 3, {"failures": [{"kind": "postgres", "message": "refused"}]})
    assert expect.fault_problems(Fault("sigterm", "copy"), 1, {"failures": FAILED}) == []


def test_the_snapshot_lacks_exactly_what_the_fault_took():
    universe = {"ct:101", "ct:102", "db:pg/appdb", "db:pg/@globals", "db:mariadb/shop", "tfstate:a"}
    down = Fault("db-down", "postgres")
    assert expect.component_problems(down, universe, universe - {"db:pg/appdb", "db:pg/@globals"}) == []
    assert expect.component_problems(down, universe, universe)           # it could not have been dumped
    assert expect.component_problems(None, universe, universe - {"ct:102"})  # a clean night lacks nothing
    assert expect.component_problems(None, universe, universe | {"ct:9991"})  # a sandbox left behind
    s3 = Fault("s3-down", "start")
    assert expect.component_problems(s3, universe, universe - {"tfstate:a"}) == []
    # a run cut short may have stored any part of the lab, never anything else
    assert expect.component_problems(Fault("sigkill", "dump"), universe, {"ct:101"}) == []
    assert expect.component_problems(Fault("disk-full", "dumps"), universe, {"ct:101", "ct:9991"})


def test_the_pve_api_down_takes_containers_and_vms_a_failed_vzdump_one_container():
    universe = {"ct:101", "ct:102", "vm:200", "db:pg/appdb", "tfstate:a"}
    down = Fault("pve-down", "api")
    assert expect.component_problems(down, universe, {"db:pg/appdb", "tfstate:a"}) == []
    assert expect.component_problems(down, universe, universe - {"ct:101", "ct:102"})  # the VM could not be dumped
    vzdump = Fault("vzdump-fail", "102")
    assert expect.component_problems(vzdump, universe, universe - {"ct:102"}) == []
    assert expect.component_problems(vzdump, universe, universe - {"ct:102", "vm:200"})  # the VM was not touched
    # both guest hooks say the API was down; a VM's failure under a container's vzdump fault is not that fault
    both = [{"kind": "proxmox", "component": "ct:*", "message": "refused"},
            {"kind": "qemu", "component": "vm:*", "message": "refused"}]
    assert expect.fault_problems(down, 3, {"failures": both}) == []
    assert expect.fault_problems(down, 3, {"failures": both[:1]})
    vm_too = [{"kind": "proxmox", "component": "ct:102", "message": "No space left on device"},
              {"kind": "qemu", "component": "vm:200", "message": "No space left on device"}]
    assert expect.fault_problems(vzdump, 3, {"failures": vm_too})
