"""What a night must leave behind, as pure functions: exit codes, failures, components, retention.

Retention follows restic 0.14's `forget` (internal/restic/snapshot_policy.go, ApplyPolicy): a keep-within
duration counts back from the NEWEST snapshot of the group, not from the clock (`findLatestTimestamp`; only
snapshots dated after the clock are skipped when looking for it), snapshots are walked newest first, and
`--keep-within-daily D` keeps the newest snapshot of each calendar day strictly after newest - D.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from .plan import Fault

STATUS_OF = {0: "success", 1: "failure", 3: "partial"}
DB_PREFIX = {"postgres": "db:pg/", "mariadb": "db:mariadb/"}   # the lab's database sources
DB_KIND = {"postgres": "postgres", "mariadb": "mysql"}
GUEST_PREFIXES = ("ct:", "vm:")                                # the node's guests: containers and VMs
PVE_KINDS = {"proxmox", "qemu"}                                 # the hooks that back them up, each failing alone
# faults after which the stored snapshots may hold any subset of the components (the run was cut short)
UNCERTAIN = {"sigkill", "sigterm", "disk-full"}

_DURATION = re.compile(r"(\d+)([yMmdh])")
_UNITS = {"y": 0, "m": 1, "M": 1, "d": 2, "h": 3}


# ---------------------------------------------------------------- retention (restic 0.14)
def parse_duration(text: str) -> tuple[int, int, int, int]:
    """restic's duration `1y2m3d4h` (the configuration also accepts M for months) -> (years, months, days, hours)."""
    if not text or _DURATION.sub("", text):
        raise ValueError(f"not a restic duration: {text!r}")
    parts = [0, 0, 0, 0]
    for number, unit in _DURATION.findall(text):
        parts[_UNITS[unit]] += int(number)
    return parts[0], parts[1], parts[2], parts[3]


def add_date(t: datetime, years: int, months: int, days: int) -> datetime:
    """Go's time.AddDate: out-of-range days roll over into the next month (Feb 31 -> Mar 3)."""
    total = t.year * 12 + (t.month - 1) + years * 12 + months
    first = t.replace(year=total // 12, month=total % 12 + 1, day=1)
    return first + timedelta(days=t.day - 1 + days)


def keep_within_daily(snapshots: Mapping[str, datetime], within: str, now: datetime) -> set[str]:
    """The ids `restic forget --keep-within-daily within` keeps (0.14), with `now` the clock of that forget."""
    if not snapshots:
        return set()
    past = [t for t in snapshots.values() if t < now]
    latest = max(past) if past else datetime.min.replace(tzinfo=UTC)
    years, months, days, hours = parse_duration(within)
    limit = add_date(latest, -years, -months, -days) - timedelta(hours=hours) if past else latest
    kept: set[str] = set()
    last_day = None
    for snap_id, when in sorted(snapshots.items(), key=lambda item: item[1], reverse=True):
        day = (when.year, when.month, when.day)
        if when > limit and day != last_day:
            kept.add(snap_id)
            last_day = day
    return kept


def expected_kept(policy: Mapping[str, Any], snapshots: Mapping[str, datetime], now: datetime) -> set[str]:
    """What a retention policy of the configuration keeps. Only keep_within_daily is modelled (the lab's)."""
    used = {k: v for k, v in policy.items() if v is not None}
    if set(used) != {"keep_within_daily"}:
        raise NotImplementedError(f"the soak models keep_within_daily only, not {sorted(used)}")
    return keep_within_daily(snapshots, str(used["keep_within_daily"]), now)


def retention_problems(name: str, before: Mapping[str, datetime], after: Mapping[str, datetime], *,
                       policy: Mapping[str, Any] | None, forgot: bool | None, now: datetime) -> list[str]:
    """Compare a repository with what its retention allows.

    `before`: its snapshots after the previous night; `after`: now. `forgot`: True when a forget ran to its end
    tonight, False when none ran, None when unknown (a run killed around its forget). Without a forget nothing
    may vanish; after one the repository holds exactly what the policy keeps of everything it held.
    """
    seen = {**before, **after}
    gone = sorted(set(before) - set(after))
    if policy is None or forgot is False:
        return [f"{name}: snapshots vanished though no retention ran: {_days(gone, seen)}"] if gone else []
    kept = expected_kept(policy, seen, now)
    problems = []
    lost = sorted(set(gone) & kept)
    if lost:
        problems.append(f"{name}: lost snapshots its retention keeps: {_days(lost, seen)}")
    if forgot:
        extra = sorted(set(after) - kept)
        if extra:
            problems.append(f"{name}: still holds what its retention forgets: {_days(extra, seen)}")
    return problems


def _days(ids: list[str], times: Mapping[str, datetime]) -> str:
    return ", ".join(f"{i[:8]} ({times[i].date()})" for i in ids)


# ---------------------------------------------------------------- the run's own account
def expected_codes(fault: Fault | None) -> tuple[int, ...]:
    """The exit codes a run may truthfully give under this fault (sigkill: none, the run is dead)."""
    if fault is None or fault.kind == "s3-slow" or fault.label == "stale-lock:killed-run":
        return (0,)
    if fault.kind == "sigkill":
        return ()
    if fault.kind == "sigterm" or fault.label == "disk-full:dumps":
        return (1, 3)
    if fault.label == "disk-full:preflight":
        return (1,)
    if fault.label == "stale-lock:foreign":
        return (0, 3)  # 3: retention could not take its lock, and says so
    return (3,)


def truth_problems(rc: int, summary: Mapping[str, Any] | None, last_run: Mapping[str, Any] | None,
                   repositories: set[str]) -> list[str]:
    """Exit code, --json summary and last-run.json agree, and say what really happened (README's exit codes)."""
    if summary is None:
        return [f"exit {rc} without a --json summary"]
    problems = []
    if summary.get("exit_code") != rc or summary.get("status") != STATUS_OF.get(rc):
        problems.append(f"exit {rc} but the summary says {summary.get('status')} / {summary.get('exit_code')}")
    failures, snapshots = summary.get("failures") or [], summary.get("snapshots") or {}
    if rc == 0 and (failures or set(snapshots) != repositories):
        problems.append(f"exit 0 with failures {len(failures)} and snapshots in {sorted(snapshots)}")
    if rc == 1 and (snapshots or not failures):
        problems.append(f"exit 1 (failure: no snapshot) but snapshots {snapshots}, {len(failures)} failures")
    if rc == 3 and (not snapshots or not failures):
        problems.append(f"exit 3 (partial) but snapshots {snapshots}, {len(failures)} failures")
    for key in ("run_id", "status", "exit_code", "failures", "snapshots"):
        if (last_run or {}).get(key) != summary.get(key):
            problems.append(f"last-run.json {key} differs from the summary's")
    return problems


def fault_problems(fault: Fault | None, rc: int, summary: Mapping[str, Any]) -> list[str]:
    """The failures name the fault, and only the sources it touched."""
    failures = summary.get("failures") or []
    messages = " | ".join(str(f.get("message", "")) for f in failures)
    kinds = {f.get("kind") for f in failures}
    if fault is None or rc == 0:
        return []
    want = {"sigterm": lambda: any(f.get("kind") == "run" and "SIGTERM" in f.get("message", "") for f in failures),
            "s3-down": lambda: any(f.get("source") == "offsite" for f in failures) and kinds <= {"repository",
                                                                                                "terraform"},
            "db-down": lambda: kinds == {DB_KIND[fault.variant]},
            "pve-down": lambda: kinds == PVE_KINDS,
            "vzdump-fail": lambda: [f.get("component") for f in failures] == [f"ct:{fault.variant}"],
            "disk-full": lambda: ("not enough free space" if fault.variant == "preflight"
                                  else "No space left on device") in messages,
            "stale-lock": lambda: kinds == {"retention"} and "lock" in messages}.get(fault.kind)
    if want is None or want():
        return []
    told = [(f.get("kind"), f.get("component"), str(f.get("message", ""))[:120]) for f in failures]
    return [f"the failures do not tell {fault.label}: {told}"]


def component_problems(fault: Fault | None, universe: set[str], present: set[str]) -> list[str]:
    """The night's snapshot holds what the lab held, less exactly what the fault took away."""
    problems = []
    extra = present - universe
    if extra:
        problems.append(f"the snapshot holds components the lab did not have: {sorted(extra)}")
    gone = {c for c in universe if _taken(fault, c)}
    wrongly = present & gone
    if wrongly:
        problems.append(f"the snapshot holds what {fault.label if fault else '-'} made impossible: {sorted(wrongly)}")
    if fault is None or fault.kind not in UNCERTAIN:
        missing = universe - gone - present
        if missing:
            problems.append(f"the snapshot lacks {sorted(missing)}")
    return problems


def _taken(fault: Fault | None, component: str) -> bool:
    if fault is None:
        return False
    if fault.label == "s3-down:start":
        return component.startswith("tfstate:")  # the state bucket is behind the same S3
    if fault.kind == "db-down":
        return component.startswith(DB_PREFIX[fault.variant])
    if fault.kind == "pve-down":
        return component.startswith(GUEST_PREFIXES)
    if fault.kind == "vzdump-fail":
        return component == f"ct:{fault.variant}"
    return False


def interrupts(fault: Fault | None) -> bool:
    """Faults that cut a restic command short: it may have saved a snapshot it could not report."""
    return fault is not None and (fault.kind in ("sigkill", "sigterm") or fault.label == "s3-down:copy")
