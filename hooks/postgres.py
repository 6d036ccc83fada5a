"""PostgreSQL: pg_dump -Fc per database (row counts from the same snapshot), pg_dumpall --globals-only.

Layout: `<day>/postgres/<source>/<database>.dump` and `<day>/postgres/<source>/@globals.sql`.
"""

from __future__ import annotations

import json
import os
import re
import select
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

from restic_orch import runner
from restic_orch.config import Config, PostgresSource
from restic_orch.runner import CommandError, CommandTimeout

from ._sql import (
    SourceError,
    check_fetched,
    client,
    compare_counts,
    error_text,
    private_dir,
    remove,
    safe_filename,
    select_databases,
    version_of,
    version_tuple,
)
from .base import Artifact, DumpContext, DumpOutcome, Failure, Fetch, Hook, Notice, RestoreOptions, RestoreOutcome

KIND = "postgres"
SYSTEM_DATABASES = {"postgres", "template0", "template1"}
GLOBALS_TRAILER = b"PostgreSQL database cluster dump complete"
QUERY_TIMEOUT = 120

_USER_NS = "n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname !~ '^pg_(toast|temp_)'"

# Exact count(*) of every table; run inside the exporting transaction it sees exactly what pg_dump dumps.
_COUNTS_SQL = f"""
SELECT coalesce(json_object_agg(t.k, t.n), '{{}}'::json) FROM (
  SELECT n.nspname || '.' || c.relname AS k,
         (xpath('/row/n/text()', query_to_xml(format('SELECT count(*) AS n FROM %I.%I', n.nspname, c.relname),
                                              false, true, '')))[1]::text::bigint AS n
  FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
  WHERE c.relkind IN ('r', 'p') AND {_USER_NS}) t
"""  # noqa: S608 - constant SQL fragments, nothing from outside

# Every role that owns or is granted something in the database: if all exist, restore keeps owners and ACLs.
_ROLES_SQL = f"""
SELECT coalesce(json_agg(DISTINCT r.rolname), '[]'::json) FROM pg_roles r WHERE r.oid IN (
  SELECT c.relowner FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE {_USER_NS}
  UNION SELECT (aclexplode(c.relacl)).grantee FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE {_USER_NS} AND c.relacl IS NOT NULL
  UNION SELECT n.nspowner FROM pg_namespace n WHERE {_USER_NS}
  UNION SELECT (aclexplode(n.nspacl)).grantee FROM pg_namespace n WHERE {_USER_NS} AND n.nspacl IS NOT NULL
  UNION SELECT p.proowner FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace WHERE {_USER_NS}
  UNION SELECT t.typowner FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace WHERE {_USER_NS}
  UNION SELECT defaclrole FROM pg_default_acl
  UNION SELECT (aclexplode(defaclacl)).grantee FROM pg_default_acl)
"""  # noqa: S608 - constant SQL fragments

_OBJECTS_SQL = f"""
SELECT (SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE {_USER_NS})
     + (SELECT count(*) FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace WHERE {_USER_NS})
"""  # noqa: S608 - constant SQL fragments

_SNAPSHOT_SQL = f"""
SET statement_timeout = 0;
SET idle_in_transaction_session_timeout = 0;
BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY;
SELECT 'INFO:' || json_build_object(
  'snapshot', pg_export_snapshot(),
  'owner', pg_get_userbyid(d.datdba),
  'encoding', pg_encoding_to_char(d.encoding),
  'collate', d.datcollate,
  'ctype', d.datctype,
  'row_counts', ({_COUNTS_SQL}),
  'roles', ({_ROLES_SQL}))::text
FROM pg_database d WHERE d.datname = current_database();
"""  # noqa: S608 - constant SQL fragments


def _conninfo(database: str) -> str:
    """`dbname='...'` so that any database name (spaces, quotes, '=') reaches libpq unchanged."""
    return "dbname='" + database.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _maintenance(target: str) -> str:
    """The database to connect to while creating or dropping `target` (never `target` itself)."""
    return "template1" if target == "postgres" else "postgres"


def _major(version: tuple[int, ...]) -> tuple[int, ...]:
    # before 10 the major version had two parts (9.6), since 10 it has one
    return version[:2] if version and version[0] < 10 else version[:1]


class PostgresHook(Hook):
    kind = KIND

    def __init__(self, source: PostgresSource) -> None:
        self.source = source
        self.name = source.name

    @classmethod
    def from_config(cls, config: Config) -> list[Hook]:
        return [cls(source) for source in config.sources.postgres]

    # --- plumbing ---------------------------------------------------------------------------------

    def _env(self) -> dict[str, str]:
        env = {"PGCONNECT_TIMEOUT": "10", "PGAPPNAME": "restic-orch", "PGCLIENTENCODING": "UTF8"}
        if self.source.password_file is not None:
            try:
                env["PGPASSWORD"] = runner.read_secret(self.source.password_file)
            except OSError as exc:
                raise SourceError(f"cannot read password_file {self.source.password_file}: "
                                  f"{exc.strerror or exc}") from None
        return env

    def _conn(self) -> list[str]:
        args = ["-w", "-h", self.source.host, "-U", self.source.user]
        if self.source.port:
            args += ["-p", str(self.source.port)]
        return args

    def _psql(self, sql: str, database: str = "postgres", *, variables: dict[str, str] | None = None,
              timeout: float = QUERY_TIMEOUT) -> str:
        """Run SQL (stdin) in one database; `:"name"` / `:'name'` interpolate `variables` safely quoted."""
        argv = [*client(self.source, "psql"), "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", *self._conn()]
        for key, value in (variables or {}).items():
            argv += ["-v", f"{key}={value}"]
        argv += ["-d", _conninfo(database), "-f", "-"]
        return runner.run(argv, env=self._env(), input=sql, timeout=timeout).stdout

    def _json(self, sql: str, database: str = "postgres", **kwargs: Any) -> Any:
        out = self._psql(sql, database, **kwargs).strip()
        return json.loads(out.splitlines()[-1]) if out else None

    def _client_version(self) -> str:
        out = runner.run([*client(self.source, "pg_dump"), "--version"], timeout=QUERY_TIMEOUT).stdout
        return version_of(out, (r"\(PostgreSQL\)\s+(\d+(?:\.\d+)*)", r"(\d+\.\d+(?:\.\d+)?)"))

    def _server(self) -> dict[str, Any]:
        return self._json("SELECT json_build_object('version', current_setting('server_version'),"
                          " 'num', current_setting('server_version_num')::int,"
                          " 'databases', (SELECT json_agg(json_build_object('name', datname, 'conn', datallowconn)"
                          "               ORDER BY datname) FROM pg_database WHERE NOT datistemplate))")

    # --- dump -------------------------------------------------------------------------------------

    def dump(self, ctx: DumpContext) -> DumpOutcome:
        out = DumpOutcome()
        base = ctx.out_dir(KIND) / safe_filename(self.name)
        shutil.rmtree(base, ignore_errors=True)  # only this run's dumps may be listed from here
        base.mkdir(mode=0o700, parents=True)
        try:
            env = self._env()
            client_version = self._client_version()
            out.tools["pg_dump"] = client_version
            server = self._server()
            server_version = str(server["version"]).split()[0]
            out.tools[f"postgres-server:{self.name}"] = server_version
            if _major(version_tuple(client_version)) < _major(version_tuple(server_version)):
                raise SourceError(f"pg_dump {client_version} is older than the server (PostgreSQL "
                                  f"{server_version}): install a PostgreSQL {_major(version_tuple(server_version))[0]}"
                                  " client or point bin_dir at one")
        except (SourceError, CommandError) as exc:
            out.failures.append(Failure(KIND, self.name, f"db:{self.name}/*",
                                        f"postgres source {self.name}: {error_text(exc)}"))
            return out
        versions = {"server_version": server_version, "client_version": client_version}
        databases = {d["name"]: d["conn"] for d in server["databases"] or []}
        names, missing = select_databases(self.source, sorted(databases), {"template0", "template1"})
        for name in missing:
            out.failures.append(Failure(KIND, self.name, f"db:{self.name}/{name}",
                                        f"database {name} does not exist on postgres source {self.name}"))
        if self.source.globals:
            try:
                out.artifacts.append(self._dump_globals(ctx, base, env, versions, out))
            except (CommandError, SourceError) as exc:
                out.failures.append(Failure(KIND, self.name, f"db:{self.name}/@globals",
                                            f"pg_dumpall --globals-only failed: {error_text(exc)}"))
        for name in names:
            component = f"db:{self.name}/{name}"
            try:
                if not databases[name]:
                    raise SourceError(f"database {name} does not accept connections (datallowconn is false)")
                out.artifacts.append(self._dump_database(ctx, base, name, env, versions))
                ctx.log.info("database dumped", extra={"source": self.name, "database": name})
            except (CommandError, SourceError, OSError, ValueError) as exc:
                out.failures.append(Failure(KIND, self.name, component,
                                            f"dump of {name} failed: {error_text(exc)}"))
        return out

    def _dump_globals(self, ctx: DumpContext, base: Path, env: dict[str, str], versions: dict[str, str],
                      out: DumpOutcome) -> Artifact:
        path = base / "@globals.sql"
        partial = path.with_name(path.name + ".partial")
        argv = [*client(self.source, "pg_dumpall"), "--globals-only", *self._conn()]
        try:
            try:
                runner.run(argv, env=env, stdout_path=partial, low_priority=True,
                           timeout=self.source.timeout_seconds)
            except CommandError as exc:
                if isinstance(exc, CommandTimeout) or "permission denied" not in exc.stderr:
                    raise
                # without superuser pg_authid is unreadable: roles without their passwords beat no roles
                runner.run([*argv, "--no-role-passwords"], env=env, stdout_path=partial, low_priority=True,
                           timeout=self.source.timeout_seconds)
                out.notices.append(Notice(KIND, self.name, f"{self.source.user} cannot read pg_authid: roles"
                                                            " were dumped without their passwords"))
            with open(partial, "rb") as handle:
                handle.seek(max(0, partial.stat().st_size - 4096))
                if GLOBALS_TRAILER not in handle.read():
                    raise SourceError("the globals dump has no completion trailer (truncated)")
            roles = re.findall(r'^CREATE ROLE ("(?:[^"]|"")+"|[^\s;]+);', partial.read_text("utf-8"), re.M)
            os.replace(partial, path)
        except BaseException:
            remove(partial)
            raise
        meta = {"globals": True, "format": "sql",
                "roles": [r[1:-1].replace('""', '"') if r.startswith('"') else r for r in roles], **versions}
        return ctx.artifact(path, component=f"db:{self.name}/@globals", kind=KIND, source=self.name, meta=meta)

    def _dump_database(self, ctx: DumpContext, base: Path, database: str, env: dict[str, str],
                       versions: dict[str, str]) -> Artifact:
        path = base / (safe_filename(database) + ".dump")
        partial = path.with_name(path.name + ".partial")
        try:
            with _SnapshotSession(self, database, env, self.source.timeout_seconds) as info:
                runner.run([*client(self.source, "pg_dump"), "-Fc", f"-Z{self.source.dump_compression}",
                            *self._conn(), f"--snapshot={info['snapshot']}",
                            "-d", _conninfo(database)],
                           env=env, stdout_path=partial, low_priority=True, timeout=self.source.timeout_seconds)
            toc = runner.run([*client(self.source, "pg_restore"), "--list"], stdin_path=partial,
                             timeout=self.source.timeout_seconds).stdout
            if not toc.strip():
                raise SourceError("pg_restore --list read an empty table of contents")
            # --list only reads the table of contents, which is written first: a file cut short in the
            # data still passes it. Reading the whole archive (to /dev/null) proves every entry is there.
            runner.run([*client(self.source, "pg_restore"), "-f", "-"], stdin_path=partial,
                       stdout_path=Path(os.devnull), low_priority=True, timeout=self.source.timeout_seconds)
            os.replace(partial, path)
        except BaseException:
            remove(partial)
            raise
        meta = {"database": database, "format": "custom", "compression": self.source.dump_compression,
                "row_counts": info["row_counts"] or {},
                "row_counts_source": "count(*) in the exported snapshot pg_dump used",
                "owner": info["owner"], "encoding": info["encoding"], "collate": info["collate"],
                "ctype": info["ctype"], "roles": info["roles"] or [], **versions}
        return ctx.artifact(path, component=f"db:{self.name}/{database}", kind=KIND, source=self.name, meta=meta)

    # --- restore ----------------------------------------------------------------------------------

    def restore(self, artifact: Artifact, fetch: Fetch, options: RestoreOptions) -> RestoreOutcome:
        try:
            with private_dir("restic-orch-pg-") as tmp:
                local = Path(fetch(tmp / Path(artifact.path).name))
                why = check_fetched(artifact, local)
                if why:
                    return RestoreOutcome(artifact.component, False, why, {"sha256": "mismatch"})
                if artifact.meta.get("globals"):
                    return self._restore_globals(artifact, local)
                return self._restore_database(artifact, local, options)
        except (CommandError, SourceError, OSError) as exc:
            return RestoreOutcome(artifact.component, False, error_text(exc))

    def _restore_globals(self, artifact: Artifact, local: Path) -> RestoreOutcome:
        # ON_ERROR_STOP off for this file only: the roles that exist already (the connecting one at least)
        # make CREATE ROLE fail, and the ALTER ROLE that follows still sets their attributes and password
        argv = [*client(self.source, "psql"), "-X", "-q", "-v", "ON_ERROR_STOP=0", *self._conn(),
                "-d", _conninfo("postgres"), "-f", "-"]
        result = runner.run(argv, env=self._env(), stdin_path=local, timeout=self.source.timeout_seconds,
                            check=False)
        if result.returncode != 0:
            raise CommandError(result.argv, result.returncode, result.stderr)
        errors = [line.split("ERROR:", 1)[1].strip() for line in result.stderr.splitlines() if "ERROR:" in line]
        tolerated = [e for e in errors if re.fullmatch(r'role ".*" already exists', e)]
        other = [e for e in errors if e not in tolerated]
        expected = list(artifact.meta.get("roles") or [])
        present = set(self._json("SELECT json_agg(rolname) FROM pg_roles") or [])
        missing = [r for r in expected if r not in present]
        checks = {"roles": "ok" if not missing else {"missing": missing}, "errors": other}
        message = (f"globals applied with ON_ERROR_STOP off; {len(tolerated)} roles already existed"
                   " (kept, their attributes re-applied)")
        if other:
            message += f"; {len(other)} other errors: " + "; ".join(other[:5])
        return RestoreOutcome(artifact.component, not other and not missing, runner.mask(message), checks,
                              restored_to=f"{self.name}:@globals")

    def _restore_database(self, artifact: Artifact, local: Path, options: RestoreOptions) -> RestoreOutcome:
        meta = artifact.meta
        target = options.target_db or (str(meta["database"]) + options.suffix)
        where = f"{self.name}/{target}"
        server = self._server()
        existing = {d["name"] for d in server["databases"] or []}
        roles = set(self._json("SELECT json_agg(rolname) FROM pg_roles") or [])
        missing = sorted(set(meta.get("roles") or []) - roles)
        # an existing but empty database (a fresh `postgres`) is restored into as it is: dropping it
        # would only cut off whoever is connected to it
        create = True
        if target in existing:
            objects = self._user_objects(target)
            if objects and not options.force:
                return RestoreOutcome(artifact.component, False,
                                      f"database {target} on postgres source {self.name} exists and is not empty"
                                      f" ({objects} objects): refusing to overwrite it without --force",
                                      restored_to=where)
            if objects:
                self._drop(target, int(server["num"]), allow_postgres=True)
            else:
                create = False
        if create:
            self._create(target, meta, roles)
        argv = [*client(self.source, "pg_restore"), "--exit-on-error", "--single-transaction", *self._conn(),
                "-d", _conninfo(target)]
        if missing:
            # GRANTs and ALTER OWNER to absent roles would abort the restore: restore without them
            argv += ["--no-owner", "--no-privileges"]
        try:
            runner.run(argv, env=self._env(), stdin_path=local, timeout=self.source.timeout_seconds)
        except CommandError as exc:
            # --single-transaction left nothing behind; a database made for this restore goes away too
            if create:
                self._drop(target, int(server["num"]), allow_postgres=True)
            return RestoreOutcome(artifact.component, False,
                                  f"pg_restore into {target} failed (nothing was restored): {error_text(exc)}",
                                  restored_to=where)
        diffs = compare_counts(dict(meta.get("row_counts") or {}), self._counts(target))
        checks: dict[str, Any] = {"row_counts": "ok" if not diffs else diffs,
                                  "owners": "kept" if not missing else {"dropped, roles missing": missing}}
        message = f"restored {meta['database']} into {target}"
        if missing:
            message += (f" without owners and privileges (roles missing: {', '.join(missing)}; restore"
                        f" db:{self.name}/@globals first to keep them)")
        if diffs:
            message += f"; row counts differ in {len(diffs)} tables"
        return RestoreOutcome(artifact.component, not diffs, message, checks, restored_to=where)

    def _user_objects(self, database: str) -> int:
        out = self._psql(_OBJECTS_SQL, database)
        return int(out.strip() or 0)

    def _create(self, target: str, meta: dict[str, Any], roles: set[str]) -> None:
        variables = {"name": target}
        clauses = ""
        if meta.get("owner") in roles:
            variables["owner"] = str(meta["owner"])
            clauses += ' OWNER :"owner"'
        if meta.get("encoding"):
            variables.update(enc=str(meta["encoding"]), coll=str(meta.get("collate") or ""),
                             ctype=str(meta.get("ctype") or ""))
            try:
                self._psql(f"CREATE DATABASE :\"name\"{clauses} TEMPLATE template0 ENCODING :'enc'"
                           " LC_COLLATE :'coll' LC_CTYPE :'ctype'", _maintenance(target), variables=variables)
                return
            except CommandError as exc:
                if "locale" not in exc.stderr and "collation" not in exc.stderr:
                    raise
                # the original locale is not installed here: the server's default still holds the data
        self._psql(f"CREATE DATABASE :\"name\"{clauses} TEMPLATE template0", _maintenance(target),
                   variables=variables)

    def _drop(self, database: str, server_num: int, *, allow_postgres: bool = False) -> None:
        # a restore of the `postgres` database itself may replace it; a drill's cleanup never may
        if database in SYSTEM_DATABASES and not (allow_postgres and database == "postgres"):
            raise SourceError(f"refusing to drop the system database {database}")
        if server_num >= 130000:
            self._psql('DROP DATABASE IF EXISTS :"name" WITH (FORCE)', _maintenance(database),
                       variables={"name": database})
        else:
            self._psql("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = :'name';\n"
                       'DROP DATABASE IF EXISTS :"name"', _maintenance(database), variables={"name": database})

    def _counts(self, database: str) -> dict[str, int]:
        return {k: int(v) for k, v in (self._json(_COUNTS_SQL, database, timeout=self.source.timeout_seconds)
                                       or {}).items()}

    # --- helpers for the drill ----------------------------------------------------------------------

    def _for(self, source: str | PostgresSource | None) -> PostgresHook:
        if source is None or source == self.name:
            return self
        if isinstance(source, PostgresSource):
            return PostgresHook(source)
        raise ValueError(f"this hook is postgres source {self.name}, not {source}")

    def drop_database(self, source: str | PostgresSource | None, name: str) -> None:
        """Drop a database (a drill's scratch copy); the system databases are refused."""
        hook = self._for(source)
        hook._drop(name, int(hook._server()["num"]))

    def row_counts(self, source: str | PostgresSource | None, database: str) -> dict[str, int]:
        """Exact count(*) of every table, keyed `schema.table`."""
        return self._for(source)._counts(database)

    def discard(self, artifact: Artifact, outcome: RestoreOutcome, options: RestoreOptions) -> str:
        """A drill restored into a drill_ database: drop it."""
        if not options.target_db or artifact.meta.get("globals"):
            return "nothing to clean up"
        self.drop_database(None, options.target_db)
        return f"dropped database {options.target_db}"


class _SnapshotSession:
    """A psql session holding a REPEATABLE READ transaction whose snapshot pg_dump imports.

    The row counts, owner and roles are read inside that transaction, so they describe exactly the data
    that pg_dump --snapshot writes. The transaction is held open until pg_dump is done.
    """

    def __init__(self, hook: PostgresHook, database: str, env: dict[str, str], timeout: float) -> None:
        self.hook, self.database, self.env, self.timeout = hook, database, env, timeout
        self.stream: runner.Stream | None = None

    def __enter__(self) -> dict[str, Any]:
        argv = [*client(self.hook.source, "psql"), "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1",
                *self.hook._conn(), "-d", _conninfo(self.database)]
        self.stream = runner.Stream(argv, env=self.env, stdin=subprocess.PIPE)
        try:
            self._send(_SNAPSHOT_SQL)
            return json.loads(self._read_line(b"INFO:"))
        except BaseException:
            self.stream.kill()
            raise

    def _send(self, sql: str) -> None:
        assert self.stream is not None and self.stream.proc.stdin is not None
        self.stream.proc.stdin.write(sql.encode())
        self.stream.proc.stdin.flush()

    def _read_line(self, marker: bytes) -> bytes:
        assert self.stream is not None
        fd = self.stream.stdout.fileno()
        buffer = b""
        deadline = time.monotonic() + self.timeout
        while True:
            for line in buffer.split(b"\n")[:-1]:
                if line.startswith(marker):
                    return line[len(marker):]
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise CommandTimeout(self.stream.argv, None, self.stream.stderr_text,
                                     reason=f"timed out after {self.timeout:.0f} s reading the row counts")
            ready, _, _ = select.select([fd], [], [], min(remaining, 1.0))
            if not ready:
                continue
            chunk = os.read(fd, 1 << 16)
            if not chunk:  # psql exited: its stderr says why (connection refused, no such database...)
                result = self.stream.wait(timeout=10, check=False)
                raise CommandError(self.stream.argv, result.returncode, result.stderr)
            buffer += chunk

    def __exit__(self, *exc: object) -> None:
        assert self.stream is not None
        try:
            self._send("COMMIT;\n")
            assert self.stream.proc.stdin is not None
            self.stream.proc.stdin.close()
            self.stream.wait(timeout=30, check=False)
        except (OSError, CommandError):
            pass
        finally:
            self.stream.kill()
            if self.stream.proc.stdout:
                self.stream.proc.stdout.close()


HOOK = PostgresHook
