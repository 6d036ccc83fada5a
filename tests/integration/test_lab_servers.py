"""The simulated homelab's data servers, checked through their real clients.

These servers are the ground truth the product's backups and restores are judged
against, so each one is verified the way the product will use it: psql / mariadb /
mariadb-dump / boto3 / restic / ansible-vault, with credentials from the 0600 files.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

import pytest
from botocore.exceptions import ClientError

from restic_orch.lab import mariadb, postgres, procs, s3, vault
from restic_orch.lab.secrets import read_secret, write_secret

PG_BIN = "/usr/lib/postgresql/15/bin"


def _run(argv, env=None, input_text=None, check=True, timeout=120):
    result = subprocess.run(argv, env=env, input=input_text, capture_output=True, text=True,
                            timeout=timeout, check=False)
    if check and result.returncode != 0:
        raise AssertionError(f"{argv[0]} exit {result.returncode}: {result.stderr}")
    return result


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def _gone(pid: int) -> bool:
    return not procs.pid_alive(pid)


def _procs_mentioning(text: str) -> list[int]:
    """Pids whose command line mentions ``text`` (e.g. a data dir): leftovers."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if text in cmdline and procs.pid_alive(int(entry.name)):
                found.append(int(entry.name))
    return found


def _children(pid: int) -> list[int]:
    kids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                kids.append(int(entry.name))
    return kids


@pytest.fixture(scope="module")
def lab_dir():
    # Not tmp_path: pytest's base temp dir is 0700 root, which postgres/mysql cannot traverse.
    path = Path(tempfile.mkdtemp(prefix="restic-orch-lab-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="module")
def pg(lab_dir):
    info = postgres.start_postgres(lab_dir)
    try:
        seeded = postgres.seed_postgres(info)
        yield info, seeded
    finally:
        postgres.stop_postgres(info)


@pytest.fixture(scope="module")
def mdb(lab_dir):
    info = mariadb.start_mariadb(lab_dir)
    try:
        seeded = mariadb.seed_mariadb(info)
        yield info, seeded
    finally:
        mariadb.stop_mariadb(info)


@pytest.fixture(scope="module")
def s3lab(lab_dir):
    info = s3.start_s3(lab_dir)
    try:
        seeded = s3.seed_tfstate(info)
        yield info, seeded
    finally:
        s3.stop_s3(info)


@pytest.fixture(scope="module")
def vault_tree(lab_dir):
    return vault.make_vault_tree(lab_dir)


# --- secrets / procs ------------------------------------------------------------------

def test_write_secret_is_0600_with_0700_parents(tmp_path):
    path = write_secret(tmp_path / "a" / "b" / "token", "s3cr3t\n")
    assert _mode(path) == 0o600
    assert _mode(tmp_path / "a") == 0o700 and _mode(tmp_path / "a" / "b") == 0o700
    path.chmod(0o644)
    write_secret(path, "again\n")  # an existing file is tightened too
    assert _mode(path) == 0o600 and read_secret(path) == "again"


def test_wait_ready_reports_log_tail_of_a_dead_daemon(tmp_path):
    log = tmp_path / "d.log"
    pid = procs.start_daemon(["sh", "-c", "echo boom-from-daemon; exit 3"], log)
    with pytest.raises(procs.LabError, match="boom-from-daemon"):
        procs.wait_ready(lambda: False, pid=pid, log_path=log, timeout=10, what="fake")
    assert _gone(pid)


def test_stop_pid_escalates_to_sigkill(tmp_path):
    pid = procs.start_daemon(["sh", "-c", "trap '' TERM; sleep 60 & wait; sleep 60"], tmp_path / "t.log")
    procs.stop_pid(pid, timeout=0.5)
    assert _gone(pid)


# --- PostgreSQL -----------------------------------------------------------------------

def _pg_env(info, password_file=None):
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env.update(PGPASSFILE=password_file or info["pgpass_file"], PGCONNECT_TIMEOUT="5", LC_ALL="C.UTF-8")
    return env


def _psql(info, sql, db="postgres", env=None, check=True):
    return _run([f"{PG_BIN}/psql", "-X", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1",
                 "-p", str(info["port"]), "-U", info["user"], "-d", db, "-c", sql],
                env=env or _pg_env(info), check=check)


def test_postgres_row_counts_over_tcp_with_password(pg):
    info, seeded = pg
    assert _mode(info["password_file"]) == 0o600 and _mode(info["pgpass_file"]) == 0o600
    assert read_secret(info["password_file"]) == info["password"]
    for db, tables in seeded["databases"].items():
        for table, rows in tables.items():
            assert rows >= len(postgres.SITES)
            out = _psql(info, f"SELECT count(*) FROM {table}", db).stdout.strip()
            assert int(out) == rows, (db, table)
    assert seeded["databases"]["inventory"]["devices"] >= 1000


def test_postgres_non_ascii_bytea_sequence_view(pg):
    info, _ = pg
    names = _psql(info, "SELECT name FROM sites ORDER BY id", "inventory").stdout.splitlines()
    assert names == [name for _, name, _ in postgres.SITES]
    _psql(info, "CREATE TEMP TABLE t (x text); INSERT INTO t VALUES ('é 日本語 🚀');"
                "SELECT x FROM t", "appdb")
    assert _psql(info, "SELECT 'é 日本語 🚀'::text", "appdb").stdout.strip() == "é 日本語 🚀"
    assert _psql(info, "SELECT min(length(data)), max(length(data)) FROM attachments",
                 "appdb").stdout.strip() == "1024|1024"
    assert int(_psql(info, "SELECT last_value FROM ticket_seq", "inventory").stdout) > 1000
    assert int(_psql(info, "SELECT sum(devices) FROM device_summary", "inventory").stdout) == \
        pg[1]["databases"]["inventory"]["devices"]


def test_postgres_wrong_password_is_refused(pg, tmp_path):
    info, _ = pg
    wrong = write_secret(tmp_path / "pgpass", f"127.0.0.1:{info['port']}:*:{info['user']}:not-the-password\n")
    result = _psql(info, "SELECT 1", env=_pg_env(info, str(wrong)), check=False)
    assert result.returncode != 0
    assert "password authentication failed" in result.stderr
    # Without any password at all, too (no trust on TCP).
    result = _psql(info, "SELECT 1", env=_pg_env(info, os.devnull), check=False)
    assert result.returncode != 0


def test_postgres_dumps_as_backup_role(pg):
    info, _ = pg
    env = _pg_env(info)
    conn = ["-h", "127.0.0.1", "-p", str(info["port"]), "-U", info["user"]]
    globals_sql = _run([f"{PG_BIN}/pg_dumpall", *conn, "--globals-only"], env=env).stdout
    assert "CREATE ROLE gitea" in globals_sql and "CREATE ROLE netbox_ro" in globals_sql
    schema = _run([f"{PG_BIN}/pg_dump", *conn, "--schema-only", "inventory"], env=env).stdout
    for needle in ("CREATE VIEW public.device_summary", "CREATE SEQUENCE public.ticket_seq",
                   "FOREIGN KEY (site_id) REFERENCES public.sites(id)", "CREATE TYPE public.device_status"):
        assert needle in schema


# --- MariaDB --------------------------------------------------------------------------

def _mysql(defaults_file, sql, db=None, check=True):
    argv = ["mariadb", f"--defaults-extra-file={defaults_file}", "--batch", "--skip-column-names",
            "--connect-timeout=5", "-e", sql]
    return _run(argv + ([db] if db else []), check=check)


def test_mariadb_row_counts_over_tcp_with_password(mdb):
    info, seeded = mdb
    for key in ("password_file", "defaults_file", "root_password_file", "root_defaults_file"):
        assert _mode(info[key]) == 0o600, key
    assert info["password"] not in " ".join(Path(f"/proc/{info['pid']}/cmdline").read_text().split("\0"))
    for db, tables in seeded["databases"].items():
        for table, rows in tables.items():
            out = _mysql(info["defaults_file"], f"SELECT COUNT(*) FROM {table}", db).stdout.strip()
            assert int(out) == rows, (db, table)
    # The trigger ran on every comment insert.
    total = _mysql(info["defaults_file"], "SELECT SUM(comment_count) FROM wp_posts", "blog").stdout
    assert int(total) == seeded["databases"]["blog"]["wp_comments"]


def test_mariadb_non_ascii_and_blob(mdb):
    info, _ = mdb
    names = _mysql(info["defaults_file"], "SELECT name FROM customers ORDER BY id LIMIT 4", "shop")
    assert names.stdout.splitlines() == [name for name, _, _ in mariadb.CUSTOMERS]
    out = _mysql(info["root_defaults_file"], "CREATE TEMPORARY TABLE t (x text) CHARSET utf8mb4;"
                 "INSERT INTO t VALUES ('é 日本語 🚀'); SELECT x FROM t", "shop").stdout.strip()
    assert out == "é 日本語 🚀"
    lengths = _mysql(info["defaults_file"], "SELECT MIN(LENGTH(image)), MAX(LENGTH(image)) FROM products",
                     "shop").stdout.split()
    assert lengths == ["1024", "1024"]


def test_mariadb_wrong_password_is_refused(mdb, tmp_path):
    info, _ = mdb
    text = Path(info["defaults_file"]).read_text().replace(info["password"], "not-the-password")
    wrong = write_secret(tmp_path / "wrong.cnf", text)
    result = _mysql(wrong, "SELECT 1", check=False)
    assert result.returncode != 0 and "Access denied" in result.stderr
    text = Path(info["root_defaults_file"]).read_text().replace(info["root_password"], "nope")
    result = _mysql(write_secret(tmp_path / "wrong-root.cnf", text), "SELECT 1", check=False)
    assert result.returncode != 0 and "Access denied" in result.stderr


def test_mariadb_dump_as_backup_user(mdb):
    info, _ = mdb
    dump = _run(["mariadb-dump", f"--defaults-extra-file={info['defaults_file']}", "--single-transaction",
                 "--routines", "--events", "--triggers", "--hex-blob", "--databases", "blog", "shop"]).stdout
    for needle in ("TRIGGER wp_comments_count", "TRIGGER order_items_stock", "EVENT `purge_spam`",
                   "FUNCTION `order_total`", "PROCEDURE `restock`", "VIEW `order_summary`",
                   "Kjell 🎣 Åström"):
        assert needle in dump, needle
    # The backup user cannot write.
    result = _mysql(info["defaults_file"], "DELETE FROM customers", "shop", check=False)
    assert result.returncode != 0 and "denied" in result.stderr


# --- the product's accounts -------------------------------------------------------------

def test_the_configured_database_accounts_are_neither_superuser_nor_root(pg, mdb, lab_dir):
    """The lab's config uses the accounts docs/sql/*-accounts.sql create, and none of them is all-powerful."""
    from restic_orch.config import load_config
    from restic_orch.lab import manager

    pg_info, _ = pg
    mdb_info, _ = mdb
    config = load_config(manager.write_config(lab_dir, {"services": {"postgres": pg_info, "mariadb": mdb_info}}))
    [pgsrc], [mysrc] = config.sources.postgres, config.sources.mysql
    assert (pgsrc.user, pgsrc.restore_user) == (mysrc.user, mysrc.restore_user) == ("backup", "restore")
    assert pgsrc.restore_password_file != pgsrc.password_file and mysrc.restore_password_file != mysrc.password_file

    roles = postgres.psql(pg_info, "SELECT rolname, rolsuper, rolcreatedb, rolcreaterole, rolreplication, rolbypassrls"
                                   " FROM pg_roles WHERE rolname IN ('backup', 'restore') ORDER BY 1").split()
    #                          super createdb createrole replication bypassrls
    assert roles == ["backup|f|f|f|f|t", "restore|f|t|t|f|f"]
    member_of = postgres.psql(pg_info, "SELECT string_agg(b.rolname, ',' ORDER BY b.rolname) FROM pg_auth_members m"
                                       " JOIN pg_roles b ON b.oid = m.roleid WHERE m.member = 'backup'::regrole")
    assert member_of.strip() == "pg_read_all_data"
    # the passwords in the configured files are the accounts' own (a login over TCP works with each)
    for user, secret in ((pgsrc.user, pgsrc.password_file), (pgsrc.restore_user, pgsrc.restore_password_file)):
        env = _pg_env(pg_info)
        env.pop("PGPASSFILE")
        env["PGPASSWORD"] = read_secret(secret)
        out = _run([f"{PG_BIN}/psql", "-X", "-A", "-t", "-h", "127.0.0.1", "-p", str(pg_info["port"]), "-U", user,
                    "-d", "postgres", "-c", "SELECT current_user, (SELECT rolsuper FROM pg_roles"
                    " WHERE rolname = current_user)"], env=env).stdout.strip()
        assert out == f"{user}|f"

    for user, secret in ((mysrc.user, mysrc.password_file), (mysrc.restore_user, mysrc.restore_password_file)):
        assert user != "root"
        cnf = write_secret(lab_dir / f"check-{user}.cnf", f"[client]\nuser={user}\npassword={read_secret(secret)}\n"
                                                         f"host=127.0.0.1\nport={mdb_info['port']}\nprotocol=TCP\n")
        grants = _mysql(cnf, "SHOW GRANTS").stdout
        assert f"`{user}`@`127.0.0.1`" in grants
        for power in ("ALL PRIVILEGES", "SUPER", "FILE", "PROCESS", "RELOAD", "SHUTDOWN", "BINLOG", "REPLICATION",
                      "CONNECTION ADMIN", "READ_ONLY ADMIN"):
            assert power not in grants, (user, power)
        if user == mysrc.user:  # the backup account writes nothing
            for write in ("INSERT", "UPDATE", "DELETE", "CREATE", "DROP", "ALTER", "GRANT OPTION", "SET USER"):
                assert write not in grants, write
            assert "EXECUTE ON *.*" not in grants and "PROCEDURE" not in grants


# --- S3 (moto) ------------------------------------------------------------------------

def test_s3_env_file_and_tfstate_objects(s3lab):
    info, seeded = s3lab
    env_file = Path(info["env_file"])
    assert _mode(env_file) == 0o600
    env = dict(line.split("=", 1) for line in env_file.read_text().splitlines())
    assert env == {"AWS_ACCESS_KEY_ID": info["access_key"], "AWS_SECRET_ACCESS_KEY": info["secret_key"],
                   "AWS_DEFAULT_REGION": info["region"]}
    client = s3.s3_client(info)
    keys = sorted(o["Key"] for o in client.list_objects_v2(Bucket="tfstate")["Contents"])
    assert keys == seeded["keys"]
    assert "infra/terraform.tfstate" in keys and "env:/prod/infra/terraform.tfstate" in keys
    for key in keys:
        state = json.loads(client.get_object(Bucket="tfstate", Key=key)["Body"].read())
        assert state["version"] == 4 and state["terraform_version"]
        assert uuid.UUID(state["lineage"]) and state["serial"] == seeded["states"][key]["serial"]
        assert state["resources"] and all(r["instances"] for r in state["resources"])
    versions = client.list_object_versions(Bucket="tfstate", Prefix="env:/prod/")["Versions"]
    assert len(versions) == 2


def test_s3_wrong_secret_is_refused(s3lab):
    info, _ = s3lab
    with pytest.raises(ClientError) as exc:
        s3.s3_client(info, secret_key="wrong" + info["secret_key"][5:]).list_objects_v2(Bucket="tfstate")
    assert exc.value.response["Error"]["Code"] in ("AccessDenied", "SignatureDoesNotMatch")


def _restic_env(info, lab_dir):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "RESTIC_"))}
    env.update(dict(line.split("=", 1) for line in Path(info["env_file"]).read_text().splitlines()))
    # under the offsite prefix (restic/, as in production): the host's key may write nowhere else
    env.update(RESTIC_REPOSITORY=f"s3:{info['endpoint']}/{info['buckets']['offsite']}/{info['offsite_prefix']}",
               RESTIC_PASSWORD_FILE=str(write_secret(lab_dir / "secrets" / "restic-test-pass", "pw-test\n")),
               RESTIC_CACHE_DIR=str(lab_dir / "restic-cache"))
    return env


def test_restic_backup_to_offsite_bucket(s3lab, vault_tree, lab_dir):
    info, _ = s3lab
    env = _restic_env(info, lab_dir)
    opts = ["-o", "s3.bucket-lookup=path"]
    _run(["restic", *opts, "init"], env=env, timeout=60)
    _run(["restic", *opts, "backup", "--tag", "lab-test", vault_tree["root"]], env=env, timeout=60)
    snaps = json.loads(_run(["restic", *opts, "snapshots", "--json"], env=env, timeout=60).stdout)
    assert len(snaps) == 1 and snaps[0]["tags"] == ["lab-test"]
    listing = _run(["restic", *opts, "ls", "latest"], env=env, timeout=60).stdout
    assert "/ansible/host_vars/pve1/vault.yml" in listing
    objects = s3.s3_client(info).list_objects_v2(Bucket="offsite")["Contents"]
    assert any(o["Key"] == f"{info['offsite_prefix']}/config" for o in objects)
    # A wrong secret cannot reach the repository.
    env["AWS_SECRET_ACCESS_KEY"] = "wrong-secret"
    assert _run(["restic", *opts, "snapshots"], env=env, check=False, timeout=60).returncode != 0


# --- Ansible Vault --------------------------------------------------------------------

def test_vault_tree(vault_tree):
    assert _mode(vault_tree["password_file"]) == 0o600
    assert len(vault_tree["encrypted"]) == 3 and len(vault_tree["plaintext"]) == 1
    for path in vault_tree["encrypted"]:
        text = Path(path).read_text()
        assert text.startswith("$ANSIBLE_VAULT;1.1;AES256")
        assert "vault_" not in text
    assert not Path(vault_tree["plaintext"][0]).read_text().startswith("$ANSIBLE_VAULT")
    ansible_vault = str(Path(sys.executable).parent / "ansible-vault")
    target = vault_tree["encrypted"][0]
    shown = _run([ansible_vault, "view", f"--vault-password-file={vault_tree['password_file']}", target],
                 env={**os.environ, "LANG": "C.UTF-8"}).stdout
    assert shown == vault_tree["contents"][target]
    assert "関係者以外立入禁止" in shown
    root = Path(vault_tree["root"])
    matched = {str(p) for glob in vault_tree["globs"] for p in root.glob(glob)}
    assert matched == set(vault_tree["encrypted"]) | set(vault_tree["plaintext"])


# --- lifecycle (keep last: it stops the module's servers) -----------------------------

def test_stop_leaves_no_process_and_restart_keeps_data(pg, mdb, s3lab, lab_dir):
    pg_info, pg_seeded = pg
    mdb_info, mdb_seeded = mdb
    s3_info, _ = s3lab
    pg_children = _children(pg_info["pid"])
    assert len(pg_children) >= 3  # checkpointer, walwriter, ... : must go too
    postgres.stop_postgres(pg_info)
    mariadb.stop_mariadb(mdb_info)
    s3.stop_s3(s3_info)
    for pid in (pg_info["pid"], mdb_info["pid"], s3_info["pid"], *pg_children):
        assert _gone(pid)
        assert not Path(f"/proc/{pid}").exists()  # reaped, not a zombie
    assert _procs_mentioning(pg_info["datadir"]) == []
    assert _procs_mentioning(mdb_info["datadir"]) == []
    assert _procs_mentioning(f"-p {s3_info['port']}") == []
    # Stopping twice is harmless (the module fixtures stop again at teardown).
    postgres.stop_postgres(pg_info)

    # A stopped lab can be started again on the same data, with the same credentials.
    again = postgres.start_postgres(lab_dir)
    try:
        assert again["password"] == pg_info["password"]
        rows = _psql(again, "SELECT count(*) FROM devices", "inventory").stdout
        assert int(rows) == pg_seeded["databases"]["inventory"]["devices"]
    finally:
        postgres.stop_postgres(again)
    assert _gone(again["pid"])
    again = mariadb.start_mariadb(lab_dir)
    try:
        assert again["password"] == mdb_info["password"]
        rows = _mysql(again["defaults_file"], "SELECT COUNT(*) FROM orders", "shop").stdout
        assert int(rows) == mdb_seeded["databases"]["shop"]["orders"]
    finally:
        mariadb.stop_mariadb(again)
    assert _gone(again["pid"])
