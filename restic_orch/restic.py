"""The one place that speaks restic: version and features, --json parsed into dataclasses, typed errors.

restic 0.14 (Debian 12, Proxmox VE 8) exits 1 for every fatal error, so the error kind is read from stderr.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from functools import lru_cache
from pathlib import Path
from typing import Any

from . import runner

log = logging.getLogger("restic_orch.restic")

MIN_VERSION = (0, 14, 0)


class ResticError(Exception):
    """restic failed; the message is restic's own stderr, masked."""

    def __init__(self, message: str, *, repo: str = "", stderr: str = "") -> None:
        self.repo = repo
        self.stderr = runner.mask(stderr)
        super().__init__(runner.mask(f"{repo + ': ' if repo else ''}{message}"))


class WrongPassword(ResticError):
    pass


class RepoNotFound(ResticError):
    pass


class RepoLocked(ResticError):
    pass


class RepoUnreachable(ResticError):
    pass


class ResticTooOld(ResticError):
    pass


@dataclass(frozen=True, order=True)
class ResticVersion:
    major: int
    minor: int
    patch: int

    @property
    def has_retry_lock(self) -> bool:
        return (self.major, self.minor) >= (0, 16)

    @property
    def has_restore_json(self) -> bool:
        """`restore --json` prints status lines from 0.16 on; 0.14 and 0.15 restore shows no progress off a TTY."""
        return (self.major, self.minor) >= (0, 16)

    def __str__(self) -> str:
        return f"{self.major}.{self.minor}.{self.patch}"


def parse_version(text: str) -> ResticVersion:
    match = re.search(r"restic (\d+)\.(\d+)\.(\d+)", text)
    if not match:
        raise ResticError(f"cannot read the restic version from: {text.strip()[:200]!r}")
    return ResticVersion(*(int(g) for g in match.groups()))


@lru_cache(maxsize=4)
def version(binary: str = "restic") -> ResticVersion:
    """The installed restic's version; refuses anything older than 0.14."""
    try:
        result = runner.run([binary, "version"], timeout=30)
    except runner.CommandNotFound:
        raise ResticError("restic is not installed (apt-get install restic; 0.14 or newer)") from None
    found = parse_version(result.stdout)
    if (found.major, found.minor, found.patch) < MIN_VERSION:
        raise ResticTooOld(f"restic {found} is too old: restic-orch needs 0.14.0 or newer")
    return found


def _parse_time(value: str) -> datetime:
    # restic prints nanoseconds; Python keeps microseconds
    value = re.sub(r"(\.\d{6})\d+", r"\1", value.replace("Z", "+00:00"))
    return datetime.fromisoformat(value)


@dataclass
class Snapshot:
    id: str
    short_id: str
    time: datetime
    hostname: str
    paths: list[str]
    tags: list[str] = field(default_factory=list)
    parent: str | None = None
    tree: str | None = None

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Snapshot:
        return cls(
            id=data["id"], short_id=data.get("short_id") or data["id"][:8], time=_parse_time(data["time"]),
            hostname=data.get("hostname", ""), paths=list(data.get("paths") or []),
            tags=list(data.get("tags") or []), parent=data.get("parent"), tree=data.get("tree"),
        )


@dataclass
class BackupSummary:
    snapshot_id: str
    files_new: int = 0
    files_changed: int = 0
    files_unmodified: int = 0
    data_added: int = 0
    total_files_processed: int = 0
    total_bytes_processed: int = 0
    total_duration: float = 0.0
    partial: bool = False
    errors: list[str] = field(default_factory=list)


@dataclass
class Node:
    name: str
    type: str
    path: str
    size: int = 0
    mode: int = 0
    mtime: str = ""


@dataclass
class ForgetGroup:
    host: str
    tags: list[str]
    keep: list[Snapshot]
    remove: list[Snapshot]


@dataclass
class CopiedSnapshot:
    source: str            # short id in the source repository
    target: str | None     # short id of its copy in the destination (None when restic did not say)
    skipped: bool = False  # it was already there from an earlier copy


@dataclass(frozen=True)
class ResticStatus:
    """One progress report of a running restic command.

    From a `--json` status line (backup; restore from 0.16 on), or from the text counter restic prints for
    check and copy when RESTIC_PROGRESS_FPS is set ("[0:04] 50.00%  3 / 6 packs"). A field restic did not
    send is None: restic leaves out zero values (omitempty), so a missing count means "none yet or unknown".
    """

    percent_done: float | None = None  # 0.0 to 1.0
    seconds_elapsed: int | None = None
    seconds_remaining: int | None = None
    total_bytes: int | None = None
    bytes_done: int | None = None
    total_files: int | None = None
    files_done: int | None = None
    error_count: int = 0
    current_files: tuple[str, ...] = ()
    unit: str = ""                     # a text counter's unit: "packs", "packs copied", "snapshots"
    count_done: int | None = None
    count_total: int | None = None     # None: restic counts without knowing the total

    @property
    def fraction(self) -> float | None:
        """How far along, 0.0 to 1.0, from the most precise figure restic gave; None when it cannot say."""
        if self.total_bytes and self.bytes_done is not None:
            return min(self.bytes_done / self.total_bytes, 1.0)
        if self.count_total and self.count_done is not None:
            return min(self.count_done / self.count_total, 1.0)
        return self.percent_done


Progress = Callable[[ResticStatus], None]
# how often restic prints its status when a display wants it (check, copy, restore --json): a display needs no more,
# and the runner keeps every line of a run that may last hours
PROGRESS_FPS = "4"


def _count(value: Any) -> int | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return int(value)


def _status_from_json(item: Mapping[str, Any]) -> ResticStatus:
    # restore (0.16+) names its counts files_restored/bytes_restored, and from 0.17 on counts skipped ones apart
    files = [_count(item.get(k)) for k in ("files_done", "files_restored", "files_skipped")]
    done = [_count(item.get(k)) for k in ("bytes_done", "bytes_restored", "bytes_skipped")]
    percent = item.get("percent_done")
    current = item.get("current_files")
    return ResticStatus(
        percent_done=float(percent) if isinstance(percent, (int, float)) and not isinstance(percent, bool) else None,
        seconds_elapsed=_count(item.get("seconds_elapsed")), seconds_remaining=_count(item.get("seconds_remaining")),
        total_bytes=_count(item.get("total_bytes")), total_files=_count(item.get("total_files")),
        bytes_done=sum(d for d in done if d is not None) if any(d is not None for d in done) else None,
        files_done=sum(f for f in files if f is not None) if any(f is not None for f in files) else None,
        error_count=_count(item.get("error_count")) or 0,
        current_files=tuple(str(f) for f in current) if isinstance(current, list) else (),
    )


_COUNTER = re.compile(r"^\[(?:(\d+):)?(\d+):(\d+)\]\s+(?:(\d+(?:\.\d+)?)%\s+)?(\d+)(?: / (\d+))? (\S.*)$")


def parse_status_line(line: str) -> ResticStatus | None:
    """A progress report from one line of restic's stdout; None for any other line (fields restic may add
    later are ignored)."""
    text = line.strip()
    if text.startswith("{"):
        try:
            item = json.loads(text)
        except json.JSONDecodeError:
            return None
        if not isinstance(item, dict) or item.get("message_type") != "status":
            return None
        return _status_from_json(item)
    match = _COUNTER.match(text)
    if not match:
        return None
    hours, minutes, seconds, percent, done, total, unit = match.groups()
    return ResticStatus(percent_done=float(percent) / 100 if percent else None,
                        seconds_elapsed=int(hours or 0) * 3600 + int(minutes) * 60 + int(seconds),
                        unit=unit.strip(), count_done=int(done), count_total=int(total) if total else None)


def _status_lines(progress: Progress | None) -> Callable[[str], None] | None:
    """A runner line callback that hands restic's progress reports to `progress`."""
    if progress is None:
        return None

    def on_line(line: str) -> None:
        status = parse_status_line(line)
        if status is not None:
            progress(status)

    return on_line


def _without_counters(text: str) -> str:
    return "\n".join(line for line in text.splitlines() if not _COUNTER.match(line.strip()))


@dataclass
class CheckResult:
    ok: bool
    output: str


@dataclass(frozen=True)
class RepoConfig:
    """What `restic cat config` says about a repository: its ID and format version.

    The chunker polynomial is left out: a restore does not need it, and restic keeps it encrypted.
    """

    id: str
    version: int


def parse_repo_config(text: str) -> RepoConfig:
    try:
        data = json.loads(text)
        return RepoConfig(id=str(data["id"]), version=int(data.get("version", 1)))
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        raise ResticError(f"cannot read the repository config printed by restic: {exc}") from None


def classify(stderr: str, repo: str) -> ResticError:
    text = stderr.lower()
    if "wrong password" in text or "no key found" in text:
        return WrongPassword("wrong password or no key found (check password_file)", repo=repo, stderr=stderr)
    if "repository is already locked" in text or "unable to create lock" in text:
        return RepoLocked("repository is locked by another restic process", repo=repo, stderr=stderr)
    if "nosuchbucket" in text or "the specified bucket does not exist" in text:
        return RepoNotFound("the bucket does not exist (run `restic-orch init` to create it)", repo=repo, stderr=stderr)
    if any(s in text for s in ("connection refused", "no such host", "i/o timeout", "dial tcp",
                               "access denied", "signaturedoesnotmatch", "invalidaccesskeyid",
                               "network is unreachable", "connection reset")):
        return RepoUnreachable(_last_lines(stderr), repo=repo, stderr=stderr)
    if ("unable to open config file" in text or "is there a repository at the following location" in text
            or "repository does not exist" in text):
        return RepoNotFound("no repository at this location (run `restic-orch init`)", repo=repo, stderr=stderr)
    return ResticError(_last_lines(stderr) or "restic failed", repo=repo, stderr=stderr)


def _last_lines(text: str, count: int = 3) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return " | ".join(lines[-count:])


class Repo:
    """One restic repository: its address, the secrets to open it, and the commands on it."""

    def __init__(
        self,
        name: str,
        url: str,
        password_file: Path,
        *,
        env: Mapping[str, str] | None = None,
        options: Mapping[str, str] | None = None,
        binary: str = "restic",
        gomaxprocs: int | None = None,
        upload_kib: int | None = None,
        compression: str = "auto",
        lock_wait_seconds: float = 0,
        cache_dir: Path | None = None,
        env_file: Path | None = None,
    ) -> None:
        self.name = name
        self.url = url
        self.password_file = Path(password_file)
        self.extra_env = dict(env or {})
        self.options = dict(options or {})
        self.binary = binary
        self.gomaxprocs = gomaxprocs
        self.upload_kib = upload_kib
        self.compression = compression
        self.lock_wait_seconds = lock_wait_seconds
        self.cache_dir = cache_dir
        self.env_file = env_file  # where extra_env came from, so a rebuilt configuration can point at it

    def env(self) -> dict[str, str]:
        env = dict(self.extra_env)
        env["RESTIC_REPOSITORY"] = self.url
        env["RESTIC_PASSWORD_FILE"] = str(self.password_file)
        if self.gomaxprocs:
            env["GOMAXPROCS"] = str(self.gomaxprocs)
        return env

    def _global_args(self) -> list[str]:
        args = [self.binary]
        for key, value in sorted(self.options.items()):
            args += ["-o", f"{key}={value}"]
        if self.cache_dir and self.cache_dir.parent.is_dir():
            args += ["--cache-dir", str(self.cache_dir)]
        elif self.cache_dir:
            # state_dir is made when a run starts, under its lock: a look before that (a plan, a refused
            # command) leaves nothing behind
            args.append("--no-cache")
        if self.upload_kib:
            args += ["--limit-upload", str(self.upload_kib)]
        return args

    def _run(self, args: Sequence[str], *, timeout: float | None = None, ok_codes: Iterable[int] = (0,),
             heavy: bool = False, stdout_path: Path | None = None, env: Mapping[str, str] | None = None,
             retry_locked: bool = True, progress: Progress | None = None) -> runner.Result:
        """Run restic; a locked repository is retried with backoff for lock_wait_seconds.

        restic >= 0.16 does the waiting itself (--retry-lock); 0.14 and 0.15 get the same from this loop.
        """
        native = bool(retry_locked and self.lock_wait_seconds and version(self.binary).has_retry_lock)
        wait_args = ["--retry-lock", f"{int(self.lock_wait_seconds)}s"] if native else []
        deadline = time.monotonic() + (self.lock_wait_seconds if retry_locked and not native else 0)
        delay = 2.0
        full_env = self.env()
        if env:
            full_env.update(env)
        stale_cleared = False
        while True:
            try:
                return runner.run(self._global_args() + wait_args + list(args), env=full_env, timeout=timeout,
                                  ok_codes=ok_codes, low_priority=heavy, stdout_path=stdout_path,
                                  on_line=_status_lines(progress))
            except runner.CommandTimeout as exc:
                raise ResticError(str(exc), repo=self.name, stderr=exc.stderr) from None
            except runner.CommandNotFound:
                raise ResticError("restic is not installed (apt-get install restic)", repo=self.name) from None
            except runner.CommandError as exc:
                error = classify(exc.stderr, self.name)
                if isinstance(error, RepoLocked) and retry_locked and not stale_cleared:
                    # restic < 0.17 leaves its lock when killed or terminated, and never passes over a stale
                    # one: remove the stale locks (`restic unlock` leaves live ones alone), then try again
                    stale_cleared = True
                    log.warning("repository locked, removing stale locks", extra={"repo": self.name})
                    try:
                        self.unlock()
                    except ResticError as unlock_error:
                        log.warning("restic unlock failed", extra={"repo": self.name, "error": str(unlock_error)})
                    continue
                if isinstance(error, RepoLocked) and time.monotonic() + delay < deadline:
                    log.warning("repository locked, retrying", extra={"repo": self.name, "delay": delay})
                    time.sleep(delay)
                    delay = min(delay * 2, 30)
                    continue
                raise error from None

    # --- repository life cycle -------------------------------------------------------------------
    def exists(self) -> bool:
        try:
            self._run(["cat", "config"], timeout=120, retry_locked=False)
            return True
        except RepoNotFound:
            return False

    def repo_config(self) -> RepoConfig:
        """The repository's ID and version; --no-lock: the config never changes, and a reader need not wait."""
        result = self._run(["--no-lock", "cat", "config"], timeout=120, retry_locked=False)
        return parse_repo_config(result.stdout)

    def init(self, copy_chunker_from: Repo | None = None) -> None:
        args = ["init", "--repository-version", "2"]
        env: dict[str, str] = {}
        if copy_chunker_from is not None:
            # same chunker parameters, so `restic copy` deduplicates instead of re-chunking
            args += ["--copy-chunker-params", "--from-repo", copy_chunker_from.url,
                     "--from-password-file", str(copy_chunker_from.password_file)]
            env = _from_env(copy_chunker_from)
        self._run(args, timeout=300, env=env)

    def unlock(self) -> None:
        """Remove stale locks only (restic leaves live locks alone without --remove-all)."""
        self._run(["unlock"], timeout=300, retry_locked=False)

    # --- backup and listing -----------------------------------------------------------------------
    def backup(self, paths: Sequence[Path], *, tags: Sequence[str], host: str, when: datetime | None = None,
               timeout: float | None = None, progress: Progress | None = None) -> BackupSummary:
        """restic backup --json; its status lines go to `progress` as they come (restic prints them with --json
        whether or not anyone reads them), its summary line is the result."""
        for path in paths:
            if not Path(path).is_absolute():
                # 0.14 stores relative paths so that a later restore --include silently matches nothing
                raise ValueError(f"restic backup needs absolute paths, got {path}")
            if not Path(path).exists():
                raise ResticError(f"backup source {path} does not exist", repo=self.name)
        args = ["backup", "--json", "--host", host, "--compression", self.compression]
        for tag in tags:
            args += ["--tag", tag]
        if when is not None:
            args += ["--time", when.strftime("%Y-%m-%d %H:%M:%S")]
        args += [str(p) for p in paths]
        result = self._run(args, timeout=timeout, ok_codes=(0, 3), heavy=True, progress=progress)
        return parse_backup_output(result.stdout, result.stderr, partial=result.returncode == 3)

    def snapshots(self, *, tags: Sequence[str] = (), host: str | None = None) -> list[Snapshot]:
        args = ["snapshots", "--json"]
        for tag in tags:
            args += ["--tag", tag]
        if host:
            args += ["--host", host]
        result = self._run(args, timeout=300)
        data = json.loads(result.stdout or "[]") or []
        return sorted((Snapshot.from_json(item) for item in data), key=lambda s: s.time)

    def ls(self, snapshot: str, path: str | None = None, *, recursive: bool = True) -> list[Node]:
        args = ["ls", "--json", snapshot]
        if path:
            args.append(path)
        if recursive:
            args.append("--recursive")
        result = self._run(args, timeout=600)
        nodes = []
        for line in result.stdout.splitlines():
            if not line.strip():
                continue
            item = json.loads(line)
            if item.get("struct_type") == "node":
                nodes.append(Node(name=item["name"], type=item["type"], path=item["path"],
                                  size=int(item.get("size") or 0), mode=int(item.get("mode") or 0),
                                  mtime=item.get("mtime", "")))
        return nodes

    def dump_to_file(self, snapshot: str, path: str, target: Path, timeout: float | None = None) -> None:
        self._run(["dump", snapshot, path], timeout=timeout, stdout_path=target, heavy=True)

    def dump_stream(self, snapshot: str, path: str) -> runner.Stream:
        return runner.Stream(self._global_args() + ["dump", snapshot, path], env=self.env(), low_priority=True)

    def restore(self, snapshot: str, target: Path, *, include: Sequence[str] = (), verify: bool = False,
                timeout: float | None = None, progress: Progress | None = None) -> None:
        args = self._restore_args(snapshot, target, progress)
        for pattern in include:
            args += ["--include", pattern]
        if verify:
            args.append("--verify")
        self._run(args, timeout=timeout, heavy=True, progress=self._restore_progress(progress),
                  env=_fps(self._restore_progress(progress)))

    def _restore_args(self, snapshot: str, target: Path, progress: Progress | None) -> list[str]:
        # --json only for a display: without one the command stays as it always was
        json_flag = ["--json"] if self._restore_progress(progress) else []
        return ["restore", *json_flag, snapshot, "--target", str(target)]

    def _restore_progress(self, progress: Progress | None) -> Progress | None:
        """The callback when this restic reports restore progress (0.16+ with --json), else None."""
        return progress if progress is not None and version(self.binary).has_restore_json else None

    def restore_paths(self, snapshot: str, paths: Sequence[str], target: Path, *,
                      timeout: float | None = None, progress: Progress | None = None) -> int:
        """Restore exactly these absolute paths of the snapshot under `target` (target/<path>); returns how many
        restic processes that took.

        0.14 has no --include-file (0.17), so each path is one --include, taken literally (glob characters
        escaped); the paths are split into as few commands as keep every argv far below the kernel's limit.
        """
        batches = _batches([escape_pattern(p) for p in paths])
        for batch in batches:
            args = self._restore_args(snapshot, target, progress)
            for pattern in batch:
                args += ["--include", pattern]
            self._run(args, timeout=timeout, heavy=True, progress=self._restore_progress(progress),
                  env=_fps(self._restore_progress(progress)))
        return len(batches)

    # --- copy, retention, checks -----------------------------------------------------------------
    def copy_from(self, source: Repo, snapshot_ids: Sequence[str] = (), *, host: str | None = None,
                  tags: Sequence[str] = (), timeout: float | None = None,
                  progress: Progress | None = None) -> list[CopiedSnapshot]:
        """Copy snapshots (by id, or all matching host/tags) that this repository lacks; say what became of each.

        restic copy has no --json; its text names every source snapshot and the copy it now has. With
        `progress`, RESTIC_PROGRESS_FPS makes it print its "packs copied" counter off a terminal too.
        """
        args = ["copy", "--from-repo", source.url, "--from-password-file", str(source.password_file)]
        if not snapshot_ids:
            if host:
                args += ["--host", host]
            for tag in tags:
                args += ["--tag", tag]
        args += list(snapshot_ids)
        env = {**_from_env(source), **_fps(progress)}
        result = self._run(args, timeout=timeout, heavy=True, env=env, progress=progress)
        return parse_copy_output(result.stdout)

    def forget(self, policy: Sequence[str], *, host: str, tags: Sequence[str], dry_run: bool = False,
               timeout: float | None = None) -> list[ForgetGroup]:
        """Apply the keep policy to our host and tag only; prune is a separate call (0.14 mixes outputs)."""
        args = ["forget", "--json", "--host", host, "--group-by", "host"]
        for tag in tags:
            args += ["--tag", tag]
        if dry_run:
            args.append("--dry-run")
        args += list(policy)
        result = self._run(args, timeout=timeout)
        return parse_forget_output(result.stdout)

    def prune(self, timeout: float | None = None) -> None:
        self._run(["prune"], timeout=timeout, heavy=True)

    def check(self, read_data_subset: str | None = None, timeout: float | None = None,
              progress: Progress | None = None) -> CheckResult:
        """restic check; no restic up to 0.19 prints check progress as JSON, so `progress` gets the text counters
        ("snapshots", "packs") RESTIC_PROGRESS_FPS turns on; they are left out of the result's output."""
        args = ["check"]
        if read_data_subset:
            args += ["--read-data-subset", read_data_subset]
        try:
            result = self._run(args, timeout=timeout, heavy=True, env=_fps(progress), progress=progress)
        except ResticError as exc:
            if isinstance(exc, (WrongPassword, RepoNotFound, RepoUnreachable, RepoLocked)):
                raise
            return CheckResult(ok=False, output=exc.stderr or str(exc))
        output = result.stdout + result.stderr
        return CheckResult(ok=True, output=_without_counters(output) + "\n" if progress else output)


_GLOB = re.compile(r"([\\*?\[\]])")
INCLUDE_BATCH_PATHS = 500
INCLUDE_BATCH_BYTES = 96 * 1024  # argv bytes per command: Linux allows ~2 MiB in all, 128 KiB per argument


def escape_pattern(path: str) -> str:
    """A path as a restic filter pattern that matches that path only (restic matches each part like filepath.Match,
    where a backslash quotes the next character)."""
    return _GLOB.sub(r"\\\1", path)


def _batches(patterns: Sequence[str]) -> list[list[str]]:
    batches: list[list[str]] = []
    size = 0
    for pattern in patterns:
        if not batches or len(batches[-1]) >= INCLUDE_BATCH_PATHS or size + len(pattern) > INCLUDE_BATCH_BYTES:
            batches.append([])
            size = 0
        batches[-1].append(pattern)
        size += len(pattern) + len("--include") + 2
    return batches


def _fps(progress: Progress | None) -> dict[str, str]:
    """RESTIC_PROGRESS_FPS only when a display reads the counters: without one, restic prints what it always did."""
    return {"RESTIC_PROGRESS_FPS": PROGRESS_FPS} if progress is not None else {}


def _from_env(source: Repo) -> dict[str, str]:
    """The source repository's S3 keys travel as restic's plain AWS_* variables when the target has none."""
    return {k: v for k, v in source.extra_env.items() if k.startswith("AWS_")}


def parse_backup_output(stdout: str, stderr: str, *, partial: bool = False) -> BackupSummary:
    summary: dict[str, Any] | None = None
    for line in stdout.splitlines():
        line = line.strip()
        if not line.startswith("{"):
            continue
        try:
            item = json.loads(line)
        except json.JSONDecodeError:
            continue
        if item.get("message_type") == "summary":
            summary = item
    errors = []
    for line in stderr.splitlines():
        try:
            item = json.loads(line)
            if item.get("message_type") == "error":
                errors.append(f"{item.get('item', '')}: {item.get('error', {}).get('message', '')}")
        except json.JSONDecodeError:
            if line.strip():
                errors.append(line.strip())
    if summary is None or not summary.get("snapshot_id"):
        raise ResticError("restic backup printed no summary: " + _last_lines(stderr))
    return BackupSummary(
        snapshot_id=summary["snapshot_id"],
        files_new=summary.get("files_new", 0), files_changed=summary.get("files_changed", 0),
        files_unmodified=summary.get("files_unmodified", 0), data_added=summary.get("data_added", 0),
        total_files_processed=summary.get("total_files_processed", 0),
        total_bytes_processed=summary.get("total_bytes_processed", 0),
        total_duration=float(summary.get("total_duration", 0.0)), partial=partial, errors=errors,
    )


def parse_forget_output(stdout: str) -> list[ForgetGroup]:
    text = stdout.strip()
    if not text:
        return []  # 0.14 prints nothing at all when no snapshot matched
    groups = []
    for item in json.loads(text.splitlines()[0]) or []:
        groups.append(ForgetGroup(
            host=item.get("host", ""), tags=list(item.get("tags") or []),
            keep=[Snapshot.from_json(s) for s in item.get("keep") or []],
            remove=[Snapshot.from_json(s) for s in item.get("remove") or []],
        ))
    return groups


_COPY_SOURCE = re.compile(r"^snapshot ([0-9a-f]{8,64}) of \[")
_COPY_SAVED = re.compile(r"^snapshot ([0-9a-f]{8,64}) saved")
# 0.19 copies in batches: every "saved" line comes after all the announcements and names its source
_COPY_SAVED_FROM = re.compile(r"^snapshot ([0-9a-f]{8,64}) saved, copied from source snapshot ([0-9a-f]{8,64})")
_COPY_SKIPPED = re.compile(r"^skipping (?:source )?snapshot ([0-9a-f]{8,64}),"
                           r" was already copied to snapshot ([0-9a-f]{8,64})")


def parse_copy_output(stdout: str) -> list[CopiedSnapshot]:
    """Pair each source snapshot restic copy announced with the copy it saved or found (0.14 to 0.19 text).

    Only 0.14 names the snapshots it skips as already copied; from 0.15 on that takes -v, so they are absent.
    """
    found: dict[str, CopiedSnapshot] = {}  # by source id, in the order restic named them
    pending: str | None = None
    for raw in stdout.splitlines():
        line = raw.strip()
        if match := _COPY_SOURCE.match(line):
            pending = match.group(1)
            found.setdefault(pending, CopiedSnapshot(pending, None))
        elif match := _COPY_SKIPPED.match(line):
            found[match.group(1)] = CopiedSnapshot(match.group(1), match.group(2), skipped=True)
            pending = None
        elif match := _COPY_SAVED_FROM.match(line):
            found[match.group(2)] = CopiedSnapshot(match.group(2), match.group(1))
        elif (match := _COPY_SAVED.match(line)) and pending:
            found[pending] = CopiedSnapshot(pending, match.group(1))
            pending = None
    return list(found.values())
