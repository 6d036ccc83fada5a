"""cgroup v1 helpers: a CPU cap (cpu controller) and exact CPU accounting (cpuacct controller).

Everything lives below `<controller>/restic-orch-bench-<pid>/` and is removed by `cleanup()`: processes
still inside are moved back to the controller's root first, then the directories are removed deepest first.
On a Proxmox host (systemd, cgroup v2) the same cap is the unit's `CPUQuota=30%` (the Ansible role sets it).
"""

from __future__ import annotations

import os
import time
from pathlib import Path

CPU_ROOT = Path("/sys/fs/cgroup/cpu")
ACCT_ROOT = Path("/sys/fs/cgroup/cpuacct")
PERIOD_US = 100_000


def available() -> bool:
    """True when both v1 controllers are mounted and writable (root on these machines)."""
    return all((root / "cgroup.procs").exists() and os.access(root / "cgroup.procs", os.W_OK)
               for root in (CPU_ROOT, ACCT_ROOT))


class Cgroups:
    def __init__(self) -> None:
        self.name = f"restic-orch-bench-{os.getpid()}"
        self.created: list[Path] = []

    def _make(self, root: Path, name: str) -> Path:
        base = root / self.name
        if not base.exists():
            base.mkdir()
            self.created.append(base)
        path = base / name
        if not path.exists():
            path.mkdir()
            self.created.append(path)
        return path

    def cpu(self, name: str, quota_us: int | None) -> Path:
        """A cpu cgroup; quota_us=None means unlimited (-1)."""
        path = self._make(CPU_ROOT, name)
        (path / "cpu.cfs_period_us").write_text(str(PERIOD_US))
        (path / "cpu.cfs_quota_us").write_text(str(quota_us if quota_us else -1))
        return path

    def acct(self, name: str) -> Path:
        return self._make(ACCT_ROOT, name)

    @staticmethod
    def move(pid: int, path: Path) -> bool:
        try:
            (path / "cgroup.procs").write_text(str(pid))
            return True
        except OSError:
            return False  # the process exited meanwhile

    def cleanup(self) -> list[str]:
        """Move leftover processes to the root group, remove every directory created; return problems."""
        problems = []
        for path in sorted(self.created, key=lambda p: -len(p.parts)):
            root = CPU_ROOT if str(path).startswith(str(CPU_ROOT)) else ACCT_ROOT
            for _ in range(50):
                pids = procs(path)
                for pid in pids:
                    self.move(pid, root)
                try:
                    path.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    time.sleep(0.1)
            else:
                problems.append(f"could not remove {path}")
        self.created = [p for p in self.created if p.exists()]
        return problems


def procs(path: Path) -> list[int]:
    try:
        return [int(x) for x in (path / "cgroup.procs").read_text().split()]
    except (FileNotFoundError, ValueError):
        return []


def usage_ns(path: Path) -> int:
    """Exact CPU time (user+system, ns) of every process that ever ran in the cpuacct group."""
    try:
        return int((path / "cpuacct.usage").read_text())
    except (FileNotFoundError, ValueError):
        return 0


def usage_split_ns(path: Path) -> tuple[int, int]:
    try:
        return int((path / "cpuacct.usage_user").read_text()), int((path / "cpuacct.usage_sys").read_text())
    except (FileNotFoundError, ValueError):
        return 0, 0


def throttling(path: Path) -> dict[str, int]:
    """cpu.stat of a cpu cgroup: periods, throttled periods, throttled time (ns)."""
    try:
        return {k: int(v) for k, v in (line.split() for line in (path / "cpu.stat").read_text().splitlines())}
    except (FileNotFoundError, ValueError):
        return {}
