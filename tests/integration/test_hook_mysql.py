"""The MariaDB hook against a real MariaDB 10.11 lab server: dumps, restores, failures."""

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
from restic_orch.hooks.mysql import MysqlHook, count_dump_rows
from restic_orch.lab import mariadb as labdb
from restic_orch.lab import procs
from restic_orch.lab.secrets import write_secret
from tests.hookhelp import by_component, fetch_from, our_child, staged_files

# strings and bytes that look like SQL structure: the row counter must not be fooled by them
TRICKY_SQL = r"""
CREATE DATABASE tricky CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci;
CREATE TABLE tricky.weird (id int PRIMARY KEY, s text, b varbinary(64), n int NULL);
INSERT INTO tricky.weird VALUES
  (1, 'paren ( and ) and ),( inside', X'28292C28', NULL),
  (2, 'quote '' and backslash \\ and \' escaped', X'275C', 5),
  (3, 'new\nline\r\nand tab\t; semicolon);\nINSERT INTO `x` VALUES (1);', X'0A0D00', -1),
  (4, '', '', 0),
  (5, 'emoji 🚀 «(»', NULL, NULL);
CREATE TABLE tricky.`odd ``name`` (x)` (id int);
INSERT INTO tricky.`odd ``name`` (x)` VALUES (1), (2), (3);
CREATE TABLE tricky.empty_table (id int);
"""


@pytest.fixture(scope="module")
def lab():
    # Not tmp_path: pytest's base temp dir is 0700 root, which the mysql user cannot traverse.
    base = Path(tempfile.mkdtemp(prefix="restic-orch-myhook-"))
    base.chmod(0o755)
    info = labdb.start_mariadb(base)
    try:
        info["seed"] = labdb.seed_mariadb(info)
        labdb.mariadb_sql(info, TRICKY_SQL)
        info["base"] = base
        # a local exec prefix that records every client command line, like `pct exec 103 --` would run it
        info["argv_log"] = base / "argv.log"
        prefix = base / "prefix.sh"
        prefix.write_text(f'#!/bin/sh\nprintf "%s\\n" "$*" >> {info["argv_log"]}\nexec "$@"\n')
        prefix.chmod(0o755)
        info["prefix"] = str(prefix)
        yield info
    finally:
        labdb.stop_mariadb(info)
        shutil.rmtree(base, ignore_errors=True)


def _config(lab: dict, **source) -> Config:
    # the accounts of docs/sql/mariadb-accounts.sql: `backup` dumps, `restore` restores; neither is root
    password = write_secret(lab["base"] / "secrets" / "restic-pass", "dummy\n")
    entry = {"name": "main", "host": lab["host"], "port": lab["port"], "user": lab["user"],
             "password_file": lab["password_file"], "restore_user": lab["restore_user"],
             "restore_password_file": lab["restore_password_file"], **source}
    return Config.model_validate({
        "repositories": {"local": {"url": str(lab["base"] / "repo"), "password_file": str(password),
                                   "retention": {"keep_last": 1}}},
        "sources": {"mysql": [entry]},
    })


def _hook(lab: dict, **source) -> MysqlHook:
    hooks = MysqlHook.from_config(_config(lab, **source))
    assert len(hooks) == 1 and hooks[0].name == source.get("name", "main")
    return hooks[0]


def _admin(lab: dict, **source) -> MysqlHook:
    """The hook as restores run it: the backup account dumps, the restore account (never root) restores."""
    return _hook(lab, **source)


def _dump(lab: dict, tmp_path: Path, hook: MysqlHook):
    day = tmp_path / "2024-05-01"
    day.mkdir(exist_ok=True)
    ctx = DumpContext(config=_config(lab), day_dir=day, run_id="t", log=logging.getLogger("test"))
    return day, hook.dump(ctx)




def _sql(lab: dict, sql: str, database: str | None = None) -> str:
    return labdb.mariadb_sql(lab, sql, database).strip()








def _checksum(lab: dict, database: str, table: str, key: str = "id") -> str:
    cols = _sql(lab, "SELECT GROUP_CONCAT(CONCAT('`', COLUMN_NAME, '`') ORDER BY ORDINAL_POSITION) FROM"
                     f" information_schema.COLUMNS WHERE TABLE_SCHEMA = '{database}' AND TABLE_NAME = '{table}'")
    hashes = f"SELECT MD5(CONCAT_WS('|', {', '.join(f'IFNULL(HEX({c}), 0x00)' for c in cols.split(','))}))"
    return _sql(lab, f"SET SESSION group_concat_max_len = 1 << 30; SELECT MD5(GROUP_CONCAT(h ORDER BY k)) FROM"
                     f" ({hashes} AS h, {key} AS k FROM `{database}`.`{table}`) x")


@pytest.fixture(scope="module")
def full_dump(lab, tmp_path_factory):
    day = tmp_path_factory.mktemp("myfull")
    lab["argv_log"].write_text("")
    day, outcome = _dump(lab, day, _hook(lab, exec_prefix=[lab["prefix"]]))
    return day, outcome


def test_dump_every_database_with_row_counts(lab, full_dump):
    day, outcome = full_dump
    assert outcome.failures == [] and outcome.notices == []
    arts = by_component(outcome)
    assert set(arts) == {"db:main/@users", "db:main/blog", "db:main/shop", "db:main/tricky"}
    for name, tables in lab["seed"]["databases"].items():
        art = arts[f"db:main/{name}"]
        assert art.path == f"mysql/main/{name}.sql"
        assert art.meta["database"] == name and art.meta["row_counts"] == tables
        assert art.meta["charset"] == "utf8mb4" and art.meta["collation"] == "utf8mb4_unicode_ci"
        text = (day / art.path).read_text()
        assert text.rstrip().endswith("-- Dump completed")
        assert "CREATE DATABASE" not in text and "\nUSE " not in text  # loadable under any name
        assert art.sha256 == sha256_file(day / art.path)
    tricky = arts["db:main/tricky"].meta["row_counts"]
    assert tricky == {"weird": 5, "odd `name` (x)": 3, "empty_table": 0}
    hook = _hook(lab)
    for name in ("blog", "shop", "tricky"):  # the counts read from the dump are the server's count(*)
        assert hook.count_rows(name) == arts[f"db:main/{name}"].meta["row_counts"]
    shop = (day / arts["db:main/shop"].path).read_text()
    assert "FUNCTION `order_total`" in shop and "TRIGGER order_items_stock" in shop
    assert "EVENT `purge_spam`" in (day / arts["db:main/blog"].path).read_text()
    users = arts["db:main/@users"]
    assert users.meta["method"] == "mariadb-dump --system=users"
    assert "`backup`@`127.0.0.1`" in users.meta["accounts"]
    assert outcome.tools["mariadb-dump"].startswith("10.11")
    assert outcome.tools["mariadb-server:main"].startswith("10.11")
    assert not [f for f in staged_files(day) if f.endswith(".partial")]
    for path in staged_files(day):
        assert (day / path).stat().st_mode & 0o077 == 0, path


def test_defaults_file_first_and_no_password_in_argv(lab, full_dump):
    lines = lab["argv_log"].read_text().splitlines()
    clients = [line.split() for line in lines if "--version" not in line and "--help" not in line]
    assert {Path(a[0]).name for a in clients} == {"mariadb", "mariadb-dump"}
    for argv in clients:
        assert argv[1].startswith("--defaults-extra-file="), argv
        assert not Path(argv[1].split("=", 1)[1]).exists()  # removed after the dump
    assert not [line for line in lines if lab["password"] in line or lab["root_password"] in line
                or lab["restore_password"] in line]


def test_restore_into_another_name_same_rows_and_bytes(lab, full_dump):
    day, outcome = full_dump
    arts = by_component(outcome)
    admin = _admin(lab)
    for name, tables in (("shop", ["customers", "products", "orders"]), ("blog", ["wp_posts", "wp_comments"]),
                         ("tricky", ["weird"])):
        art = arts[f"db:main/{name}"]
        result = admin.restore(art, fetch_from(day, art), RestoreOptions(params={"target_db": f"{name}_restored"}))
        assert result.ok and result.checks["row_counts"] == "ok", result
        assert result.restored_to == f"main/{name}_restored"
        for table in tables:
            key = {"wp_posts": "ID", "wp_comments": "comment_ID"}.get(table, "id")
            assert _checksum(lab, f"{name}_restored", table, key) == _checksum(lab, name, table, key)
    assert _sql(lab, "SELECT shop_restored.order_total(7) = shop.order_total(7)") == "1"
    assert _sql(lab, "SELECT COUNT(*) FROM information_schema.TRIGGERS WHERE TRIGGER_SCHEMA = 'shop_restored'") == "1"
    assert _sql(lab, "SELECT COUNT(*) FROM information_schema.EVENTS WHERE EVENT_SCHEMA = 'blog_restored'") == "1"
    assert _sql(lab, "SELECT name FROM customers WHERE id = 3", "shop_restored") == "Kjell 🎣 Åström"
    assert _sql(lab, "SELECT DEFAULT_COLLATION_NAME FROM information_schema.SCHEMATA"
                     " WHERE SCHEMA_NAME = 'shop_restored'") == "utf8mb4_unicode_ci"


def test_restore_refused_on_non_empty_database_without_force(lab, full_dump):
    day, outcome = full_dump
    blog = by_component(outcome)["db:main/blog"]
    _sql(lab, "CREATE DATABASE occupied; CREATE TABLE occupied.precious (v text);"
              " INSERT INTO occupied.precious VALUES ('keep me');")
    admin = _admin(lab)
    result = admin.restore(blog, fetch_from(day, blog), RestoreOptions(params={"target_db": "occupied"}))
    assert not result.ok and "not empty" in result.message and "--force" in result.message
    assert _sql(lab, "SELECT v FROM occupied.precious") == "keep me"
    forced = admin.restore(blog, fetch_from(day, blog), RestoreOptions(force=True, params={"target_db": "occupied"}))
    assert forced.ok, forced.message
    assert _sql(lab, "SELECT COUNT(*) FROM information_schema.TABLES WHERE TABLE_SCHEMA = 'occupied'"
                     " AND TABLE_NAME = 'precious'") == "0"
    assert admin.count_rows("occupied") == blog.meta["row_counts"]
    admin.drop_database("occupied")
    assert _sql(lab, "SELECT COUNT(*) FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = 'occupied'") == "0"
    with pytest.raises(Exception, match="system database"):
        admin.drop_database("mysql")


def test_restore_under_another_name_when_the_dump_names_the_database(lab, tmp_path):
    # a routine created under another collation makes mariadb-dump write `ALTER DATABASE legacy ...`
    _sql(lab, "CREATE DATABASE legacy CHARACTER SET latin1; CREATE TABLE legacy.t (id int);"
              " INSERT INTO legacy.t VALUES (1), (2); CREATE PROCEDURE legacy.p() SELECT COUNT(*) FROM legacy.t;"
              " ALTER DATABASE legacy CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci;")
    hook = _hook(lab, databases=["legacy"], users_and_grants=False)
    day, outcome = _dump(lab, tmp_path, hook)
    art = by_component(outcome)["db:main/legacy"]
    assert "ALTER DATABASE `legacy`" in (day / art.path).read_text()
    _sql(lab, "DROP DATABASE legacy")
    result = _admin(lab).restore(art, fetch_from(day, art), RestoreOptions(suffix="_drill"))
    assert result.ok and result.restored_to == "main/legacy_drill", result
    assert _sql(lab, "SELECT COUNT(*) FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = 'legacy'") == "0"
    assert _sql(lab, "SELECT COUNT(*) FROM information_schema.ROUTINES WHERE ROUTINE_SCHEMA = 'legacy_drill'") == "1"
    _admin(lab).drop_database("legacy_drill")


@pytest.mark.parametrize("fallback", [False, True], ids=["system-users", "show-grants"])
def test_users_and_grants_round_trip(lab, tmp_path, monkeypatch, fallback):
    _sql(lab, "CREATE USER 'probe'@'%' IDENTIFIED BY 'probe-Pw-123'; GRANT SELECT, INSERT ON shop.* TO 'probe'@'%';")
    if fallback:  # a client without --system=users: SHOW CREATE USER / SHOW GRANTS instead
        original = MysqlHook._client_info
        monkeypatch.setattr(MysqlHook, "_client_info", lambda self: (original(self)[0], False))
    hook = _hook(lab, databases=[])
    day, outcome = _dump(lab, tmp_path, hook)
    assert outcome.failures == []
    art = by_component(outcome)["db:main/@users"]
    assert art.meta["method"] == ("SHOW GRANTS" if fallback else "mariadb-dump --system=users")
    assert "`probe`@`%`" in art.meta["accounts"]
    _sql(lab, "DROP USER 'probe'@'%'")
    result = _admin(lab).restore(art, fetch_from(day, art), RestoreOptions())
    assert result.ok and result.checks["accounts"] == "ok", result
    grants = _sql(lab, "SHOW GRANTS FOR 'probe'@'%'")
    assert "GRANT SELECT, INSERT ON `shop`.* TO `probe`@`%`" in grants
    _sql(lab, "DROP USER 'probe'@'%'")


def test_server_down_fails_the_source_without_artifacts(lab, tmp_path):
    hook = _hook(lab, name="down", port=procs.free_port())
    day, outcome = _dump(lab, tmp_path, hook)
    assert outcome.artifacts == [] and not staged_files(day)
    assert [f.component for f in outcome.failures] == ["db:down/*"]
    assert "Can't connect" in outcome.failures[0].message


def test_wrong_password_fails_loudly_and_never_shows_it(lab, tmp_path, caplog):
    wrong = "Wr0ng-" + "k3Zm" * 6
    secret = write_secret(tmp_path / "wrong-pass", wrong + "\n")
    caplog.set_level(logging.DEBUG)
    hook = _hook(lab, name="badpw", password_file=str(secret))
    day, outcome = _dump(lab, tmp_path, hook)
    assert outcome.artifacts == [] and not staged_files(day)
    assert len(outcome.failures) == 1 and "Access denied" in outcome.failures[0].message
    logged = caplog.text + " ".join(str(r.__dict__) for r in caplog.records)
    for text in (outcome.failures[0].message, logged):
        assert wrong not in text and lab["password"] not in text


def _hold_lock(lab: dict, seconds: int) -> threading.Thread:
    """Another session write-locks shop.products: a dump of shop stops halfway, at that table."""
    query = f"SELECT SLEEP({seconds})"
    thread = threading.Thread(target=labdb.mariadb_sql,
                              args=(lab, f"LOCK TABLES shop.products WRITE; {query}; UNLOCK TABLES;"))
    thread.start()
    deadline = time.monotonic() + 10
    while _sql(lab, f"SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE INFO = '{query}'") == "0":
        assert time.monotonic() < deadline, "the lock session did not start"
        time.sleep(0.02)
    return thread


def test_dump_killed_by_timeout_leaves_no_artifact(lab, tmp_path):
    # the timeout covers each dump and its rights check: roomy enough for blog on a loaded CI machine,
    # while the lock on shop outlasts it
    holder = _hold_lock(lab, 10)
    try:
        hook = _hook(lab, databases=["blog", "shop"], users_and_grants=False, timeout_seconds=4)
        day, outcome = _dump(lab, tmp_path, hook)
    finally:
        holder.join()
    assert [a.component for a in outcome.artifacts] == ["db:main/blog"]
    assert [f.component for f in outcome.failures] == ["db:main/shop"]
    assert "timed out" in outcome.failures[0].message
    assert staged_files(day) == ["mysql/main/blog.sql"]


def test_dump_killed_by_a_signal_halfway_leaves_no_artifact(lab, tmp_path):
    partial = tmp_path / "2024-05-01" / "mysql" / "main" / "shop.sql.partial"
    killed: list[str] = []

    def killer() -> None:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            # rows are on disk (mariadb-dump buffers its output) and the dump waits for the products lock
            if partial.exists() and b"INSERT INTO `customers`" in partial.read_bytes():
                for entry in Path("/proc").iterdir():
                    try:
                        cmd = (entry / "cmdline").read_bytes().split(b"\0")
                    except OSError:
                        continue
                    if our_child(entry) and cmd[0].endswith(b"mariadb-dump") and b"shop" in cmd:
                        killed.append(partial.read_text())
                        os.kill(int(entry.name), signal.SIGKILL)  # the dump this test started
                        return
            time.sleep(0.01)

    holder = _hold_lock(lab, 4)
    thread = threading.Thread(target=killer)
    thread.start()
    try:
        day, outcome = _dump(lab, tmp_path, _hook(lab, databases=["shop"], users_and_grants=False))
    finally:
        thread.join()
        holder.join()
    assert killed and not killed[0].rstrip().endswith("-- Dump completed"), "the dump was not caught halfway"
    assert outcome.artifacts == []
    assert "killed by signal SIGKILL" in outcome.failures[0].message
    assert not staged_files(day)


def test_broken_and_excluded_databases_do_not_lose_the_others(lab, tmp_path):
    # a view whose table is gone: mariadb-dump fails on it
    _sql(lab, "CREATE DATABASE broken; CREATE TABLE broken.t (id int); CREATE VIEW broken.v AS SELECT id FROM"
              " broken.t; DROP TABLE broken.t;")
    try:
        hook = _hook(lab, exclude=["tricky", "shop_restored", "blog_restored", "tricky_restored"],
                     users_and_grants=False)
        day, outcome = _dump(lab, tmp_path, hook)
    finally:
        _sql(lab, "DROP DATABASE broken")
    assert [f.component for f in outcome.failures] == ["db:main/broken"]
    assert "dump of broken failed" in outcome.failures[0].message
    assert sorted(a.component for a in outcome.artifacts) == ["db:main/blog", "db:main/shop"]
    assert staged_files(day) == ["mysql/main/blog.sql", "mysql/main/shop.sql"]


def test_missing_database_in_the_list_is_a_failure(lab, tmp_path):
    _, outcome = _dump(lab, tmp_path, _hook(lab, databases=["shop", "nosuchdb"], users_and_grants=False))
    assert [a.component for a in outcome.artifacts] == ["db:main/shop"]
    assert [f.component for f in outcome.failures] == ["db:main/nosuchdb"]


def test_row_counter_on_single_line_extended_inserts(tmp_path):
    # older mariadb-dump / mysqldump write all rows of an INSERT on one line
    dump = tmp_path / "old.sql"
    dump.write_bytes(b"CREATE TABLE `a` (\n  `id` int\n);\nCREATE TABLE `b` (\n  `s` text\n);\n"
                     b"INSERT INTO `a` VALUES (1),(2),(3);\nINSERT INTO `a` VALUES (4);\n"
                     b"INSERT INTO `b` VALUES ('x),(y'),('it\\'s (\\\\'),(NULL);\n-- Dump completed\n")
    assert count_dump_rows(dump) == {"a": 4, "b": 3}


def test_truncated_dump_is_not_restored_as_good(lab, full_dump):
    day, outcome = full_dump
    shop = by_component(outcome)["db:main/shop"]
    whole = (day / shop.path).read_bytes()
    cut = day / "cut.sql"
    cut.write_bytes(whole[: len(whole) // 2])
    bad = Artifact("db:main/shop", "mysql", "main", "cut.sql", cut.stat().st_size, sha256_file(cut), dict(shop.meta))
    result = _admin(lab).restore(bad, fetch_from(day, bad), RestoreOptions(params={"target_db": "shop_cut"}))
    assert not result.ok
    assert _sql(lab, "SELECT COUNT(*) FROM information_schema.SCHEMATA WHERE SCHEMA_NAME = 'shop_cut'") == "0"


def test_password_with_option_file_metacharacters(lab, tmp_path):
    password = 'a"b\\c#d e\'f;g\\n ='
    quoted = password.replace("\\", "\\\\").replace("'", "\\'")
    _sql(lab, f"CREATE USER 'nasty'@'127.0.0.1' IDENTIFIED BY '{quoted}';")
    # the backup account's own grants, nothing more
    for grant in _sql(lab, "SHOW GRANTS FOR backup@'127.0.0.1'").splitlines():
        _sql(lab, grant.split(" IDENTIFIED BY ")[0].replace("`backup`@`127.0.0.1`", "'nasty'@'127.0.0.1'"))
    secret = write_secret(tmp_path / "nasty-pass", password + "\n")
    hook = _hook(lab, user="nasty", password_file=str(secret), databases=["shop"], users_and_grants=False)
    _, outcome = _dump(lab, tmp_path, hook)
    assert outcome.failures == [] and [a.component for a in outcome.artifacts] == ["db:main/shop"]


def test_a_dump_without_its_trailer_is_caught_by_validation(lab, tmp_path):
    # a mariadb-dump that "succeeds" but delivers a cut file
    bin_dir = tmp_path / "cutbin"
    bin_dir.mkdir()
    (bin_dir / "mariadb").symlink_to(shutil.which("mariadb"))
    real = shutil.which("mariadb-dump")
    (bin_dir / "mariadb-dump").write_text(f'#!/bin/sh\ncase "$*" in *--version*|*--help*) exec {real} "$@";; esac\n'
                                          f'{real} "$@" | head -c 200000\nexit 0\n')
    (bin_dir / "mariadb-dump").chmod(0o755)
    hook = _hook(lab, bin_dir=str(bin_dir), databases=["shop", "tricky"], users_and_grants=False)
    day, outcome = _dump(lab, tmp_path, hook)
    assert [a.component for a in outcome.artifacts] == ["db:main/tricky"]
    assert [f.component for f in outcome.failures] == ["db:main/shop"]
    assert "Dump completed" in outcome.failures[0].message
    assert staged_files(day) == ["mysql/main/tricky.sql"]


# --- the accounts' rights: what each operation needs, and what the product says when one is missing -------

def test_the_accounts_are_the_documented_ones(lab):
    backup = _sql(lab, "SHOW GRANTS FOR backup@'127.0.0.1'").splitlines()
    assert backup[0].startswith("GRANT SELECT, SHOW VIEW, EVENT, TRIGGER ON *.* TO `backup`@`127.0.0.1`")
    assert backup[1:] == ["GRANT EXECUTE ON FUNCTION `shop`.`order_total` TO `backup`@`127.0.0.1`"]
    restore = _sql(lab, "SHOW GRANTS FOR restore@'127.0.0.1'")
    assert "SET USER" in restore and "CREATE USER" in restore and "WITH GRANT OPTION" in restore
    for admin in ("SUPER", "FILE", "PROCESS", "RELOAD", "SHUTDOWN", "ALL PRIVILEGES"):
        assert admin not in restore


def test_backup_without_trigger_is_refused_rather_than_silently_incomplete(lab, tmp_path):
    # measured: without TRIGGER, mariadb-dump leaves the triggers out and exits 0
    _sql(lab, "REVOKE TRIGGER ON *.* FROM backup@'127.0.0.1'")
    try:
        day, outcome = _dump(lab, tmp_path, _hook(lab, databases=["blog", "tricky"], users_and_grants=False))
    finally:
        labdb.apply_accounts(lab)
    assert [f.component for f in outcome.failures] == ["db:main/blog", "db:main/tricky"]
    message = outcome.failures[0].message
    assert "leaves the triggers out silently" in message
    assert "the backup account 'backup'@'127.0.0.1' needs TRIGGER on blog" in message
    assert "(GRANT TRIGGER ON *.* TO 'backup'@'127.0.0.1')" in message
    assert outcome.artifacts == [] and not staged_files(day)


def test_backup_without_execute_on_a_view_function_names_the_grant(lab, tmp_path):
    _sql(lab, "REVOKE EXECUTE ON FUNCTION shop.order_total FROM backup@'127.0.0.1'")
    try:
        _, outcome = _dump(lab, tmp_path, _hook(lab, databases=["shop"], users_and_grants=False))
    finally:
        labdb.apply_accounts(lab)  # the documented file grants it again
    message = outcome.failures[0].message
    assert "execute command denied" in message
    assert "(GRANT EXECUTE ON FUNCTION `shop`.`order_total` TO 'backup'@'127.0.0.1';" in message
    _, outcome = _dump(lab, tmp_path, _hook(lab, databases=["shop"], users_and_grants=False))
    assert outcome.failures == []


def test_restore_without_set_user_leaves_the_stored_database_alone(lab, full_dump):
    day, outcome = full_dump
    shop = by_component(outcome)["db:main/shop"]
    hook = _hook(lab)
    assert hook.restore(shop, fetch_from(day, shop), RestoreOptions(params={"target_db": "shop_kept"})).ok
    _sql(lab, "DELETE FROM shop_kept.order_items WHERE order_id = 1")
    left = _sql(lab, "SELECT COUNT(*) FROM shop_kept.order_items")
    _sql(lab, "REVOKE SET USER ON *.* FROM restore@'127.0.0.1'")
    try:
        result = hook.restore(shop, fetch_from(day, shop),
                              RestoreOptions(force=True, params={"target_db": "shop_kept"}))
    finally:
        labdb.apply_accounts(lab)
    assert not result.ok and "nothing was changed" in result.message
    assert "the restore account 'restore'@'127.0.0.1' needs SET USER on shop_kept" in result.message
    assert "defined by `root`@`127.0.0.1`" in result.message
    assert "(GRANT SET USER ON *.* TO 'restore'@'127.0.0.1')" in result.message
    assert _sql(lab, "SELECT COUNT(*) FROM shop_kept.order_items") == left  # not dropped, not reloaded
    hook.drop_database("shop_kept")


def test_an_account_whose_rights_the_restore_account_cannot_give(lab, tmp_path):
    _sql(lab, "CREATE USER 'ops'@'%' IDENTIFIED BY 'ops-Pw-123'; GRANT RELOAD ON *.* TO 'ops'@'%';")
    hook = _hook(lab, databases=[])
    day, outcome = _dump(lab, tmp_path, hook)
    art = by_component(outcome)["db:main/@users"]
    _sql(lab, "DROP USER 'ops'@'%'")
    try:
        result = hook.restore(art, fetch_from(day, art), RestoreOptions())
        assert not result.ok
        assert "(GRANT RELOAD ON *.* TO 'restore'@'127.0.0.1' WITH GRANT OPTION)" in result.message
        # the existing accounts whose rights it may not give (root) are kept as they are, and said
        assert "`root`@`localhost`" in result.checks["not_reapplied"]
        assert "'restore'@'127.0.0.1' itself (the account restoring) left as it is" in result.message
    finally:
        _sql(lab, "DROP USER IF EXISTS 'ops'@'%'")
