"""The database accounts the docs create, on the whole lab through the real CLI: a right taken away makes the
run fail as documented (backup exit 3, restore exit 1), names the right and its GRANT, and changes nothing."""

from __future__ import annotations

import pytest

from restic_orch.lab.mariadb import apply_accounts as mariadb_accounts
from restic_orch.lab.mariadb import mariadb_sql
from restic_orch.lab.postgres import psql
from tests.clihelp import run_json

pytestmark = pytest.mark.e2e


def _services(lab) -> dict:
    return lab["state"]["services"]


def test_backup_account_without_trigger_makes_the_backup_partial_and_says_why(lab, fresh_repos):
    my = _services(lab)["mariadb"]
    mariadb_sql(my, "REVOKE TRIGGER ON *.* FROM backup@'127.0.0.1'")
    try:
        summary = run_json(lab["config"], "backup", "--only", "mysql", expect=3)
    finally:
        mariadb_accounts(my)
    failures = {f["component"]: f["message"] for f in summary["failures"]}
    assert set(failures) == {"db:mariadb/blog", "db:mariadb/shop"}, summary["failures"]
    assert all("(GRANT TRIGGER ON *.* TO 'backup'@'127.0.0.1')" in m for m in failures.values())
    assert summary["snapshots"].get("local")  # the users and grants were still stored


def test_restore_account_without_createdb_exits_1_and_changes_nothing(lab, fresh_repos):
    pg = _services(lab)["postgres"]
    run_json(lab["config"], "backup", "--only", "postgres")
    before = psql(pg, "SELECT string_agg(datname, ',' ORDER BY datname) FROM pg_database").strip()
    psql(pg, "ALTER ROLE restore NOCREATEDB")
    try:
        summary = run_json(lab["config"], "restore", "--only", "db:pg/appdb", "--target-db", "appdb_copy", "--yes",
                           expect=1)
    finally:
        psql(pg, "ALTER ROLE restore CREATEDB")
    [failure] = summary["failures"]
    assert failure["component"] == "db:pg/appdb"
    assert "the restore account restore needs CREATEDB to create database appdb_copy" in failure["message"]
    assert "(ALTER ROLE restore CREATEDB)" in failure["message"]
    assert psql(pg, "SELECT string_agg(datname, ',' ORDER BY datname) FROM pg_database").strip() == before
