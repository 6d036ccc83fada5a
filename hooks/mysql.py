"""MariaDB / MySQL: one mariadb-dump per database, users and grants separately.

Layout: `<day>/mysql/<source>/<database>.sql` and `<day>/mysql/<source>/@users.sql`.

Each database is dumped WITHOUT `--databases`: the file then holds no `CREATE DATABASE` / `USE` lines,
so a restore creates the target itself (with the recorded character set and collation) and loads the
file into it, under the original name or any other. The only statement that still names the original
database (`ALTER DATABASE ... CHARACTER SET`, which mariadb-dump writes around routines, triggers and
events created under another collation) is rewritten when the target differs.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from restic_orch import masking, runner
from restic_orch.config import MysqlSource
from restic_orch.runner import CommandError, CommandTimeout

from ._files import replacing, write_private
from ._sql import Server, SourceError, SqlHook, client, error_text, needs, private_dir, safe_filename, version_of
from .base import Artifact, DumpContext, DumpOutcome, Notice, RestoreOptions, RestoreOutcome

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


# What mariadb-dump needs to dump a database whole. Without TRIGGER it leaves the triggers out and exits 0;
# without SHOW VIEW or EVENT it fails. (EXECUTE is needed only on the functions that views call.)
BACKUP_PRIVILEGES = ("SELECT", "SHOW VIEW", "TRIGGER", "EVENT")

_QUOTED = r"(?:`(?:[^`]|``)*`|'(?:[^']|'')*')"
_ACCOUNT_NAME = re.compile(rf"({_QUOTED})(?:@({_QUOTED}))?")
_DEFINER = re.compile(rb"DEFINER=(`(?:[^`]|``)*`@`(?:[^`]|``)*`)")
_MYSQL_ERROR = re.compile(r"^ERROR \d+ \(\w+\) at line (\d+)(?: in file: '[^']*')?: (.*)$", re.M)


def _unquote(text: str) -> str:
    quote = text[0]
    return text[1:-1].replace(quote * 2, quote)


def _accounts_in(text: str) -> set[tuple[str, str]]:
    return {(_unquote(u), _unquote(h) if h else "") for u, h in _ACCOUNT_NAME.findall(text)}


def _statement_accounts(line: str) -> set[tuple[str, str]]:
    """The accounts (user, host; host '' for a role) a line of a users dump changes: whom it creates or grants to."""
    text = line.strip()
    if text.startswith("/*M!") or text.startswith("/*!"):
        if text.startswith("/*!80001"):
            return set()  # MySQL-only lines, which MariaDB skips
        text = text.split(" ", 1)[1] if " " in text else ""
    for prefix in ("CREATE USER IF NOT EXISTS ", "CREATE USER ", "CREATE ROLE IF NOT EXISTS ", "CREATE ROLE ",
                   "ALTER USER "):
        if text.startswith(prefix):
            match = _ACCOUNT_NAME.match(text[len(prefix):])
            return _accounts_in(match.group(0)) if match else set()
    if text.startswith("SET DEFAULT ROLE ") and " FOR " in text:
        return _accounts_in(text.rsplit(" FOR ", 1)[1])
    if text.startswith("GRANT ") and " TO " in text:
        grantees = re.split(r" IDENTIFIED | WITH |;| \*/", text.rsplit(" TO ", 1)[1])[0]
        return _accounts_in(grantees)
    return set()


def _grant_account(user: str, host: str) -> str:
    """An account as a GRANT statement names it: 'user'@'host'."""
    return "'" + user.replace("'", "''") + "'@'" + host.replace("'", "''") + "'"


def _like(pattern: str, name: str) -> bool:
    r"""Whether a database name matches a grant's LIKE pattern (`drill\_%`)."""
    regex, i = "", 0
    while i < len(pattern):
        char = pattern[i]
        if char == "\\" and i + 1 < len(pattern):
            regex, i = regex + re.escape(pattern[i + 1]), i + 2
            continue
        regex += ".*" if char == "%" else "." if char == "_" else re.escape(char)
        i += 1
    return re.fullmatch(regex, name, re.S) is not None


def _load_needs(path: Path) -> tuple[set[str], set[str]]:
    """The privileges loading a mariadb-dump file takes, and the DEFINERs it names (`user`@`host`)."""
    privileges = {"SELECT", "CREATE", "DROP"}  # the database is created (and dropped again on failure)
    definers: set[str] = set()
    with open(path, "rb") as handle:
        for line in handle:
            if line.startswith(b"INSERT"):
                privileges.add("INSERT")
                continue
            if line.startswith(b"LOCK TABLES"):
                privileges.add("LOCK TABLES")
            elif line.startswith(b"/*!40000 ALTER TABLE"):
                privileges.add("ALTER")
            elif line.startswith((b"/*!50001 CREATE", b"/*!50001 VIEW")):
                privileges.add("CREATE VIEW")
            elif line.startswith(b"/*!50003 CREATE*/") and b" TRIGGER " in line:
                privileges.add("TRIGGER")
            elif line.startswith((b"/*!50003 DROP FUNCTION", b"/*!50003 DROP PROCEDURE")):
                privileges.add("ALTER ROUTINE")
            elif line.startswith(b"CREATE DEFINER=") and re.search(rb"` (FUNCTION|PROCEDURE) ", line):
                privileges.add("CREATE ROUTINE")
            elif line.startswith((b"/*!50106 CREATE*/", b"/*!50106 DROP EVENT")):
                privileges.add("EVENT")
            if b"DEFINER=" in line:
                definers.update(d.decode("utf-8", "replace") for d in _DEFINER.findall(line))
    return privileges, definers


def _explain(text: str, account: str, which: str, statement: str = "") -> str | None:
    """The privilege a MariaDB error says the account lacks, with the GRANT that gives it (or None)."""
    routine = re.search(r"execute command denied to user '[^']*'@'[^']*' for routine '([^'.]+)\.([^']+)'", text)
    if routine:
        db, name = routine.groups()
        return needs(which, account, f"EXECUTE on {db}.{name}, which a view calls",
                     f"GRANT EXECUTE ON FUNCTION {quote_ident(db)}.{quote_ident(name)} TO {account};"
                     " running docs/sql/mariadb-accounts.sql again grants it")
    need = re.search(r"you need \(at least one of\) the (.+?) privilege", text)
    if need:
        right = need.group(1).split(", ")[-1]
        return needs(which, account, right, f"GRANT {right} ON *.* TO {account}")
    denied = re.search(r"(\w+(?: \w+)?) command denied to user", text)
    if denied:
        right = denied.group(1).upper()
        return needs(which, account, right, f"GRANT {right} ON *.* TO {account}")
    if re.search(r"Access denied for user '[^']*'@'[^']*' to database", text):
        words = (statement or text).upper()
        right = ("EVENT" if "EVENT" in words else "LOCK TABLES" if "LOCK TABLES" in words
                 else "CREATE ROUTINE" if re.search(r"FUNCTION|PROCEDURE", words) else "CREATE")
        return needs(which, account, right, f"GRANT {right} ON *.* TO {account}")
    return None


class _Session:
    """Client argv for one source with its credentials in a 0600 option file in a private directory."""

    def __init__(self, source: MysqlSource, tmp: Path) -> None:
        self.source = source
        lines = ["[client]"]
        if source.password_file is not None:
            try:
                password = masking.read_secret(source.password_file)
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


@dataclass
class _Found(Server):
    session: _Session
    users_dump: bool               # mariadb-dump --system=users works here (else SHOW GRANTS)
    privileges: set[str]           # the backup account's global privileges
    schemas: list[tuple[str, str]]  # its (database pattern, privilege) grants
    role_active: bool              # a role is active: its privileges are not listed, nothing is checked


class MysqlHook(SqlHook):
    kind = KIND
    spec = SqlHook.sql_kind(KIND)
    source: MysqlSource
    server_wide = "users"
    never_dumped = SYSTEM_DATABASES
    explain = staticmethod(_explain)

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

    @staticmethod
    def _rights(session: _Session) -> tuple[tuple[str, str], set[str], list[tuple[str, str]], bool]:
        """The connected account (user, host), its global privileges, its (database pattern, privilege)
        grants, and whether a role is active (information_schema does not list a role's privileges)."""
        first = session.sql("SELECT HEX(CURRENT_USER()), CURRENT_ROLE() IS NOT NULL")[0]
        user, _, host = bytes.fromhex(first[0]).decode("utf-8").rpartition("@")
        grantee = _literal(_grant_account(user, host))
        rows = session.sql("SELECT 'G', HEX(PRIVILEGE_TYPE), '' FROM information_schema.USER_PRIVILEGES"  # noqa: S608
                           f" WHERE GRANTEE = {grantee} UNION ALL SELECT 'S', HEX(PRIVILEGE_TYPE), HEX(TABLE_SCHEMA)"
                           f" FROM information_schema.SCHEMA_PRIVILEGES WHERE GRANTEE = {grantee}")
        privileges = {bytes.fromhex(r[1]).decode() for r in rows if r[0] == "G"}
        schemas = [(bytes.fromhex(r[2]).decode("utf-8"), bytes.fromhex(r[1]).decode()) for r in rows if r[0] == "S"]
        return (user, host), privileges, schemas, first[1] == "1"

    @staticmethod
    def _held(privileges: set[str], schemas: list[tuple[str, str]], database: str) -> set[str]:
        held = privileges | {priv for pattern, priv in schemas if _like(pattern, database)}
        return held | ({"SET USER"} if "SUPER" in held else set())

    def _client_info(self) -> tuple[str, bool]:
        """(mariadb-dump version, whether it knows --system=users)."""
        dump = client(self.source, "mariadb-dump")
        version = version_of(runner.run([*dump, "--version"], timeout=QUERY_TIMEOUT).stdout,
                             (r"Distrib (\d+(?:\.\d+)+)", r"from (\d+(?:\.\d+)+)", r"Ver (\d+(?:\.\d+)+)"))
        help_text = runner.run([*dump, "--help"], timeout=QUERY_TIMEOUT, check=False).stdout
        return version, "--system=" in help_text

    # --- dump -------------------------------------------------------------------------------------

    def _open(self, tmp: Path, tools: dict[str, str]) -> _Found:
        session = _Session(self.source, tmp)
        client_version, has_system = self._client_info()
        tools["mariadb-dump"] = client_version
        server_version = session.sql("SELECT VERSION()")[0][0]
        tools[f"mariadb-server:{self.name}"] = server_version
        databases = self._databases(session)
        try:
            account, privileges, schemas, role_active = self._rights(session)
        except (CommandError, IndexError, ValueError):
            account, privileges, schemas, role_active = ("", ""), set(), [], True  # not checked beforehand
        return _Found(client_version, server_version, databases, _grant_account(*account), session,
                      has_system and "mariadb" in server_version.lower(), privileges, schemas, role_active)

    def _dumps_server_wide(self) -> bool:
        return self.source.users_and_grants

    def _server_wide_failed(self, exc: Exception) -> str:
        return f"dump of users and grants failed: {error_text(exc)}"

    def _not_dumped(self, server: _Found, name: str) -> str | None:
        lacking = [] if server.role_active else [p for p in BACKUP_PRIVILEGES
                                                 if p not in self._held(server.privileges, server.schemas, name)]
        if not lacking:
            return None
        why = " (without TRIGGER mariadb-dump leaves the triggers out silently)" if "TRIGGER" in lacking else ""
        return f"{name} was not dumped: " + needs("backup", server.account, f"{', '.join(lacking)} on {name}{why}",
                                                  f"GRANT {', '.join(lacking)} ON *.* TO {server.account}")

    def _dump_database(self, ctx: DumpContext, server: _Found, base: Path, database: str) -> Artifact:
        path = base / (safe_filename(database) + ".sql")
        argv = server.session.argv("mariadb-dump", "--single-transaction", "--routines", "--events", "--triggers",
                                   "--hex-blob", "--skip-dump-date", "--default-character-set=utf8mb4",
                                   "--max-allowed-packet=1G", database)
        with replacing(path) as partial:
            runner.run(argv, stdout_path=partial, low_priority=True, timeout=self.source.timeout_seconds)
            if not _trailer_ok(partial):
                raise SourceError("the dump does not end with the '-- Dump completed' trailer (truncated)")
            counts = count_dump_rows(partial)
        charset, collation = server.databases[database]
        meta = {"database": database, "format": "sql", "row_counts": counts,
                "row_counts_source": "rows in the dump file", "charset": charset, "collation": collation,
                **server.versions}
        return self._artifact(ctx, path, database, meta)

    def _dump_server_wide(self, ctx: DumpContext, server: _Found, base: Path, out: DumpOutcome) -> Artifact:
        path = base / "@users.sql"
        method = "mariadb-dump --system=users"
        system = server.users_dump
        with replacing(path) as partial:
            if system:
                try:
                    # --insert-ignore: CREATE USER IF NOT EXISTS, so a restore keeps the accounts in use
                    runner.run(server.session.argv("mariadb-dump", "--system=users", "--insert-ignore",
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
                write_private(partial, self.grants_sql(server.session))
            if not _trailer_ok(partial):
                raise SourceError("the users dump does not end with the '-- Dump completed' trailer")
            accounts = _ACCOUNT.findall(partial.read_text("utf-8", "replace"))
        meta = {"users": True, "format": "sql", "method": method, "accounts": accounts, **server.versions}
        return self._artifact(ctx, path, "@users", meta)

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

    def _restore_file(self, artifact: Artifact, local: Path, options: RestoreOptions, tmp: Path) -> RestoreOutcome:
        session = _Session(self.source.for_restore(), tmp)
        if artifact.meta.get("users"):
            return self._restore_users(session, artifact, local, tmp)
        return self._restore_database(session, artifact, local, options, tmp)

    def _present(self, session: _Session) -> set[tuple[str, str]]:
        """Every account and role on the server (a role's host is '')."""
        rows = session.sql("SELECT HEX(User), HEX(Host) FROM mysql.user")
        return {(bytes.fromhex(u).decode(), bytes.fromhex(h).decode()) for u, h in rows}

    def _restore_users(self, session: _Session, artifact: Artifact, local: Path, tmp: Path) -> RestoreOutcome:
        (user, host), _, _, _ = self._rights(session)
        me = _grant_account(user, host)
        before = self._present(session)
        # the connecting account is left as it is: an old password hash would lock it out mid-restore.
        # Blanked rather than removed, so that the client's "at line N" still points into `lines`.
        lines = local.read_text("utf-8", "replace").splitlines()
        blanked = [i for i, line in enumerate(lines) if (user, host) in _statement_accounts(line)]
        for i in blanked:
            lines[i] = ""
        applied = write_private(tmp / "users-applied.sql", "\n".join(lines) + "\n")
        # --force: a statement the account may not run (root's ALL PRIVILEGES, say) does not stop the others
        result = runner.run(session.argv("mariadb", "--force", "--default-character-set=utf8mb4"),
                            stdin_path=applied, timeout=self.source.timeout_seconds, check=False)
        errors = _MYSQL_ERROR.findall(result.stderr)
        if result.returncode != 0 and not errors:
            raise CommandError(result.argv, result.returncode, result.stderr)
        kept: dict[str, None] = {}
        failed: list[str] = []
        for number, text in errors:
            line = lines[int(number) - 1] if 0 < int(number) <= len(lines) else ""
            accounts = _statement_accounts(line)
            if accounts and accounts <= before:
                # an account that exists already keeps what it has: this account may not give its rights
                kept.update(dict.fromkeys(f"{quote_ident(u)}@{quote_ident(h)}" if h else quote_ident(u)
                                          for u, h in sorted(accounts)))
                continue
            failed.append(f"{text.strip()}" + (f" ({hint})" if (hint := self._users_hint(line, text, me)) else ""))
        present = {f"{quote_ident(u)}@{quote_ident(h)}" for u, h in self._present(session)}
        missing = [a for a in artifact.meta.get("accounts") or [] if a not in present]
        checks: dict[str, Any] = {"accounts": "ok" if not missing else {"missing": missing}}
        message = (f"users and grants imported ({len(artifact.meta.get('accounts') or [])} accounts; existing"
                   " accounts kept, their grants and password hashes re-applied)")
        if kept:
            checks["not_reapplied"] = list(kept)
            message += (f"; not re-applied to {', '.join(kept)}, which exist already and hold rights {me} may not"
                        " give")
        if blanked:
            message += f"; {me} itself (the account restoring) left as it is"
        if failed:
            checks["errors"] = failed
            message += f"; {len(failed)} errors: " + "; ".join(failed[:5])
        return RestoreOutcome(artifact.component, not missing and not failed, masking.mask(message), checks,
                              restored_to=f"{self.name}:@users")

    @staticmethod
    def _users_hint(line: str, text: str, me: str) -> str | None:
        grant = re.match(r"(?:/\*M?!\d+ )?GRANT (.+?) ON (.+?) TO ", line.strip())
        if grant and ("denied" in text or "privilege" in text):
            privileges, target = grant.groups()
            privileges = re.sub(r"\(.*?\)", "", privileges)  # column lists: the privilege itself is what counts
            return needs("restore", me, f"{privileges} on {target} WITH GRANT OPTION to give it",
                         f"GRANT {privileges} ON {target} TO {me} WITH GRANT OPTION")
        if re.match(r"(?:/\*M?!\d+ )?CREATE (USER|ROLE)", line.strip()):
            return needs("restore", me, "CREATE USER", f"GRANT CREATE USER ON *.* TO {me}")
        return _explain(text, me, "restore", line)

    def _restore_database(self, session: _Session, artifact: Artifact, local: Path, options: RestoreOptions,
                          tmp: Path) -> RestoreOutcome:
        meta = artifact.meta
        original = str(meta["database"])
        target = self._target(artifact, options)
        where = f"{self.name}/{target}"
        if target.lower() in SYSTEM_DATABASES:
            raise SourceError(f"refusing to restore into the system database {target}")
        # what the account lacks is found before anything is dropped or created
        (user, host), privileges, schemas, role_active = self._rights(session)
        me = _grant_account(user, host)
        wanted, definers = _load_needs(local)
        others = sorted(definers - {f"{quote_ident(user)}@{quote_ident(host)}"})
        if others:
            wanted.add("SET USER")
        lacking = [] if role_active else sorted(wanted - self._held(privileges, schemas, target))
        if lacking:
            why = (f" (SET USER recreates the views, triggers, routines and events defined by {', '.join(others)})"
                   if "SET USER" in lacking else "")
            return RestoreOutcome(artifact.component, False,
                                  f"cannot load {original} into {target} (nothing was changed): "
                                  + needs("restore", me, f"{', '.join(lacking)} on {target}{why}",
                                          f"GRANT {', '.join(lacking)} ON *.* TO {me}"),
                                  {"rights": "missing"}, restored_to=where)
        if target in self._databases(session):
            objects = self._objects(session, target)
            if objects and not options.force:
                return self._occupied(artifact, target, objects)
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
            hint = _explain(exc.stderr, me, "restore", self._line_of(source_file, exc.stderr))
            return RestoreOutcome(artifact.component, False,
                                  f"loading {original} into {target} failed (the database was dropped again): "
                                  f"{error_text(exc)}" + (f"; {hint}" if hint else ""), restored_to=where)
        return self._restored(artifact, target, self._counts(session, target))

    @staticmethod
    def _line_of(path: Path, stderr: str) -> str:
        """The statement line an error's "at line N" points to (the start of it, for the explanation)."""
        match = _MYSQL_ERROR.search(stderr)
        if not match:
            return ""
        wanted = int(match.group(1))
        with open(path, "rb") as handle:
            for number, line in enumerate(handle, 1):
                if number == wanted:
                    return line[:200].decode("utf-8", "replace")
        return ""

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

    # --- the drill's scratch databases --------------------------------------------------------------

    def count_rows(self, database: str) -> dict[str, int]:
        with private_dir("restic-orch-mysql-") as tmp:
            return self._counts(_Session(self.source, tmp), database)

    def _drop_scratch(self, name: str) -> None:
        if name.lower() in SYSTEM_DATABASES:
            raise SourceError(f"refusing to drop the system database {name}")
        with private_dir("restic-orch-mysql-") as tmp:
            _Session(self.source.for_restore(), tmp).sql(f"DROP DATABASE IF EXISTS {quote_ident(name)}")


HOOK = MysqlHook
