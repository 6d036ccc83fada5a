"""`restic-orch status`: is the last backup good and recent enough, and when were the last check and drill."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

from . import restic, rotation, tags
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
    verified = _verified(config, list(repos))
    for name, entry in verified.items():
        repos[name]["data_verified"] = entry
        ok = ok and entry["ok"]
    last = {cmd: load_last(config.state_dir, cmd) for cmd in ("backup", "check", "drill")}
    return {"ok": ok, "checked_at": now.isoformat(timespec="seconds"), "repositories": repos,
            "last": {k: ({"status": v.get("status"), "finished": v.get("finished"), "run_id": v.get("run_id"),
                          "failures": len(v.get("failures", []))} if v else None) for k, v in last.items()},
            "epoch": int(time.time())}


def _verified(config: Config, names: list[str]) -> dict[str, dict[str, Any]]:
    """With a check rotation: how long ago each repository's data was last read back in full, against the bound.

    A repository no check with this rotation has read yet is shown as not started, not flagged: nothing records
    when the rotation was configured. The first check starts its clock (rotation.verified).
    """
    if config.check.rotation_parts <= 0:
        return {}
    bound = config.check.verified_within_days * 86400
    state = rotation.load(config.state_dir)
    out: dict[str, dict[str, Any]] = {}
    for name in names:
        entry = state.get(name)
        if not entry or entry.get("parts") != config.check.rotation_parts:
            out[name] = {"ok": True, "started": False, "bound_seconds": bound}
            continue
        found = rotation.verified(entry)
        out[name] = {**found, "ok": found["age_seconds"] <= bound, "started": True, "bound_seconds": bound}
    return out


def _verified_line(name: str, v: dict[str, Any]) -> str:
    if not v["started"]:
        return f"  {name}: data read-back rotation not started (no check run with the rotation yet)"
    days, bound = v["age_seconds"] / 86400, v["bound_seconds"] / 86400
    what = ("all data verified" if v["complete"]
            else f"{v['parts_read']}/{v['parts']} parts read since the rotation began")
    verdict = f"within {bound:.0f} d" if v["ok"] else f"OVER {bound:.0f} d — DATA NOT VERIFIED IN TIME"
    return f"  {name}: {what}, oldest read {days:.1f} d ago ({verdict})"


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
    for name, repo in data["repositories"].items():
        if "data_verified" in repo:
            lines.append(_verified_line(name, repo["data_verified"]))
    for command, last in data["last"].items():
        lines.append(f"  last {command}: " + (f"{last['status']} at {last['finished']}" if last else "never"))
    return "\n".join(lines)
