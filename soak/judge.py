"""After each night: does the lab's storage agree with the run's account, with retention, with the soak's record?"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from restic_orch.restic import Snapshot

from . import expect, faults, reads, verify
from .lab import OFFSITE_POLICY
from .plan import Fault, Night
from .proctree import run_lock_free
from .state import REPOS, NightResult, Soak


def run_account(soak: Soak, fault: Fault | None, rc: int, summary: dict[str, Any] | None,
                last_run: dict[str, Any] | None) -> list[str]:
    """The exit code, the --json summary and last-run.json tell the truth about this fault."""
    if fault is not None and fault.kind == "sigkill":
        return [] if summary is None else ["a run killed with SIGKILL printed a summary"]
    codes = expect.expected_codes(fault)
    problems = [] if rc in codes else [f"exit {rc}, expected {' or '.join(map(str, codes))}"
                                       f" under {fault.label if fault else 'no fault'}"]
    problems += expect.truth_problems(rc, summary, last_run, {name for name, _ in soak.lab.config.repositories.items()})
    if summary is None:
        return problems
    problems += expect.fault_problems(fault, rc, summary)
    ran = "kept" in (summary.get("retention") or {}).get("local", {})
    if ran != (rc == 0):
        problems.append(f"local retention {'ran' if ran else 'did not run'} on a run that exited {rc}")
    after_kill = soak.previous_killed or (fault is not None and fault.label == "stale-lock:killed-run")
    noticed = any(n.get("source") == "previous" for n in summary.get("notices") or [])
    if after_kill and not noticed:
        problems.append("the run after a killed one does not say the previous run was interrupted")
    return problems


def local_forgot(fault: Fault | None, summary: dict[str, Any] | None) -> bool | None:
    """Did the run's own forget of the local repository run to its end (None: cannot tell)?"""
    if summary is None or (fault is not None and fault.kind == "sigkill"):
        return None
    if "kept" in (summary.get("retention") or {}).get("local", {}):
        return True
    if any(f.get("kind") == "retention" and f.get("source") == "local" for f in summary.get("failures") or []):
        return None  # forget may have run and prune failed
    return False


def trusted_forget(soak: Soak, result: NightResult) -> tuple[bool, list[str]]:
    """The trusted machine's `restic-orch forget` with the admin key (the host's key cannot delete offsite).

    A host run killed mid-copy leaves its lock offsite; from another machine, minutes later, nothing tells it
    from a live one: the forget must refuse (exit 1, locked) until the host's next run has cleared it."""
    rc, data, err = verify.cli(soak.lab.trusted_path, "forget")
    if rc == 0:
        return True, []
    why = str((data or {}).get("failures") or err.strip()[-300:])
    if "locked" in why and faults.locks(soak.lab, "offsite"):
        result.notes.append("the trusted host's forget refused: the killed run's lock is still offsite")
        return False, []
    return False, [f"trusted host's forget exited {rc}: {why}"]


def observe(soak: Soak) -> dict[str, dict[str, Snapshot]]:
    host = soak.lab.config.host
    return {name: reads.snapshots(repo, host) for name, repo in soak.lab.repos().items()}


def storage(soak: Soak, night: Night, fault: Fault | None, rc: int, summary: dict[str, Any] | None,
            after: dict[str, dict[str, Snapshot]], forgot: dict[str, bool | None]) -> list[str]:
    """Each repository holds exactly the nights its retention keeps, tonight's as the run reported it."""
    problems: list[str] = []
    now = datetime.now(UTC)
    policies = {"local": soak.lab.config.repositories.local.retention, "offsite": None}
    for name in REPOS:
        policy = OFFSITE_POLICY if name == "offsite" else (policies[name].model_dump() if policies[name] else None)
        before = {i: s.time for i, s in soak.before[name].items()}
        problems += expect.retention_problems(name, before, {i: s.time for i, s in after[name].items()},
                                              policy=policy, forgot=forgot[name], now=now)
        nights = soak.by_night(after[name])
        if 0 in nights:
            problems.append(f"{name}: snapshots of no soak night: {[s.short_id for s in nights[0]]}")
        problems += [f"{name}: {len(v)} snapshots of night {k}" for k, v in nights.items() if k and len(v) > 1]
        problems += _tonight(name, nights.get(night.number, []), fault, summary)
    local, offsite = soak.by_night(after["local"]), soak.by_night(after["offsite"])
    for number in sorted(set(local) & set(offsite)):
        if {s.tree for s in local[number]} != {s.tree for s in offsite[number]}:
            problems.append(f"the offsite copy of night {number} is not the local snapshot (another tree)")
    if rc == 0 and not set(local) <= set(offsite):
        problems.append(f"after a clean run offsite still lacks nights {sorted(set(local) - set(offsite))}")
    return problems


def _tonight(name: str, held: list[Snapshot], fault: Fault | None, summary: dict[str, Any] | None) -> list[str]:
    if summary is None:
        return []  # killed: whatever it saved is judged by its content
    said = (summary.get("snapshots") or {}).get(name)
    if said and not any(s.id.startswith(said) for s in held):
        return [f"{name}: the run reported snapshot {said}, the repository holds {[s.short_id for s in held]}"]
    if not said and held and not expect.interrupts(fault):
        return [f"{name}: holds a snapshot of tonight ({held[0].short_id}) the run did not report"]
    return []


def components(soak: Soak, night: Night, fault: Fault | None, summary: dict[str, Any] | None,
               after: dict[str, dict[str, Snapshot]]) -> list[str]:
    """Tonight's snapshot holds what the lab held, less what the fault took away."""
    repos = soak.lab.repos()
    for name in REPOS:
        tonight = soak.by_night(after[name]).get(night.number)
        if tonight:
            snap = tonight[0]
            if summary is not None and snap.tree not in soak.components and (summary.get("snapshots") or {}):
                soak.components[snap.tree] = set(summary.get("components") or [])
            held = held_by(soak, repos[name], snap)
            return expect.component_problems(fault, set(soak.records[night.number]), held)
    return []


def held_by(soak: Soak, repo: Any, snap: Snapshot) -> set[str]:
    if snap.tree not in soak.components:
        soak.components[snap.tree] = set(verify.manifest(repo, snap))
    return soak.components[snap.tree]


def leftovers(soak: Soak, fault: Fault | None) -> list[str]:
    """A run that ended by itself leaves no lock; a killed one leaves its crash marker for the next run."""
    config = soak.lab.config
    problems = [] if run_lock_free(config.state_dir) else ["the host's run lock is still held after the run"]
    marker = (config.state_dir / "run-in-progress.json").exists()
    if fault is not None and fault.kind == "sigkill":
        return problems + ([] if marker else ["a killed run left no crash marker"])
    if fault is not None and fault.kind == "sigterm":
        # restic before 0.17 dies on SIGTERM without removing its lock: the next run must cope with it
        return problems + (["the crash marker is still there after the run"] if marker else [])
    if marker:
        problems.append("the crash marker is still there after a run that ended")
    for name in REPOS:
        left = faults.locks(soak.lab, name)
        if left:
            problems.append(f"{name}: restic locks left after the run: {[x[:8] for x in left]}")
    return problems


def restic_check(soak: Soak) -> list[str]:
    """`restic-orch check` of both repositories, also right after a killed run (its stale locks in the way)."""
    rc, data, err = verify.cli(soak.lab.config_path, "check")
    results = (data or {}).get("repositories") or {}
    if rc == 0 and results and all(r.get("ok") for r in results.values()):
        return []
    bad = {n: str(r.get("output", ""))[-300:] for n, r in results.items() if not r.get("ok")} or err[-300:]
    return [f"restic check exited {rc}: {bad}"]


def night_result(result: NightResult, summary: dict[str, Any] | None, night: Night,
                 after: dict[str, dict[str, Snapshot]], soak: Soak) -> None:
    result.status = (summary or {}).get("status", "killed" if summary is None else "")
    result.data_added = sum(int(v or 0) for v in ((summary or {}).get("data_added") or {}).values())
    for name in REPOS:
        result.held[name] = night.number in soak.by_night(after[name])
        result.stored[name] = len(after[name])
