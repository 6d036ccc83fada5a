"""What every lane shares: the settings, the lab's handles, and the probe that measures one command."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from . import cgroups
from . import s3 as bs3
from .sampler import Sampler, host_cpu

REPO_ROOT = Path(__file__).resolve().parent.parent
# what a homelab's operator leaves out of the container archives: a cache that rebuilds itself and the live
# database directories, which the postgres and mysql hooks already dump consistently
EXCLUDES = ("/var/cache/nginx", "/var/lib/postgresql", "/var/lib/mysql")
LAB_GROUPS = {"pve": ("pve",), "s3": ("s3", "s3proxy"), "postgres": ("postgres",), "mariadb": ("mariadb",)}
BRIEF_KEYS = ("rc", "wall", "cpu_s", "cpu_pct", "maxrss_kib", "rchar", "read_bytes", "wchar", "lab_cpu_s",
              "host_cpu_pct", "throttled")


@dataclass
class Settings:
    name: str
    ct_mib: int
    db_mib: int
    churn: float = 0.02
    pages_into: str = "data"
    cpu_percent: float = 30.0
    exclude_paths: list[str] = field(default_factory=lambda: list(EXCLUDES))
    gomaxprocs: int | None = 1
    base_dir: Path = Path("/tmp/restic-orch-bench")
    keep: bool = False
    skip: set[str] = field(default_factory=set)
    freeze_seconds: float = 2.5
    profile: bool = False
    raw_stage: str = "fresh"
    pairs: int = 5


@dataclass
class ProductLane:
    """One (a) lane: `restic-orch backup` with its own repositories, staging and state under `dir`."""

    name: str
    dir: Path
    bucket: str
    capped: bool
    config: Path


def du(path: Path) -> int:
    total = 0
    for dirpath, _dirs, files in os.walk(path):
        for name in files:
            with contextlib.suppress(FileNotFoundError):
                total += os.lstat(os.path.join(dirpath, name)).st_size
    return total


def brief(res: dict[str, Any]) -> dict[str, Any]:
    return {k: res[k] for k in BRIEF_KEYS if k in res}


def again_tag(again: int) -> str:
    """Suffix of a repeat's probe files (a run measured once has none)."""
    return f"-again{again}" if again else ""


def again_say(again: int) -> str:
    return f", again ({again})" if again else ""


class Context:
    """The bench's paths, accounting groups and lab handles; `prepare.setup` fills in the lab's part."""

    def __init__(self, settings: Settings) -> None:
        self.s = settings
        self.base = settings.base_dir / settings.name
        self.lab_dir = self.base / "lab"
        self.work = self.base / "work"
        self.ncores = os.cpu_count() or 1
        self.cg = cgroups.Cgroups() if cgroups.available() else None
        self.sampler = Sampler()
        self.py = sys.executable
        self.env = dict(os.environ, PYTHONPATH=str(REPO_ROOT))
        self.env.pop("RESTIC_REPOSITORY", None)
        self.groups: dict[str, Path] = {}
        self.date = datetime.now(UTC).date().isoformat()
        self.wall_offset = time.time() - time.monotonic()
        self.stage_root = self.work / "stage"
        # set once the lab is up (prepare.setup)
        self.pve_root = Path()
        self.s3info: dict[str, Any] = {}
        self.s3: Any = None
        self.secrets = self.lab_dir / "secrets"
        self.lanes: dict[str, ProductLane] = {}
        # the files day 2's churn touched, by kind of change (empty on day 1)
        self.touched: dict[str, set[str]] = {}

    def say(self, msg: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)

    def group(self, name: str) -> Path | None:
        if self.cg is None:
            return None
        if name not in self.groups:
            self.groups[name] = self.cg.acct(name)
            self.sampler.watch(name, self.groups[name])
        return self.groups[name]

    def cpu_of(self, name: str) -> float:
        path = self.groups.get(name)
        return cgroups.usage_ns(path) / 1e9 if path else 0.0

    def restic_env(self, repo: str, cache: Path) -> dict[str, str]:
        env = dict(self.env, RESTIC_REPOSITORY=repo, RESTIC_PASSWORD_FILE=str(self.secrets / "restic-local"),
                   RESTIC_CACHE_DIR=str(cache))
        env.update(bs3._env(bs3.lab_env_file(self.s3info)))
        if self.s.gomaxprocs:
            env["GOMAXPROCS"] = str(self.s.gomaxprocs)
        return env

    def stage_argv(self, day_dir: Path) -> list[str]:
        """bench.stage: a day staged by the product's own pre-hooks, with the uncapped lane's configuration."""
        return [self.py, "-m", "bench.stage", "--config", str(self.lanes["uncapped"].config), "--day-dir", str(day_dir)]

    def probe(self, tag: str, argv: list[str], group: str, *,
              env: dict[str, str] | None = None, cwd: Path | None = None) -> dict[str, Any]:
        """Run argv under bench.probe in the accounting group `group`; its figures, CPU from the group."""
        pdir = self.work / "probes"
        pdir.mkdir(parents=True, exist_ok=True)
        out = pdir / f"{tag}.json"
        cmd = [self.py, "-m", "bench.probe", "--out", str(out), "--stdout", str(pdir / f"{tag}.out"),
               "--stderr", str(pdir / f"{tag}.err")]
        acct = self.group(group)
        if acct:
            cmd += ["--cgroup", str(acct)]
        if cwd:
            cmd += ["--cwd", str(cwd)]
        cmd += ["--", *argv]
        lab0 = {g: self.cpu_of(f"lab-{g}") for g in LAB_GROUPS}
        cpu0 = self.cpu_of(group)
        host0 = host_cpu()[0]
        t0 = time.monotonic()
        rc = _wait(subprocess.Popen(cmd, env=env or self.env, cwd=REPO_ROOT))
        t1 = time.monotonic()
        if rc != 0 or not out.exists():
            raise RuntimeError(f"probe for {tag} failed (rc {rc})")
        res = json.loads(out.read_text())
        res.update(t0=t0, t1=t1, stdout=str(pdir / f"{tag}.out"), stderr=str(pdir / f"{tag}.err"))
        cpu = (self.cpu_of(group) - cpu0) if acct else res["user"] + res["sys"]
        res["cpu_s"] = round(cpu, 3)
        res["cpu_pct"] = round(100 * cpu / max(res["wall"], 1e-6) / self.ncores, 1)
        res["lab_cpu_s"] = {g: round(self.cpu_of(f"lab-{g}") - lab0[g], 3) for g in LAB_GROUPS}
        res["host_cpu_pct"] = round(100 * (host_cpu()[0] - host0) / max(t1 - t0, 1e-6) / self.ncores, 1)
        return res


def _wait(proc: subprocess.Popen) -> int:
    try:
        proc.wait()
    except BaseException:
        proc.terminate()  # the probe passes SIGTERM on: restic-orch stops its children and records the run
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        raise
    return proc.returncode
