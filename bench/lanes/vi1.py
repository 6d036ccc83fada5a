"""VI1 probe: CT 101 staged in suspend mode with a simulated freeze, to read how the freeze is reported."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from .. import lab as blab
from ..context import Context


def measure(ctx: Context) -> dict[str, Any]:
    from restic_orch.lab.pve import write_faults

    ldir = ctx.work / "vi1"
    cfg = blab.lane_config(ctx.lab_dir, ldir, offsite_bucket=None, gomaxprocs=ctx.s.gomaxprocs,
                           proxmox={"mode": "suspend", "vmids": [101]})
    write_faults(ctx.pve_root, suspend_freeze_seconds=ctx.s.freeze_seconds)
    try:
        ctx.say(f"VI1 probe: CT 101 in suspend mode, simulated freeze {ctx.s.freeze_seconds} s")
        res = ctx.probe("vi1-suspend", [ctx.py, "-m", "bench.stage", "--config", str(cfg), "--day-dir",
                                        str(ldir / "day"), "--only", "proxmox"], "stage")
    finally:
        write_faults(ctx.pve_root)
    data = json.loads(Path(res["stdout"]).read_text())
    shutil.rmtree(ldir, ignore_errors=True)
    return {"fault_suspend_freeze_seconds": ctx.s.freeze_seconds, "wall": res["wall"],
            "containers": [{"component": a["component"], "mode_requested": a["meta"]["mode_requested"],
                            "mode_used": a["meta"]["mode_used"], "freeze_seconds": a["meta"]["freeze_seconds"],
                            "freeze_seconds_max": a["meta"].get("freeze_seconds_max")}
                           for a in data["artifacts"]], "failures": data["failures"]}
