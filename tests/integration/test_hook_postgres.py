"""The PostgreSQL hook against a real PostgreSQL 15 lab server: dumps, restores, failures."""

from __future__ import annotations

import logging
import os
import shutil
import signal
import tempfile
import threading
import time
from pathlib import Path

import pytest

from restic_orch.config import Config
from restic_orch.hooks.base import Artifact, DumpContext, RestoreOptions, sha256_file
from restic_orch.hooks.postgres import PostgresHook
from restic_orch.lab import postgres as labpg
from restic_orch.lab import procs
from restic_orch.lab.secrets import write_secret
from tests.hookhelp import by_component, fetch_from, our_child, staged_files


@pytest.fixture(scope="module")
def lab():
    # Not tmp_path: pytest's base temp dir is 0700 root, which the postgres user cannot traverse.
    base = Path(tempfile.mkdtemp(prefix="restic-orch-pghook-"))
    base.chmod(0o755)
    info = labpg.start_postgres(base)
    try:
        info["seed"] = labpg.seed_postgres(info)
        info["base"] = base
        # a local exec prefix that records every client command line, like `pct exec 102 --` would run it
        info["argv_log"] = base / "argv.log"
        prefix = base / "prefix.sh"
        prefix.write_text(f'#!/bin/sh\nprintf "%s\\n" "$*" >> {info["argv_log"]}\nexec "$@"\n')
        prefix.chmod(0o755)
        info["prefix"] = str(prefix)
        yield info
    finally:
        labpg.stop_postgres(info)
        shutil.rmtree(base, ignore_errors=True)


def _config(lab: dict, **source) -> Config:
    # the accounts of docs/sql/postgres-accounts.sql: `backup` dumps, `restore` restores; neither is a superuser
    password = write_secret(lab["base"] / "secrets" / "restic-pass", "dummy\n")
    entry = {"name": "main", "host": lab["host"], "port": lab["port"], "user": lab["user"],
             "password_file": lab["password_file"], "restore_user": lab["restore_user"],
             "restore_password_file": lab["restore_password_file"], "bin_dir": lab["bin_dir"], **source}
    return Config.model_validate({
        "repositories": {"local": {"url": str(lab["base"] / "repo"), "password_file": str(password),
                                   "retention": {"keep_last": 1}}},
        "sources": {"postgres": [entry]},
    })


def _hook(lab: dict, **source) -> PostgresHook:
    hooks = PostgresHook.from_config(_config(lab, **source))
    assert len(hooks) == 1 and hooks[0].name == source.get("name", "main")
    return hooks[0]


def _dump(lab: dict, tmp_path: Path, hook: PostgresHook):
    day = tmp_path / "2024-05-01"
    day.mkdir(exist_ok=True)
    ctx = DumpContext(config=_config(lab), day_dir=day, run_id="t", log=logging.getLogger("test"))
    return day, hook.dump(ctx)




def _sql(lab: dict, sql: str, db: str = "postgres") -> str:
    return labpg.psql(lab, sql, db).strip()








@pytest.fixture(scope="module")
def full_dump(lab, tmp_path_factory):
    day = tmp_path_factory.mktemp("pgfull")
    lab["argv_log"].write_text("")
    hook = _hook(lab, exec_prefix=[lab["prefix"]])
    day, outcome = _dump(lab, day, hook)
    return day, outcome


def test_dump_every_database_with_row_counts(lab, full_dump):
    day, outcome = full_dump
    assert outcome.failures == []
    arts = by_component(outcome)
    assert set(arts) == {"db:main/@globals", "db:main/postgres", "db:main/inventory", "db:main/appdb"}
    for name, tables in lab["seed"]["databases"].items():
        art = arts[f"db:main/{name}"]
        assert art.path == f"postgres/main/{name}.dump"
        assert art.meta["database"] == name and art.meta["format"] == "custom"
        assert art.meta["compression"] == 0  # restic compresses; a zlib stream would not deduplicate
        assert art.meta["row_counts"] == {f"public.{t}": n for t, n in tables.items()}
        assert art.meta["server_version"] == art.meta["client_version"] == "15.18"
        assert (day / art.path).read_bytes()[:5] == b"PGDMP"  # custom format
        assert art.sha256 == sha256_file(day / art.path) and art.size == (day / art.path).stat().st_size
    assert arts["db:main/appdb"].meta["owner"] == "gitea"
    globals_sql = (day / arts["db:main/@globals"].path).read_text()
    assert "CREATE ROLE gitea;" in globals_sql and "CREATE ROLE netbox_ro;" in globals_sql
    assert {"gitea", "netbox_ro"} <= set(arts["db:main/@globals"].meta["roles"])
    assert outcome.tools == {"pg_dump": "15.18", "postgres-server:main": "15.18"}
    assert not [f for f in staged_files(day) if f.endswith(".partial")]
    for path in staged_files(day):
        assert (day / path).stat().st_mode & 0o077 == 0, path


def test_every_client_runs_through_the_prefix_and_no_password_in_argv(lab, full_dump):
    lines = lab["argv_log"].read_text().splitlines()
    used = {Path(line.split()[0]).name for line in lines}
    assert {"psql", "pg_dump", "pg_dumpall", "pg_restore"} <= used
    assert all(line.startswith(lab["bin_dir"]) for line in lines)
    assert not [line for line in lines if lab["password"] in line]
    # every pg_dump used the snapshot in which the row counts were taken
    assert all("--snapshot=" in line for line in lines if Path(line.split()[0]).name == "pg_dump"
               and "--version" not in line)


def test_restore_into_another_name_same_rows_and_bytes(lab, full_dump):
    day, outcome = full_dump
    art = by_component(outcome)["db:main/appdb"]
    hook = _hook(lab)
    result = hook.restore(art, fetch_from(day, art), RestoreOptions(params={"target_db": "appdb_restored"}))
    assert result.ok, result.message
    assert result.checks["row_counts"] == "ok" and result.checks["owners"] == "kept"
    for table, key in (("users", "id"), ("issues", "id"), ("attachments", "id")):
        checksum = f"SELECT md5(string_agg(t::text, '|' ORDER BY {key})) FROM {table} t"
        assert _sql(lab, checksum, "appdb_restored") == _sql(lab, checksum, "appdb")
    assert _sql(lab, "SELECT tableowner FROM pg_tables WHERE tablename = 'issues'", "appdb_restored") == "gitea"
    assert _sql(lab, "SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = 'appdb_restored'") == "gitea"
    assert _sql(lab, "SELECT count(*) FROM open_issues", "appdb_restored") == _sql(
        lab, "SELECT count(*) FROM open_issues", "appdb")
    assert hook.count_rows("appdb_restored") == art.meta["row_counts"]


def test_restore_refused_on_non_empty_database_without_force(lab, full_dump):
    day, outcome = full_dump
    inventory = by_component(outcome)["db:main/inventory"]
    _sql(lab, "CREATE DATABASE occupied OWNER netbox")  # an application's database, as the restore account finds it
    _sql(lab, "CREATE TABLE precious (v text); INSERT INTO precious VALUES ('keep me')", "occupied")
    hook = _hook(lab)
    result = hook.restore(inventory, fetch_from(day, inventory), RestoreOptions(params={"target_db": "occupied"}))
    assert not result.ok and "not empty" in result.message and "--force" in result.message
    assert _sql(lab, "SELECT v FROM precious", "occupied") == "keep me"
    forced = hook.restore(inventory, fetch_from(day, inventory),
                          RestoreOptions(force=True, params={"target_db": "occupied"}))
    assert forced.ok, forced.message
    assert _sql(lab, "SELECT to_regclass('public.precious') IS NULL", "occupied") == "t"
    assert _sql(lab, "SELECT name FROM sites WHERE slug = 'tyo'", "occupied") == "東京データセンター"
    hook.drop_database("occupied")
    assert _sql(lab, "SELECT count(*) FROM pg_database WHERE datname = 'occupied'") == "0"
    with pytest.raises(Exception, match="system database"):
        hook.drop_database("template1")


def test_restore_refuses_a_corrupted_fetch(lab, full_dump):
    day, outcome = full_dump
    art = by_component(outcome)["db:main/inventory"]

    def bad_fetch(dest: Path) -> Path:
        data = bytearray((day / art.path).read_bytes())
        data[len(data) // 2] ^= 0xFF
        dest.write_bytes(bytes(data))
        return dest

    result = _hook(lab).restore(art, bad_fetch, RestoreOptions(params={"target_db": "never_created"}))
    assert not result.ok and "sha256" in result.message
    assert _sql(lab, "SELECT count(*) FROM pg_database WHERE datname = 'never_created'") == "0"


def test_globals_and_owners(lab, tmp_path):
    _sql(lab, "CREATE ROLE probe_owner LOGIN PASSWORD 'Probe-pw-4711'; CREATE DATABASE owned OWNER probe_owner;")
    _sql(lab, "CREATE TABLE t AS SELECT g AS v FROM generate_series(1, 77) g; ALTER TABLE t OWNER TO probe_owner;"
              " GRANT SELECT ON t TO netbox_ro", "owned")
    labpg.apply_accounts(lab)  # a new application role owns something: the docs say to run the file again
    assert _sql(lab, "SELECT pg_has_role('restore', 'probe_owner', 'MEMBER')") == "t"
    hook = _hook(lab, databases=["owned"])
    day, outcome = _dump(lab, tmp_path, hook)
    assert outcome.failures == []
    arts = by_component(outcome)
    assert set(arts) == {"db:main/@globals", "db:main/owned"}
    assert "probe_owner" in arts["db:main/owned"].meta["roles"]
    _sql(lab, "DROP DATABASE owned; DROP ROLE probe_owner;")

    # the role is missing: the data still comes back, without owners and grants, and the outcome says so
    art = arts["db:main/owned"]
    result = hook.restore(art, fetch_from(day, art), RestoreOptions(params={"target_db": "owned_noroles"}))
    assert result.ok and "without owners" in result.message and "@globals" in result.message
    assert result.checks["owners"] == {"dropped, roles missing": ["probe_owner"]}
    assert _sql(lab, "SELECT count(*) FROM t", "owned_noroles") == "77"

    # globals bring the role back (the others already exist: tolerated, and said)
    glob = arts["db:main/@globals"]
    result = hook.restore(glob, fetch_from(day, glob), RestoreOptions())
    assert result.ok, result.message
    assert "already existed" in result.message and "ON_ERROR_STOP off" in result.message
    assert "restore (the account restoring)" in result.message and "postgres (a superuser)" in result.message
    assert result.checks["roles"] == "ok"
    assert _sql(lab, "SELECT rolcanlogin FROM pg_roles WHERE rolname = 'probe_owner'") == "t"
    # by a non-superuser, with the password hash the backup account read (pg_read_all_data covers pg_authid)
    env = {"PGPASSWORD": "Probe-pw-4711", "PATH": os.environ["PATH"]}
    who = procs.run([f"{lab['bin_dir']}/psql", "-X", "-A", "-t", "-h", lab["host"], "-p", str(lab["port"]),
                     "-U", "probe_owner", "-d", "postgres", "-c", "SELECT current_user"], env=env, what="psql")
    assert who.strip() == "probe_owner"
    assert _sql(lab, "SELECT pg_has_role('restore', 'probe_owner', 'MEMBER')") == "t"  # GRANTED BY dropped

    # now the owners are kept
    result = hook.restore(art, fetch_from(day, art), RestoreOptions())
    assert result.ok and result.checks["owners"] == "kept", result.message
    assert result.restored_to == "main/owned"
    assert _sql(lab, "SELECT tableowner FROM pg_tables WHERE tablename = 't'", "owned") == "probe_owner"
    assert _sql(lab, "SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = 'owned'") == "probe_owner"
    assert _sql(lab, "SELECT has_table_privilege('netbox_ro', 't', 'SELECT')", "owned") == "t"
    hook.drop_database("owned_noroles")


def test_row_counts_consistent_with_the_dump_under_concurrent_writes(lab, tmp_path):
    _sql(lab, "CREATE DATABASE busy")
    _sql(lab, "CREATE TABLE events (id bigserial PRIMARY KEY, at timestamptz DEFAULT clock_timestamp());"
              " INSERT INTO events DEFAULT VALUES", "busy")
    writer = threading.Thread(target=labpg.psql, args=(lab, """
        DO $$ DECLARE stop timestamptz := clock_timestamp() + interval '3 seconds'; BEGIN
          WHILE clock_timestamp() < stop LOOP INSERT INTO events DEFAULT VALUES; COMMIT; END LOOP;
        END $$;""", "busy"))
    writer.start()
    try:
        deadline = time.monotonic() + 10
        while int(_sql(lab, "SELECT count(*) FROM events", "busy")) < 50 and time.monotonic() < deadline:
            time.sleep(0.02)
        hook = _hook(lab, databases=["busy"], globals=False)
        day, outcome = _dump(lab, tmp_path, hook)
    finally:
        writer.join()
    assert outcome.failures == []
    art = by_component(outcome)["db:main/busy"]
    counted = art.meta["row_counts"]["public.events"]
    assert 50 <= counted < int(_sql(lab, "SELECT count(*) FROM events", "busy"))
    result = hook.restore(art, fetch_from(day, art), RestoreOptions(suffix="_drill"))
    assert result.ok and result.checks["row_counts"] == "ok", result
    assert _sql(lab, "SELECT count(*) FROM events", "busy_drill") == str(counted)
    # `busy` and its table belong to the superuser postgres, which the restore account cannot give anything
    # to: the copy is its own, and the outcome says so and how to give it back
    assert result.checks["owners"] == {"not kept": ["postgres"], "now owned by": "restore"}
    assert "REASSIGN OWNED BY restore TO postgres" in result.message
    assert _sql(lab, "SELECT tableowner FROM pg_tables WHERE tablename = 'events'", "busy_drill") == "restore"
    hook.drop_database("busy_drill")
    # nor can it drop the superuser's database to restore over it: refused before anything is changed
    forced = hook.restore(art, fetch_from(day, art), RestoreOptions(force=True))
    assert not forced.ok and "nothing was changed" in forced.message
    assert "database busy is owned by the superuser postgres, which only a superuser can drop" in forced.message
    assert int(_sql(lab, "SELECT count(*) FROM events", "busy")) > counted
    _sql(lab, "DROP DATABASE busy")  # the superuser's own database: only a superuser drops it


def test_server_down_fails_the_source_without_artifacts(lab, tmp_path):
    hook = _hook(lab, name="down", port=procs.free_port())
    day, outcome = _dump(lab, tmp_path, hook)
    assert outcome.artifacts == []
    assert [f.component for f in outcome.failures] == ["db:down/*"]
    assert "Connection refused" in outcome.failures[0].message or "connect" in outcome.failures[0].message
    assert not staged_files(day)


def test_wrong_password_fails_loudly_and_never_shows_it(lab, tmp_path, caplog):
    wrong = "Wr0ng-" + "x7Qp" * 6
    secret = write_secret(tmp_path / "wrong-pass", wrong + "\n")
    caplog.set_level(logging.DEBUG)
    hook = _hook(lab, name="badpw", password_file=str(secret))
    day, outcome = _dump(lab, tmp_path, hook)
    assert outcome.artifacts == [] and not staged_files(day)
    assert len(outcome.failures) == 1
    message = outcome.failures[0].message
    assert "password authentication failed" in message
    logged = caplog.text + " ".join(str(r.__dict__) for r in caplog.records)
    for text in (message, logged):
        assert wrong not in text and lab["password"] not in text
    # the restore path reports the same way
    hook = _hook(lab, name="badpw", password_file=str(secret), restore_password_file=str(secret))
    art = Artifact("db:badpw/x", "postgres", "badpw", "postgres/badpw/x.dump", 0, "", {"database": "x"})
    result = hook.restore(art, lambda dest: dest.write_bytes(b"PGDMP") and dest, RestoreOptions())
    assert not result.ok and "password authentication failed" in result.message
    assert wrong not in result.message


@pytest.fixture(scope="module")
def bigdb(lab):
    _sql(lab, "CREATE DATABASE bigdb")
    # ~150 MB of text: pg_dump -Fc needs several seconds to compress it
    _sql(lab, "CREATE TABLE big AS SELECT i, md5(i::text) || md5((i + 1)::text) || md5((i + 2)::text)"
              " || md5((i * 3)::text) AS a FROM generate_series(1, 1200000) i", "bigdb")
    yield "bigdb"
    _sql(lab, "DROP DATABASE bigdb WITH (FORCE)")


def test_dump_killed_by_timeout_leaves_no_artifact(lab, bigdb, tmp_path):
    # compressed at level 9 so the dump surely outlasts its 1 s timeout
    hook = _hook(lab, databases=[bigdb], globals=False, timeout_seconds=1, dump_compression=9)
    day, outcome = _dump(lab, tmp_path, hook)
    assert outcome.artifacts == []
    assert [f.component for f in outcome.failures] == ["db:main/bigdb"]
    assert "timed out" in outcome.failures[0].message
    assert not staged_files(day)


def test_dump_killed_by_a_signal_halfway_leaves_no_artifact(lab, bigdb, tmp_path):
    hook = _hook(lab, databases=[bigdb], globals=False, dump_compression=9)  # slow enough to be caught halfway
    partial = tmp_path / "2024-05-01" / "postgres" / "main" / "bigdb.dump.partial"
    killed: list[int] = []

    def killer() -> None:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if partial.exists() and partial.stat().st_size > 1_000_000:
                for entry in Path("/proc").iterdir():
                    try:
                        cmd = (entry / "cmdline").read_bytes().split(b"\0")
                    except OSError:
                        continue
                    if our_child(entry) and cmd[0].endswith(b"pg_dump") and any(b"bigdb" in c for c in cmd):
                        os.kill(int(entry.name), signal.SIGKILL)  # the dump this test started
                        killed.append(int(entry.name))
                        return
            time.sleep(0.01)

    thread = threading.Thread(target=killer)
    thread.start()
    day, outcome = _dump(lab, tmp_path, hook)
    thread.join()
    assert killed, "the dump finished before it could be killed"
    assert outcome.artifacts == []
    assert "killed by signal SIGKILL" in outcome.failures[0].message
    assert not staged_files(day)


def test_broken_and_excluded_databases_do_not_lose_the_others(lab, tmp_path):
    _sql(lab, "CREATE DATABASE broken; ALTER DATABASE broken ALLOW_CONNECTIONS false;")
    try:
        hook = _hook(lab, exclude=["postgres", "appdb_restored", "bigdb", "owned"])
        day, outcome = _dump(lab, tmp_path, hook)
    finally:
        _sql(lab, "DROP DATABASE broken")
    assert [f.component for f in outcome.failures] == ["db:main/broken"]
    assert "broken" in outcome.failures[0].message
    arts = by_component(outcome)
    assert {"db:main/inventory", "db:main/appdb", "db:main/@globals"} <= set(arts)
    assert "db:main/postgres" not in arts
    assert arts["db:main/inventory"].meta["row_counts"]["public.devices"] == 2000
    assert not [f for f in staged_files(day) if "broken" in f]


def test_missing_database_in_the_list_is_a_failure(lab, tmp_path):
    hook = _hook(lab, databases=["inventory", "nosuchdb"], globals=False)
    _, outcome = _dump(lab, tmp_path, hook)
    assert [a.component for a in outcome.artifacts] == ["db:main/inventory"]
    assert [f.component for f in outcome.failures] == ["db:main/nosuchdb"]


def test_client_older_than_server_is_refused(lab, tmp_path):
    bin_dir = tmp_path / "oldbin"
    bin_dir.mkdir()
    for name in ("psql", "pg_dumpall", "pg_restore"):
        (bin_dir / name).symlink_to(Path(lab["bin_dir"]) / name)
    fake = bin_dir / "pg_dump"
    fake.write_text("#!/bin/sh\necho 'pg_dump (PostgreSQL) 14.11'\n")
    fake.chmod(0o755)
    hook = _hook(lab, bin_dir=str(bin_dir))
    day, outcome = _dump(lab, tmp_path, hook)
    assert outcome.artifacts == [] and not staged_files(day)
    assert len(outcome.failures) == 1
    message = outcome.failures[0].message
    assert "14.11" in message and "15.18" in message and "older" in message



def test_restore_into_an_existing_empty_database_and_a_failed_restore(lab, full_dump):
    day, outcome = full_dump
    arts = by_component(outcome)
    hook = _hook(lab)
    # `postgres` exists and holds nothing: restored into as it is (no drop, no cut-off sessions)
    pg = arts["db:main/postgres"]
    result = hook.restore(pg, fetch_from(day, pg), RestoreOptions())
    assert result.ok and result.restored_to == "main/postgres", result
    # a truncated archive (its manifest entry matching, as if the dump had been cut short unnoticed)
    whole = (day / arts["db:main/appdb"].path).read_bytes()
    cut = day / "cut.dump"
    cut.write_bytes(whole[: len(whole) // 2])
    bad = Artifact("db:main/appdb", "postgres", "main", "cut.dump", cut.stat().st_size, sha256_file(cut),
                   dict(arts["db:main/appdb"].meta))
    result = hook.restore(bad, fetch_from(day, bad), RestoreOptions(params={"target_db": "appdb_cut"}))
    assert not result.ok and "pg_restore" in result.message
    assert _sql(lab, "SELECT count(*) FROM pg_database WHERE datname = 'appdb_cut'") == "0"


def test_a_dump_cut_short_with_exit_code_zero_is_caught_by_validation(lab, bigdb, tmp_path):
    # a pg_dump that "succeeds" but delivers half an archive (a full disk behind a pipe, a buggy wrapper)
    bin_dir = tmp_path / "cutbin"
    bin_dir.mkdir()
    for name in ("psql", "pg_dumpall", "pg_restore"):
        (bin_dir / name).symlink_to(Path(lab["bin_dir"]) / name)
    real = Path(lab["bin_dir"]) / "pg_dump"
    (bin_dir / "pg_dump").write_text(f'#!/bin/sh\n[ "$1" = --version ] && exec {real} --version\n'
                                     f'{real} "$@" | head -c 3000000\nexit 0\n')
    (bin_dir / "pg_dump").chmod(0o755)
    hook = _hook(lab, bin_dir=str(bin_dir), databases=[bigdb, "inventory"], globals=False)
    day, outcome = _dump(lab, tmp_path, hook)
    assert [a.component for a in outcome.artifacts] == ["db:main/inventory"]
    assert [f.component for f in outcome.failures] == ["db:main/bigdb"]
    assert "pg_restore" in outcome.failures[0].message
    assert staged_files(day) == ["postgres/main/inventory.dump"]


# --- the accounts' rights: what each operation needs, and what the product says when one is missing -------

def test_backup_account_without_pg_read_all_data_names_the_grant(lab, tmp_path):
    _sql(lab, "REVOKE pg_read_all_data FROM backup")
    try:
        day, outcome = _dump(lab, tmp_path, _hook(lab, databases=["appdb"]))
    finally:
        _sql(lab, "GRANT pg_read_all_data TO backup")
    assert [f.component for f in outcome.failures] == ["db:main/appdb"]
    message = outcome.failures[0].message
    assert "permission denied" in message
    assert "the backup account backup needs pg_read_all_data (GRANT pg_read_all_data TO backup)" in message
    # the globals still come, without the password hashes, and the notice says what would bring them
    assert [a.component for a in outcome.artifacts] == ["db:main/@globals"]
    assert "needs pg_read_all_data (GRANT pg_read_all_data TO backup)" in outcome.notices[0].message
    assert staged_files(day) == ["postgres/main/@globals.sql"]


def test_row_level_security_needs_bypassrls_and_the_documented_role_has_it(lab, tmp_path):
    _sql(lab, "CREATE DATABASE rls OWNER netbox")
    _sql(lab, "SET ROLE netbox; CREATE TABLE secret (id int, owner text);"
              " INSERT INTO secret SELECT g, 'someone' FROM generate_series(1, 5) g;"
              " ALTER TABLE secret ENABLE ROW LEVEL SECURITY; ALTER TABLE secret FORCE ROW LEVEL SECURITY;"
              " CREATE POLICY mine ON secret USING (owner = current_user)", "rls")
    try:
        day, outcome = _dump(lab, tmp_path, _hook(lab, databases=["rls"], globals=False))
        assert outcome.failures == []  # the documented backup role has BYPASSRLS: every row is there
        assert by_component(outcome)["db:main/rls"].meta["row_counts"] == {"public.secret": 5}
        _sql(lab, "ALTER ROLE backup NOBYPASSRLS")
        try:
            day, outcome = _dump(lab, tmp_path, _hook(lab, databases=["rls"], globals=False))
        finally:
            _sql(lab, "ALTER ROLE backup BYPASSRLS")
        assert outcome.artifacts == [] and not staged_files(day)
        message = outcome.failures[0].message
        assert "row-level security" in message and "(ALTER ROLE backup BYPASSRLS)" in message
    finally:
        _sql(lab, "DROP DATABASE rls WITH (FORCE)")


def test_large_objects_are_not_covered_by_pg_read_all_data(lab, tmp_path):
    _sql(lab, "CREATE DATABASE lobs OWNER netbox")
    _sql(lab, "SET ROLE netbox; SELECT lo_from_bytea(0, 'scan'::bytea)", "lobs")
    try:
        _, outcome = _dump(lab, tmp_path, _hook(lab, databases=["lobs"], globals=False))
        message = outcome.failures[0].message
        assert "permission denied for large object" in message
        assert "GRANT SELECT ON LARGE OBJECT %s TO backup" in message
        _sql(lab, "SELECT format('GRANT SELECT ON LARGE OBJECT %s TO backup', oid) FROM pg_largeobject_metadata"
                  " \\gexec", "lobs")  # what the message says to run
        _, outcome = _dump(lab, tmp_path, _hook(lab, databases=["lobs"], globals=False))
        assert outcome.failures == [] and [a.component for a in outcome.artifacts] == ["db:main/lobs"]
    finally:
        _sql(lab, "DROP DATABASE lobs WITH (FORCE)")


def test_restore_account_without_createdb_changes_nothing_and_names_the_right(lab, full_dump):
    day, outcome = full_dump
    art = by_component(outcome)["db:main/appdb"]
    _sql(lab, "ALTER ROLE restore NOCREATEDB")
    try:
        result = _hook(lab).restore(art, fetch_from(day, art), RestoreOptions(params={"target_db": "appdb_nocreatedb"}))
    finally:
        _sql(lab, "ALTER ROLE restore CREATEDB")
    assert not result.ok and "nothing was changed" in result.message
    assert ("the restore account restore needs CREATEDB to create database appdb_nocreatedb"
            " (ALTER ROLE restore CREATEDB)") in result.message
    assert _sql(lab, "SELECT count(*) FROM pg_database WHERE datname = 'appdb_nocreatedb'") == "0"


def test_restore_account_not_member_of_the_owner_leaves_the_stored_database_alone(lab, full_dump):
    day, outcome = full_dump
    art = by_component(outcome)["db:main/appdb"]
    hook = _hook(lab)
    assert hook.restore(art, fetch_from(day, art), RestoreOptions(params={"target_db": "appdb_kept"})).ok
    _sql(lab, "INSERT INTO users (login) VALUES ('added after the backup')", "appdb_kept")
    _sql(lab, "REVOKE gitea FROM restore")
    try:
        forced = hook.restore(art, fetch_from(day, art), RestoreOptions(force=True, params={"target_db": "appdb_kept"}))
        fresh = hook.restore(art, fetch_from(day, art), RestoreOptions(params={"target_db": "appdb_other"}))
    finally:
        labpg.apply_accounts(lab)  # the documented file grants the owner roles again
    for result in (forced, fresh):
        assert not result.ok and "nothing was changed" in result.message, result.message
        assert "needs membership in role gitea" in result.message and "(GRANT gitea TO restore)" in result.message
    assert "which owns database appdb_kept, to replace it" in forced.message
    # the database that was there is untouched, the other one never created
    assert _sql(lab, "SELECT count(*) FROM users WHERE login = 'added after the backup'", "appdb_kept") == "1"
    assert _sql(lab, "SELECT count(*) FROM pg_database WHERE datname = 'appdb_other'") == "0"
    hook.drop_database("appdb_kept")


def test_a_role_attribute_only_a_superuser_may_give_is_named(lab, tmp_path):
    _sql(lab, "CREATE ROLE probe_repl LOGIN REPLICATION")
    hook = _hook(lab, databases=[])
    day, outcome = _dump(lab, tmp_path, hook)
    glob = by_component(outcome)["db:main/@globals"]
    _sql(lab, "DROP ROLE probe_repl")
    try:
        result = hook.restore(glob, fetch_from(day, glob), RestoreOptions())
        assert not result.ok and result.checks["roles"] == "ok"
        assert "probe_repl REPLICATION (as a superuser: ALTER ROLE probe_repl REPLICATION)" in result.message
        # the rest of the role is there: it can log in, it only lacks what a superuser must give
        assert _sql(lab, "SELECT rolcanlogin::text || rolreplication::text FROM pg_roles"
                         " WHERE rolname = 'probe_repl'") == "truefalse"
    finally:
        _sql(lab, "DROP ROLE IF EXISTS probe_repl")


def test_restore_account_without_createrole_names_it(lab, tmp_path):
    _sql(lab, "CREATE ROLE probe_app LOGIN")
    hook = _hook(lab, databases=[])
    day, outcome = _dump(lab, tmp_path, hook)
    glob = by_component(outcome)["db:main/@globals"]
    _sql(lab, "DROP ROLE probe_app; ALTER ROLE restore NOCREATEROLE")
    try:
        result = hook.restore(glob, fetch_from(day, glob), RestoreOptions())
    finally:
        _sql(lab, "ALTER ROLE restore CREATEROLE; DROP ROLE IF EXISTS probe_app")
    assert not result.ok and result.checks["roles"] == {"missing": ["probe_app"]}
    assert "permission denied to create role" in result.message
    assert "the restore account restore needs CREATEROLE (ALTER ROLE restore CREATEROLE)" in result.message


def test_an_untrusted_extension_is_refused_before_anything_is_created(lab, tmp_path):
    _sql(lab, "CREATE DATABASE withext OWNER netbox")
    _sql(lab, "CREATE EXTENSION adminpack", "withext")  # superuser-only, not trusted
    try:
        hook = _hook(lab, databases=["withext"], globals=False)
        day, outcome = _dump(lab, tmp_path, hook)
        art = by_component(outcome)["db:main/withext"]
        result = hook.restore(art, fetch_from(day, art), RestoreOptions(params={"target_db": "withext_copy"}))
        assert not result.ok and "nothing was changed" in result.message
        assert "extension adminpack can only be created by a superuser" in result.message
        assert _sql(lab, "SELECT count(*) FROM pg_database WHERE datname = 'withext_copy'") == "0"
    finally:
        _sql(lab, "DROP DATABASE withext WITH (FORCE)")
