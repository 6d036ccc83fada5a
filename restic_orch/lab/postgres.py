"""A real PostgreSQL 15 server for the simulated homelab (127.0.0.1, free port).

Auth is what a real homelab has: the local socket trusts the ``postgres`` superuser
(lab administration and seeding only), while TCP requires a SCRAM password, so the
product's accounts with a wrong password are really refused. The product's two accounts,
``backup`` and ``restore``, are made by docs/sql/postgres-accounts.sql, the file
docs/getting-started.md tells a user to run: neither is a superuser.
"""

from __future__ import annotations

import os
import shutil
import signal
import tempfile
from pathlib import Path

from restic_orch.lab import procs
from restic_orch.lab.secrets import check_password, new_password, read_secret, secrets_dir, write_secret

PG_BIN = Path("/usr/lib/postgresql/15/bin")
SUPERUSER = "postgres"
BACKUP_USER = "backup"
RESTORE_USER = "restore"
ACCOUNTS_SQL = Path(__file__).resolve().parents[2] / "docs" / "sql" / "postgres-accounts.sql"
# Unix socket paths are limited to 107 bytes ("/.s.PGSQL.NNNNN" included).
_MAX_SOCKET_DIR = 90


def _bin(name: str) -> str:
    path = PG_BIN / name
    return str(path) if path.exists() else (shutil.which(name) or name)


def _env() -> dict[str, str]:
    # A UTF-8 locale for initdb and psql: the seed data is non-ASCII.
    env = dict(os.environ)
    env.update({"LANG": "C.UTF-8", "LC_ALL": "C.UTF-8", "PGCLIENTENCODING": "UTF8"})
    for var in ("PGPASSWORD", "PGPASSFILE", "PGUSER", "PGHOST", "PGPORT", "PGDATABASE", "PGSERVICE"):
        env.pop(var, None)
    return env


def apply_accounts(info: dict) -> None:
    """Run docs/sql/postgres-accounts.sql as the superuser, as the docs say (again after adding an owner role).

    The passwords are psql variables, as `psql -v backup_password=...` sets them, given on stdin rather
    than argv so that they never show in the process list.
    """
    variables = (f"\\set backup_password '{check_password(info['password'])}'\n"
                 f"\\set restore_password '{check_password(info['restore_password'])}'\n")
    psql(info, variables + ACCOUNTS_SQL.read_text())


def _prepare_home(home: Path) -> Path:
    """Make ``home`` and its socket directory; return the socket directory."""
    home.mkdir(parents=True, exist_ok=True)
    # The postgres user must traverse it; secrets live elsewhere and data/ stays 0700.
    home.chmod(0o755)
    procs.check_traversable(home, SUPERUSER)
    socket_dir = home / "run"
    if len(str(socket_dir)) > _MAX_SOCKET_DIR:
        socket_dir = Path(tempfile.mkdtemp(prefix="lab-pg-"))
    socket_dir.mkdir(exist_ok=True)
    procs.chown_tree(socket_dir, SUPERUSER)
    return socket_dir


def _passwords(password_file: Path, restore_file: Path, fresh: bool, password: str | None) -> tuple[str, str]:
    """The ``backup`` and ``restore`` passwords (saved ones on a reused cluster), written to their secrets."""
    if password is None:
        password = read_secret(password_file) if password_file.exists() and not fresh else new_password()
    restore_password = read_secret(restore_file) if restore_file.exists() and not fresh else new_password()
    check_password(password)  # it goes into SQL and .pgpass
    check_password(restore_password)
    write_secret(password_file, password + "\n")
    write_secret(restore_file, restore_password + "\n")
    return password, restore_password


def _initdb(datadir: Path) -> None:
    datadir.mkdir(mode=0o700, exist_ok=True)
    procs.chown_tree(datadir, SUPERUSER)
    procs.run(
        [_bin("initdb"), "-D", str(datadir), "-U", SUPERUSER, "--auth-local=trust",
         "--auth-host=scram-sha-256", "--encoding=UTF8", "--locale=C.UTF-8", "--no-sync"],
        env=_env(), user=SUPERUSER, what="initdb",
    )


def _start_server(datadir: Path, port: int, socket_dir: Path, log_path: Path) -> int:
    return procs.start_daemon(
        [_bin("postgres"), "-D", str(datadir), "-p", str(port), "-k", str(socket_dir),
         "-c", "listen_addresses=127.0.0.1",
         # Durability is pointless for throw-away lab data; speed is not.
         "-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off"],
        log_path, env=_env(), user=SUPERUSER,
    )


def _wait_and_apply_accounts(info: dict) -> None:
    """Wait for the server to accept connections, then make the product's accounts; stop it on failure."""
    port = info["port"]

    def ready() -> bool:
        procs.run([_bin("pg_isready"), "-q", "-h", "127.0.0.1", "-p", str(port)], env=_env(), timeout=5)
        return True

    try:
        procs.wait_ready(ready, pid=info["pid"], log_path=Path(info["log"]), timeout=30, what="postgres")
        apply_accounts(info)
    except Exception:
        stop_postgres(info)
        raise


def start_postgres(base_dir: Path, port: int | None = None, password: str | None = None) -> dict:
    """Start (initialising if needed) a cluster in ``base_dir/postgres``; return its info dict.

    ``password``: the ``backup`` role's password (random when None; on a reused cluster
    the one saved in ``secrets/pg-password``); the ``restore`` role's is in
    ``secrets/pg-restore-password``. Re-running on an existing data dir restarts the same
    cluster, so a lab can be stopped and started again.
    """
    base_dir = Path(base_dir).resolve()
    home = base_dir / "postgres"
    datadir = home / "data"
    log_path = home / "postgres.log"
    socket_dir = _prepare_home(home)

    sdir = secrets_dir(base_dir)
    password_file, restore_file = sdir / "pg-password", sdir / "pg-restore-password"
    fresh = not (datadir / "PG_VERSION").exists()
    password, restore_password = _passwords(password_file, restore_file, fresh, password)

    if fresh:
        _initdb(datadir)

    port = port or procs.free_port()
    pid = _start_server(datadir, port, socket_dir, log_path)
    info = {
        "kind": "postgres",
        "pid": pid,
        "host": "127.0.0.1",
        "port": port,
        "datadir": str(datadir),
        "socket_dir": str(socket_dir),
        "log": str(log_path),
        "bin_dir": str(PG_BIN),
        "superuser": SUPERUSER,
        "user": BACKUP_USER,
        "password": password,
        "password_file": str(password_file),
        "restore_user": RESTORE_USER,
        "restore_password": restore_password,
        "restore_password_file": str(restore_file),
        "pgpass_file": str(sdir / "pgpass"),
    }
    _wait_and_apply_accounts(info)
    # The .pgpass format that libpq clients (pg_dump, psql) read via PGPASSFILE.
    write_secret(Path(info["pgpass_file"]), f"127.0.0.1:{port}:*:{BACKUP_USER}:{password}\n"
                                            f"127.0.0.1:{port}:*:{RESTORE_USER}:{restore_password}\n")
    return info


def stop_postgres(info: dict) -> None:
    """Fast shutdown (SIGINT: abort client sessions, checkpoint, exit)."""
    procs.stop_pid(int(info["pid"]), sig=signal.SIGINT, timeout=20, match="postgres")
    if Path(info["socket_dir"]).name.startswith("lab-pg-"):  # the short-path fallback in /tmp
        shutil.rmtree(info["socket_dir"], ignore_errors=True)


def psql(info: dict, sql: str, dbname: str = "postgres", *, timeout: float = 3600) -> str:
    """Run SQL as the superuser over the trusted local socket; return unaligned output."""
    return procs.run(
        [_bin("psql"), "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-h", info["socket_dir"],
         "-p", str(info["port"]), "-U", info["superuser"], "-d", dbname, "-f", "-"],
        input_text=sql, env=_env(), timeout=timeout, what=f"psql {dbname}",
    )


# --- seed data ------------------------------------------------------------------------

# Fixed non-ASCII rows: tests compare them byte for byte after a round trip.
SITES = [
    ("zrh", "Zürich Höngg", "Rack « A » — salle serveur"),
    ("tyo", "東京データセンター", "ラック 3"),
    ("par", "Paris 🥐 Bercy", "Baie n°2, accès badge"),
    ("ber", "Berlin Straße", "Kühlung prüfen ❄️"),
]

# Run as the application's own role (netbox), which owns the database and everything in it, as an
# application that creates its schema itself does.
_INVENTORY_SQL = """
SET ROLE netbox;
CREATE TYPE device_status AS ENUM ('active', 'planned', 'offline', 'decommissioning');
CREATE TABLE sites (
    id serial PRIMARY KEY, slug text UNIQUE NOT NULL, name text NOT NULL, description text);
INSERT INTO sites (slug, name, description) VALUES {sites};
CREATE TABLE devices (
    id bigserial PRIMARY KEY,
    site_id int NOT NULL REFERENCES sites(id),
    name text NOT NULL UNIQUE,
    serial text,
    status device_status NOT NULL DEFAULT 'active',
    config jsonb,
    created timestamptz NOT NULL);
INSERT INTO devices (site_id, name, serial, status, config, created)
SELECT 1 + i % {nsites}, 'dev-' || lpad(i::text, 6, '0') || '-é',
       upper(substr(md5(i::text), 1, 12)),
       (ARRAY['active','planned','offline','decommissioning'])[1 + i % 4]::device_status,
       jsonb_build_object('vlan', 100 + i % 50, 'note', 'ノード ' || i, 'tags', jsonb_build_array('pve', 'ℓab')),
       timestamptz '2023-01-01 00:00+00' + i * interval '17 minutes'
FROM generate_series(1, {ndevices}) AS i;
CREATE TABLE interfaces (
    id bigserial PRIMARY KEY,
    device_id bigint NOT NULL REFERENCES devices(id) ON DELETE CASCADE,
    name text NOT NULL, mac macaddr, mtu int NOT NULL DEFAULT 1500);
INSERT INTO interfaces (device_id, name, mac, mtu)
SELECT d, 'eth' || n, ('02:00:' || substr(md5(d || ':' || n), 1, 2) || ':' || substr(md5(d || ':' || n), 3, 2)
        || ':' || substr(md5(d || ':' || n), 5, 2) || ':' || substr(md5(d || ':' || n), 7, 2))::macaddr,
       CASE WHEN n = 2 THEN 9000 ELSE 1500 END
FROM generate_series(1, {ndevices}) AS d, generate_series(0, 2) AS n;
CREATE TABLE ip_addresses (
    id bigserial PRIMARY KEY,
    interface_id bigint REFERENCES interfaces(id) ON DELETE SET NULL,
    address inet NOT NULL, dns_name text);
INSERT INTO ip_addresses (interface_id, address, dns_name)
SELECT i, ('10.' || (i / 65536) % 256 || '.' || (i / 256) % 256 || '.' || i % 256 || '/16')::inet,
       'host' || i || '.lab.example'
FROM generate_series(1, {ndevices} * 2) AS i;
CREATE SEQUENCE ticket_seq START 1000;
SELECT setval('ticket_seq', 1000 + {ndevices});
CREATE VIEW device_summary AS
    SELECT s.slug, s.name AS site, d.status, count(DISTINCT d.id) AS devices, count(i.id) AS interfaces
    FROM devices d JOIN sites s ON s.id = d.site_id LEFT JOIN interfaces i ON i.device_id = d.id
    GROUP BY s.slug, s.name, d.status;
GRANT SELECT ON ALL TABLES IN SCHEMA public TO netbox_ro;
"""

_APPDB_SQL = """
CREATE TABLE users (
    id bigserial PRIMARY KEY, login text UNIQUE NOT NULL, full_name text, email text, avatar bytea);
INSERT INTO users (login, full_name, email, avatar)
SELECT 'user' || i, (ARRAY['José Müller', '山田 太郎', 'Zoë 🚀 Ødegaard', 'Ana Łukasz'])[1 + i % 4] || ' #' || i,
       'user' || i || '@example.org', decode(md5('avatar' || i) || md5('png' || i), 'hex')
FROM generate_series(1, {nusers}) AS i;
CREATE TABLE repos (
    id bigserial PRIMARY KEY, owner_id bigint NOT NULL REFERENCES users(id),
    name text NOT NULL, description text, UNIQUE (owner_id, name));
INSERT INTO repos (owner_id, name, description)
SELECT 1 + i % {nusers}, 'repo-' || i, 'Dépôt « ' || i || ' » — リポジトリ'
FROM generate_series(1, {nrepos}) AS i;
CREATE TABLE issues (
    id bigserial PRIMARY KEY, repo_id bigint NOT NULL REFERENCES repos(id) ON DELETE CASCADE,
    title text NOT NULL, body text, closed boolean NOT NULL DEFAULT false, created timestamptz NOT NULL);
INSERT INTO issues (repo_id, title, body, closed, created)
SELECT 1 + i % {nrepos}, 'Issue ' || i || ': sauvegarde échouée 💥',
       repeat('Lorem ipsum dolor sit amet, ' || md5(i::text) || ' ', 6), i % 3 = 0,
       timestamptz '2024-01-01 00:00+00' + i * interval '3 minutes'
FROM generate_series(1, {nissues}) AS i;
CREATE TABLE attachments (
    id bigserial PRIMARY KEY, issue_id bigint NOT NULL REFERENCES issues(id) ON DELETE CASCADE,
    name text NOT NULL, data bytea NOT NULL);
-- 1 KiB of md5 output per row: deterministic but incompressible, like real uploads.
INSERT INTO attachments (issue_id, name, data)
SELECT i, 'capture-' || i || '.bin',
       (SELECT decode(string_agg(md5(i || ':' || j), ''), 'hex') FROM generate_series(1, 64) AS j)
FROM generate_series(1, {nattach}) AS i;
CREATE VIEW open_issues AS
    SELECT r.name AS repo, i.id, i.title FROM issues i JOIN repos r ON r.id = i.repo_id WHERE NOT i.closed;
ALTER DATABASE appdb OWNER TO gitea;
ALTER SCHEMA public OWNER TO gitea;
DO $$ DECLARE t text; BEGIN
  FOR t IN SELECT tablename FROM pg_tables WHERE schemaname = 'public' LOOP
    EXECUTE format('ALTER TABLE %I OWNER TO gitea', t);
  END LOOP;
  FOR t IN SELECT sequencename FROM pg_sequences WHERE schemaname = 'public' LOOP
    EXECUTE format('ALTER SEQUENCE %I OWNER TO gitea', t);
  END LOOP;
END $$;
ALTER VIEW open_issues OWNER TO gitea;
"""

# Measured per unit of ``scale`` (both databases): ~7 MB on disk, ~8 MB of plain
# pg_dump output (bytea is hex in SQL). A benchmark wanting ~500 MB asks for scale=65.
APPROX_BYTES_PER_SCALE = 7_000_000


def seed_postgres(info: dict, scale: int = 1) -> dict:
    """Create and fill ``inventory`` (netbox-like) and ``appdb`` (gitea-like).

    ``scale`` multiplies the row counts (about APPROX_BYTES_PER_SCALE bytes each).
    Returns {"databases": {db: {table: rows}}, "roles": [...], "sites": SITES}.
    """
    if scale < 1:
        raise ValueError("scale must be >= 1")
    counts = {
        "inventory": {"sites": len(SITES), "devices": 2000 * scale, "interfaces": 6000 * scale,
                      "ip_addresses": 4000 * scale},
        "appdb": {"users": 200 * scale, "repos": 500 * scale, "issues": 5000 * scale,
                  "attachments": 2500 * scale},
    }
    psql(info, f"CREATE ROLE netbox LOGIN PASSWORD '{new_password()}';\nCREATE ROLE netbox_ro NOLOGIN;\n"
               f"CREATE ROLE gitea LOGIN PASSWORD '{new_password()}';\n"
               "CREATE DATABASE inventory OWNER netbox;\nCREATE DATABASE appdb;\n")
    sites = ", ".join(
        "(" + ", ".join("'" + v.replace("'", "''") + "'" for v in row) + ")" for row in SITES
    )
    inv = counts["inventory"]
    psql(info, _INVENTORY_SQL.format(sites=sites, nsites=len(SITES), ndevices=inv["devices"]), "inventory")
    app = counts["appdb"]
    psql(info, _APPDB_SQL.format(nusers=app["users"], nrepos=app["repos"], nissues=app["issues"],
                                 nattach=app["attachments"]), "appdb")
    # two applications were installed: the accounts file, run again, makes `restore` a member of their roles
    apply_accounts(info)
    return {"databases": counts, "roles": ["netbox", "netbox_ro", "gitea", BACKUP_USER, RESTORE_USER],
            "sites": SITES}
