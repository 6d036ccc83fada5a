"""Process plumbing for the simulated homelab's daemons.

The lab is test/demo infrastructure, so (unlike the product, which shells out only
through ``restic_orch.runner``) it starts its daemons with ``subprocess`` directly,
but only from the ``restic_orch.lab`` modules.

Daemons run in their own session (so a Ctrl-C in the test runner does not hit them
and we can kill the whole process group), with stdout/stderr in a log file that the
readiness check quotes when a daemon fails to come up.
"""

from __future__ import annotations

import os
import pwd
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path


class LabError(RuntimeError):
    """A lab daemon could not be set up, started or stopped."""


# Popen objects of daemons started by this process, so that we can reap them
# (an exited but unreaped child is a zombie and would look alive to os.kill(pid, 0)).
_CHILDREN: dict[int, subprocess.Popen] = {}


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free right now (the kernel picks it; tiny race accepted)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def log_tail(log_path: Path, lines: int = 30) -> str:
    """The last ``lines`` lines of a log file ('' if it does not exist)."""
    try:
        text = Path(log_path).read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


def start_daemon(
    argv: Sequence[str],
    log_path: Path,
    *,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    user: str | None = None,
) -> int:
    """Start ``argv`` detached and return its pid.

    ``user``: run as this system user (its primary group, no supplementary groups),
    e.g. postgres refuses to run as root. We use Popen's own setuid support rather
    than ``runuser`` so that the pid we return is the daemon itself, not a wrapper.
    """
    log_path = Path(log_path)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    ids: dict = {}
    if user is not None:
        entry = pwd.getpwnam(user)
        ids = {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": []}
        cwd = cwd or Path("/")  # the caller's cwd (e.g. /root) may be unreadable for that user
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=cwd,
            env=dict(env) if env is not None else None,
            start_new_session=True,
            **ids,
        )
    _CHILDREN[proc.pid] = proc
    return proc.pid


def pid_alive(pid: int) -> bool:
    """True if ``pid`` is a live (non-zombie) process."""
    proc = _CHILDREN.get(pid)
    if proc is not None:
        return proc.poll() is None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    # Field 3 (after the parenthesised command name) is the state; Z = zombie.
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except FileNotFoundError:
        return ""


def stop_pid(
    pid: int,
    *,
    sig: int = signal.SIGTERM,
    timeout: float = 15.0,
    match: str | None = None,
) -> None:
    """Stop ``pid`` with ``sig``, wait up to ``timeout`` s, then SIGKILL its process group.

    ``match``: only signal the process if its command line contains this string. The lab
    manager may stop daemons from a saved pid long after they started: this guards
    against killing an unrelated process that reused the pid.
    """
    if not pid_alive(pid):
        _CHILDREN.pop(pid, None)
        return
    if match is not None and match not in _cmdline(pid):
        return
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not pid_alive(pid):
            break
        time.sleep(0.05)
    else:
        # start_daemon put the daemon in its own session, so pgid == pid: this also
        # takes out worker children (postgres backends) that would outlive it.
        try:
            os.killpg(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + 5
        while pid_alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
    _CHILDREN.pop(pid, None)
    if pid_alive(pid):
        raise LabError(f"process {pid} survived SIGKILL")


def tcp_ready(host: str, port: int) -> Callable[[], bool]:
    """A readiness check: something accepts TCP connections on host:port."""

    def check() -> bool:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return True
        except OSError:
            return False

    return check


def wait_ready(
    check: Callable[[], bool],
    *,
    pid: int | None = None,
    log_path: Path | None = None,
    timeout: float = 30.0,
    what: str = "daemon",
    interval: float = 0.05,
) -> None:
    """Poll ``check`` until it returns True; fail fast if ``pid`` dies.

    The error quotes the daemon's log tail, since that is where the reason is.
    """
    deadline = time.monotonic() + timeout
    while True:
        try:
            if check():
                return
        except Exception:  # noqa: BLE001, S110 - a check that raises just means "not yet"
            pass
        died = pid is not None and not pid_alive(pid)
        if died or time.monotonic() >= deadline:
            reason = f"exited (pid {pid})" if died else f"not ready after {timeout:.0f}s"
            tail = log_tail(log_path) if log_path is not None else ""
            raise LabError(f"{what} {reason}" + (f"; log {log_path}:\n{tail}" if log_path else ""))
        time.sleep(interval)


def run(
    argv: Sequence[str],
    *,
    input_text: str | None = None,
    env: Mapping[str, str] | None = None,
    timeout: float = 600.0,
    what: str | None = None,
    user: str | None = None,
) -> str:
    """Run a short-lived command, return its stdout; raise LabError with stderr on failure.

    ``user``: run as this system user (initdb refuses to run as root).
    """
    ids: dict = {}
    if user is not None:
        entry = pwd.getpwnam(user)
        # cwd "/": the caller's cwd (e.g. /root) may be unreadable for that user.
        ids = {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": [], "cwd": "/"}
    try:
        result = subprocess.run(
            list(argv),
            input=input_text,
            capture_output=True,
            text=True,
            env=dict(env) if env is not None else None,
            timeout=timeout,
            check=False,
            **ids,
        )
    except subprocess.TimeoutExpired as exc:
        raise LabError(f"{what or argv[0]} timed out after {timeout:.0f}s") from exc
    if result.returncode != 0:
        raise LabError(
            f"{what or argv[0]} failed (exit {result.returncode}):\n{result.stderr.strip()[-4000:]}"
        )
    return result.stdout


def chown_tree(path: Path, user: str) -> None:
    """chown -R ``path`` to ``user`` and its primary group."""
    entry = pwd.getpwnam(user)
    for root, dirs, files in os.walk(path):
        os.chown(root, entry.pw_uid, entry.pw_gid)
        for name in dirs + files:
            os.chown(os.path.join(root, name), entry.pw_uid, entry.pw_gid, follow_symlinks=False)


def check_traversable(path: Path, user: str) -> None:
    """Raise LabError if ``user`` cannot reach ``path`` (every ancestor needs x for it).

    pytest's tmp_path sits under a 0700 root-owned directory: a daemon that drops to
    its own user could not reach its data dir there, and fails with an obscure error.
    """
    entry = pwd.getpwnam(user)
    groups = {entry.pw_gid} | set(os.getgrouplist(user, entry.pw_gid))
    for ancestor in [Path(path), *Path(path).parents]:
        if not ancestor.exists():
            continue
        st = ancestor.stat()
        if st.st_uid == entry.pw_uid:
            bit = 0o100
        elif st.st_gid in groups:
            bit = 0o010
        else:
            bit = 0o001
        if not st.st_mode & bit:
            raise LabError(
                f"user {user!r} cannot traverse {ancestor} (mode {oct(st.st_mode & 0o777)}); "
                f"put the lab dir under a world-traversable path (e.g. chmod 0755 it)"
            )
