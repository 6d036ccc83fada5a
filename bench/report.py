"""Targets and the Markdown tables printed by `make bench` (also `python -m bench --report`)."""

from __future__ import annotations

import statistics
from typing import Any

MiB = 2**20
GiB = 2**30


def _mib(n: float | None) -> str:
    return "–" if n is None else f"{n / MiB:,.1f}"


def _pct(n: float | None) -> str:
    return "–" if n is None else f"{n:.1f} %"


def _s(n: float | None) -> str:
    return "–" if n is None else f"{n:,.1f}"


def _ok(met: bool | None) -> str:
    return {True: "met", False: "**missed**", None: "n/a"}[met]


def _background_hashing(a: dict[str, Any]) -> bool:
    """Since the product hashes in a worker thread, the dumps no longer contain the hashing; what is left
    of it is the `hash:wait` phase, counted as overhead like any other non-dump phase."""
    return any(p["name"] == "hash:wait" for p in a["phases"])


def overhead(day: dict[str, Any]) -> dict[str, float] | None:
    """Orchestration overhead of the day's main (a) uncapped over its (b)."""
    return overhead_of(day["product"].get("uncapped"), day.get("raw"), day.get("sha256_seconds", 0.0))


def overhead_of(a: dict[str, Any] | None, b: dict[str, Any] | None, sha256_seconds: float) -> dict[str, float] | None:
    """Orchestration overhead of (a) over (b): everything (a) spends beyond the dumps themselves (minus its
    artifact hashing, which is overhead) and beyond raw restic's backup + copy + forget on the same tree."""
    if not a or not b:
        return None
    dumps = sum(p["seconds"] for p in a["phases"] if p["name"].startswith("dump:"))
    restic_part = sum(p["seconds"] for p in a["phases"]
                      if p["name"] in ("backup:local", "copy:offsite") or p["name"].startswith("retention:"))
    sha = 0.0 if _background_hashing(a) else sha256_seconds
    orchestration = a["wall"] - (dumps - sha)
    # the repository init of day 1 is in (a)'s preflight, not in its restic phases
    b_restic = b["wall"] - sum(b["steps"][k]["wall"] for k in ("init-local", "init-offsite") if k in b["steps"])
    return {"a_wall": a["wall"], "dumps": round(dumps, 2), "sha256": sha, "a_minus_dumps": round(orchestration, 2),
            "a_restic_phases": round(restic_part, 2), "b_wall": b["wall"],
            "overhead_pct": round(100 * (orchestration - b["wall"]) / b["wall"], 1),
            "restic_phases_overhead_pct": round(100 * (restic_part - b_restic) / b_restic, 1)}


def _own_times(a: dict[str, Any], steps: dict[str, Any]) -> str:
    """restic's own total_duration of the two backups, when both runs recorded it: tells the archiver's
    time apart from process start, repository open and index load, and teardown."""
    own_a = (a.get("restic_total_duration") or {}).get("local")
    own_b = steps["backup"].get("restic_total_duration")
    if own_a is None or own_b is None:
        return ""
    return f" (restic's own total_duration: {float(own_a):.1f} s vs {float(own_b):.1f} s)"


def overhead_breakdown(day: dict[str, Any]) -> list[tuple[str, float]]:
    """Seconds the day's main (a) uncapped spends beyond the dumps and beyond its (b), item by item."""
    return breakdown_of(day["product"].get("uncapped"), day.get("raw"), day.get("sha256_seconds", 0.0))


def breakdown_of(a: dict[str, Any] | None, b: dict[str, Any] | None, sha256_seconds: float) -> list[tuple[str, float]]:
    """Seconds (a, uncapped) spends beyond the dumps themselves and beyond raw restic (b), item by item."""
    if not a or not b:
        return []
    ph = {p["name"]: p["seconds"] for p in a["phases"]}
    steps = b["steps"]
    retention = sum(v for k, v in ph.items() if k.startswith("retention:"))
    cmds = a.get("commands", {})
    snapshots = cmds.get("restic snapshots", {}).get("seconds", 0.0)
    rows = [
        ("interpreter start-up, configuration", ph.get("startup (interpreter, config)", 0.0)),
        ("preflight (restic version; `cat config` only for repositories not yet known; init on day 1)"
         " minus (b)'s init", ph.get("preflight", 0.0) - sum(steps[k]["wall"] for k in ("init-local", "init-offsite")
                                                               if k in steps)),
        (("waiting for the background sha256 after the last dump (hash:wait)", ph.get("hash:wait", 0.0))
         if _background_hashing(a) else
         ("sha256 of the staged artifacts (inside the dump phases)", sha256_seconds)),
        ("restic backup: (a) minus (b)" + _own_times(a, steps), ph.get("backup:local", 0.0) - steps["backup"]["wall"]),
        (f"copy: (a) minus (b) (of which `restic snapshots`: {snapshots:.1f} s)",
         ph.get("copy:offsite", 0.0) - steps["copy"]["wall"]),
        ("retention: (a) minus (b)", retention - steps["forget-local"]["wall"] - steps["forget-offsite"]["wall"]),
        ("staging removal, summary, metrics, exit", ph.get("clean-up and report (staging removal, summary, "
                                                           "metrics, exit)", 0.0)),
    ]
    return [(k, round(v, 2)) for k, v in rows]


def median_overhead(pairs: list[dict[str, Any]]) -> float:
    return round(statistics.median(p["overhead_pct"] for p in pairs), 1)


def pairs_table(run: dict[str, Any]) -> list[str]:
    """Every (a)/(b) pair of the overhead measurement, in the order they ran."""
    out = ["", "### Orchestration overhead, pair by pair ((a) uncapped and (b) from the same checkpoint)", "",
           "| day | pair | order | (a) minus dumps s | (b) s | overhead | restic backup (a) / (b) s | "
           "restic's own time (a) / (b) s |", "|---|---|---|---:|---:|---:|---:|---:|"]
    for d in ("day1", "day2"):
        for p in run["days"][d].get("pairs", []):
            own = (f"{float(p['a_restic_own']):.1f} / {float(p['b_restic_own']):.1f}"
                   if p.get("a_restic_own") is not None and p.get("b_restic_own") is not None else "–")
            out.append(f"| {d} | {p['label']} | {'(b) first' if p['order'] == 'ba' else '(a) first'} | "
                       f"{_s(p.get('a_minus_dumps'))} | {_s(p.get('b_wall'))} | {p.get('overhead_pct')} %"
                       f"{'' if p.get('ok', True) else ' (failed run, not counted)'} | "
                       f"{_s(p.get('a_backup'))} / {_s(p.get('b_backup'))} | {own} |")
    return out


def targets(run: dict[str, Any]) -> list[dict[str, Any]]:
    days = run["days"]
    rows: list[dict[str, Any]] = []
    lane = "capped" if "capped" in days["day1"]["product"] else "uncapped"
    walls = [days[d]["product"][lane]["wall"] for d in ("day1", "day2")]
    rows.append({"target": f"whole run < 10 min ({lane})", "measured": " / ".join(f"{w:.0f} s" for w in walls),
                 "met": all(w < 600 for w in walls)})
    if "capped" in days["day1"]["product"]:
        cpus = [days[d]["product"]["capped"]["cpu_pct"] for d in ("day1", "day2")]
        rows.append({"target": "CPU <= 30 % of the host (limits.cpu_percent: 30, the default)",
                     "measured": " / ".join(_pct(c) for c in cpus), "met": all(c <= 30 for c in cpus)})
    # Reported, not judged: the issue asks for the run with and without the cap, and only the capped
    # one is what a default configuration (and the Ansible role) deploys.
    cpus = [days[d]["product"]["uncapped"]["cpu_pct"] for d in ("day1", "day2")]
    rows.append({"target": "for comparison: the cap switched off (limits.cpu_percent: null)",
                 "measured": " / ".join(_pct(c) for c in cpus), "met": None})
    for d in ("day1", "day2"):
        pairs = [p for p in days[d].get("pairs", []) if "overhead_pct" in p and p.get("ok", True)]
        ov = overhead(days[d])
        if len(pairs) > 1:
            # one pair is one sample of a ~5 % difference between two runs of a minute on a shared host,
            # whose run-to-run spread is of the same size: the verdict goes on the median of the pairs
            med = median_overhead(pairs)
            rows.append({"target": f"orchestration overhead <= 5 % over (b), {d} (median of {len(pairs)} pairs)",
                         "measured": f"{med} % (pairs: " + ", ".join(f"{p['overhead_pct']} %" for p in pairs) + ")",
                         "met": med <= 5})
        elif ov:
            rows.append({"target": f"orchestration overhead <= 5 % over (b), {d}",
                         "measured": f"{ov['overhead_pct']} % ({ov['a_minus_dumps']} s vs {ov['b_wall']} s); "
                                     f"restic phases alone {ov['restic_phases_overhead_pct']} %",
                         "met": ov["overhead_pct"] <= 5})
    d2 = days["day2"]
    ours = d2["product"]["uncapped"]["offsite_added"]
    if "borg" in d2:
        borg = d2["borg"]["local_added"]
        rows.append({"target": "day 2 offsite bytes <= borg's", "measured": f"{_mib(ours)} vs {_mib(borg)} MiB",
                     "met": ours <= d2["borg"]["local_added"]})
    if "naive" in d2:
        ratio = d2["naive"]["s3_uploaded"] / max(ours, 1)
        rows.append({"target": "day 2 offsite bytes >= 10x less than naive", "measured": f"{ratio:.1f}x "
                     f"({_mib(d2['naive']['s3_uploaded'])} vs {_mib(ours)} MiB)", "met": ratio >= 10})
    changed = run["churn"]["changed_bytes"]
    rows.append({"target": "goal: day 2 offsite bytes <= 2x changed bytes",
                 "measured": f"{ours / changed:.1f}x ({_mib(ours)} vs {_mib(changed)} MiB changed)",
                 "met": ours <= 2 * changed})
    conts = [c for d in ("day1", "day2") for lane_ in days[d]["product"].values() for c in lane_["vi1"]]
    conts += run.get("vi1_suspend_probe", {}).get("containers", [])
    rows.append(vi1_target(conts))
    logs = [days[d]["product"]["uncapped"].get("log_lines", 0) for d in ("day1", "day2")]
    rows.append({"target": "logs for troubleshooting", "measured": f"JSON-lines run log, {logs[0]} / {logs[1]} lines; "
                 "phases with seconds in the --json summary", "met": all(n > 0 for n in logs)})
    return rows


def vi1_target(conts: list[dict[str, Any]]) -> dict[str, Any]:
    """The VI1 row over every container backup of the run.

    vzdump logs the difference of two whole-second clocks, so a logged N means a real freeze below
    N + 1 s: the target is judged on that upper bound (freeze_seconds_max), never on N itself.
    A backup whose log bounds no freeze (a one-volume snapshot read from the task log) is "not measured",
    never a freeze of 0 s: the verdict is "met" only when every freeze was measured and within 5 s.
    """
    bounds = [b for b in (_freeze_bound(c) for c in conts) if b is not None]
    unmeasured = len(conts) - len(bounds)
    worst = max(bounds, default=None)
    row: dict[str, Any] = {"target": "VI1: container freeze <= 5 s"}
    if worst is None:
        row.update(measured=f"not measured: none of {len(conts)} container backups logged a freeze", met=None,
                   verdict="not measured")
        return row
    row.update(measured=f"every measured freeze < {worst:g} s (vzdump's whole-second readings + 1)"
               + (f"; {unmeasured} of {len(conts)} not measured" if unmeasured else ""), met=worst <= 5)
    if worst <= 5 and unmeasured:
        row.update(met=None, verdict="not measured")
    return row


def _freeze_bound(c: dict[str, Any]) -> float | None:
    """The upper bound of a container's freeze, or None when it was not measured (never 0)."""
    if c.get("freeze_seconds_max") is not None:
        return float(c["freeze_seconds_max"])
    return float(c["freeze_seconds"]) + 1 if c.get("freeze_seconds") is not None else None


def _freeze_cell(c: dict[str, Any]) -> str:
    n = c.get("freeze_seconds")
    if n is None and c.get("freeze_seconds_max") is not None:
        return f"< {c['freeze_seconds_max']:g} (snapshot, from the per-guest log)"
    if n is None:
        return "not measured"
    return "< 1" if n == 0 else f"{n:g} (< {_freeze_bound(c):g})"


DAYS = ("day1", "day2")


def render(run: dict[str, Any]) -> str:
    out: list[str] = []
    for section in (_intro, _tools_table, _host_cpu_table, _phases_tables, _pairs_section, _raw_sections,
                    _zstd_table, _vma_table, _containers_table, _profile_table, _vi1_table, _targets_table, _lab_peaks,
                    restore_section):
        out += section(run)
    return "\n".join(out) + "\n"


def _intro(run: dict[str, Any]) -> list[str]:
    m, st = run["machine"], run["settings"]
    lab = run["lab"]
    return [f"## Benchmark `{run['name']}`: 4 x {st['ct_mib']} MiB containers, ~{st['db_mib']} MiB of databases, "
            f"{st['churn']:.0%} churn",
            "",
            f"Machine: {m['nproc']} cores ({m['cpu_model']}), {m['memory_bytes'] / GiB:.1f} GiB RAM, kernel "
            f"{m['kernel']}; {m['restic']}; {m['borg']}; load average at start {m['loadavg_at_start'][0]:.2f}. "
            f"Run {run['started']}, {run['wall_seconds'] / 60:.1f} min in all (lab set-up {lab['setup_seconds']} s).",
            "",
            f"Lab: containers {', '.join(f'{k}: {_mib(v)} MiB' for k, v in lab['containers'].items())}; databases "
            f"{', '.join(f'{k}: {_mib(v)} MiB' for k, v in lab['databases'].items())} (db_scale {lab['db_scale']}). "
            f"Staged per day: {_mib(run['days']['day1']['staged_bytes'])} / "
            f"{_mib(run['days']['day2']['staged_bytes'])} MiB. "
            f"Day-2 churn: {_mib(run['churn']['changed_bytes'])} MiB changed "
            f"({_mib(run['churn']['containers_changed_bytes'])} in containers, "
            f"~{_mib(run['churn']['db_changed_bytes_est'])} "
            "in databases).",
            "",
            f"CPU % = (user+sys of the whole process tree) / wall / {m['nproc']} cores. Cap: "
            + (f"cgroup v1 cfs_quota_us={st['cpu_quota_us']} per {st['cpu_period_us']} set by the benchmark "
               f"(= {st['cap_pct_of_host']} % of the host). " if "cpu_quota_us" in st else
               f"limits.cpu_percent={st.get('cpu_percent')} (the product's own cgroup quota). ")
            + f"Container excludes: {', '.join(st.get('exclude_paths') or []) or 'none'}. "
            f"GOMAXPROCS={st['gomaxprocs']}. Lab-side CPU (fake PVE vzdump, DB servers, moto S3) is not in the "
            "process tree; it is listed per phase.",
            ""]


def _tools_table(run: dict[str, Any]) -> list[str]:
    out = ["| day | tool | wall s | CPU % host | peak RSS MiB | read MiB | added local MiB "
           "| added offsite / uploaded MiB |",
           "|---|---|---:|---:|---:|---:|---:|---:|"]
    for d in DAYS:
        out += _tool_rows(d, run["days"][d])
    return out


def _tool_row(d: str, label: str, lane: dict[str, Any], local: str, offsite: str) -> str:
    return (f"| {d} | {label} | {_s(lane['wall'])} | {_pct(lane['cpu_pct'])} | "
            f"{_mib(lane['maxrss_kib'] * 1024)} | {_mib(lane['rchar'])} | {local} | {offsite} |")


def _tool_rows(d: str, day: dict[str, Any]) -> list[str]:
    out = [_tool_row(d, f"(a) restic-orch backup, {lane}", a, _mib(a["local_added"]), _mib(a["offsite_added"]))
           for lane, a in day["product"].items()]
    if "raw" in day:
        b = day["raw"]
        what = "init+backup+copy+forget" if "init-local" in b["steps"] else "backup+copy+forget"
        out.append(_tool_row(d, f"(b) raw restic {what}", b, _mib(b["local_added"]), _mib(b["offsite_added"])))
    if "naive" in day:
        out.append(_tool_row(d, "(c) tar \\| zstd \\| S3", day["naive"], "–", _mib(day["naive"]["s3_uploaded"])))
    if "fs" in day:
        out.append(_tool_row(d, "(e) restic on the 4 root filesystems (containers only)", day["fs"],
                             _mib(day["fs"]["local_added"]), "–"))
    if "borg" in day:
        added = _mib(day["borg"]["local_added"])
        out.append(_tool_row(d, "(d) borg create (lz4)", day["borg"], added, f"({added})"))
    return out


def _host_cpu_table(run: dict[str, Any]) -> list[str]:
    m = run["machine"]
    out = ["", "### CPU of the (a) runs seen from the host", "",
           "The cap holds the product's process tree. On a Proxmox host the vzdump tar and the database servers "
           "answering the dumps also run on the host, outside that tree (here: the fake PVE, written in Python, "
           "and the lab's PostgreSQL/MariaDB); S3 is remote in production (here: moto + a TCP proxy). "
           "*Others* = whatever else ran on the machine meanwhile (other tenants).", "",
           "| day | run | process tree | + vzdump & DB servers | moto S3 + proxy | whole host | others |",
           "|---|---|---:|---:|---:|---:|---:|"]
    for d in DAYS:
        for lane, a in run["days"][d]["product"].items():
            lab_cpu = a.get("lab_cpu_s", {})
            denom = a["wall"] * m["nproc"] / 100
            side = (lab_cpu.get("pve", 0) + lab_cpu.get("postgres", 0) + lab_cpu.get("mariadb", 0)) / denom
            s3 = lab_cpu.get("s3", 0) / denom
            host = a.get("host_cpu_pct")
            others = None if host is None else max(0.0, host - a["cpu_pct"] - side - s3)
            out.append(f"| {d} | {lane} | {_pct(a['cpu_pct'])} | {_pct(a['cpu_pct'] + side)} | {_pct(s3)} | "
                       f"{_pct(host)} | {_pct(others)} |")
    return out


def _phases_tables(run: dict[str, Any]) -> list[str]:
    return [line for d in DAYS for lane, a in run["days"][d]["product"].items() for line in _phases_table(d, lane, a)]


def _phases_table(d: str, lane: str, a: dict[str, Any]) -> list[str]:
    extra = ""
    if a.get("throttled"):
        t = a["throttled"]
        extra = f" — throttled in {t['throttled_periods']} of {t['periods']} periods ({t['throttled_s']} s)"
    out = ["", f"### (a) phases, {d}, {lane}: {a['status']}, {_s(a['wall'])} s{extra}", "",
           "| phase | s | CPU % host | lab CPU s (pve / pg / maria / s3) | peak RSS MiB | read MiB | bytes |",
           "|---|---:|---:|---|---:|---:|---|"]
    for p in a["phases"]:
        lab_cpu = p.get("lab_cpu_s", {})
        lab_txt = " / ".join(f"{lab_cpu.get(g, 0):.1f}" for g in ("pve", "postgres", "mariadb", "s3"))
        bytes_txt = ""
        if "local_added" in p:
            bytes_txt = f"local +{_mib(p['local_added'])} MiB"
        if "s3_uploaded" in p:
            bytes_txt = f"S3 +{_mib(p['s3_uploaded'])} MiB"
        out.append(f"| {p['name']} | {_s(p['seconds'])} | {_pct(p.get('cpu_pct'))} | {lab_txt} | "
                   f"{_mib(p.get('peak_rss_kib', 0) * 1024)} | {_mib(p.get('read_bytes'))} | {bytes_txt} |")
    cmds = a.get("commands", {})
    if cmds:
        out += ["", "Child commands (from the run log): " + ", ".join(
            f"{k} {v['count']}x {v['seconds']:.1f} s"
            for k, v in sorted(cmds.items(), key=lambda kv: -kv[1]["seconds"]))
            + "."]
    return out


def _pairs_section(run: dict[str, Any]) -> list[str]:
    return pairs_table(run) if run["days"]["day1"].get("pairs") else []


def _raw_sections(run: dict[str, Any]) -> list[str]:
    if not run["days"]["day1"].get("raw"):
        return []
    return _breakdown_table(run) + _bytes_by_kind_table(run) + _raw_steps_table(run)


def _breakdown_table(run: dict[str, Any]) -> list[str]:
    out = ["", "### Where the orchestration overhead goes ((a) uncapped over (b), seconds)", "",
           "| item | day 1 | day 2 |", "|---|---:|---:|"]
    o1, o2 = overhead_breakdown(run["days"]["day1"]), overhead_breakdown(run["days"]["day2"])
    for (k, v1), (_, v2) in zip(o1, o2, strict=True):
        out.append(f"| {k} | {v1:.1f} | {v2:.1f} |")
    out.append(f"| **total** | **{sum(v for _, v in o1):.1f}** | **{sum(v for _, v in o2):.1f}** |")
    return out


def _bytes_by_kind_table(run: dict[str, Any]) -> list[str]:
    out = ["", "### Bytes added to the repository per staged kind (raw restic `backup -vv`: new blobs)", "",
           "| kind | day 1 staged | day 1 new / stored | day 2 staged | day 2 new / stored | day 2 new / staged |",
           "|---|---:|---:|---:|---:|---:|"]
    b1, b2 = run["days"]["day1"]["raw"]["steps"]["backup"], run["days"]["day2"]["raw"]["steps"]["backup"]
    for kind in sorted(set(b1.get("size_by_kind", {})) | set(b2.get("size_by_kind", {}))):
        s1, s2 = b1.get("size_by_kind", {}).get(kind, 0), b2.get("size_by_kind", {}).get(kind, 0)
        n1, n2 = b1.get("new_by_kind", {}).get(kind, 0), b2.get("new_by_kind", {}).get(kind, 0)
        a1, a2 = b1.get("added_by_kind", {}).get(kind, 0), b2.get("added_by_kind", {}).get(kind, 0)
        out.append(f"| {kind} | {_mib(s1)} | {_mib(n1)} / {_mib(a1)} | {_mib(s2)} | {_mib(n2)} / {_mib(a2)} | "
                   f"{100 * n2 / max(s2, 1):.1f} % |")
    out.append("")
    out.append("(MiB; *new* = bytes of blobs the repository did not have, *stored* = the same after restic's "
               "compression.)")
    return out


def _raw_steps_table(run: dict[str, Any]) -> list[str]:
    out = ["", "### (b) raw restic steps", "", "| day | step | wall s | CPU % host | peak RSS MiB | bytes |",
           "|---|---|---:|---:|---:|---|"]
    for d in DAYS:
        for name, s in run["days"][d]["raw"]["steps"].items():
            b = f"local +{_mib(s['local_added'])} MiB" if "local_added" in s else (
                f"S3 +{_mib(s['s3_uploaded'])} MiB" if "s3_uploaded" in s else "")
            out.append(f"| {d} | {name} | {_s(s['wall'])} | {_pct(s['cpu_pct'])} | "
                       f"{_mib(s['maxrss_kib'] * 1024)} | {b} |")
    return out


def _zstd_table(run: dict[str, Any]) -> list[str]:
    z1, z2 = run["days"]["day1"].get("zstd", {}), run["days"]["day2"].get("zstd", {})
    if not z1:
        return []
    sto = run["storage_after_day2"]
    out = ["", "### vzdump compress: 0 vs zstd (restic repository on the same staged days)", "",
           "| vzdump compress | container archives day 1 MiB | repo after day 1 MiB | day 2 added MiB | "
           "repo after day 2 MiB |", "|---|---:|---:|---:|---:|"]
    raw1 = run["days"]["day1"]["raw"]["local_added"] if "raw" in run["days"]["day1"] else None
    raw2 = run["days"]["day2"]["raw"]["local_added"] if "raw" in run["days"]["day2"] else None
    ct = sum(a["archive_bytes"] for a in run["days"]["day1"]["product"]["uncapped"]["vi1"])
    out.append(f"| 0 (default) | {_mib(ct)} | {_mib(raw1)} | {_mib(raw2)} | {_mib(sto.get('raw-local'))} |")
    for variant in z1:
        label = "zstd --rsyncable (PVE 7)" if variant == "zstd-rsyncable" else "zstd (PVE 8 and the fake PVE)"
        out.append(f"| {label} | {_mib(z1[variant]['container_archive_bytes'])} | "
                   f"{_mib(z1[variant]['local_added'])} | "
                   f"{_mib(z2.get(variant, {}).get('local_added'))} | {_mib(sto.get(variant))} |")
    return out


def _vma_table(run: dict[str, Any]) -> list[str]:
    """(v): a VM disk's VMA on day 1 and day 2, uncompressed vs zstd, each in its own restic repository."""
    v = run.get("vma")
    if not v:
        return []
    d1, d2 = v["days"]["day1"], v["days"]["day2"]
    out = ["", f"### A VM's vzdump archive (VMA), {_mib(v['disk_bytes'])} MiB disk, "
           f"{_mib(v['changed_bytes'])} MiB of clusters rewritten on day 2", "",
           "| vzdump compress | archive MiB | repo after day 1 MiB | day 2 added MiB | day 2 added / changed |",
           "|---|---:|---:|---:|---:|"]
    for variant in d1:
        added = d2[variant]["local_added"]
        label = "0 (default): .vma" if variant == "vma" else "zstd: .vma.zst"
        out.append(f"| {label} | {_mib(d2[variant]['archive_bytes'])} | {_mib(d1[variant]['local_added'])} | "
                   f"{_mib(added)} | {added / max(v['changed_bytes'], 1):.1f}x |")
    return out


def _containers_table(run: dict[str, Any]) -> list[str]:
    f1, f2 = run["days"]["day1"].get("fs"), run["days"]["day2"].get("fs")
    if not (f1 and f2 and "raw" in run["days"]["day2"]):
        return []
    b2 = run["days"]["day2"]["raw"]["steps"]["backup"]
    tar_new = sum(v for k, v in b2.get("new_by_kind", {}).items() if k.startswith("proxmox/"))
    tar_stored = sum(v for k, v in b2.get("added_by_kind", {}).items() if k.startswith("proxmox/"))
    changed = run["churn"]["containers_changed_bytes"]
    out = ["", "### Containers on day 2: vzdump tar archives vs the root filesystems file by file", "",
           "| containers backed up as | day 2 wall s | day 2 CPU % | day 2 bytes read MiB | new MiB | stored MiB "
           "| stored / changed |", "|---|---:|---:|---:|---:|---:|---:|",
           f"| vzdump tar (restic on the staged archives, (b)) | – | – | – | {_mib(tar_new)} | "
           f"{_mib(tar_stored)} | "
           f"{tar_stored / max(changed, 1):.1f}x |",
           f"| root filesystems, file level ((e), as from a ZFS snapshot) | {_s(f2['wall'])} | "
           f"{_pct(f2['cpu_pct'])} | {_mib(f2['rchar'])} | {_mib(f2.get('data_added'))} | "
           f"{_mib(f2['local_added'])} | {f2['local_added'] / max(changed, 1):.1f}x |",
           "", f"Changed in the containers: {_mib(changed)} MiB. File level on day 2: {f2.get('files_new')} new, "
           f"{f2.get('files_changed')} changed, {f2.get('files_unmodified')} unmodified files."]
    return out + _by_change_table(run)


def _by_change_table(run: dict[str, Any]) -> list[str]:
    kinds = run["days"]["day2"]["fs"].get("by_kind_of_change")
    if not kinds:
        return []
    changed_by = run["churn"].get("by_kind_of_change", {})
    out = ["", "Day 2 at file level, by kind of change (restic `backup -vv` per file):", "",
           "| kind of change | files | changed MiB | new MiB | stored MiB | stored / changed |",
           "|---|---:|---:|---:|---:|---:|"]
    for kind, v in sorted(kinds.items(), key=lambda kv: -kv[1]["stored"]):
        ch = changed_by.get(kind)
        ratio = f"{v['stored'] / ch:.1f}x" if ch else "–"
        out.append(f"| {kind} | {v['files']} | {_mib(ch)} | {_mib(v['new'])} | {_mib(v['stored'])} | {ratio} |")
    return out


def _profile_table(run: dict[str, Any]) -> list[str]:
    prof = run.get("profile")
    if not (prof and prof.get("categories")):
        return []
    out = ["", f"### py-spy profile of the product's Python process (one more run, {_s(prof['wall'])} s, "
           "wall-clock samples incl. idle)", "", "| where the time went | s |", "|---|---:|"]
    return out + [f"| {c['what']} | {c['seconds']:.1f} |" for c in prof["categories"]]


def _vi1_table(run: dict[str, Any]) -> list[str]:
    out = ["", "### VI1: vzdump mode and guest freeze per container", "",
           "| run | container | mode requested | mode used | freeze s |", "|---|---|---|---|---:|"]
    for d in DAYS:
        for lane, a in run["days"][d]["product"].items():
            for c in a["vi1"]:
                out.append(f"| {d} {lane} | {c.get('component')} | {c.get('mode_requested')} | {c.get('mode_used')} | "
                           f"{_freeze_cell(c)} |")
    for c in run.get("vi1_suspend_probe", {}).get("containers", []):
        out.append(f"| suspend probe (fault {run['vi1_suspend_probe']['fault_suspend_freeze_seconds']} s) | "
                   f"{c['component']} | {c['mode_requested']} | {c['mode_used']} | {_freeze_cell(c)} |")
    return out


def _targets_table(run: dict[str, Any]) -> list[str]:
    out = ["", "### Targets", "", "| target | measured | verdict |", "|---|---|---|"]
    return out + [f"| {t['target']} | {t['measured']} | {t.get('verdict') or _ok(t['met'])} |" for t in targets(run)]


def _lab_peaks(run: dict[str, Any]) -> list[str]:
    peaks = run.get("lab_peak_rss_kib", {})
    if not peaks:
        return []
    return ["", "Lab services' peak RSS: " + ", ".join(f"{k} {_mib(v * 1024)} MiB" for k, v in peaks.items()) + "."]


def restore_section(run: dict[str, Any]) -> list[str]:
    """(r): the host-lost restore from offsite, per component, against its floor, and its targets."""
    r = run.get("restore")
    if not r:
        return []
    out = ["", "### Restore (RTO at full size): host lost, from offsite", ""]
    if "error" in r or "error" in r["floor"]:
        return out + [f"The restore lane failed: {r.get('error') or r['floor']['error']}"]
    if r.get("provenance"):
        out += [f"Measured in its own run: {r['provenance']}", ""]
    p, nh = r["product"], r["new_host"]
    out += [f"Snapshot {p['snapshot']} ({p.get('snapshot_time')}) of the {r['lane']} lane's offsite repository. "
            f"New host: {len(nh['guests_destroyed'])} guests destroyed, databases dropped "
            f"({', '.join(d for v in nh['databases_dropped'].values() for d in v)}), "
            f"{nh['state_objects_deleted']} state object versions deleted, {nh['vault_files_removed']} vault files "
            f"removed, no restic cache. Restic at GOMAXPROCS={r.get('gomaxprocs')}, `{r.get('priority')}`.", ""]
    out += _restore_rows(r)
    out += ["", "| target | measured | verdict |", "|---|---|---|"]
    return out + [f"| {t['target']} | {t['measured']} | **{t['verdict']}** |" for t in r["targets"]]


def _restore_rows(r: dict[str, Any]) -> list[str]:
    p, f = r["product"], r["floor"]
    dump = p.get("commands", {}).get("restic dump")
    out = ["| what | count | seconds | CPU % host |", "|---|---:|---:|---:|",
           f"| **product: `restic-orch restore --from offsite --yes --force` (RTO, {p['status']})** | "
           f"{len(p['steps'])} | **{_s(p['wall'])}** | {_pct(p.get('cpu_pct'))} |"]
    out += [f"| product, {k} | {v['count']} | {_s(v['seconds'])} | |" for k, v in p["by_kind"].items()]
    prefetch = p.get("prefetch")
    if prefetch:
        fetch = p.get("commands", {}).get("restic restore") or {"count": 1}
        out.append(f"| product, fetch: one `restic restore` of every artifact, before the steps | "
                   f"{fetch['count']} | {_s(prefetch['seconds'])} | |")
    if dump:
        out.append(f"| product, of which `restic dump` (one per component) | {dump['count']} | "
                   f"{_s(dump['seconds'])} | |")
    out += [f"| floor: raw `restic restore` of the snapshot ({_mib(f['restic_restore']['bytes'])} MiB) | 1 | "
            f"{_s(f['restic_restore']['wall'])} | {_pct(f['restic_restore'].get('cpu_pct'))} |",
            f"| floor: PVE restore + start through the API | {len(f['pve'])} | "
            f"{_s(f['parts']['PVE restore and start'])} | |",
            f"| floor: database loads (pg_restore, mariadb) | {len(f['databases'])} | "
            f"{_s(f['parts']['database loads'])} | |",
            f"| **floor total** | | **{_s(f['seconds'])}** | |",
            "| floor as the issue words it (restic restore + PVE restores, no database load) | | "
            f"{_s(f['restic_plus_pve_seconds'])} | |"]
    return out
