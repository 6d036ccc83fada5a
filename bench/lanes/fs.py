"""(e) restic on the containers' root filesystems directly (file level, what a ZFS-snapshot source would
give), with the day-2 bytes split by kind of change."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

from ..context import Context, brief, du

SUMMARY_KEYS = ("files_new", "files_changed", "files_unmodified", "data_added", "total_bytes_processed")


def measure(ctx: Context, day: str) -> dict[str, Any]:
    fdir = ctx.work / "fs"
    repo = fdir / "repo"
    env = ctx.restic_env(str(repo), fdir / "cache")
    if not repo.exists():
        fdir.mkdir(parents=True, exist_ok=True)
        subprocess.run(["restic", "init", "--repository-version", "2"], env=env, check=True, capture_output=True)
    paths = [str(p / "rootfs") for p in sorted((ctx.pve_root / "lxc").iterdir())]
    ctx.say(f"{day} (e) restic backup of the 4 root filesystems (file level)")
    before = du(repo)
    res = ctx.probe(f"{day}-e-fs", ["restic", "backup", "--json", "-vv", "--host", "pve1", "--compression",
                                    "auto", *paths], "fs", env=env)
    after = du(repo)
    out = brief(res) | {"local_added": after - before}
    by_change = _read_output(Path(res["stdout"]), ctx.touched, out)
    if by_change:
        out["by_kind_of_change"] = by_change
    ctx.say(f"   {res['wall']:.1f} s, CPU {out['cpu_pct']} %, repo +{(after - before) / 2**20:.1f} MiB")
    return out


def _read_output(stdout: Path, touched: dict[str, set[str]], out: dict[str, Any]) -> dict[str, dict[str, int]]:
    """restic's summary into `out`; the per-file lines summed by the churn's kind of change (day 2)."""
    by_change: dict[str, dict[str, int]] = {}
    for line in stdout.read_text().splitlines():
        if '"summary"' in line:
            item = json.loads(line)
            out.update({k: item.get(k) for k in SUMMARY_KEYS})
        elif '"verbose_status"' in line and touched:
            item = json.loads(line)
            kind = next((k for k, paths in touched.items() if item["item"] in paths), "other (metadata, dirs)")
            entry = by_change.setdefault(kind, {"files": 0, "new": 0, "stored": 0})
            entry["files"] += 1 if item.get("data_size") else 0
            entry["new"] += int(item.get("data_size") or 0) + int(item.get("metadata_size") or 0)
            entry["stored"] += int(item.get("data_size_in_repo") or 0) + int(item.get("metadata_size_in_repo") or 0)
    return by_change
