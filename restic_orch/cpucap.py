"""The CPU budget (VI2: under 30 % of the host) enforced by the kernel's CPU controller, not by nice.

nice and ionice only reorder work: restic and pg_dump still keep a core busy each. A cgroup quota caps
the whole process tree (every dump and restic child inherits it). When the run already sits in a cgroup
with a quota at least as strict (the role's systemd unit sets CPUQuota=), nothing is done. Otherwise, as
root, the process moves itself into a cgroup of its own: cgroup v2 `cpu.max`, or the v1 `cpu` controller
(`cpu.cfs_quota_us`); it moves back and removes that cgroup at exit. Without either, the run goes on
uncapped and says so in its summary.
"""

from __future__ import annotations

import atexit
import logging
import os
from dataclasses import asdict, dataclass
from pathlib import Path

log = logging.getLogger(__name__)

CGROUP_ROOT = Path("/sys/fs/cgroup")
PERIOD_US = 100_000
PREFIX = "restic-orch-"


@dataclass
class CapResult:
    requested_percent: float | None   # of the whole host (all cores), as configured
    cores: float | None               # the quota now in force, in cores (None: no quota)
    method: str                       # cgroup2 | cgroup1 | inherited | off | unavailable
    detail: str = ""
    cgroup: str = ""

    def to_json(self) -> dict[str, object]:
        data = asdict(self)
        data["host_cores"] = host_cores()
        data["percent_of_host"] = round(100 * self.cores / host_cores(), 1) if self.cores else None
        return data


_current: CapResult = CapResult(None, None, "off", "no CPU cap requested")


def current() -> CapResult:
    return _current


def host_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def _membership(proc_cgroup: str = "/proc/self/cgroup") -> tuple[str | None, str | None]:
    """(v2 path, v1 cpu path) of this process, from /proc/self/cgroup."""
    v2 = v1 = None
    for line in Path(proc_cgroup).read_text().splitlines():
        hier, controllers, path = line.split(":", 2)
        if hier == "0" and controllers == "":
            v2 = path
        elif "cpu" in controllers.split(","):
            v1 = path
    return v2, v1


def _v1_dir() -> Path | None:
    for name in ("cpu", "cpu,cpuacct", "cpuacct,cpu"):
        if (CGROUP_ROOT / name / "cpu.cfs_quota_us").exists():
            return CGROUP_ROOT / name
    return None


def _v2_has_cpu() -> bool:
    try:
        return "cpu" in (CGROUP_ROOT / "cgroup.controllers").read_text().split()
    except OSError:
        return False


def _quota_of(directory: Path) -> float | None:
    """Cores allowed by this one cgroup (v2 cpu.max or v1 cfs quota), None when unlimited."""
    try:
        if (directory / "cpu.max").exists():
            quota, period = (directory / "cpu.max").read_text().split()
            return None if quota == "max" else int(quota) / int(period)
        quota_us = int((directory / "cpu.cfs_quota_us").read_text())
        period_us = int((directory / "cpu.cfs_period_us").read_text())
        return None if quota_us < 0 else quota_us / period_us
    except (OSError, ValueError):
        return None


def effective_quota() -> float | None:
    """The strictest quota over this process's cgroup and its ancestors, in cores."""
    v2, v1 = _membership()
    found: list[float] = []
    for base, rel in ((CGROUP_ROOT if _v2_has_cpu() else None, v2), (_v1_dir(), v1)):
        if base is None or rel is None:
            continue
        directory = base / rel.lstrip("/")
        while True:
            quota = _quota_of(directory)
            if quota is not None:
                found.append(quota)
            if directory == base:
                break
            directory = directory.parent
    return min(found) if found else None


def _sweep(parent: Path) -> None:
    """Remove the empty cgroups of runs that were killed before they could remove their own."""
    for child in parent.glob(PREFIX + "*"):
        pid = child.name[len(PREFIX):]
        if pid.isdigit() and not Path(f"/proc/{pid}").exists():
            try:
                child.rmdir()
            except OSError:
                pass  # still has processes: not ours to judge


def _join(directory: Path, back_to: Path) -> None:
    (directory / "cgroup.procs").write_text(f"{os.getpid()}\n")

    def leave() -> None:
        try:
            (back_to / "cgroup.procs").write_text(f"{os.getpid()}\n")
            directory.rmdir()
        except OSError as exc:
            log.warning("could not remove the run's CPU cgroup", extra={"cgroup": str(directory), "error": str(exc)})

    atexit.register(leave)


def _cap_v2(cores: float) -> CapResult:
    v2, _ = _membership()
    parent = CGROUP_ROOT / "restic-orch"
    parent.mkdir(exist_ok=True)
    # a cgroup distributes cpu to its children only when its parent enables it for them
    for level in (CGROUP_ROOT, parent):
        if "cpu" not in (level / "cgroup.subtree_control").read_text().split():
            (level / "cgroup.subtree_control").write_text("+cpu\n")
    _sweep(parent)
    directory = parent / f"{PREFIX}{os.getpid()}"
    directory.mkdir(exist_ok=True)
    (directory / "cpu.max").write_text(f"{int(cores * PERIOD_US)} {PERIOD_US}\n")
    _join(directory, CGROUP_ROOT / (v2 or "/").lstrip("/"))
    return CapResult(None, cores, "cgroup2", "cpu.max", str(directory))


def _cap_v1(base: Path, cores: float) -> CapResult:
    _, v1 = _membership()
    _sweep(base)
    directory = base / f"{PREFIX}{os.getpid()}"
    directory.mkdir(exist_ok=True)
    (directory / "cpu.cfs_period_us").write_text(f"{PERIOD_US}\n")
    (directory / "cpu.cfs_quota_us").write_text(f"{int(cores * PERIOD_US)}\n")
    _join(directory, base / (v1 or "/").lstrip("/"))
    return CapResult(None, cores, "cgroup1", "cpu.cfs_quota_us", str(directory))


def apply(percent: float | None) -> CapResult:
    """Hold this process and every child it starts to `percent` of the host's CPU (all cores together)."""
    global _current
    if percent is None:
        _current = CapResult(None, effective_quota(), "off", "limits.cpu_percent is null")
        return _current
    cores = round(percent / 100 * host_cores(), 3)
    inherited = effective_quota()
    if inherited is not None and inherited <= cores * 1.001:
        _current = CapResult(percent, inherited, "inherited", "already under a quota at least this strict")
        return _current
    base_v1 = _v1_dir()
    try:
        if _v2_has_cpu():
            result = _cap_v2(cores)
        elif base_v1 is not None:
            result = _cap_v1(base_v1, cores)
        else:
            result = CapResult(None, inherited, "unavailable", "no cgroup CPU controller is mounted")
    except OSError as exc:
        reason = "needs root" if isinstance(exc, PermissionError) or os.geteuid() != 0 else str(exc)
        result = CapResult(None, inherited, "unavailable", f"cannot create a CPU cgroup ({reason})")
    result.requested_percent = percent
    _current = result
    if result.method == "unavailable":
        log.warning("CPU cap not enforced", extra={"detail": result.detail, "percent": percent})
    return result
