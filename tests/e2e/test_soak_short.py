"""The soak, short: 3 nights on a lab of its own, a SIGKILL then a database server down, quick checks.

The full soak (`make soak`, 30 nights, every fault kind) is too long for the suite; this runs the same loop
(mutate, record, strike, back up, heal, judge, restore against the record) with the two faults that matter most
for a smoke test: a killed run the next night must recover from, and a source missing from a partial night.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from soak import plan, report, run
from soak.state import Options

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]
KINDS = ("sigkill", "db-down")


def seed_for_a_kill_then_a_database_down() -> int:
    """The first seed whose night 2 kills the run in a phase that reaches restic and night 3 stops a database."""
    for seed in range(1000):
        nights = plan.plan(seed, 3, kinds=KINDS)
        kill, down = nights[1].fault, nights[2].fault
        if kill and kill.label in ("sigkill:dump", "sigkill:backup") and down and down.kind == "db-down":
            return seed
    raise AssertionError("no seed gives that plan")


def test_three_nights_with_a_kill_and_a_database_down_lose_nothing(tmp_path):
    options = Options(seed=seed_for_a_kill_then_a_database_down(), nights=3, kinds=KINDS, quick=True)
    said: list[str] = []
    state = run.soak(options, say=said.append)
    text = "\n".join(said)
    assert [r.problems for r in state.results] == [[], [], []], text
    assert state.final and state.final["problems"] == [], text
    first, killed, partial = state.results
    assert first.exit == 0 and first.held == {"local": True, "offsite": True}
    assert killed.landed and killed.exit is not None and killed.exit < 0 and killed.status == "killed"
    assert partial.landed and partial.exit == 3 and partial.status == "partial"
    assert sum(run.injected(state.results).values()) == 2
    # restored and matched against the soak's own record: night 1 that night, the last night at the closing
    assert first.verified >= 1 and state.final["verified"] >= 6
    assert {"ct", "vm", "db", "tfstate", "vault", "files"} <= set(state.final["by_kind"])
    assert not Path(state.lab.dir).exists(), "the soak's lab must be removed"

    target = tmp_path / "reliability.md"
    others = "# Reliability\n\nother sections, kept as they are: /tmp/reliability.jsonl\n"
    target.write_text(others)
    report.write(target, state, 42.0)
    report.write(target, state, 42.0)  # rewrites its own section, once
    written = target.read_text()
    assert written.startswith(others) and written.count(report.BEGIN) == 1
    section = written[len(others):]
    assert f"seed {options.seed}" in section and "**green**" in section and "faults injected: **2**" in section
    assert "/tmp/" not in section and str(state.lab.dir) not in section
