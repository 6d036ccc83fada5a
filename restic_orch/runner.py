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
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

# the secret registry lives in masking; these names stay importable from runner for older callers
from .masking import mask as mask
from .masking import read_env_file as read_env_file
from .masking import read_secret as read_secret
from .masking import register_secret as register_secret

log = logging.getLogger("restic_orch.runner")

_active: set[subprocess.Popen[Any]] = set()
_active_lock = threading.Lock()


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


_Handles = tuple[IO[bytes] | None, IO[bytes] | None]


@contextmanager
def _redirects(stdout_path: Path | None, stdin_path: Path | None) -> Iterator[_Handles]:
    """The files a command writes its stdout to (0600: dumps hold data) and reads its stdin from, closed after."""
    with ExitStack() as stack:
        out_handle = in_handle = None
        if stdout_path is not None:
            fd = os.open(stdout_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            out_handle = stack.enter_context(os.fdopen(fd, "wb"))
        if stdin_path is not None:
            in_handle = stack.enter_context(open(stdin_path, "rb"))  # noqa: SIM115 - closed by the stack
        yield out_handle, in_handle


def _communicate(proc: subprocess.Popen[Any], input: str | bytes | None, timeout: float | None,
                 args: list[str]) -> tuple[bytes | None, bytes | None]:
    """Feed stdin and wait; on timeout stop the child's whole process group and raise CommandTimeout."""
    _track(proc)
    data = input.encode() if isinstance(input, str) else input
    try:
        return proc.communicate(data, timeout=timeout)
    except subprocess.TimeoutExpired:
        _kill(proc)
        _raw_out, raw_err = proc.communicate()
        log.error("command timed out", extra={"argv": mask(" ".join(args)), "timeout": timeout})
        raise CommandTimeout(args, None, (raw_err or b"").decode(errors="replace"),
                             reason=f"timed out after {timeout:.0f} s") from None
    finally:
        _untrack(proc)


def _drain_into(pipe: IO[bytes], chunks: list[bytes]) -> None:
    for chunk in iter(lambda: pipe.read(65536), b""):
        chunks.append(chunk)


def _feed(pipe: IO[bytes], data: bytes) -> None:
    try:
        pipe.write(data)
    except BrokenPipeError:
        pass  # the child stopped reading: its exit code says why
    finally:
        try:
            pipe.close()
        except BrokenPipeError:
            pass


def _deliver(on_line: Callable[[str], None] | None, raw: bytes) -> Callable[[str], None] | None:
    """Hand one stdout line to the caller's callback; a callback that fails is dropped, the command goes on
    (a broken progress display must never fail a backup)."""
    if on_line is None:
        return None
    try:
        on_line(raw.decode(errors="replace").rstrip("\r\n"))
        return on_line
    except Exception:
        log.warning("stdout line callback failed; no more lines are passed to it", exc_info=True)
        return None


def _communicate_lines(proc: subprocess.Popen[Any], input: str | bytes | None, timeout: float | None,
                       args: list[str], on_line: Callable[[str], None]) -> tuple[bytes, bytes]:
    """Like _communicate, but stdout is read line by line as the child writes it, each line handed to on_line.

    stderr (and stdin, when there is input) move in threads so that no full pipe blocks the child; the
    timeout is a timer that stops the child's process group, which ends the read.
    """
    _track(proc)
    err_chunks: list[bytes] = []
    threads = [threading.Thread(target=_drain_into, args=(proc.stderr, err_chunks), daemon=True)]
    if input is not None:
        data = input.encode() if isinstance(input, str) else input
        threads.append(threading.Thread(target=_feed, args=(proc.stdin, data), daemon=True))
    expired = threading.Event()

    def expire() -> None:
        if proc.poll() is None:
            expired.set()
            _kill(proc)

    timer = threading.Timer(timeout, expire) if timeout is not None else None
    out_lines: list[bytes] = []
    callback: Callable[[str], None] | None = on_line
    try:
        for thread in threads:
            thread.start()
        if timer is not None:
            timer.daemon = True
            timer.start()
        assert proc.stdout is not None
        for raw in iter(proc.stdout.readline, b""):
            out_lines.append(raw)
            callback = _deliver(callback, raw)
        proc.wait()
    finally:
        if timer is not None:
            timer.cancel()
        if proc.poll() is None:  # a signal or an error in this thread: the child must not outlive the call
            _kill(proc)
        _untrack(proc)
        for thread in threads:
            thread.join(timeout=5)
    stderr = b"".join(err_chunks)
    if expired.is_set():
        log.error("command timed out", extra={"argv": mask(" ".join(args)), "timeout": timeout})
        raise CommandTimeout(args, None, stderr.decode(errors="replace"), reason=f"timed out after {timeout:.0f} s")
    return b"".join(out_lines), stderr


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
    on_line: Callable[[str], None] | None = None,
) -> Result:
    """Run a command to completion. stdout goes to stdout_path when given (for dumps), else is captured.

    on_line: called with each stdout line (without its newline) as the command prints it, e.g. restic's
    progress; stdout is still captured whole in the result. Not with stdout_path.
    """
    if on_line is not None and stdout_path is not None:
        raise ValueError("on_line reads stdout: it cannot go to stdout_path as well")
    args = _argv(argv, low_priority)
    started = time.monotonic()
    with _redirects(stdout_path, stdin_path) as (out_handle, in_handle):
        proc = subprocess.Popen(
            args,
            stdin=in_handle if in_handle else (subprocess.PIPE if input is not None else subprocess.DEVNULL),
            stdout=out_handle if out_handle else subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=_env(env),
            cwd=cwd,
            start_new_session=True,
        )
        if on_line is not None:
            raw_out, raw_err = _communicate_lines(proc, input, timeout, args, on_line)
        else:
            raw_out, raw_err = _communicate(proc, input, timeout, args)
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
