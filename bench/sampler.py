"""A background sampler (4 Hz) of cpuacct groups and the processes inside them, for per-phase figures.

Per group and sample: exact cumulative CPU (cpuacct.usage), the largest and the summed RSS of the live
processes, and a cumulative count of bytes read (rchar deltas of live processes; a process that exits
between two samples loses at most its last 0.25 s; per-thread counters, so a reaped child's I/O is
not counted again in its parent). The host's /proc/stat busy time is sampled too, so
CPU used by other tenants of the machine shows up.
"""

from __future__ import annotations

import bisect
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from . import cgroups

CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")


def host_cpu() -> tuple[float, float]:
    """(busy seconds, total seconds) summed over all CPUs since boot."""
    with open("/proc/stat") as fh:
        fields = [int(x) for x in fh.readline().split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    total = sum(fields[:8])
    return (total - idle) / CLK_TCK, total / CLK_TCK


def _rss_kib(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/statm") as fh:
            return int(fh.read().split()[1]) * PAGE // 1024
    except (OSError, ValueError, IndexError):
        return 0


def _thread_rchar(pid: int) -> dict[int, int]:
    """rchar per thread. The per-process /proc/PID/io also holds the I/O of reaped children, which were
    already counted while they lived; the per-thread files hold the thread's own I/O only."""
    out = {}
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return out
    for tid in tids:
        try:
            with open(f"/proc/{pid}/task/{tid}/io") as fh:
                for line in fh:
                    if line.startswith("rchar:"):
                        out[int(tid)] = int(line.split()[1])
                        break
        except (OSError, ValueError):
            continue
    return out


@dataclass
class Series:
    t: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)       # cumulative CPU seconds
    rss_max: list[int] = field(default_factory=list)     # KiB, largest single process
    rss_sum: list[int] = field(default_factory=list)     # KiB, all processes of the group
    read: list[int] = field(default_factory=list)        # cumulative bytes read (sampled)


class Sampler:
    def __init__(self, interval: float = 0.25) -> None:
        self.interval = interval
        self.groups: dict[str, Path] = {}
        self.series: dict[str, Series] = {}
        self.host = Series()
        self._last_rchar: dict[tuple[str, int], int] = {}
        self._read_total: dict[str, int] = {}
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def watch(self, name: str, acct_path: Path) -> None:
        with self._lock:
            self.groups[name] = acct_path
            self.series.setdefault(name, Series())
            self._read_total.setdefault(name, 0)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="bench-sampler", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=5)

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(self.interval)

    def sample(self) -> None:
        now = time.monotonic()
        busy, _total = host_cpu()
        with self._lock:
            self.host.t.append(now)
            self.host.cpu.append(busy)
            for name, path in self.groups.items():
                s = self.series[name]
                pids = cgroups.procs(path)
                rss = [_rss_kib(pid) for pid in pids]
                for pid in pids:
                    for tid, value in _thread_rchar(pid).items():
                        last = self._last_rchar.get((name, tid), 0)
                        if value >= last:
                            self._read_total[name] += value - last
                        self._last_rchar[(name, tid)] = value
                s.t.append(now)
                s.cpu.append(cgroups.usage_ns(path) / 1e9)
                s.rss_max.append(max(rss, default=0))
                s.rss_sum.append(sum(rss))
                s.read.append(self._read_total[name])

    # --- queries over a window [t0, t1] (monotonic seconds) -------------------------------------
    @staticmethod
    def _at(t: list[float], v: list[float], when: float) -> float:
        if not t:
            return 0.0
        i = bisect.bisect_left(t, when)
        if i <= 0:
            return v[0]
        if i >= len(t):
            return v[-1]
        t0, t1 = t[i - 1], t[i]
        frac = (when - t0) / (t1 - t0) if t1 > t0 else 0.0
        return v[i - 1] + (v[i] - v[i - 1]) * frac

    def cpu_between(self, name: str, t0: float, t1: float) -> float:
        with self._lock:
            s = self.host if name == "host" else self.series.get(name)
            if s is None:
                return 0.0
            return max(0.0, self._at(s.t, s.cpu, t1) - self._at(s.t, s.cpu, t0))

    def read_between(self, name: str, t0: float, t1: float) -> int:
        with self._lock:
            s = self.series.get(name)
            if s is None:
                return 0
            return int(max(0.0, self._at(s.t, s.read, t1 + self.interval) - self._at(s.t, s.read, t0)))

    def peak_rss(self, name: str, t0: float, t1: float, total: bool = False) -> int:
        with self._lock:
            s = self.series.get(name)
            if s is None:
                return 0
            values = s.rss_sum if total else s.rss_max
            picked = [v for t, v in zip(s.t, values, strict=True) if t0 - self.interval <= t <= t1 + self.interval]
            return max(picked, default=0)
