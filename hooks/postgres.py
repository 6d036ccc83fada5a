"""PostgreSQL: pg_dump -Fc per database (row counts from the same snapshot), pg_dumpall --globals-only.

Layout: `<day>/postgres/<source>/<database>.dump` and `<day>/postgres/<source>/@globals.sql`.
"""

from __future__ import annotations

import json
import os
import re
import select
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from restic_orch import masking, runner
from restic_orch.config import PostgresSource
from restic_orch.runner import CommandError, CommandTimeout

from ._files import replacing
from ._sql import Server, SourceError, SqlHook, client, error_text, needs, safe_filename, version_of, version_tuple
from .base import Artifact, DumpContext, DumpOutcome, Notice, RestoreOptions, RestoreOutcome

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


# The connecting account and every role as it stands for it, so that a restore checks what it may do
# before it changes anything: CREATE DATABASE ... OWNER and ALTER ... OWNER ask for MEMBER, DROP DATABASE
# for the owner's privileges (USAGE, inherited membership).
_ACCOUNT_SQL = """
SELECT json_build_object(
  'name', current_user,
  'super', (SELECT rolsuper FROM pg_roles WHERE rolname = current_user),
  'createdb', (SELECT rolcreatedb FROM pg_roles WHERE rolname = current_user),
  'roles', (SELECT coalesce(json_object_agg(r.rolname, json_build_object(
              'super', r.rolsuper, 'replication', r.rolreplication, 'bypassrls', r.rolbypassrls,
              'member', pg_has_role(current_user, r.oid, 'MEMBER'),
              'usage', pg_has_role(current_user, r.oid, 'USAGE'))), '{}'::json) FROM pg_roles r))
"""

_ROLE = r'(?:"(?:[^"]|"")+"|[^\s;"]+)'
_ALTER_ROLE = re.compile(rf"^ALTER ROLE ({_ROLE}) WITH (.*);$")
_ROLE_SETTING = re.compile(rf"^ALTER ROLE ({_ROLE}) (?:IN DATABASE {_ROLE} )?(?:SET|RESET) ")
_GRANTED_BY = re.compile(rf" GRANTED BY {_ROLE};$")
# role attributes only a superuser may set, even to their default (NO...) value
_SUPERUSER_ATTRIBUTES = re.compile(r"\b(NO)?(SUPERUSER|REPLICATION|BYPASSRLS)\b")
_ATTRIBUTE_KEYS = {"SUPERUSER": "super", "REPLICATION": "replication", "BYPASSRLS": "bypassrls"}


def _ident(name: str) -> str:
    """A name as a suggested SQL statement must write it."""
    return name if re.fullmatch(r"[a-z_][a-z0-9_$]*", name) else '"' + name.replace('"', '""') + '"'


def _unquote(name: str) -> str:
    return name[1:-1].replace('""', '"') if name.startswith('"') else name


def _toc_owners(toc: str) -> set[str]:
    """The owners named in `pg_restore --list` (the last field of an entry; entries without one end in a space)."""
    return {line.rsplit(" ", 1)[-1] for line in toc.splitlines()
            if line and not line.startswith(";") and not line.endswith(" ")}


def _toc_extensions(toc: str) -> list[str]:
    return re.findall(r"^\d+; \d+ \d+ EXTENSION - (\S+)", toc, re.M)


def _explain(text: str, account: str, which: str) -> str | None:
    """The right a PostgreSQL error says the account lacks, with the statement that grants it (or None)."""
    me = _ident(account)
    if "query would be affected by row-level security policy" in text:
        return needs(which, account, "BYPASSRLS to read tables with row-level security whole",
                     f"ALTER ROLE {me} BYPASSRLS")
    if re.search(r"permission denied for large object \d+", text):
        each = f"SELECT format('GRANT SELECT ON LARGE OBJECT %s TO {me}', oid) FROM pg_largeobject_metadata"  # noqa: S608
        return needs(which, account, "SELECT on the large objects, which pg_read_all_data does not cover",
                     f"as a superuser in that database: {each} \\gexec")
    if which == "backup" and re.search(r"permission denied (?:for|to read) (?:table|relation|sequence|schema|view"
                                        r"|materialized view|database)", text):
        return needs(which, account, "pg_read_all_data", f"GRANT pg_read_all_data TO {me}")
    if "permission denied to create database" in text:
        return needs(which, account, "CREATEDB", f"ALTER ROLE {me} CREATEDB")
    if "permission denied to create role" in text:
        return needs(which, account, "CREATEROLE", f"ALTER ROLE {me} CREATEROLE")
    member = re.search(r'must be (?:a )?member of role "((?:[^"]|"")+)"', text)
    if member:
        role = member.group(1).replace('""', '"')
        return needs(which, account, f"membership in role {role}", f"GRANT {_ident(role)} TO {me}")
    extension = re.search(r'permission denied to create extension "([^"]+)"', text)
    if extension:
        return (f"extension {extension.group(1)} can only be created by a superuser (it is not trusted): restore"
                " with a superuser as restore_user, or create the extension first")
    if re.search(r"must be superuser|permission denied to (?:create tablespace|alter role|set parameter)", text):
        return f"this needs a superuser; {account} is not one (apply it as a superuser)"
    return None


def _globals_for(text: str, me: str, roles: dict[str, Any], superuser: bool
                 ) -> tuple[str, list[str], dict[str, list[str]]]:
    """The pg_dumpall --globals-only file as this account can apply it.

    The connecting account's own role is left alone (an old password hash would lock it out). A
    non-superuser also leaves the superuser roles alone, drops from ALTER ROLE the attributes only a
    superuser may set (returned per role, to check afterwards) and GRANTED BY (only a superuser may name
    another grantor). Returns (text, roles left as they are, superuser-only attributes wanted per role).
    """
    out: list[str] = []
    skipped: dict[str, str] = {}
    wanted: dict[str, list[str]] = {}
    for line in text.splitlines():
        alter, setting = _ALTER_ROLE.match(line), _ROLE_SETTING.match(line)
        role = _unquote((alter or setting).group(1)) if (alter or setting) else None
        if role is not None and role == me:
            skipped[role] = f"{role} (the account restoring)"
            line = ""
        elif role is not None and not superuser and roles.get(role, {}).get("super"):
            skipped[role] = f"{role} (a superuser)"
            line = ""
        elif alter and not superuser:
            flags, sep, rest = alter.group(2).partition(" PASSWORD ")
            attributes = [m.group(2) for m in _SUPERUSER_ATTRIBUTES.finditer(flags) if not m.group(1)]
            if attributes:
                wanted[_unquote(alter.group(1))] = attributes
            flags = " ".join(_SUPERUSER_ATTRIBUTES.sub("", flags).split())
            line = f"ALTER ROLE {alter.group(1)} WITH {flags}{sep}{rest};" if flags or sep else ""
        elif line.startswith("GRANT ") and not superuser:
            line = _GRANTED_BY.sub(";", line)
        out.append(line)
    return "\n".join(out) + "\n", list(skipped.values()), wanted


def _conninfo(database: str) -> str:
    """`dbname='...'` so that any database name (spaces, quotes, '=') reaches libpq unchanged."""
    return "dbname='" + database.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _maintenance(target: str) -> str:
    """The database to connect to while creating or dropping `target` (never `target` itself)."""
    return "template1" if target == "postgres" else "postgres"


def _major(version: tuple[int, ...]) -> tuple[int, ...]:
    # before 10 the major version had two parts (9.6), since 10 it has one
    return version[:2] if version and version[0] < 10 else version[:1]


@dataclass
class _Found(Server):
    env: dict[str, str]  # the clients' environment (PGPASSWORD among it)


@dataclass
class _Plan:
    """A database restore as decided before anything is changed."""

    target: str
    server_num: int
    me: str                  # the restoring account
    roles: dict[str, Any]    # every role, as it stands for `me`
    superuser: bool
    missing: list[str]       # roles the dump names that do not exist here
    create: bool
    replace: bool
    owners: set[str]         # whom the restore gives objects to
    owner: str | None        # the database's owner, when one is given
    given_up: list[str]      # receivers a non-superuser cannot give anything to (superusers)

    @property
    def receivers(self) -> set[str]:
        return self.owners | ({self.owner} if self.owner and self.create else set())

    @property
    def no_owner(self) -> bool:
        return bool(self.owners & set(self.given_up))


class PostgresHook(SqlHook):
    kind = KIND
    spec = SqlHook.sql_kind(KIND)
    source: PostgresSource
    server_wide = "globals"
    never_dumped = {"template0", "template1"}
    explain = staticmethod(_explain)

    # --- plumbing ---------------------------------------------------------------------------------

    def _env(self) -> dict[str, str]:
        env = {"PGCONNECT_TIMEOUT": "10", "PGAPPNAME": "restic-orch", "PGCLIENTENCODING": "UTF8"}
        if self.source.password_file is not None:
            try:
                env["PGPASSWORD"] = masking.read_secret(self.source.password_file)
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
                          " 'databases', (SELECT json_agg(json_build_object('name', datname, 'conn', datallowconn,"
                          "                                     'owner', pg_get_userbyid(datdba))"
                          "               ORDER BY datname) FROM pg_database WHERE NOT datistemplate))")

    # --- dump -------------------------------------------------------------------------------------

    def _open(self, tmp: Path, tools: dict[str, str]) -> _Found:
        env = self._env()
        client_version = self._client_version()
        tools["pg_dump"] = client_version
        server = self._server()
        server_version = str(server["version"]).split()[0]
        tools[f"postgres-server:{self.name}"] = server_version
        if _major(version_tuple(client_version)) < _major(version_tuple(server_version)):
            raise SourceError(f"pg_dump {client_version} is older than the server (PostgreSQL "
                              f"{server_version}): install a PostgreSQL {_major(version_tuple(server_version))[0]}"
                              " client or point bin_dir at one")
        databases = {d["name"]: d["conn"] for d in server["databases"] or []}
        return _Found(client_version, server_version, databases, self.source.user, env)

    def _dumps_server_wide(self) -> bool:
        return self.source.globals

    def _server_wide_failed(self, exc: Exception) -> str:
        hint = _explain(getattr(exc, "stderr", ""), self.source.user, "backup")
        return f"pg_dumpall --globals-only failed: {error_text(exc)}" + (f"; {hint}" if hint else "")

    def _dump_server_wide(self, ctx: DumpContext, server: _Found, base: Path, out: DumpOutcome) -> Artifact:
        path = base / "@globals.sql"
        argv = [*client(self.source, "pg_dumpall"), "--globals-only", *self._conn()]
        with replacing(path) as partial:
            try:
                runner.run(argv, env=server.env, stdout_path=partial, low_priority=True,
                           timeout=self.source.timeout_seconds)
            except CommandError as exc:
                if isinstance(exc, CommandTimeout) or "permission denied" not in exc.stderr:
                    raise
                # without superuser pg_authid is unreadable: roles without their passwords beat no roles
                runner.run([*argv, "--no-role-passwords"], env=server.env, stdout_path=partial, low_priority=True,
                           timeout=self.source.timeout_seconds)
                grant = f"GRANT pg_read_all_data TO {_ident(self.source.user)}"
                out.notices.append(Notice(KIND, self.name, f"{self.source.user} cannot read pg_authid: roles"
                                                            " were dumped without their passwords; "
                                          + needs("backup", self.source.user, "pg_read_all_data", grant)))
            with open(partial, "rb") as handle:
                handle.seek(max(0, partial.stat().st_size - 4096))
                if GLOBALS_TRAILER not in handle.read():
                    raise SourceError("the globals dump has no completion trailer (truncated)")
            roles = re.findall(r'^CREATE ROLE ("(?:[^"]|"")+"|[^\s;]+);', partial.read_text("utf-8"), re.M)
        meta = {"globals": True, "format": "sql",
                "roles": [r[1:-1].replace('""', '"') if r.startswith('"') else r for r in roles], **server.versions}
        return self._artifact(ctx, path, "@globals", meta)

    def _dump_database(self, ctx: DumpContext, server: _Found, base: Path, database: str) -> Artifact:
        if not server.databases[database]:
            raise SourceError(f"database {database} does not accept connections (datallowconn is false)")
        path = base / (safe_filename(database) + ".dump")
        with replacing(path) as partial:
            with _SnapshotSession(self, database, server.env, self.source.timeout_seconds) as info:
                runner.run([*client(self.source, "pg_dump"), "-Fc", f"-Z{self.source.dump_compression}",
                            *self._conn(), f"--snapshot={info['snapshot']}",
                            "-d", _conninfo(database)],
                           env=server.env, stdout_path=partial, low_priority=True,
                           timeout=self.source.timeout_seconds)
            toc = runner.run([*client(self.source, "pg_restore"), "--list"], stdin_path=partial,
                             timeout=self.source.timeout_seconds).stdout
            if not toc.strip():
                raise SourceError("pg_restore --list read an empty table of contents")
            # --list only reads the table of contents, which is written first: a file cut short in the
            # data still passes it. Reading the whole archive (to /dev/null) proves every entry is there.
            runner.run([*client(self.source, "pg_restore"), "-f", "-"], stdin_path=partial,
                       stdout_path=Path(os.devnull), low_priority=True, timeout=self.source.timeout_seconds)
        meta = {"database": database, "format": "custom", "compression": self.source.dump_compression,
                "row_counts": info["row_counts"] or {},
                "row_counts_source": "count(*) in the exported snapshot pg_dump used",
                "owner": info["owner"], "encoding": info["encoding"], "collate": info["collate"],
                "ctype": info["ctype"], "roles": info["roles"] or [], **server.versions}
        return self._artifact(ctx, path, database, meta)

    # --- restore ----------------------------------------------------------------------------------
    # Restores run as restore_user when one is configured (the backup account is read-only); what they
    # check afterwards (row counts) is read by the backup account, which sees every row as the dump did.

    def _restorer(self) -> PostgresHook:
        source = self.source.for_restore()
        return self if source is self.source else PostgresHook(source)

    def _restore_file(self, artifact: Artifact, local: Path, options: RestoreOptions, tmp: Path) -> RestoreOutcome:
        writer = self._restorer()
        if artifact.meta.get("globals"):
            return writer._restore_globals(artifact, local)
        return writer._restore_database(artifact, local, options, reader=self)

    def _restore_failed(self, exc: Exception) -> str:
        hint = _explain(getattr(exc, "stderr", "") or str(exc), self.source.for_restore().user, "restore")
        return error_text(exc) + (f"; {hint}" if hint else "")

    def _account(self) -> dict[str, Any]:
        return self._json(_ACCOUNT_SQL)

    def _restore_globals(self, artifact: Artifact, local: Path) -> RestoreOutcome:
        account = self._account()
        me, roles = str(account["name"]), dict(account["roles"] or {})
        text, skipped, wanted = _globals_for(local.read_text("utf-8"), me, roles, bool(account["super"]))
        # ON_ERROR_STOP off for this file only: the roles that exist already (the connecting one at least)
        # make CREATE ROLE fail, and the ALTER ROLE that follows still sets their attributes and password
        argv = [*client(self.source, "psql"), "-X", "-q", "-v", "ON_ERROR_STOP=0", *self._conn(),
                "-d", _conninfo("postgres"), "-f", "-"]
        result = runner.run(argv, env=self._env(), input=text, timeout=self.source.timeout_seconds, check=False)
        if result.returncode != 0:
            raise CommandError(result.argv, result.returncode, result.stderr)
        errors = [line.split("ERROR:", 1)[1].strip() for line in result.stderr.splitlines() if "ERROR:" in line]
        tolerated = [e for e in errors if re.fullmatch(r'role ".*" already exists', e)]
        other = [e for e in errors if e not in tolerated]
        expected = list(artifact.meta.get("roles") or [])
        after = dict(self._account()["roles"] or {})
        missing = [r for r in expected if r not in after]
        # attributes only a superuser may give (left out of ALTER ROLE above): say which role still lacks one
        lacking = [f"{role} {attr} (as a superuser: ALTER ROLE {_ident(role)} {attr})"
                   for role, attrs in wanted.items() for attr in attrs
                   if role in after and not after[role].get(_ATTRIBUTE_KEYS[attr])]
        checks = {"roles": "ok" if not missing else {"missing": missing}, "errors": other}
        if lacking:
            checks["superuser_attributes"] = lacking
        message = (f"globals applied with ON_ERROR_STOP off; {len(tolerated)} roles already existed"
                   " (kept, their attributes re-applied)")
        if skipped:
            message += f"; left as they are: {', '.join(skipped)}"
        if other:
            hints = list(dict.fromkeys(h for h in (_explain(e, me, "restore") for e in other) if h))
            message += f"; {len(other)} other errors: " + "; ".join(other[:5]) + "".join(f"; {h}" for h in hints)
        if lacking:
            message += "; restored without attributes only a superuser may give: " + "; ".join(lacking)
        return RestoreOutcome(artifact.component, not other and not missing and not lacking, masking.mask(message),
                              checks, restored_to=f"{self.name}:@globals")

    def _restore_database(self, artifact: Artifact, local: Path, options: RestoreOptions,
                          reader: PostgresHook) -> RestoreOutcome:
        target = self._target(artifact, options)
        plan = self._plan(artifact, local, options, target)
        if isinstance(plan, RestoreOutcome):
            return plan
        failed = self._load(plan, artifact, local)
        return failed or self._verified(plan, artifact, reader)

    def _plan(self, artifact: Artifact, local: Path, options: RestoreOptions, target: str) -> _Plan | RestoreOutcome:
        """What the restore will do, or why it refuses (nothing changed yet in either case)."""
        meta = artifact.meta
        server = self._server()
        existing = {d["name"]: d for d in server["databases"] or []}
        account = self._account()
        me, roles, superuser = str(account["name"]), dict(account["roles"] or {}), bool(account["super"])
        missing = sorted(set(meta.get("roles") or []) - set(roles))
        # an existing but empty database (a fresh `postgres`) is restored into as it is: dropping it
        # would only cut off whoever is connected to it
        create, replace = True, False
        if target in existing:
            objects = self._user_objects(target)
            if objects and not options.force:
                return self._occupied(artifact, target, objects)
            replace, create = bool(objects), bool(objects)
        toc = runner.run([*client(self.source, "pg_restore"), "--list"], stdin_path=local,
                         timeout=self.source.timeout_seconds).stdout
        # whom the restore gives objects to: their owners in the dump (unless roles are missing, then
        # nobody), and the database's owner when it is created here
        owners = set() if missing else {o for o in _toc_owners(toc) if o in roles} - {me, "pg_database_owner"}
        owner: str | None = str(meta.get("owner") or "")
        owner = owner if owner in roles and owner != me else None
        plan = _Plan(target, int(server["num"]), me, roles, superuser, missing, create, replace, owners, owner, [])
        # a non-superuser cannot give anything to a superuser: those objects stay the restore account's
        plan.given_up = [] if superuser else sorted(o for o in plan.receivers if roles[o]["super"])
        current = str(existing[target]["owner"]) if replace else ""
        lacks = [] if superuser else self._lacks(plan, bool(account["createdb"]), current, toc)
        if lacks:
            return RestoreOutcome(artifact.component, False,
                                  f"cannot restore {meta['database']} into {target} (nothing was changed): "
                                  + "; ".join(dict.fromkeys(lacks)), {"rights": "missing"},
                                  restored_to=f"{self.name}/{target}")
        return plan

    def _lacks(self, plan: _Plan, createdb: bool, current: str, toc: str) -> list[str]:
        """What a non-superuser account lacks for this restore; `current` owns the database it replaces."""
        target, me, roles = plan.target, plan.me, plan.roles
        lacks: list[str] = []
        if plan.create and not createdb:
            lacks.append(needs("restore", me, f"CREATEDB to create database {target}",
                               f"ALTER ROLE {_ident(me)} CREATEDB"))
        if plan.replace:
            if roles.get(current, {}).get("super"):
                lacks.append(f"database {target} is owned by the superuser {current}, which only a superuser can"
                             f" drop: drop it as {current}, or give it to an application role first"
                             f" (ALTER DATABASE {_ident(target)} OWNER TO <role>)")
            elif not roles.get(current, {}).get("usage"):
                lacks.append(needs("restore", me, f"membership in role {current}, which owns database {target},"
                                   " to replace it", f"GRANT {_ident(current)} TO {_ident(me)}"))
        named = {current} if plan.replace else set()
        for role in sorted(plan.receivers - set(plan.given_up) - named):
            if not roles[role]["member"]:
                lacks.append(needs("restore", me, f"membership in role {role} to give its objects back to it",
                                   f"GRANT {_ident(role)} TO {_ident(me)}"))
        for name in self._untrusted(_toc_extensions(toc)):
            lacks.append(f"extension {name} can only be created by a superuser (it is not trusted): restore"
                         " this database with a superuser as restore_user, or create the extension in it first")
        return lacks

    def _load(self, plan: _Plan, artifact: Artifact, local: Path) -> RestoreOutcome | None:
        """Replace or create the target and pg_restore into it; the outcome when that failed, else None."""
        target = plan.target
        if plan.replace:
            self._drop(target, plan.server_num, allow_postgres=True)
        if plan.create:
            self._create(target, artifact.meta, None if plan.owner in plan.given_up else plan.owner)
        argv = [*client(self.source, "pg_restore"), "--exit-on-error", "--single-transaction", *self._conn(),
                "-d", _conninfo(target)]
        if plan.missing:
            # GRANTs and ALTER OWNER to absent roles would abort the restore: restore without them
            argv += ["--no-owner", "--no-privileges"]
        elif plan.no_owner:
            # ALTER OWNER to a superuser is refused to a non-superuser: the objects stay the restore account's
            argv += ["--no-owner"]
        try:
            runner.run(argv, env=self._env(), stdin_path=local, timeout=self.source.timeout_seconds)
        except CommandError as exc:
            # --single-transaction left nothing behind; a database made for this restore goes away too
            if plan.create:
                self._drop(target, plan.server_num, allow_postgres=True)
            hint = _explain(exc.stderr, plan.me, "restore")
            return RestoreOutcome(artifact.component, False,
                                  f"pg_restore into {target} failed (nothing was restored): {error_text(exc)}"
                                  + (f"; {hint}" if hint else ""), restored_to=f"{self.name}/{target}")
        return None

    def _verified(self, plan: _Plan, artifact: Artifact, reader: PostgresHook) -> RestoreOutcome:
        """The row counts checked by the backup account, and whom the objects now belong to."""
        counts = reader.count_rows(plan.target)
        me, missing, given_up = plan.me, plan.missing, plan.given_up
        owners: Any = "kept"
        notes = ""
        if missing:
            owners = {"dropped, roles missing": missing}
            notes = (f" without owners and privileges (roles missing: {', '.join(missing)}; restore"
                     f" db:{self.name}/@globals first to keep them)")
        elif given_up:
            # --no-owner keeps every owner or none
            lost = sorted(plan.owners - set(given_up)) if plan.no_owner else []
            owners = {"not kept": given_up + lost, "now owned by": me}
            notes = (f", owned by {me} instead of {', '.join(given_up + lost)}: a non-superuser cannot give"
                     f" objects to the superuser {', '.join(given_up)}")
            if len(given_up) == 1 and not lost:
                notes += (f" (to give them back, as a superuser connected to {plan.target}:"
                          f" REASSIGN OWNED BY {_ident(me)} TO {_ident(given_up[0])})")
        return self._restored(artifact, plan.target, counts, {"owners": owners}, notes)

    def _untrusted(self, extensions: list[str]) -> list[str]:
        if not extensions:
            return []
        return list(self._json("SELECT coalesce(json_agg(DISTINCT name), '[]'::json)"
                               " FROM pg_available_extension_versions"
                               " WHERE name IN (SELECT json_array_elements_text(:'names'::json))"
                               " AND superuser AND NOT trusted", variables={"names": json.dumps(extensions)}) or [])

    def _user_objects(self, database: str) -> int:
        out = self._psql(_OBJECTS_SQL, database)
        return int(out.strip() or 0)

    def _create(self, target: str, meta: dict[str, Any], owner: str | None) -> None:
        variables = {"name": target}
        clauses = ""
        if owner:
            variables["owner"] = owner
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

    def count_rows(self, database: str) -> dict[str, int]:
        return {k: int(v) for k, v in (self._json(_COUNTS_SQL, database, timeout=self.source.timeout_seconds)
                                       or {}).items()}

    # --- the drill's scratch databases --------------------------------------------------------------

    def _drop_scratch(self, name: str) -> None:
        hook = self._restorer()  # drill copies belong to their owners, whom restore_user is a member of
        hook._drop(name, int(hook._server()["num"]))


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
