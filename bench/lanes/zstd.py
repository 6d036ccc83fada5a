"""(z) vzdump compress=zstd instead of 0: the staged container tars recompressed with zstd exactly as
PVE 8 and the fake PVE do (no --rsyncable) and as PVE 7 did (--rsyncable), each into its own restic repo."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

from ..context import Context, brief, du

VARIANTS = (("zstd-rsyncable", ["--rsyncable"]), ("zstd", []))


def measure(ctx: Context, day: str, stage: Path) -> dict[str, Any]:
    return {variant: _variant(ctx, day, stage, variant, flags)
            for variant, flags in VARIANTS if variant not in ctx.s.skip}


def _variant(ctx: Context, day: str, stage: Path, variant: str, flags: list[str]) -> dict[str, Any]:
    zdir = ctx.work / variant
    tree = zdir / "tree" / stage.name
    shutil.rmtree(zdir / "tree", ignore_errors=True)
    comp = _recompress(stage, tree, flags)
    repo = zdir / "repo"
    env = ctx.restic_env(str(repo), zdir / "cache")
    if not repo.exists():
        subprocess.run(["restic", "init", "--repository-version", "2"], env=env, check=True,
                       capture_output=True)
    before = du(repo)
    ctx.say(f"{day} (z) {variant}: compress {comp['seconds']} s, restic backup")
    res = ctx.probe(f"{day}-z-{variant}", ["restic", "backup", "--json", "--host", "pve1", "--compression",
                                           "auto", str(zdir / "tree" / stage.name)], "zstd", env=env)
    after = du(repo)
    ct_bytes = sum(f.stat().st_size for f in (tree / "proxmox").glob("*.zst"))
    out = {"compress": comp, "backup": brief(res), "local_added": after - before,
           "repo_bytes": after, "container_archive_bytes": ct_bytes}
    shutil.rmtree(zdir / "tree", ignore_errors=True)
    return out


def _recompress(stage: Path, tree: Path, flags: list[str]) -> dict[str, float]:
    """The staged day into `tree`: container tars through zstd, every other file hard-linked."""
    t0 = time.monotonic()
    cpu0 = resource_children()
    for dirpath, _dirs, files in os.walk(stage):
        target = tree / os.path.relpath(dirpath, stage)
        target.mkdir(parents=True, exist_ok=True)
        for name in files:
            src = Path(dirpath) / name
            if src.parent.name == "proxmox" and name.endswith(".tar"):
                with open(target / (name + ".zst"), "wb") as fh:
                    subprocess.run(["zstd", "-q", "-c", "--threads=1", *flags, str(src)], stdout=fh, check=True)
            else:
                os.link(src, target / name)
    return {"seconds": round(time.monotonic() - t0, 2), "cpu_s": round(resource_children() - cpu0, 2)}


def resource_children() -> float:
    import resource

    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime
