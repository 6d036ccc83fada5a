"""`restic-orch status`: is the last backup good and recent enough, and when were the last check and drill."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

from . import restic, tags
from .config import Config
from .report import load_last
from .repos import open_all
from .staging import COMPLETE


def collect(config: Config) -> dict[str, Any]:
    now = datetime.now(UTC)
    rpo = config.targets.rpo_hours * 3600
    repos: dict[str, Any] = {}
    ok = True
    for name, repo in open_all(config).items():
        try:
            snaps = repo.snapshots(tags=[tags.TAG], host=config.host)
        except restic.ResticError as exc:
            repos[name] = {"ok": False, "error": str(exc)}
            ok = False
            continue
        good = [s for s in snaps if tags.status(s) == COMPLETE]
        newest = good[-1] if good else None
        age = (now - newest.time.astimezone(UTC)).total_seconds() if newest else None
        fresh = age is not None and age <= rpo
        ok = ok and fresh
        repos[name] = {"ok": fresh, "snapshots": len(snaps), "newest_complete": newest.short_id if newest else None,
                       "newest_time": newest.time.isoformat() if newest else None,
                       "age_seconds": round(age) if age is not None else None, "rpo_seconds": rpo}
    last = {cmd: load_last(config.state_dir, cmd) for cmd in ("backup", "check", "drill")}
    return {"ok": ok, "checked_at": now.isoformat(timespec="seconds"), "repositories": repos,
            "last": {k: ({"status": v.get("status"), "finished": v.get("finished"), "run_id": v.get("run_id"),
                          "failures": len(v.get("failures", []))} if v else None) for k, v in last.items()},
            "epoch": int(time.time())}


def render(data: dict[str, Any]) -> str:
    lines = [f"status: {'OK' if data['ok'] else 'ATTENTION'} ({data['checked_at']})"]
    for name, repo in data["repositories"].items():
        if "error" in repo:
            lines.append(f"  {name}: UNREACHABLE: {repo['error']}")
        elif repo["newest_complete"] is None:
            lines.append(f"  {name}: no complete snapshot ({repo['snapshots']} in all) — RPO BREACHED")
        else:
            hours = repo["age_seconds"] / 3600
            verdict = "within RPO" if repo["ok"] else "RPO BREACHED"
            lines.append(f"  {name}: newest complete {repo['newest_complete']} {hours:.1f} h old ({verdict})")
    for command, last in data["last"].items():
        lines.append(f"  last {command}: " + (f"{last['status']} at {last['finished']}" if last else "never"))
    return "\n".join(lines)
