"""MariaDB / MySQL: one mariadb-dump per database, users and grants separately.

Layout: `<day>/mysql/<source>/<database>.sql` and `<day>/mysql/<source>/@users.sql`.

Each database is dumped WITHOUT `--databases`: the file then holds no `CREATE DATABASE` / `USE` lines,
so a restore creates the target itself (with the recorded character set and collation) and loads the
file into it, under the original name or any other. The only statement that still names the original
database (`ALTER DATABASE ... CHARACTER SET`, which mariadb-dump writes around routines, triggers and
events created under another collation) is rewritten when the target differs.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path
from typing import Any

from restic_orch import runner
from restic_orch.config import Config, MysqlSource
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
    write_private,
)
from .base import Artifact, DumpContext, DumpOutcome, Failure, Fetch, Hook, Notice, RestoreOptions, RestoreOutcome

KIND = "mysql"
SYSTEM_DATABASES = {"information_schema", "performance_schema", "sys", "mysql"}
TRAILER = b"-- Dump completed"
QUERY_TIMEOUT = 120
_NAME = re.compile(r"^[A-Za-z0-9_]+$")  # character set and collation names

_CREATE_TABLE = re.compile(rb"^CREATE TABLE `((?:[^`]|``)+)` \(")
_INSERT = re.compile(rb"^INSERT (?:IGNORE )?INTO `((?:[^`]|``)+)` VALUES")
# a quoted string as mariadb-dump writes it: backslash escapes, never a raw newline inside
_STRING = re.compile(rb"'[^'\\]*(?:\\.[^'\\]*)*'", re.S)
_ACCOUNT = re.compile(r"^CREATE USER (?:IF NOT EXISTS )?(`(?:[^`]|``)*`@`(?:[^`]|``)*`)", re.M)


def quote_ident(name: str) -> str:
    return "`" + name.replace("`", "``") + "`"


def _literal(value: str) -> str:
    """A string literal that survives any content: hex, converted back to utf8mb4."""
    return f"CONVERT(X'{value.encode('utf-8').hex()}' USING utf8mb4)"


def _option_value(value: str) -> str:
    """A value for an option file, double-quoted with the escapes MariaDB's option parser undoes."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def count_dump_rows(path: Path) -> dict[str, int]:
    """Rows per table as written in a mariadb-dump file (every `CREATE TABLE` listed, 0 if no data).

    Counted from the dump itself, so they are exactly what a restore of this file must give back, even
    when the tables changed while the dump ran (`--single-transaction` dumps one snapshot that no other
    session can share). Outside quoted strings an INSERT's values contain no parentheses but the ones
    opening each row, so after blanking the strings every `(` is one row.
    """
    counts: dict[str, int] = {}
    table: str | None = None
    with open(path, "rb") as handle:
        for line in handle:
            if table is None:
                created = _CREATE_TABLE.match(line)
                if created:
                    counts.setdefault(created.group(1).replace(b"``", b"`").decode("utf-8", "replace"), 0)
                    continue
                insert = _INSERT.match(line)
                if not insert:
                    continue
                table = insert.group(1).replace(b"``", b"`").decode("utf-8", "replace")
                line = line[insert.end():]
            values = _STRING.sub(b"''", line)
            counts[table] = counts.get(table, 0) + values.count(b"(")
            if values.rstrip().endswith(b";"):
                table = None
    return counts


def _trailer_ok(path: Path) -> bool:
    with open(path, "rb") as handle:
        handle.seek(max(0, path.stat().st_size - 512))
        tail = handle.read().rstrip().splitlines()
    return bool(tail) and tail[-1].startswith(TRAILER)


class _Session:
    """Client argv for one source with its credentials in a 0600 option file in a private directory."""

    def __init__(self, source: MysqlSource, tmp: Path) -> None:
        self.source = source
        lines = ["[client]"]
        if source.password_file is not None:
            try:
                password = runner.read_secret(source.password_file)
            except OSError as exc:
                raise SourceError(f"cannot read password_file {source.password_file}: "
                                  f"{exc.strerror or exc}") from None
            lines.append(f"password={_option_value(password)}")
        self.cnf = write_private(tmp / "client.cnf", "\n".join(lines) + "\n")

    def argv(self, binary: str, *args: str) -> list[str]:
        # --defaults-extra-file must be the very first option. user/host/port go on argv because a
        # ~/.my.cnf is read after the extra file and would otherwise override them.
        conn = [f"--user={self.source.user}", f"--host={self.source.host}"]
        if self.source.port:
            conn += [f"--port={self.source.port}", "--protocol=TCP"]
        return [*client(self.source, binary), f"--defaults-extra-file={self.cnf}", *conn, *args]

    def sql(self, query: str, database: str | None = None, *, timeout: float = QUERY_TIMEOUT) -> list[list[str]]:
        argv = self.argv("mariadb", "--batch", "--skip-column-names", "--default-character-set=utf8mb4",
                         "--connect-timeout=10")
        if database is not None:
            argv.append(f"--database={database}")
        out = runner.run(argv, input=query, timeout=timeout).stdout
        return [line.split("\t") for line in out.splitlines() if line]


class MysqlHook(Hook):
    kind = KIND

    def __init__(self, source: MysqlSource) -> None:
        self.source = source
        self.name = source.name

    @classmethod
    def from_config(cls, config: Config) -> list[Hook]:
        return [cls(source) for source in config.sources.mysql]

    # --- queries ----------------------------------------------------------------------------------

    @staticmethod
    def _databases(session: _Session) -> dict[str, tuple[str, str]]:
        rows = session.sql("SELECT HEX(SCHEMA_NAME), DEFAULT_CHARACTER_SET_NAME, DEFAULT_COLLATION_NAME"
                           " FROM information_schema.SCHEMATA")
        return {bytes.fromhex(r[0]).decode("utf-8"): (r[1], r[2]) for r in rows}

    def _counts(self, session: _Session, database: str) -> dict[str, int]:
        rows = session.sql("SELECT HEX(TABLE_NAME) FROM information_schema.TABLES WHERE TABLE_SCHEMA = "  # noqa: S608
                           f"{_literal(database)} AND TABLE_TYPE IN ('BASE TABLE', 'SYSTEM VERSIONED')")
        tables = [bytes.fromhex(r[0]).decode("utf-8") for r in rows]
        if not tables:
            return {}
        query = " UNION ALL ".join(
            f"SELECT '{t.encode().hex()}', COUNT(*) FROM {quote_ident(database)}.{quote_ident(t)}"  # noqa: S608
            for t in tables)
        rows = session.sql(query, timeout=self.source.timeout_seconds)
        return {bytes.fromhex(r[0]).decode("utf-8"): int(r[1]) for r in rows}

    def _objects(self, session: _Session, database: str) -> int:
        lit = _literal(database)
        rows = session.sql(
            f"SELECT (SELECT COUNT(*) FROM information_schema.TABLES WHERE TABLE_SCHEMA = {lit})"  # noqa: S608
            f" + (SELECT COUNT(*) FROM information_schema.ROUTINES WHERE ROUTINE_SCHEMA = {lit})"
            f" + (SELECT COUNT(*) FROM information_schema.EVENTS WHERE EVENT_SCHEMA = {lit})")
        return int(rows[0][0])

    def _client_info(self) -> tuple[str, bool]:
        """(mariadb-dump version, whether it knows --system=users)."""
        dump = client(self.source, "mariadb-dump")
        version = version_of(runner.run([*dump, "--version"], timeout=QUERY_TIMEOUT).stdout,
                             (r"Distrib (\d+(?:\.\d+)+)", r"from (\d+(?:\.\d+)+)", r"Ver (\d+(?:\.\d+)+)"))
        help_text = runner.run([*dump, "--help"], timeout=QUERY_TIMEOUT, check=False).stdout
        return version, "--system=" in help_text

    # --- dump -------------------------------------------------------------------------------------

    def dump(self, ctx: DumpContext) -> DumpOutcome:
        out = DumpOutcome()
        base = ctx.out_dir(KIND) / safe_filename(self.name)
        shutil.rmtree(base, ignore_errors=True)  # only this run's dumps may be listed from here
        base.mkdir(mode=0o700, parents=True)
        with private_dir("restic-orch-mysql-") as tmp:
            try:
                session = _Session(self.source, tmp)
                client_version, has_system = self._client_info()
                out.tools["mariadb-dump"] = client_version
                server_version = session.sql("SELECT VERSION()")[0][0]
                out.tools[f"mariadb-server:{self.name}"] = server_version
                databases = self._databases(session)
            except (SourceError, CommandError, IndexError) as exc:
                out.failures.append(Failure(KIND, self.name, f"db:{self.name}/*",
                                            f"mysql source {self.name}: {error_text(exc)}"))
                return out
            versions = {"server_version": server_version, "client_version": client_version}
            names, missing = select_databases(self.source, sorted(databases), SYSTEM_DATABASES)
            for name in missing:
                out.failures.append(Failure(KIND, self.name, f"db:{self.name}/{name}",
                                            f"database {name} does not exist on mysql source {self.name}"))
            if self.source.users_and_grants:
                try:
                    out.artifacts.append(self._dump_users(ctx, session, base, versions, has_system
                                                          and "mariadb" in server_version.lower(), out))
                except (CommandError, SourceError, OSError) as exc:
                    out.failures.append(Failure(KIND, self.name, f"db:{self.name}/@users",
                                                f"dump of users and grants failed: {error_text(exc)}"))
            for name in names:
                try:
                    out.artifacts.append(self._dump_database(ctx, session, base, name, databases[name], versions))
                    ctx.log.info("database dumped", extra={"source": self.name, "database": name})
                except (CommandError, SourceError, OSError, ValueError) as exc:
                    out.failures.append(Failure(KIND, self.name, f"db:{self.name}/{name}",
                                                f"dump of {name} failed: {error_text(exc)}"))
        return out

    def _dump_database(self, ctx: DumpContext, session: _Session, base: Path, database: str,
                       charset: tuple[str, str], versions: dict[str, str]) -> Artifact:
        path = base / (safe_filename(database) + ".sql")
        partial = path.with_name(path.name + ".partial")
        argv = session.argv("mariadb-dump", "--single-transaction", "--routines", "--events", "--triggers",
                            "--hex-blob", "--skip-dump-date", "--default-character-set=utf8mb4",
                            "--max-allowed-packet=1G", database)
        try:
            runner.run(argv, stdout_path=partial, low_priority=True, timeout=self.source.timeout_seconds)
            if not _trailer_ok(partial):
                raise SourceError("the dump does not end with the '-- Dump completed' trailer (truncated)")
            counts = count_dump_rows(partial)
            os.replace(partial, path)
        except BaseException:
            remove(partial)
            raise
        meta = {"database": database, "format": "sql", "row_counts": counts,
                "row_counts_source": "rows in the dump file", "charset": charset[0], "collation": charset[1],
                **versions}
        return ctx.artifact(path, component=f"db:{self.name}/{database}", kind=KIND, source=self.name, meta=meta)

    def _dump_users(self, ctx: DumpContext, session: _Session, base: Path, versions: dict[str, str],
                    system: bool, out: DumpOutcome) -> Artifact:
        path = base / "@users.sql"
        partial = path.with_name(path.name + ".partial")
        method = "mariadb-dump --system=users"
        try:
            if system:
                try:
                    # --insert-ignore: CREATE USER IF NOT EXISTS, so a restore keeps the accounts in use
                    runner.run(session.argv("mariadb-dump", "--system=users", "--insert-ignore",
                                            "--skip-dump-date"),
                               stdout_path=partial, low_priority=True, timeout=self.source.timeout_seconds)
                except CommandTimeout:
                    raise
                except CommandError as exc:
                    out.notices.append(Notice(KIND, self.name, "mariadb-dump --system=users failed"
                                                               f" ({error_text(exc)}); used SHOW GRANTS"))
                    system = False
            if not system:
                method = "SHOW GRANTS"
                write_private(partial, self.grants_sql(session))
            if not _trailer_ok(partial):
                raise SourceError("the users dump does not end with the '-- Dump completed' trailer")
            accounts = _ACCOUNT.findall(partial.read_text("utf-8", "replace"))
            os.replace(partial, path)
        except BaseException:
            remove(partial)
            raise
        meta = {"users": True, "format": "sql", "method": method, "accounts": accounts, **versions}
        return ctx.artifact(path, component=f"db:{self.name}/@users", kind=KIND, source=self.name, meta=meta)

    def grants_sql(self, session: _Session) -> str:
        """Users and grants as SQL from SHOW CREATE USER / SHOW GRANTS (servers without --system=users)."""
        rows = session.sql("SELECT HEX(User), HEX(Host) FROM mysql.user WHERE Host <> ''")
        accounts = [f"{quote_ident(bytes.fromhex(u).decode())}@{quote_ident(bytes.fromhex(h).decode())}"
                    for u, h in rows]
        statements = ["-- users and grants of " + self.name + " (SHOW CREATE USER, SHOW GRANTS)"]
        for account in accounts:
            argv = session.argv("mariadb", "--batch", "--skip-column-names", "--raw",
                                "--default-character-set=utf8mb4")
            text = runner.run(argv, input=f"SHOW CREATE USER {account};\nSHOW GRANTS FOR {account};\n",
                              timeout=QUERY_TIMEOUT).stdout
            for line in text.splitlines():
                if line.startswith("CREATE USER "):
                    line = "CREATE USER IF NOT EXISTS " + line[len("CREATE USER "):]
                if line.startswith(("CREATE USER", "GRANT ")):
                    statements.append(line + ";")
        return "\n".join(statements) + "\n\n" + TRAILER.decode() + "\n"

    # --- restore ----------------------------------------------------------------------------------

    def restore(self, artifact: Artifact, fetch: Fetch, options: RestoreOptions) -> RestoreOutcome:
        try:
            with private_dir("restic-orch-mysql-") as tmp:
                local = Path(fetch(tmp / Path(artifact.path).name))
                why = check_fetched(artifact, local)
                if why:
                    return RestoreOutcome(artifact.component, False, why, {"sha256": "mismatch"})
                session = _Session(self.source.for_restore(), tmp)
                if artifact.meta.get("users"):
                    return self._restore_users(session, artifact, local)
                return self._restore_database(session, artifact, local, options, tmp)
        except (CommandError, SourceError, OSError) as exc:
            return RestoreOutcome(artifact.component, False, error_text(exc))

    def _restore_users(self, session: _Session, artifact: Artifact, local: Path) -> RestoreOutcome:
        runner.run(session.argv("mariadb", "--default-character-set=utf8mb4"), stdin_path=local,
                   timeout=self.source.timeout_seconds)
        rows = session.sql("SELECT HEX(User), HEX(Host) FROM mysql.user")
        present = {f"{quote_ident(bytes.fromhex(u).decode())}@{quote_ident(bytes.fromhex(h).decode())}"
                   for u, h in rows}
        missing = [a for a in artifact.meta.get("accounts") or [] if a not in present]
        checks = {"accounts": "ok" if not missing else {"missing": missing}}
        message = (f"users and grants imported ({len(artifact.meta.get('accounts') or [])} accounts; existing"
                   " accounts kept, their grants and password hashes re-applied)")
        return RestoreOutcome(artifact.component, not missing, message, checks, restored_to=f"{self.name}:@users")

    def _restore_database(self, session: _Session, artifact: Artifact, local: Path, options: RestoreOptions,
                          tmp: Path) -> RestoreOutcome:
        meta = artifact.meta
        original = str(meta["database"])
        target = options.target_db or (original + options.suffix)
        where = f"{self.name}/{target}"
        if target.lower() in SYSTEM_DATABASES:
            raise SourceError(f"refusing to restore into the system database {target}")
        if target in self._databases(session):
            objects = self._objects(session, target)
            if objects and not options.force:
                return RestoreOutcome(artifact.component, False,
                                      f"database {target} on mysql source {self.name} exists and is not empty"
                                      f" ({objects} objects): refusing to overwrite it without --force",
                                      restored_to=where)
            session.sql(f"DROP DATABASE {quote_ident(target)}")
        create = f"CREATE DATABASE {quote_ident(target)}"
        charset, collation = str(meta.get("charset") or ""), str(meta.get("collation") or "")
        if _NAME.match(charset) and _NAME.match(collation):
            create += f" CHARACTER SET {charset} COLLATE {collation}"
        session.sql(create)
        source_file = local if target == original else self._renamed(local, original, target, tmp)
        try:
            runner.run(session.argv("mariadb", "--default-character-set=utf8mb4", f"--database={target}"),
                       stdin_path=source_file, timeout=self.source.timeout_seconds)
        except CommandError as exc:
            # DDL is not transactional: take the half-loaded database away rather than leave it looking usable
            session.sql(f"DROP DATABASE IF EXISTS {quote_ident(target)}")
            return RestoreOutcome(artifact.component, False,
                                  f"loading {original} into {target} failed (the database was dropped again): "
                                  f"{error_text(exc)}", restored_to=where)
        diffs = compare_counts(dict(meta.get("row_counts") or {}), self._counts(session, target))
        checks: dict[str, Any] = {"row_counts": "ok" if not diffs else diffs}
        message = f"restored {original} into {target}"
        if diffs:
            message += f"; row counts differ in {len(diffs)} tables"
        return RestoreOutcome(artifact.component, not diffs, message, checks, restored_to=where)

    @staticmethod
    def _renamed(local: Path, original: str, target: str, tmp: Path) -> Path:
        """A copy of the dump whose `ALTER DATABASE <original>` lines name the target instead."""
        old = b"ALTER DATABASE " + quote_ident(original).encode() + b" "
        new = b"ALTER DATABASE " + quote_ident(target).encode() + b" "
        out = tmp / "renamed.sql"
        with open(local, "rb") as src, open(out, "wb") as dst:
            for line in src:
                dst.write(new + line[len(old):] if line.startswith(old) else line)
        return out

    # --- helpers for the drill ----------------------------------------------------------------------

    def _for(self, source: str | MysqlSource | None) -> MysqlHook:
        if source is None or source == self.name:
            return self
        if isinstance(source, MysqlSource):
            return MysqlHook(source)
        raise ValueError(f"this hook is mysql source {self.name}, not {source}")

    def drop_database(self, source: str | MysqlSource | None, name: str) -> None:
        """Drop a database (a drill's scratch copy); the system databases are refused."""
        if name.lower() in SYSTEM_DATABASES:
            raise SourceError(f"refusing to drop the system database {name}")
        hook = self._for(source)
        with private_dir("restic-orch-mysql-") as tmp:
            _Session(hook.source.for_restore(), tmp).sql(f"DROP DATABASE IF EXISTS {quote_ident(name)}")

    def row_counts(self, source: str | MysqlSource | None, database: str) -> dict[str, int]:
        """Exact COUNT(*) of every base table of the database."""
        hook = self._for(source)
        with private_dir("restic-orch-mysql-") as tmp:
            return hook._counts(_Session(hook.source, tmp), database)

    def discard(self, artifact: Artifact, outcome: RestoreOutcome, options: RestoreOptions) -> str:
        """A drill restored into a drill_ database: drop it."""
        if not options.target_db or artifact.meta.get("users"):
            return "nothing to clean up"
        self.drop_database(None, options.target_db)
        return f"dropped database {options.target_db}"


HOOK = MysqlHook
