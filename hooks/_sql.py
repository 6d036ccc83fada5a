"""What the database hooks (postgres, mysql) share: client argv, private files, database selection, and
SqlHook, their base: the dump and restore skeletons and the drill's helpers, around small per-kind steps."""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar
from urllib.parse import quote

from restic_orch import masking
from restic_orch.config import Config, DatabaseSource
from restic_orch.runner import CommandError

from .base import Artifact, DumpOutcome, Failure, Hook, RestoreOptions, RestoreOutcome, sha256_file
from .registry import KindOption, SourceKind, is_server_wide

if TYPE_CHECKING:
    from .base import DumpContext, Fetch, Sandbox


class SourceError(Exception):
    """The whole source cannot be dumped or restored (server down, wrong password, client too old)."""


def client(source: DatabaseSource, name: str) -> list[str]:
    """argv start for a client binary: the exec prefix (pct exec ...), then bin_dir/name or name."""
    binary = str(Path(source.bin_dir) / name) if source.bin_dir else name
    return [*source.command_prefix(), binary]


@contextmanager
def private_dir(prefix: str) -> Iterator[Path]:
    """A 0700 temporary directory, removed with everything in it (password files included) afterwards."""
    path = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        os.chmod(path, 0o700)
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def safe_filename(name: str) -> str:
    """A database name as one path component: anything but [A-Za-z0-9_.~-] percent-encoded."""
    encoded = quote(name, safe="")
    return "%2E" + encoded[1:] if encoded.startswith(".") else encoded


def select_databases(source: DatabaseSource, present: list[str], never: set[str]) -> tuple[list[str], list[str]]:
    """(databases to dump, configured databases that do not exist) after `databases` and `exclude`."""
    excluded = set(source.exclude)
    if source.databases == "all":
        wanted = [d for d in present if d not in never]
        missing: list[str] = []
    else:
        wanted = [d for d in source.databases if d in present]
        missing = [d for d in source.databases if d not in present]
    return [d for d in wanted if d not in excluded], [d for d in missing if d not in excluded]


def error_text(exc: BaseException) -> str:
    """An exception as one masked line of text (never a password)."""
    return masking.mask(str(exc) or type(exc).__name__)


def needs(which: str, account: str, right: str, statement: str) -> str:
    """What an account lacks, said the same way everywhere: the account, the right, the statement granting it."""
    return f"the {which} account {account} needs {right} ({statement})"


def version_of(text: str, patterns: tuple[str, ...]) -> str:
    for pattern in patterns:
        match = re.search(pattern, text)
        if match:
            return match.group(1)
    raise SourceError(f"cannot read a version number from {text.strip()[:200]!r}")


def version_tuple(version: str) -> tuple[int, ...]:
    return tuple(int(p) for p in re.findall(r"\d+", version)[:3])


def check_fetched(artifact: Artifact, path: Path) -> str | None:
    """Why the fetched file is not the artifact that was backed up (size or sha256), or None."""
    size = path.stat().st_size
    if artifact.size and size != artifact.size:
        return f"fetched {size} bytes, the manifest says {artifact.size}"
    if artifact.sha256 and sha256_file(path) != artifact.sha256:
        return "the fetched file's sha256 differs from the manifest"
    return None


def compare_counts(expected: dict[str, int], actual: dict[str, int]) -> dict[str, dict[str, int | None]]:
    """Tables whose row count differs (a table missing on either side counts as None)."""
    diffs: dict[str, dict[str, int | None]] = {}
    for table in sorted(set(expected) | set(actual)):
        want, got = expected.get(table), actual.get(table)
        if want != got:
            diffs[table] = {"expected": want, "actual": got}
    return diffs


@dataclass
class Server:
    """A database server as a dump found it; each kind adds what its dump steps need to reach it again."""

    client_version: str
    server_version: str
    databases: dict[str, Any]  # name -> what the kind's dump needs to know of it
    account: str               # the backup account, as the explanations of a failure name it

    @property
    def versions(self) -> dict[str, str]:
        """What every artifact's meta records of the versions."""
        return {"server_version": self.server_version, "client_version": self.client_version}


class SqlHook(Hook):
    """What the two database kinds share: the db: selectors, a restore into another database, a drill's
    drill_<name>_<day> databases, row counts in `show`, and their sources' lines in a bootstrap."""

    source: DatabaseSource

    @staticmethod
    def sql_kind(kind: str) -> SourceKind:
        return SourceKind(kind, "db", order=2, examples="db:<source>/<db>, db:<source>, db:all", groups=True,
                          drill_scenario="database",
                          options=(KindOption("target_db", "--target-db", str,
                                              "Restore a database under another name."),))

    @staticmethod
    def database_of(artifact: Artifact) -> str:
        return str(artifact.meta.get("database", artifact.component.split("/", 1)[-1]))

    @classmethod
    def describe_restore(cls, artifact: Artifact, options: RestoreOptions) -> tuple[str, bool]:
        name = cls.database_of(artifact)
        target = options.param("target_db") or name
        text = f"restore {cls.kind} {artifact.source}/{name} into database {target}"
        return text, options.param("target_db") is None

    @classmethod
    def sandbox_options(cls, artifact: Artifact, options: RestoreOptions, sandbox: Sandbox) -> None:
        if not is_server_wide(artifact.component):
            database = artifact.meta.get("database", artifact.component.rsplit("/", 1)[-1])
            options.params["target_db"] = f"drill_{database}_{sandbox.day.replace('-', '')}"[:63]

    @classmethod
    def details(cls, meta: dict[str, Any]) -> list[str]:
        counts = meta.get("row_counts")
        return [f"{len(counts)} tables, {sum(counts.values())} rows"] if counts is not None else []

    @classmethod
    def bootstrap_lines(cls, config: Config) -> list[str]:
        lines = []
        for index, src in enumerate(getattr(config.sources, cls.kind)):
            missing = src.password_file is not None and not Path(src.password_file).exists()
            lines.append(f"{cls.kind}[{index}] {src.name}: {src.host}:{src.port or 'default'} user {src.user}"
                         + (f" (MISSING password file: --set sources.{cls.kind}[{index}].password_file=...)"
                            if missing else ""))
        return lines


    # --- what each kind provides to the shared dump, restore and drill below ------------------------

    server_wide: ClassVar[str]       # the server-wide dump: component db:<source>/@<it>, and its meta flag
    never_dumped: ClassVar[set[str]]  # the databases `databases: all` leaves out
    explain: ClassVar[Callable[[str, str, str], str | None]]  # (error text, account, backup|restore) -> hint

    def __init__(self, source: DatabaseSource) -> None:
        self.source = source
        self.name = source.name

    @classmethod
    def from_config(cls, config: Config) -> list[Hook]:
        return [cls(source) for source in getattr(config.sources, cls.kind)]

    def _open(self, tmp: Path, tools: dict[str, str]) -> Server:
        """Connect, read the versions (into tools as soon as known) and list the databases."""
        raise NotImplementedError

    def _dumps_server_wide(self) -> bool:
        """Whether the source's configuration asks for the server-wide dump."""
        raise NotImplementedError

    def _dump_server_wide(self, ctx: DumpContext, server: Server, base: Path, out: DumpOutcome) -> Artifact:
        raise NotImplementedError

    def _server_wide_failed(self, exc: Exception) -> str:
        """The failure's message when the server-wide dump failed."""
        raise NotImplementedError

    def _not_dumped(self, server: Server, name: str) -> str | None:
        """Why a database is skipped before its dump starts (a right the account lacks), or None."""
        return None

    def _dump_database(self, ctx: DumpContext, server: Server, base: Path, database: str) -> Artifact:
        raise NotImplementedError

    def _restore_file(self, artifact: Artifact, local: Path, options: RestoreOptions, tmp: Path) -> RestoreOutcome:
        """Restore a fetched file whose size and sha256 are the manifest's."""
        raise NotImplementedError

    def _restore_failed(self, exc: Exception) -> str:
        """The outcome's message when a restore failed with an error rather than a verdict."""
        return error_text(exc)

    def _drop_scratch(self, name: str) -> None:
        """Drop a database of this source; refuse the system databases."""
        raise NotImplementedError

    def count_rows(self, database: str) -> dict[str, int]:
        """Exact row counts of a database's tables, read by the backup account."""
        raise NotImplementedError

    # --- dump ---------------------------------------------------------------------------------------

    def dump(self, ctx: DumpContext) -> DumpOutcome:
        out = DumpOutcome()
        base = ctx.out_dir(self.kind) / safe_filename(self.name)
        shutil.rmtree(base, ignore_errors=True)  # only this run's dumps may be listed from here
        base.mkdir(mode=0o700, parents=True)
        with private_dir(f"restic-orch-{self.kind}-") as tmp:
            try:
                server = self._open(tmp, out.tools)
            except (SourceError, CommandError, IndexError) as exc:
                out.failures.append(self._failure("*", f"{self.kind} source {self.name}: {error_text(exc)}"))
                return out
            names, missing = select_databases(self.source, sorted(server.databases), self.never_dumped)
            for name in missing:
                out.failures.append(self._failure(name, f"database {name} does not exist on {self.kind} source"
                                                        f" {self.name}"))
            if self._dumps_server_wide():
                try:
                    out.artifacts.append(self._dump_server_wide(ctx, server, base, out))
                except (CommandError, SourceError, OSError) as exc:
                    out.failures.append(self._failure(f"@{self.server_wide}", self._server_wide_failed(exc)))
            for name in names:
                self._dump_one(ctx, server, base, name, out)
        return out

    def _dump_one(self, ctx: DumpContext, server: Server, base: Path, name: str, out: DumpOutcome) -> None:
        """Dump one database; its failure is recorded and the other databases are still dumped."""
        why = self._not_dumped(server, name)
        if why:
            out.failures.append(self._failure(name, why))
            return
        try:
            out.artifacts.append(self._dump_database(ctx, server, base, name))
            ctx.log.info("database dumped", extra={"source": self.name, "database": name})
        except (CommandError, SourceError, OSError, ValueError) as exc:
            hint = self.explain(getattr(exc, "stderr", ""), server.account, "backup")
            out.failures.append(self._failure(name, f"dump of {name} failed: {error_text(exc)}"
                                              + (f"; {hint}" if hint else "")))

    def _failure(self, part: str, message: str) -> Failure:
        return Failure(self.kind, self.name, f"db:{self.name}/{part}", message)

    def _artifact(self, ctx: DumpContext, path: Path, part: str, meta: dict[str, Any]) -> Artifact:
        return ctx.artifact(path, component=f"db:{self.name}/{part}", kind=self.kind, source=self.name, meta=meta)

    # --- restore ------------------------------------------------------------------------------------

    def restore(self, artifact: Artifact, fetch: Fetch, options: RestoreOptions) -> RestoreOutcome:
        try:
            with private_dir(f"restic-orch-{self.kind}-") as tmp:
                local = Path(fetch(tmp / Path(artifact.path).name))
                why = check_fetched(artifact, local)
                if why:
                    return RestoreOutcome(artifact.component, False, why, {"sha256": "mismatch"})
                return self._restore_file(artifact, local, options, tmp)
        except (CommandError, SourceError, OSError) as exc:
            return RestoreOutcome(artifact.component, False, self._restore_failed(exc))

    @staticmethod
    def _target(artifact: Artifact, options: RestoreOptions) -> str:
        return options.param("target_db") or (str(artifact.meta["database"]) + options.suffix)

    def _occupied(self, artifact: Artifact, target: str, objects: int) -> RestoreOutcome:
        return RestoreOutcome(artifact.component, False,
                              f"database {target} on {self.kind} source {self.name} exists and is not empty"
                              f" ({objects} objects): refusing to overwrite it without --force",
                              restored_to=f"{self.name}/{target}")

    def _restored(self, artifact: Artifact, target: str, counts: dict[str, int], checks: dict[str, Any] | None = None,
                  notes: str = "") -> RestoreOutcome:
        """The outcome of a database restored into `target`: its row counts are the dump's, or it failed."""
        diffs = compare_counts(dict(artifact.meta.get("row_counts") or {}), counts)
        message = f"restored {artifact.meta['database']} into {target}{notes}"
        if diffs:
            message += f"; row counts differ in {len(diffs)} tables"
        return RestoreOutcome(artifact.component, not diffs, message,
                              {"row_counts": "ok" if not diffs else diffs, **(checks or {})},
                              restored_to=f"{self.name}/{target}")

    # --- helpers for the drill ----------------------------------------------------------------------

    def drop_database(self, name: str) -> None:
        """Drop a database (a drill's scratch copy); the system databases are refused."""
        self._drop_scratch(name)

    def discard(self, artifact: Artifact, outcome: RestoreOutcome, options: RestoreOptions) -> str:
        """A drill restored into a drill_ database: drop it."""
        target = options.param("target_db")
        if not target or artifact.meta.get(self.server_wide):
            return "nothing to clean up"
        self.drop_database(target)
        return f"dropped database {target}"
