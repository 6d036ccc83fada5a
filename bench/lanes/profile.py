"""py-spy profile of one more (unmeasured) restic-orch backup, with --profile."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from ..context import Context

RATE = 100


def measure(ctx: Context) -> dict[str, Any]:
    pyspy = shutil.which("py-spy") or str(Path(ctx.py).parent / "py-spy")
    if not Path(pyspy).exists():
        return {"error": "py-spy not installed (pip install py-spy into the venv)"}
    lane = ctx.lanes["uncapped"]
    exe = Path(ctx.py).parent / "restic-orch"
    raw = ctx.work / "profile.txt"
    ctx.say("profile: one more restic-orch backup under py-spy (--idle, 100 Hz)")
    res = ctx.probe("profile", [pyspy, "record", "--idle", "--nonblocking", "--rate", str(RATE), "--format", "raw",
                                "-o", str(raw), "--", str(exe), "--config", str(lane.config), "--json",
                                "backup"], "profile")
    lines = Path(res["stdout"]).read_text().splitlines()  # py-spy's own messages surround the JSON
    try:
        summary = json.loads("\n".join(lines[lines.index("{"):len(lines) - lines[::-1].index("}")]))
    except ValueError:
        summary = {"phases": [], "status": "unreadable output"}
    return {"wall": res["wall"], "status": summary.get("status"), "rate_hz": RATE,
            "phases": {p["name"]: p["seconds"] for p in summary["phases"]},
            "categories": profile_categories(raw.read_text() if raw.exists() else "", RATE),
            "top_stacks": top_stacks(raw.read_text() if raw.exists() else "")}


def profile_categories(raw: str, rate: int) -> list[dict[str, Any]]:
    """Wall time of the product's main thread by what it was doing (py-spy --idle collapsed stacks; the
    background threads that only drain pipes are left out)."""
    cats: dict[str, int] = {}
    for line in raw.splitlines():
        stack, _, count = line.rpartition(" ")
        frames = stack.split(";")
        if not count.isdigit() or not frames[0].startswith("<module>"):
            continue
        cat = _category(stack, frames)
        cats[cat] = cats.get(cat, 0) + int(count)
    return [{"what": k, "seconds": round(v / rate, 2)} for k, v in sorted(cats.items(), key=lambda kv: -kv[1])[:15]]


def _category(stack: str, frames: list[str]) -> str:
    leaf = frames[-1]
    if "sha256_file" in stack:
        return "sha256 of staged artifacts (hooks/base.py sha256_file)"
    if leaf.startswith("ProxmoxHook.wait_task ") or leaf.startswith("wait_task "):
        return "sleeping between PVE task status polls (hooks/proxmox.py wait_task)"
    if "wait_task" in stack:
        return "PVE task status/log API calls (wait_task)"
    if "_find_and_load" in stack:
        return "Python imports"
    if "runner.py" in stack and ("communicate" in stack or "wait (" in stack or "_wait" in stack):
        caller = next((f.split(" (")[0] for f in reversed(frames)
                       if ("restic_orch/" in f or "hooks/" in f) and "runner.py" not in f
                       and not f.startswith("Repo._run ")), "?")
        return f"waiting for a child command, called from {caller}()"
    name, _, where = leaf.partition(" (")
    return f"{name} ({where.rsplit('/', 1)[-1]}"


def top_stacks(raw: str, n: int = 25) -> list[str]:
    rows = []
    for line in raw.splitlines():
        stack, _, count = line.rpartition(" ")
        if count.isdigit():
            frames = [f.split(" (")[0] + " (" + f.partition(" (")[2].rsplit("/", 1)[-1] for f in stack.split(";")]
            rows.append((int(count), ";".join(frames[-6:])))
    return [f"{c} {s}" for c, s in sorted(rows, reverse=True)[:n]]
