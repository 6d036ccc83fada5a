"""One repository operation at a time on this host (backup, restore, drill, check, forget)."""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .config import Config


class Busy(Exception):
    def __init__(self, path: Path, holder: str) -> None:
        self.path = path
        self.holder = holder
        super().__init__(f"another restic-orch run holds {path} ({holder or 'unknown holder'});"
                         " it will be released when that run ends")


class RunLock:
    """flock on a file in state_dir: the kernel frees it when the holder dies, even on SIGKILL."""

    def __init__(self, state_dir: Path, what: str) -> None:
        self.path = Path(state_dir) / "restic-orch.lock"
        self.what = what
        self._fd: int | None = None

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o750)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o640)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 200, 0).decode(errors="replace").strip()
            os.close(fd)
            raise Busy(self.path, holder) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} {self.what}\n".encode(), 0)
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            os.ftruncate(self._fd, 0)
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> RunLock:
        self.acquire()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.release()


@contextmanager
def exclusive(config: Config, what: str, *, cap_cpu: bool = False) -> Iterator[None]:
    """Every command that writes to a repository runs inside this: the host's run lock, then the
    configured priority for its children and, for the heavy ones (backup, check, drill), the CPU budget.

    Raises Busy, naming the holder, when another run has the lock. Loading the configuration alone changes
    nothing about the process: only work that holds the lock runs at the configured priority.
    """
    from . import cpucap, runner

    with RunLock(config.state_dir, what):
        limits = config.limits
        runner.set_priority(runner.Priority(limits.nice, limits.ionice_class, limits.ionice_level))
        if cap_cpu:
            cpucap.apply(limits.cpu_percent)
        yield
