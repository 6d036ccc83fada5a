"""(a) `restic-orch --json backup` end to end, per lane (uncapped; capped: held by the product to
limits.cpu_percent), with per-phase figures from the 4 Hz samples of the lane's cpuacct group."""

from __future__ import annotations

import contextlib
import json
import subprocess
from datetime import datetime
from pathlib import Path
from typing import Any

from .. import s3 as bs3
from ..context import LAB_GROUPS, Context, ProductLane, again_say, again_tag, brief, du
from ..staged import StagingCopier

STARTUP = "startup (interpreter, config)"
CLEANUP = "clean-up and report (staging removal, summary, metrics, exit)"


def restic_orch(ctx: Context) -> list[str]:
    exe = Path(ctx.py).parent / "restic-orch"
    return [str(exe)] if exe.exists() else [ctx.py, "-m", "restic_orch.cli"]


def _sizes(ctx: Context, lane: ProductLane) -> tuple[int, int]:
    """Bytes of the lane's local repository and of its offsite bucket."""
    return du(lane.dir / "repo"), bs3.bucket_bytes(ctx.s3, lane.bucket)[0]


def measure(ctx: Context, name: str, day: str, again: int = 0) -> dict[str, Any]:
    """(a) once; `again` > 0 numbers a repeat of the day's run (no staging copy: (b)-(d) have theirs)."""
    lane = ctx.lanes[name]
    local0, s3_0 = _sizes(ctx, lane)
    copier = None
    if name == "uncapped" and not again:
        copier = StagingCopier(lane.dir / "staging" / ctx.date, ctx.stage_root / ctx.date)
        copier.start()
    ctx.say(f"{day} (a) restic-orch backup [{name}]" + again_say(again))
    res = ctx.probe(f"{day}-a-{name}{again_tag(again)}",
                    [*restic_orch(ctx), "--config", str(lane.config), "--json", "backup"], f"a-{name}")
    if copier:
        copier.stop()
        res["staging_copied"] = copier.ok
        if not copier.ok:
            ctx.say(f"staging copy missed ({copier.error or 'no manifest seen'}): fallback staging")
    summary = json.loads(Path(res["stdout"]).read_text())
    local1, s3_1 = _sizes(ctx, lane)
    out = _row(res, summary, local1 - local0, s3_1 - s3_0)
    out["phases"] = phase_rows(ctx, summary, res, f"a-{name}", local1 - local0, s3_1 - s3_0,
                               last_command_end(ctx, summary.get("log_file")))
    out["vi1"] = vi1_from_manifest(ctx, lane, summary)
    ctx.say(f"   {summary['status']} in {res['wall']:.1f} s, CPU {out['cpu_pct']} % of host, "
            f"local +{(local1 - local0) / 2**20:.1f} MiB, offsite +{(s3_1 - s3_0) / 2**20:.1f} MiB")
    return out


def _row(res: dict[str, Any], summary: dict[str, Any], local_added: int, offsite_added: int) -> dict[str, Any]:
    """The run's figures: the probe's, the --json summary's, and the child commands of its run log."""
    out = brief(res)
    out.update(status=summary["status"], exit_code=summary["exit_code"],
               duration_seconds=summary["duration_seconds"], bytes_staged=summary["bytes_staged"],
               data_added=summary.get("data_added", {}), local_added=local_added,
               offsite_added=offsite_added, notices=summary.get("notices", []), failures=summary.get("failures", []),
               log_file=summary.get("log_file"), staging_copied=res.get("staging_copied"),
               cpu_cap=summary.get("extra", {}).get("cpu_cap"),
               restic_total_duration=summary.get("extra", {}).get("restic_total_duration", {}))
    if summary.get("log_file") and Path(summary["log_file"]).exists():
        lines = Path(summary["log_file"]).read_text().splitlines()
        out["log_lines"] = len(lines)
        out["commands"] = commands_from_log(lines)
    return out


def last_command_end(ctx: Context, log_file: str | None) -> float | None:
    """Monotonic time at which the run's last child command (the last restic forget) ended, from the
    JSON-lines run log; the phases end there, the clean-up and the report follow."""
    if not log_file or not Path(log_file).exists():
        return None
    last = None
    for line in Path(log_file).read_text().splitlines():
        with contextlib.suppress(ValueError):
            item = json.loads(line)
            if item.get("msg") == "command":
                last = datetime.fromisoformat(item["ts"]).timestamp()
    return None if last is None else last - ctx.wall_offset


def phase_rows(ctx: Context, summary: dict[str, Any], res: dict[str, Any], group: str, local_added: int,
               offsite_added: int, anchor: float | None = None) -> list[dict[str, Any]]:
    """Per-phase figures. The summary gives each phase's seconds in order; the windows are laid out
    backwards from the end of the last child command (run log; gaps between phases are milliseconds),
    and CPU, peak RSS and bytes read come from the 4 Hz samples of the lane's cpuacct group inside
    each window."""
    rows = _windows(summary, res, anchor)
    nested = [p for p in summary["phases"] if p["name"].startswith("open:")]
    for row in rows:
        a, b = row.pop("t")
        if ctx.cg:
            _sampled(ctx, row, group, a, b)
        if row["name"] == "backup:local":
            row["local_added"] = local_added
            row["data_added"] = summary.get("data_added", {}).get("local")
        if row["name"] == "copy:offsite":
            row["s3_uploaded"] = offsite_added
        if row["name"] == "preflight":
            row["includes"] = {p["name"]: p["seconds"] for p in nested}
    return rows


def _windows(summary: dict[str, Any], res: dict[str, Any], anchor: float | None) -> list[dict[str, Any]]:
    """The run's phases with their time windows `t`, from start-up to clean-up."""
    phases = [p for p in summary["phases"] if not p["name"].startswith("open:")]
    end = anchor if anchor is not None and res["t0"] < anchor < res["t1"] else res["t1"] - 0.05
    cursor = end + 0.01
    windows = []
    for p in reversed(phases):
        windows.append((p, cursor - p["seconds"], cursor))
        cursor -= p["seconds"]
    windows.reverse()
    rows = [{"name": STARTUP, "seconds": round(max(0.0, cursor - res["t0"]), 3), "t": (res["t0"], cursor)}]
    rows += [{"name": p["name"], "seconds": p["seconds"], "ok": p["ok"], "detail": p.get("detail", ""),
              "t": (a, b)} for p, a, b in windows]
    rows.append({"name": CLEANUP, "seconds": round(max(0.0, res["t1"] - end - 0.01), 3), "t": (end + 0.01, res["t1"])})
    return rows


def _sampled(ctx: Context, row: dict[str, Any], group: str, a: float, b: float) -> None:
    cpu = ctx.sampler.cpu_between(group, a, b)
    row["cpu_s"] = round(cpu, 3)
    row["cpu_pct"] = round(100 * cpu / max(b - a, 1e-6) / ctx.ncores, 1)
    row["lab_cpu_s"] = {g: round(ctx.sampler.cpu_between(f"lab-{g}", a, b), 3) for g in LAB_GROUPS}
    row["peak_rss_kib"] = ctx.sampler.peak_rss(group, a, b)
    row["read_bytes"] = ctx.sampler.read_between(group, a, b)


def vi1_from_manifest(ctx: Context, lane: ProductLane, summary: dict[str, Any]) -> list[dict[str, Any]]:
    """vzdump's mode and the guest freeze of every container, from the manifest in the lane's snapshot."""
    snap = summary.get("snapshots", {}).get("local")
    if not snap:
        return []
    path = lane.dir / "staging" / ctx.date / "manifest.json"
    env = dict(ctx.env, RESTIC_REPOSITORY=str(lane.dir / "repo"),
               RESTIC_PASSWORD_FILE=str(ctx.secrets / "restic-local"))
    out = subprocess.run(["restic", "--cache-dir", str(lane.dir / "state" / "cache"), "dump", snap, str(path)],
                         env=env, capture_output=True, check=False)
    if out.returncode != 0:
        return [{"error": out.stderr.decode(errors="replace")[-300:]}]
    manifest = json.loads(out.stdout)
    return [{"component": a["component"], "mode_requested": a["meta"].get("mode_requested"),
             "mode_used": a["meta"].get("mode_used"), "freeze_seconds": a["meta"].get("freeze_seconds"),
             "freeze_seconds_max": a["meta"].get("freeze_seconds_max"),
             "freeze_measured_by": a["meta"].get("freeze_measured_by"),
             "vzdump_seconds": a["meta"].get("duration_seconds"), "archive_bytes": a["size"]}
            for a in manifest["artifacts"] if a["kind"] == "proxmox"]


def commands_from_log(lines: list[str]) -> dict[str, dict[str, float]]:
    """Count and time of every child command the product ran, from its JSON-lines run log."""
    out: dict[str, dict[str, float]] = {}
    for line in lines:
        try:
            item = json.loads(line)
        except ValueError:
            continue
        if item.get("msg") != "command":
            continue
        name = _command_name(str(item.get("argv", "")).split())
        if name is None:
            continue
        entry = out.setdefault(name, {"count": 0, "seconds": 0.0})
        entry["count"] += 1
        entry["seconds"] = round(entry["seconds"] + float(item.get("seconds", 0)), 3)
    return out


def _command_name(tokens: list[str]) -> str | None:
    """`restic <subcommand>` or the program's name, past the nice/ionice prefix; None for an empty argv."""
    while tokens and tokens[0] in ("ionice", "nice", "-c", "-n") or (tokens and tokens[0].isdigit()):
        tokens.pop(0)
    if not tokens:
        return None
    name = Path(tokens[0]).name
    if name == "restic":
        rest = tokens[1:]
        while rest and rest[0].startswith("-"):
            rest = rest[2:] if rest[0] in ("-o", "--cache-dir", "--limit-upload") else rest[1:]
        name = f"restic {rest[0]}" if rest else name
    return name
