"""The benchmark: lab up, day 1, churn, day 2, each for the product and its three baselines; lab down.

Per day:
  (a) `restic-orch --json backup` end to end, uncapped, and held by the product itself to
      limits.cpu_percent (30 % of the host: a cgroup quota it sets up, as a deployed run does);
      its staging tree is hard-linked away the moment manifest.json appears, so (b)-(d) and the zstd
      comparison use exactly the bytes the product backed up;
  (b) raw restic: init (day 1), then a tree staged afresh by the product's pre-hooks (untimed; --raw-stage
      copy/linked use (a)'s bytes instead), backup to a local repository, copy to S3, forget (the floor);
  (c) the naive script: tar | zstd | upload to the same S3;
  (d) borg create of the same staged tree (Debian's borgbackup, repokey-blake2, lz4);
  (z) vzdump compress=zstd instead of 0: the staged container tars recompressed with zstd exactly as
      PVE 8 and the fake PVE do (no --rsyncable) and as PVE 7 did (--rsyncable), each into its own restic repo;
  (e) restic on the containers' root filesystems directly (file level, what a ZFS-snapshot source would
      give), with the day-2 bytes split by kind of change.
Then (a) uncapped and (b) run again, s.pairs - 1 times, from a checkpoint of their repositories taken
before the day (bench/checkpoint.py), in alternating order: the overhead is judged on the pairs' median.
After day 2: a VI1 probe (CT 101 in suspend mode with a simulated freeze), (v) a VM disk's VMA on day 1
and day 2, uncompressed vs zstd (restic's day-2 deduplication of a VM), and, with --profile, one more
backup under py-spy. Last, as it destroys the lab: (r) the host-lost restore from offsite, its RTO against
the floor of raw `restic restore` plus PVE's own restores and the databases' own loads (skip: restore).

Each measured scenario is a module of bench/lanes/; this module only sequences them.
"""

from __future__ import annotations

import shutil
import signal
import sys
import time
from datetime import UTC, datetime
from typing import Any

from . import lab as blab
from . import overhead, prepare
from . import s3 as bs3
from .context import LAB_GROUPS, Context, Settings, du
from .lanes import borg, fs, naive, product, profile, raw, restore, vi1, vma, zstd
from .staged import ensure_stage, sha_seconds


class Interrupted(Exception):
    pass


def day(ctx: Context, name: str) -> dict[str, Any]:
    """One day: (a) per lane, then the baselines on the tree (a) staged, then the overhead pairs."""
    s = ctx.s
    result: dict[str, Any] = {"product": {}}
    marks = overhead.checkpoints(ctx, name) if s.pairs > 1 and "raw" not in s.skip else None
    for lane in ctx.lanes:
        result["product"][lane] = product.measure(ctx, lane, name)
    stage = ensure_stage(ctx, name, result["product"].get("uncapped"))
    result["staged_bytes"] = du(stage)
    result["sha256_seconds"] = sha_seconds(stage)
    if "raw" not in s.skip:
        result["raw"] = raw.measure(ctx, name, stage)
    if "naive" not in s.skip:
        result["naive"] = naive.measure(ctx, name, stage)
    if "borg" not in s.skip:
        result["borg"] = borg.measure(ctx, name, stage)
    result["zstd"] = zstd.measure(ctx, name, stage)  # skips its variants itself (zstd, zstd-rsyncable)
    if "fs" not in s.skip:
        result["fs"] = fs.measure(ctx, name)
    if marks:
        result["pairs"] = overhead.pairs(ctx, name, stage, marks, result)
    shutil.rmtree(stage, ignore_errors=True)
    return result


def churn(ctx: Context) -> dict[str, Any]:
    """Day 2's changes in the containers, the databases and a Terraform state; remembers the touched files."""
    ctx.say(f"churn: {ctx.s.churn:.0%} of the containers' bytes, ~{ctx.s.churn:.0%} of the rows")
    stats, ctx.touched = blab.churn_containers(ctx.pve_root, ctx.s.churn, pages_into=ctx.s.pages_into)
    out: dict[str, Any] = {"containers": stats}
    out["by_kind_of_change"] = {k: sum(c[k] for c in stats.values()) for k in ("replaced", "pages", "appended", "new")}
    out.update(blab.churn_databases(ctx.lab_dir))
    out.update(blab.churn_tfstate(ctx.lab_dir))
    out["containers_changed_bytes"] = sum(c["changed"] for c in out["containers"].values())
    out["changed_bytes"] = out["containers_changed_bytes"] + out["db_changed_bytes_est"] + out["tfstate_changed_bytes"]
    return out


def measure(ctx: Context) -> dict[str, Any]:
    """The whole benchmark on a lab it brings up; teardown() is the caller's."""
    started = time.monotonic()
    results: dict[str, Any] = {"name": ctx.s.name, "started": datetime.now(UTC).isoformat(timespec="seconds"),
                               "machine": prepare.machine_info()}
    results["lab"], results["settings"] = prepare.setup(ctx)
    results["days"] = {"day1": day(ctx, "day1")}
    results["churn"] = churn(ctx)
    results["days"]["day2"] = day(ctx, "day2")
    if "vi1" not in ctx.s.skip:
        results["vi1_suspend_probe"] = vi1.measure(ctx)
    if "vma" not in ctx.s.skip:
        results["vma"] = vma.measure(ctx)
    results["storage_after_day2"] = storage_after(ctx)
    if ctx.s.profile:
        try:
            results["profile"] = profile.measure(ctx)
        except (OSError, RuntimeError) as exc:
            results["profile"] = {"error": str(exc)}
    if "restore" not in ctx.s.skip:
        results["restore"] = restore_lane(ctx)
    results["lab_peak_rss_kib"] = {g: ctx.sampler.peak_rss(f"lab-{g}", started, time.monotonic(), total=True)
                                   for g in LAB_GROUPS} if ctx.cg else {}
    results["wall_seconds"] = round(time.monotonic() - started, 1)
    results["finished"] = datetime.now(UTC).isoformat(timespec="seconds")
    return results


def restore_lane(ctx: Context) -> dict[str, Any]:
    """(r), last: a failure there is recorded, not raised, so that the rest of a long run is kept."""
    try:
        return restore.measure(ctx)
    except Interrupted:
        raise
    except Exception as exc:  # noqa: BLE001 - whatever broke, the figures measured before it stay
        ctx.say(f"(r) restore lane failed: {type(exc).__name__}: {exc}")
        return {"error": f"{type(exc).__name__}: {exc}"}


def storage_after(ctx: Context) -> dict[str, int]:
    out = {f"orch-{name}-local": du(lane.dir / "repo") for name, lane in ctx.lanes.items()}
    out.update({f"orch-{name}-offsite": bs3.bucket_bytes(ctx.s3, lane.bucket)[0] for name, lane in ctx.lanes.items()})
    for name, path in (("raw-local", ctx.work / "raw" / "repo"), ("borg", ctx.work / "borg" / "repo"),
                       ("zstd-rsyncable", ctx.work / "zstd-rsyncable" / "repo"),
                       ("zstd", ctx.work / "zstd" / "repo")):
        if path.exists():
            out[name] = du(path)
    out["raw-offsite"] = bs3.bucket_bytes(ctx.s3, raw.BUCKET)[0]
    return out


def teardown(ctx: Context) -> list[str]:
    problems = []
    ctx.sampler.stop()
    if not ctx.s.keep:
        try:
            stopped = blab.down(ctx.lab_dir)
            ctx.say(f"lab down: {', '.join(stopped) or 'nothing running'}")
        except Exception as exc:  # noqa: BLE001
            problems.append(f"lab down: {exc}")
    if ctx.cg:
        problems += ctx.cg.cleanup()
    if not ctx.s.keep and ctx.base.exists():
        shutil.rmtree(ctx.base, ignore_errors=True)
    return problems


def run(settings: Settings) -> dict[str, Any]:
    ctx = Context(settings)

    def on_signal(signum: int, _frame: object) -> None:
        raise Interrupted(signal.Signals(signum).name)

    old = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        return measure(ctx)
    finally:
        problems = teardown(ctx)
        for sig, handler in old.items():
            signal.signal(sig, handler)
        if problems:
            print("clean-up problems: " + "; ".join(problems), file=sys.stderr)
