"""(b) raw restic, the floor: init (day 1), then a tree staged afresh by the product's pre-hooks (untimed;
--raw-stage copy/linked use (a)'s bytes instead), backup to a local repository, copy to S3, forget; each
at the priority the product gives its restic children."""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .. import lab as blab
from .. import s3 as bs3
from ..context import Context, again_say, again_tag, brief, du

BUCKET = "bench-raw"


@dataclass
class _Repos:
    """Raw restic's local repository and its S3 copy, with the environment and argv prefix to reach them."""

    dir: Path
    local: str
    opts: list[str]
    lenv: dict[str, str]
    oenv: dict[str, str]
    rx: list[str]


def _repos(ctx: Context) -> _Repos:
    rdir = ctx.work / "raw"
    local, cache = str(rdir / "repo"), rdir / "cache"
    offsite = f"s3:{ctx.s3info['endpoint']}/{BUCKET}"
    rx = [*blab.PRIORITY, "restic"]  # the product's nice/ionice, see blab.PRIORITY
    return _Repos(rdir, local, ["-o", "s3.bucket-lookup=path"], ctx.restic_env(local, cache),
                  ctx.restic_env(offsite, cache), rx)


def measure(ctx: Context, day: str, stage: Path, again: int = 0) -> dict[str, Any]:
    """One (b): init on day 1, the tree to back up, then backup, copy and forget."""
    init = _init(ctx, day, again)
    tree, how = _tree(ctx, day, stage, again)
    out = _backup_copy_forget(ctx, day, tree, again, init)
    out["stage"] = how
    if tree != stage:
        shutil.rmtree(tree.parent, ignore_errors=True)
    return out


def _tree(ctx: Context, day: str, stage: Path, again: int = 0) -> tuple[Path, dict[str, Any]]:
    """The tree (b) backs up. (a)'s restic starts on files its pre-hooks wrote seconds before: their
    write-back to disk and the database servers' after-dump work run beside it. A floor measured on a
    tree written minutes earlier (`linked`, the hard links of (a)'s staging) misses that cost, which a
    raw-restic user's script pays too, since it dumps first. `fresh` (default) runs the product's own
    pre-hooks again just before (b) (bench.stage, untimed), `copy` rewrites (a)'s bytes into new files
    (the write-back without the database servers' work)."""
    how: dict[str, Any] = {"mode": ctx.s.raw_stage}
    if ctx.s.raw_stage == "linked":
        return stage, how
    tree = ctx.work / "raw-stage" / ctx.date
    shutil.rmtree(tree.parent, ignore_errors=True)
    t0 = time.monotonic()
    if ctx.s.raw_stage == "copy":
        shutil.copytree(stage, tree)
    else:
        ctx.say(f"{day} (b) staging afresh with the product's pre-hooks (bench.stage), untimed")
        ctx.probe(f"{day}-b-stage" + again_tag(again), ctx.stage_argv(tree), "stage")
    how.update(seconds=round(time.monotonic() - t0, 1), bytes=du(tree), bytes_of_a=du(stage))
    return tree, how


def _init(ctx: Context, day: str, again: int = 0) -> dict[str, Any]:
    """Day 1: a raw-restic user creates the repositories, as the product does in its preflight, i.e.
    before the dumps (so that neither side gets the seconds of init between its dumps and its backup)."""
    r = _repos(ctx)
    if (r.dir / "repo").exists():
        return {}
    rep_tag = again_tag(again)
    ctx.say(f"{day} (b) raw restic: init" + again_say(again))
    r.dir.mkdir(parents=True, exist_ok=True)
    steps = {"init-local": brief(ctx.probe(f"{day}-b-init-local{rep_tag}",
                                           [*r.rx, "init", "--repository-version", "2"], "raw", env=r.lenv))}
    steps["init-offsite"] = brief(ctx.probe(
        f"{day}-b-init-offsite{rep_tag}", [*r.rx, *r.opts, "init", "--repository-version", "2",
                                           "--copy-chunker-params", "--from-repo", r.local,
                                           "--from-password-file", str(ctx.secrets / "restic-local")],
        "raw", env=r.oenv))
    return steps


def _backup_copy_forget(ctx: Context, day: str, stage: Path, again: int,
                        init_steps: dict[str, Any]) -> dict[str, Any]:
    """backup, copy, forget on a repository _init made ready; its init steps count in the total."""
    r = _repos(ctx)
    rep_tag = again_tag(again)
    steps = dict(init_steps)
    ctx.say(f"{day} (b) raw restic: backup, copy, forget" + again_say(again))
    local0, s3_0 = du(r.dir / "repo"), bs3.bucket_bytes(ctx.s3, BUCKET)[0]
    steps["backup"] = _backup(ctx, r, f"{day}-b-backup{rep_tag}", stage)
    local1 = du(r.dir / "repo")
    steps["backup"]["local_added"] = local1 - local0
    res = ctx.probe(f"{day}-b-copy{rep_tag}", [*r.rx, *r.opts, "copy", "--from-repo", r.local, "--from-password-file",
                                               str(ctx.secrets / "restic-local")], "raw", env=r.oenv)
    s3_1 = bs3.bucket_bytes(ctx.s3, BUCKET)[0]
    steps["copy"] = brief(res) | {"s3_uploaded": s3_1 - s3_0}
    for name, env in (("forget-local", r.lenv), ("forget-offsite", r.oenv)):
        res = ctx.probe(f"{day}-b-{name}{rep_tag}", [*r.rx, *r.opts, "forget", "--json", "--host", "pve1", "--tag",
                                                     "bench", "--group-by", "host", "--keep-within", "7d"],
                        "raw", env=env)
        steps[name] = brief(res)
    total = _total(ctx, steps)
    ctx.say(f"   {total['wall']:.1f} s, CPU {total['cpu_pct']} %, local +{(local1 - local0) / 2**20:.1f} MiB, "
            f"offsite +{(s3_1 - s3_0) / 2**20:.1f} MiB")
    return {"steps": steps, **total, "local_added": local1 - local0, "offsite_added": s3_1 - s3_0}


def _backup(ctx: Context, r: _Repos, tag: str, stage: Path) -> dict[str, Any]:
    """`restic backup -vv` of the tree, with the new bytes split by staged kind."""
    res = ctx.probe(tag, [*r.rx, "backup", "--json", "-vv", "--host", "pve1", "--compression",
                          "auto", "--tag", "bench", str(stage)], "raw", env=r.lenv)
    step = brief(res)
    added_by: dict[str, int] = {}
    new_by: dict[str, int] = {}
    for line in Path(res["stdout"]).read_text().splitlines():
        if '"summary"' in line:
            item = json.loads(line)
            step["data_added"] = item.get("data_added")
            step["restic_total_duration"] = item.get("total_duration")
        elif '"verbose_status"' in line:
            item = json.loads(line)
            rel = Path(item["item"]).relative_to(stage) if item["item"].startswith(str(stage) + "/") else None
            if rel is None or not item.get("data_size"):
                continue
            key = _kind_key(rel)
            added_by[key] = added_by.get(key, 0) + int(item.get("data_size_in_repo") or 0)
            new_by[key] = new_by.get(key, 0) + int(item["data_size"])
    step["added_by_kind"] = added_by  # new blobs, as stored (compressed)
    step["new_by_kind"] = new_by  # new blobs, uncompressed
    step["size_by_kind"] = size_by_kind(stage)
    return step


def _total(ctx: Context, steps: dict[str, Any]) -> dict[str, Any]:
    total = {k: round(sum(s[k] for s in steps.values()), 3) for k in ("wall", "cpu_s")}
    total["cpu_pct"] = round(100 * total["cpu_s"] / total["wall"] / ctx.ncores, 1)
    total["maxrss_kib"] = max(s["maxrss_kib"] for s in steps.values())
    total["rchar"] = sum(s["rchar"] for s in steps.values())
    return total


def _kind_key(rel: Path) -> str:
    if rel.parts[0] == "proxmox":
        return "proxmox/" + rel.name.split("-")[2] if rel.name.startswith("vzdump-") else "proxmox/log"
    return rel.parts[0]


def size_by_kind(stage: Path) -> dict[str, int]:
    out: dict[str, int] = {}
    for dirpath, _dirs, files in os.walk(stage):
        for name in files:
            path = Path(dirpath) / name
            key = _kind_key(path.relative_to(stage))
            out[key] = out.get(key, 0) + path.stat().st_size
    return out
