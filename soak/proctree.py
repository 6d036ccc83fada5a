"""The night's run as a child process, and its process tree read from /proc: to signal it in a chosen phase.

The soak is a harness, like the tests and the bench: it starts and kills the CLI itself, which product code
never does (restic_orch/runner.py is the product's one place for subprocesses).
"""

from __future__ import annotations

import fcntl
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def proc_table() -> dict[int, tuple[int, list[str]]]:
    """pid -> (parent pid, argv) of every process we can read."""
    table: dict[int, tuple[int, list[str]]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            raw = Path(f"/proc/{entry}/cmdline").read_bytes()
        except (OSError, IndexError, ValueError):
            continue
        table[int(entry)] = (ppid, [a.decode(errors="replace") for a in raw.split(b"\0") if a])
    return table


def descendants(pid: int) -> dict[int, list[str]]:
    table = proc_table()
    found: dict[int, list[str]] = {}
    frontier = [pid]
    while frontier:
        parent = frontier.pop()
        for child, (ppid, argv) in table.items():
            if ppid == parent and child not in found:
                found[child] = argv
                frontier.append(child)
    return found


def child_named(pid: int, name: str, *words: str) -> bool:
    """A descendant `name` whose argv holds every word is running (restic backup, restic copy, pg_dump...)."""
    return any(argv and Path(argv[0]).name == name and all(w in argv for w in words)
               for argv in descendants(pid).values())


def kill_tree(proc: subprocess.Popen) -> None:
    """SIGKILL the run and everything it started, like a power cut or the OOM killer on the unit's cgroup."""
    os.kill(proc.pid, signal.SIGSTOP)  # frozen first, so that it starts nothing new while its children die
    for pid in [proc.pid, *descendants(proc.pid)]:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    proc.wait(timeout=60)


def start(argv: list[str]) -> subprocess.Popen:
    """A Python module of this checkout in a child process (soak.night, restic_orch.cli)."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    return subprocess.Popen([sys.executable, "-m", *argv], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, cwd=ROOT, env=env)


def wait_until(proc: subprocess.Popen, ready: Callable[[], bool], timeout: float) -> bool:
    """Poll `ready` every 10 ms while the child runs; False when it ended (or the time ran out) first."""
    deadline = time.monotonic() + timeout
    while proc.poll() is None and time.monotonic() < deadline:
        if ready():
            return True
        time.sleep(0.01)
    return False


def run_lock_free(state_dir: Path) -> bool:
    """Nobody holds restic-orch's run lock (flock on <state_dir>/restic-orch.lock); True when there is no lock file."""
    path = Path(state_dir) / "restic-orch.lock"
    if not path.exists():
        return True
    fd = os.open(path, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        fcntl.flock(fd, fcntl.LOCK_UN)
        return True
    except BlockingIOError:
        return False
    finally:
        os.close(fd)
