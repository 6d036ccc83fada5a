"""The overhead, measured more than once: each day's (a) uncapped and (b) again from a checkpoint of their
repositories taken before the day (bench/checkpoint.py), in alternating order; judged on the pairs' median."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from . import report
from .checkpoint import Checkpoint
from .context import Context
from .lanes import product, raw


def checkpoints(ctx: Context, day: str) -> dict[str, Checkpoint]:
    """The uncapped lane and raw restic as they are before the day, so the day's (a) and (b) can run again."""
    lane = ctx.lanes["uncapped"]
    marks = {"a": Checkpoint(ctx.work / "checkpoints" / "a", linked=[lane.dir / "repo"],
                             copied=[lane.dir / "state"], bucket=lane.bucket),
             "b": Checkpoint(ctx.work / "checkpoints" / "b", linked=[ctx.work / "raw" / "repo"],
                             copied=[ctx.work / "raw" / "cache"], bucket=raw.BUCKET)}
    ctx.say(f"{day} checkpoint of the uncapped lane and of raw restic (to run the day's pair again)")
    return {who: mark.take(ctx.s3) for who, mark in marks.items()}


def pairs(ctx: Context, day: str, stage: Path, marks: dict[str, Checkpoint],
          result: dict[str, Any]) -> list[dict[str, Any]]:
    """The day's (a) uncapped and (b) again, s.pairs - 1 more times, each from the checkpoint and in
    alternating order ((b) first on odd repeats), so that drift of the shared host over the minutes of
    a bench lands on both sides. The first pair is the day's main one."""
    sha = result.get("sha256_seconds", 0.0)
    samples = [pair_sample("main", "ab", result["product"]["uncapped"], result["raw"], sha)]
    for again in range(1, ctx.s.pairs):
        order = "ba" if again % 2 else "ab"
        runs: dict[str, dict[str, Any]] = {}
        for who in order:
            marks[who].restore(ctx.s3)
            runs[who] = (product.measure(ctx, "uncapped", day, again) if who == "a"
                         else raw.measure(ctx, day, stage, again))
        samples.append(pair_sample(f"again {again}", order, runs["a"], runs["b"], sha))
        ctx.say(f"   pair {again + 1} ({order}): overhead {samples[-1]['overhead_pct']} %"
                + ("" if samples[-1]["ok"] else " (a run failed: not counted)"))
    for mark in marks.values():
        mark.drop()
    return samples


def pair_sample(label: str, order: str, a: dict[str, Any], b: dict[str, Any], sha: float) -> dict[str, Any]:
    ov = report.overhead_of(a, b, sha) or {}
    # a failed or partial run is usually a shorter one: it must not pull the median down
    ok = a.get("status") == "success" and all(step.get("rc") == 0 for step in b["steps"].values())
    return {"label": label, "order": order, "ok": ok, "a_status": a.get("status"), **ov,
            "a_backup": next((p["seconds"] for p in a["phases"] if p["name"] == "backup:local"), None),
            "b_backup": b["steps"]["backup"]["wall"],
            "a_restic_own": (a.get("restic_total_duration") or {}).get("local"),
            "b_restic_own": b["steps"]["backup"].get("restic_total_duration"),
            "breakdown": report.breakdown_of(a, b, sha)}
