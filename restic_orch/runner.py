"""The one place that starts processes.

argv lists only (never a shell), secrets through the environment or files (never argv), timeouts,
nice/ionice, stderr captured, one log line per command with every known secret masked.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

log = logging.getLogger("restic_orch.runner")

_active: set[subprocess.Popen[Any]] = set()
_active_lock = threading.Lock()
_secrets: set[str] = set()


def register_secret(value: str) -> None:
    """Remember a secret value so it is masked wherever a command line or error text is logged."""
    value = value.strip()
    if len(value) >= 4:
        _secrets.add(value)


def mask(text: str) -> str:
    for secret in sorted(_secrets, key=len, reverse=True):
        text = text.replace(secret, "****")
    return text


def read_secret(path: Path) -> str:
    """Read a secret file (first line, stripped) and register its value for masking."""
    value = Path(path).read_text(encoding="utf-8").splitlines()[0].strip() if Path(path).stat().st_size else ""
    register_secret(value)
    return value


def read_env_file(path: Path) -> dict[str, str]:
    """KEY=VALUE lines (an optional `export ` prefix, # comments); every value is treated as a secret."""
    env: dict[str, str] = {}
    for number, raw in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("export "):
            line = line[len("export "):].strip()
        key, sep, value = line.partition("=")
        if not sep or not key.replace("_", "").isalnum():
            raise ValueError(f"{path}:{number}: expected KEY=VALUE")
        value = value.strip().strip('"').strip("'")
        env[key.strip()] = value
        if "SECRET" in key or "PASSWORD" in key or "TOKEN" in key:
            register_secret(value)
    return env


@dataclass
class Result:
    argv: list[str]
    returncode: int
    stdout: str
    stderr: str
    duration: float


@dataclass
class CommandError(Exception):
    argv: list[str]
    returncode: int | None
    stderr: str = ""
    reason: str = ""
    stdout: str = field(default="", repr=False)

    @property
    def program(self) -> str:
        """The command itself, past any ionice/nice prefix the runner added."""
        args = list(self.argv)
        while args and Path(args[0]).name in ("ionice", "nice"):
            args = args[1:]
            while args and (args[0].startswith("-") or args[0].isdigit()):
                args = args[1:]
        return Path(args[0]).name if args else Path(self.argv[0]).name

    def __str__(self) -> str:
        what = self.reason or f"exited with code {self.returncode}"
        tail = self.stderr.strip().splitlines()[-5:]
        detail = ("; " + " | ".join(tail)) if tail else ""
        return mask(f"{self.program} {what}{detail}")


class CommandTimeout(CommandError):
    pass


class CommandNotFound(CommandError):
    pass


@dataclass(frozen=True)
class Priority:
    """CPU and I/O priority applied to every heavy child (dumps, restic)."""

    nice: int = 0
    ionice_class: str = "none"
    ionice_level: int = 7

    def prefix(self) -> list[str]:
        prefix: list[str] = []
        classes = {"realtime": "1", "best-effort": "2", "idle": "3"}
        if self.ionice_class in classes and shutil.which("ionice"):
            prefix += ["ionice", "-c", classes[self.ionice_class]]
            if self.ionice_class != "idle":
                prefix += ["-n", str(self.ionice_level)]
        if self.nice:
            prefix += ["nice", "-n", str(self.nice)]
        return prefix


_priority = Priority()


def set_priority(priority: Priority) -> None:
    global _priority
    _priority = priority


def _env(extra: Mapping[str, str] | None) -> dict[str, str]:
    env = dict(os.environ)
    # a caller's RESTIC_* must not leak into a repository it did not mean
    for key in list(env):
        if key.startswith("RESTIC_"):
            del env[key]
    if extra:
        env.update(extra)
    return env


def _argv(argv: Sequence[str | os.PathLike[str]], low_priority: bool) -> list[str]:
    args = [os.fspath(a) for a in argv]
    if not args:
        raise ValueError("empty command")
    if shutil.which(args[0]) is None:
        raise CommandNotFound(args, None, reason="not found on PATH")
    return (_priority.prefix() if low_priority else []) + args


def _track(proc: subprocess.Popen[Any]) -> None:
    with _active_lock:
        _active.add(proc)


def _untrack(proc: subprocess.Popen[Any]) -> None:
    with _active_lock:
        _active.discard(proc)


def run(
    argv: Sequence[str | os.PathLike[str]],
    *,
    env: Mapping[str, str] | None = None,
    input: str | bytes | None = None,
    timeout: float | None = None,
    check: bool = True,
    cwd: Path | None = None,
    stdout_path: Path | None = None,
    stdin_path: Path | None = None,
    low_priority: bool = False,
    ok_codes: Iterable[int] = (0,),
) -> Result:
    """Run a command to completion. stdout goes to stdout_path when given (for dumps), else is captured."""
    args = _argv(argv, low_priority)
    started = time.monotonic()
    out_handle: IO[bytes] | None = None
    in_handle: IO[bytes] | None = None
    try:
        if stdout_path is not None:
            fd = os.open(stdout_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            out_handle = os.fdopen(fd, "wb")
        if stdin_path is not None:
            in_handle = open(stdin_path, "rb")  # noqa: SIM115 - closed in finally
        proc = subprocess.Popen(
            args,
            stdin=in_handle if in_handle else (subprocess.PIPE if input is not None else subprocess.DEVNULL),
            stdout=out_handle if out_handle else subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=_env(env),
            cwd=cwd,
            start_new_session=True,
        )
        _track(proc)
        data = input.encode() if isinstance(input, str) else input
        try:
            raw_out, raw_err = proc.communicate(data, timeout=timeout)
        except subprocess.TimeoutExpired:
            _kill(proc)
            raw_out, raw_err = proc.communicate()
            duration = time.monotonic() - started
            log.error("command timed out", extra={"argv": mask(" ".join(args)), "timeout": timeout})
            raise CommandTimeout(args, None, (raw_err or b"").decode(errors="replace"),
                                 reason=f"timed out after {timeout:.0f} s") from None
        finally:
            _untrack(proc)
    finally:
        if out_handle:
            out_handle.close()
        if in_handle:
            in_handle.close()
    duration = time.monotonic() - started
    stdout = (raw_out or b"").decode(errors="replace")
    stderr = (raw_err or b"").decode(errors="replace")
    log.info("command", extra={"argv": mask(" ".join(args)), "rc": proc.returncode,
                               "seconds": round(duration, 3)})
    result = Result(args, proc.returncode, stdout, stderr, duration)
    if check and proc.returncode not in set(ok_codes):
        if proc.returncode < 0:
            reason = f"was killed by signal {signal.Signals(-proc.returncode).name}"
        else:
            reason = ""
        raise CommandError(args, proc.returncode, stderr, reason=reason, stdout=stdout)
    return result


class Stream:
    """A running command whose stdout is read by the caller (e.g. `restic dump` into a tar reader)."""

    def __init__(self, argv: Sequence[str | os.PathLike[str]], *, env: Mapping[str, str] | None = None,
                 low_priority: bool = False, stdin: IO[bytes] | int | None = None) -> None:
        self.argv = _argv(argv, low_priority)
        self.started = time.monotonic()
        self._stderr_chunks: list[bytes] = []
        self.proc = subprocess.Popen(
            self.argv, stdin=stdin if stdin is not None else subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, env=_env(env), start_new_session=True,
        )
        _track(self.proc)
        # drain stderr in the background so a chatty child never blocks on a full pipe
        self._stderr_thread = threading.Thread(target=self._drain, daemon=True)
        self._stderr_thread.start()

    def _drain(self) -> None:
        assert self.proc.stderr is not None
        for chunk in iter(lambda: self.proc.stderr.read(65536), b""):  # type: ignore[union-attr]
            self._stderr_chunks.append(chunk)

    @property
    def stdout(self) -> IO[bytes]:
        assert self.proc.stdout is not None
        return self.proc.stdout

    def wait(self, timeout: float | None = None, check: bool = True) -> Result:
        try:
            rc = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            _kill(self.proc)
            raise CommandTimeout(self.argv, None, self.stderr_text, reason=f"timed out after {timeout} s") from None
        finally:
            _untrack(self.proc)
        self._stderr_thread.join(timeout=5)
        duration = time.monotonic() - self.started
        log.info("command", extra={"argv": mask(" ".join(self.argv)), "rc": rc, "seconds": round(duration, 3)})
        if check and rc != 0:
            raise CommandError(self.argv, rc, self.stderr_text)
        return Result(self.argv, rc, "", self.stderr_text, duration)

    @property
    def stderr_text(self) -> str:
        return b"".join(self._stderr_chunks).decode(errors="replace")

    def kill(self) -> None:
        _kill(self.proc)
        _untrack(self.proc)

    def __enter__(self) -> Stream:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc.poll() is None:
            self.kill()
        if self.proc.stdout:
            self.proc.stdout.close()


def _kill(proc: subprocess.Popen[Any], grace: float = 5.0) -> None:
    """SIGTERM the child's whole process group, then SIGKILL what is left after the grace period."""
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait()


def terminate_all() -> int:
    """Stop every running child (used on SIGTERM); returns how many were running."""
    with _active_lock:
        procs = list(_active)
    for proc in procs:
        _kill(proc)
    return len(procs)
