"""A database whose dump failed on the night a restore would pick (issue 19, part 1), on the whole lab.

Two nights: a good one, then one where the backup account may no longer connect to appdb (REVOKE CONNECT, as a
DBA's clean-up might do), so that night's snapshot holds every other database but not appdb, and its manifest
records the failure. `restore --only db:pg/appdb` with the default `latest` then restores the newest good copy
and says so in its plan; `--snapshot` naming the failed night is refused (exit 2) with the good one suggested.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from restic_orch.lab.postgres import psql
from tests.clihelp import restic_orch, run_json
from tests.e2e import restore_helpers as rh

pytestmark = pytest.mark.e2e

TARGET = "db:pg/appdb"


def _snapshot(summary: dict[str, Any]) -> str:
    snapshot = summary["snapshots"].get("local")
    assert snapshot, summary
    return snapshot[:8]


@pytest.fixture(scope="module")
def nights(lab) -> dict[str, Any]:
    """A good night, then a night whose appdb dump failed: the two snapshots' short ids, the day, the failure."""
    rh.clean_repos(lab)
    pg = rh.services(lab)["postgres"]
    good = run_json(lab["config"], "backup", "--only", "postgres")
    assert good["status"] == "success", good["failures"]
    psql(pg, "REVOKE CONNECT ON DATABASE appdb FROM PUBLIC")
    try:
        bad = run_json(lab["config"], "backup", "--only", "postgres", expect=3)
    finally:
        psql(pg, "GRANT CONNECT ON DATABASE appdb TO PUBLIC")
    failed = [f for f in bad["failures"] if f["component"] == TARGET]
    assert failed and "permission denied" in failed[0]["message"], bad["failures"]
    assert "db:pg/inventory" in bad["components"] and TARGET not in bad["components"], bad["components"]
    return {"good": _snapshot(good), "bad": _snapshot(bad), "day": bad["started"][:10]}


def _dry_run(lab, *args: str, expect: int = 0, as_json: bool = True):
    result = restic_orch(lab["config"], *(["--json"] if as_json else []), "restore", *args, "--dry-run", input="")
    assert result.returncode == expect, f"exit {result.returncode}\n{result.stdout}\n{result.stderr}"
    return result


def test_latest_restores_the_newest_good_copy_and_says_so_in_the_plan(lab, nights):
    result = _dry_run(lab, "--only", TARGET)
    plan = json.loads(result.stdout)
    assert plan["snapshot"] == nights["good"], (plan, nights)
    assert [step["component"] for step in plan["plan"]] == [TARGET]
    said = (f"the latest snapshot {nights['bad']} of {nights['day']} lacks {TARGET}: the dump of {TARGET} failed"
            f" that night (")
    chosen = f"the newest snapshot with a good copy is {nights['good']} of {nights['day']}: restoring from it"
    description = plan["plan"][0]["description"]
    assert said in description and chosen in description and "permission denied" in description, description
    assert said in result.stderr, result.stderr  # the log's warning, on the terminal
    human = _dry_run(lab, "--only", TARGET, as_json=False)
    assert f"snapshot {nights['good']} from local" in human.stdout and chosen in human.stdout, human.stdout


def test_what_dumped_that_night_still_comes_from_it(lab, nights):
    plan = json.loads(_dry_run(lab, "--only", "db:pg/inventory").stdout)
    assert plan["snapshot"] == nights["bad"]
    assert "failed that night" not in plan["plan"][0]["description"]


@pytest.mark.parametrize("named_by", ["id", "day"])
def test_naming_the_failed_night_is_refused_with_the_good_copy_suggested(lab, nights, named_by):
    spec = nights["bad"] if named_by == "id" else nights["day"]  # both nights are today: the day is the later
    result = _dry_run(lab, "--only", TARGET, "--snapshot", spec, expect=2)
    assert (f"error: snapshot {nights['bad']} of {nights['day']} lacks {TARGET}: the dump of {TARGET} failed that"
            " night (") in result.stderr, result.stderr
    assert (f"the newest snapshot with a good copy is {nights['good']} of {nights['day']}"
            f" (--snapshot {nights['good']})") in result.stderr, result.stderr
    assert not result.stdout.strip()
