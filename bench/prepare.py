"""Before the first day: the machine's description, the lab up and accounted for, the product's lanes."""

from __future__ import annotations

import contextlib
import os
import platform
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

from . import lab as blab
from . import s3 as bs3
from .context import LAB_GROUPS, Context, ProductLane

# lane -> its offsite bucket; the capped lane holds itself to its budget (limits.cpu_percent), as a deployed run does
LANE_BUCKETS = {"uncapped": "bench-orch-uncapped", "capped": "bench-orch-capped"}


def _tool_version(argv: list[str]) -> str:
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=30)
        return (out.stdout or out.stderr).strip().splitlines()[0]
    except (OSError, IndexError, subprocess.SubprocessError):
        return "?"


def machine_info() -> dict[str, Any]:
    model = "?"
    with open("/proc/cpuinfo") as fh:
        for line in fh:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    mem = 0
    with open("/proc/meminfo") as fh:
        for line in fh:
            if line.startswith("MemTotal:"):
                mem = int(line.split()[1]) * 1024
    return {
        "nproc": os.cpu_count(), "memory_bytes": mem, "cpu_model": model, "kernel": platform.release(),
        "restic": _tool_version(["restic", "version"]), "borg": _tool_version(["borg", "--version"]),
        "zstd": _tool_version(["zstd", "--version"]), "python": platform.python_version(),
        "loadavg_at_start": os.getloadavg(),
    }


def setup(ctx: Context) -> tuple[dict[str, Any], dict[str, Any]]:
    """A clean work tree, the lab up and its services in their accounting groups, the lanes' configurations.
    Returns the results' `lab` and `settings` entries."""
    s = ctx.s
    if ctx.base.exists():
        with contextlib.suppress(Exception):
            blab.down(ctx.lab_dir)
        shutil.rmtree(ctx.base)
    ctx.base.mkdir(parents=True)
    os.chmod(s.base_dir, 0o755)  # noqa: S103
    ctx.sampler.start()
    ctx.say(f"lab up: 4 x {s.ct_mib} MiB containers, ~{s.db_mib} MiB of databases "
            f"(db_scale {blab.db_scale_for(s.db_mib)}) in {ctx.lab_dir}")
    t0 = time.monotonic()
    blab.up(ctx.lab_dir, s.ct_mib, s.db_mib)
    lab = {"setup_seconds": round(time.monotonic() - t0, 1), "db_scale": blab.db_scale_for(s.db_mib)}
    ctx.say(f"lab ready in {lab['setup_seconds']} s")
    _account_lab(ctx)
    st = blab.state(ctx.lab_dir)
    ctx.pve_root = Path(st["services"]["pve"]["root"])
    lab.update(containers=blab.container_bytes(ctx.pve_root), databases=blab.db_sizes(ctx.lab_dir))
    ctx.s3info = blab.s3_info(ctx.lab_dir)
    ctx.s3 = bs3.client(ctx.s3info["endpoint"], bs3.lab_env_file(ctx.s3info))
    ctx.secrets = ctx.lab_dir / "secrets"
    ctx.lanes = _product_lanes(ctx)
    return lab, _settings_row(ctx)


def _account_lab(ctx: Context) -> None:
    """Each lab service's process tree into its own cpuacct group: the work done for a backup outside it."""
    if not ctx.cg:
        return
    for gname, services in LAB_GROUPS.items():
        path = ctx.group(f"lab-{gname}")
        for svc in services:
            pid = blab.service_pids(ctx.lab_dir).get(svc)
            if pid:
                for p in blab.descendants(pid):
                    ctx.cg.move(p, path)


def _product_lanes(ctx: Context) -> dict[str, ProductLane]:
    s = ctx.s
    proxmox = {"exclude_paths": {"all": s.exclude_paths}} if s.exclude_paths else {}
    lanes = {}
    for lane, bucket in LANE_BUCKETS.items():
        if lane == "capped" and ("capped" in s.skip or not ctx.cg):
            continue
        ldir = ctx.work / lane
        config = blab.lane_config(ctx.lab_dir, ldir, offsite_bucket=bucket, gomaxprocs=s.gomaxprocs,
                                  cpu_percent=s.cpu_percent if lane == "capped" else None, proxmox=proxmox)
        lanes[lane] = ProductLane(name=lane, dir=ldir, bucket=bucket, capped=lane == "capped", config=config)
    return lanes


def _settings_row(ctx: Context) -> dict[str, Any]:
    s = ctx.s
    return {
        "ct_mib": s.ct_mib, "db_mib": s.db_mib, "churn": s.churn,
        "churn_pages_into": s.pages_into,
        "cpu_percent": s.cpu_percent, "exclude_paths": s.exclude_paths,
        "gomaxprocs": s.gomaxprocs, "restic_compression": "auto", "vzdump_compress": "0",
        "cgroups": bool(ctx.cg), "skip": sorted(s.skip), "raw_stage": s.raw_stage,
        "overhead_pairs": s.pairs,
    }
