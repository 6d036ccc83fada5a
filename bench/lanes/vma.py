"""(v) A VM's disk, day 1 then day 2, as vzdump writes it: an uncompressed VMA (compress 0, the product's
default) against the same archive through zstd (PVE 8's compress=zstd), each backed up by restic into its
own repository. Day 2 rewrites `churn` of the disk's 64 KiB clusters in place, in 1 MiB runs at random places, as a
guest writing files does. The figure that matters: what day 2 adds to each repository.

The archive is the fake PVE's VMA writer (restic_orch/lab/pve/vma.py, the layout of pve-qemu's
vma_spec.txt), the disk the seeded VM's content model (vms.write_disk), restic the real binary.
"""

from __future__ import annotations

import random
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

from restic_orch.lab.pve import vma as fake_vma
from restic_orch.lab.pve import vms as fake_vms

from ..context import Context, brief, du

VARIANTS = ("vma", "vma.zst")
RUN_CLUSTERS = 16  # 1 MiB: one changed file's extent
CONFIG = b"name: haos\nmemory: 2048\ncores: 2\nscsi0: local-zfs:vm-200-disk-0,size=%dM\n"


def measure(ctx: Context) -> dict[str, Any]:
    """Both days for both variants; the disk's size is the bench's container size (ct_mib)."""
    work = ctx.work / "vma"
    shutil.rmtree(work, ignore_errors=True)
    disk = work / "vm-200-disk-0.raw"
    size = ctx.s.ct_mib * 1024 * 1024
    fake_vms.write_disk(disk, size, "bench-vm")
    out: dict[str, Any] = {"disk_bytes": size, "churn": ctx.s.churn, "days": {}}
    for day in ("day1", "day2"):
        if day == "day2":
            out["changed_bytes"] = rewrite_clusters(disk, ctx.s.churn)
        out["days"][day] = {variant: _day(ctx, work, disk, day, variant) for variant in VARIANTS}
    shutil.rmtree(work, ignore_errors=True)
    return out


def rewrite_clusters(disk: Path, fraction: float, seed: int = 7, run: int = RUN_CLUSTERS) -> int:
    """Day 2's guest writes: `fraction` of the clusters get new bytes in place, in runs of `run` clusters
    (a file system writes a changed file's extents together), the runs at random places."""
    rng = random.Random(seed)
    clusters = disk.stat().st_size // fake_vma.CLUSTER_SIZE
    starts = rng.sample(range(0, clusters - run + 1, run), max(1, round(clusters * fraction / run)))
    with disk.open("r+b") as fh:
        for start in starts:
            fh.seek(start * fake_vma.CLUSTER_SIZE)
            fh.write(rng.randbytes(run * fake_vma.CLUSTER_SIZE))
    return len(starts) * run * fake_vma.CLUSTER_SIZE


def _day(ctx: Context, work: Path, disk: Path, day: str, variant: str) -> dict[str, Any]:
    tree = work / variant / "tree"
    shutil.rmtree(tree, ignore_errors=True)
    tree.mkdir(parents=True)
    archive = tree / f"vzdump-qemu-200.{variant}"
    t0 = time.monotonic()
    _write_archive(disk, archive, compressed=variant.endswith(".zst"))
    written = round(time.monotonic() - t0, 2)
    repo = work / variant / "repo"
    env = ctx.restic_env(str(repo), work / variant / "cache")
    if not repo.exists():
        subprocess.run(["restic", "init", "--repository-version", "2"], env=env, check=True, capture_output=True)
    before = du(repo)
    ctx.say(f"{day} (v) {variant}: archive written in {written} s, restic backup")
    res = ctx.probe(f"{day}-v-{variant}", ["restic", "backup", "--json", "--host", "pve1", "--compression",
                                           "auto", str(tree)], "vma", env=env)
    after = du(repo)
    out = {"archive_bytes": archive.stat().st_size, "archive_seconds": written, "backup": brief(res),
           "local_added": after - before, "repo_bytes": after}
    shutil.rmtree(tree, ignore_errors=True)
    return out


def _write_archive(disk: Path, archive: Path, *, compressed: bool) -> None:
    """The VMA as vzdump streams it; with zstd, through the zstd binary as vzdump pipes it (no --rsyncable)."""
    config = CONFIG % (disk.stat().st_size // (1024 * 1024))
    if not compressed:
        with archive.open("wb") as out:
            fake_vma.write_vma(out, [("qemu-server.conf", config)], [("drive-scsi0", disk)])
        return
    with archive.open("wb") as out:
        proc = subprocess.Popen(["zstd", "-q", "-c", "--threads=1"], stdin=subprocess.PIPE, stdout=out)
        assert proc.stdin is not None
        fake_vma.write_vma(proc.stdin, [("qemu-server.conf", config)], [("drive-scsi0", disk)])
        proc.stdin.close()
        if proc.wait() != 0:
            raise RuntimeError(f"zstd exited {proc.returncode}")
