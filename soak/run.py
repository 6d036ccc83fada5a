"""The soak's loop: each night change the lab, record it, maybe strike, run the backup, heal, judge, restore."""

from __future__ import annotations

import json
import random
import re
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from . import faults, judge, lab, mutate, plan, proctree, record, sample, verify
from .plan import Night
from .state import REPOS, NightResult, Options, Soak

Say = Callable[[str], None]


def soak(options: Options, say: Say = print) -> Soak:
    nights = plan.plan(options.seed, options.nights, kinds=options.kinds, every_days=options.every_days)
    lab_dir = options.lab_dir or lab.new_dir()
    say(f"soak: lab in {lab_dir}")
    the_lab = lab.up(lab_dir)
    state = Soak(options, the_lab, nights)
    try:
        for night in nights:
            result = one_night(state, night)
            state.results.append(result)
            say(line(result))
            for problem in result.problems:
                say(f"    FAILED: {problem}")
            if result.problems and not options.keep_going:
                break
        last = state.results[-1]
        if last.landed and last.fault.startswith(("sigkill", "sigterm")) and (options.keep_going or not last.problems):
            night = plan.recovery(options.seed, state.nights[-1])
            state.nights.append(night)
            result = one_night(state, night)
            result.notes.insert(0, "recovery run: the last night was killed")
            state.results.append(result)
            say(line(result) + "  (recovery run)")
            for problem in result.problems:
                say(f"    FAILED: {problem}")
        if options.keep_going or not any(r.problems for r in state.results):
            closing(state, say)
        else:  # stopped on a failed night: what is stored, for the report
            state.final = {"verified": 0, "by_kind": {}, "problems": [], "stored": dict(state.results[-1].stored),
                           "bytes": stored_bytes(state)}
    finally:
        lab.down(the_lab, remove=not options.keep_lab)
    return state


def one_night(state: Soak, night: Night) -> NightResult:
    started = time.monotonic()
    rng = random.Random(night.draw)
    result = NightResult(night.number, night.when.date().isoformat(), night.fault.label if night.fault else "-")
    result.notes += mutate.day(state.lab, night.number, rng)
    state.records[night.number] = record.take(state.lab)
    rc, summary, last_run, inj = run_backup(state, night)
    fault = night.fault if inj is not None and inj.landed else None
    result.exit, result.landed = rc, fault is not None
    result.notes = (inj.notes if inj else []) + result.notes
    result.problems += judge.run_account(state, fault, rc, summary, last_run)
    offsite_forgot = False
    if not state.options.quick or night.number == state.nights[-1].number:
        offsite_forgot, problems = judge.trusted_forget(state, result)
        result.problems += problems
    after = judge.observe(state)
    forgot = {"local": judge.local_forgot(fault, summary), "offsite": offsite_forgot}
    result.problems += judge.storage(state, night, fault, rc, summary, after, forgot)
    result.problems += judge.components(state, night, fault, summary, after)
    result.problems += judge.leftovers(state, fault)
    if not state.options.quick:
        result.problems += judge.restic_check(state)
    # quick: the last night's snapshot is restored by the closing anyway
    last = night.number == state.nights[-1].number
    done = verify.Verified() if state.options.quick and last else sample.nightly(state, night.number, after, rng)
    result.verified, result.by_kind, result.problems = done.count, done.by_kind, result.problems + done.problems
    judge.night_result(result, summary, night, after, state)
    state.before = after
    state.previous_killed = fault is not None and fault.kind == "sigkill"
    result.seconds = round(time.monotonic() - started, 1)
    return result


def run_backup(state: Soak, night: Night) -> tuple[int, dict[str, Any] | None, dict[str, Any] | None,
                                                    faults.Injection | None]:
    """The CLI's backup at the night's time, with the night's fault struck around it, then healed."""
    the_lab, day = state.lab, night.when.date().isoformat()
    inj = faults.before(the_lab, night.fault, day) if night.fault else None
    proc: subprocess.Popen | None = None
    try:
        proc = proctree.start(["soak.night", night.when.isoformat(), "--config", str(the_lab.config_path),
                               "--json", "backup"])
        if inj is not None:
            faults.during(the_lab, inj, proc, day)
        out, _ = proc.communicate(timeout=1800)
    finally:
        if proc is not None and proc.poll() is None:
            proctree.kill_tree(proc)
        if inj is not None:
            faults.heal(the_lab, inj)
        else:
            faults.wait_pve_idle(the_lab)
    summary = json.loads(out) if out.strip().startswith("{") else None
    last = the_lab.config.state_dir / "last-run.json"
    last_run = json.loads(last.read_text()) if last.exists() else None
    return proc.returncode, summary, last_run, inj


def closing(state: Soak, say: Say) -> None:
    """After the last night: every component back, one file of every kept night, restic check, bytes stored."""
    started = time.monotonic()
    after = state.before  # the last night's listing: nothing ran since
    done = sample.closing(state, after, random.Random(f"{state.options.seed}:closing"))
    problems = done.problems + judge.restic_check(state)
    state.final = {"verified": done.count, "by_kind": done.by_kind, "problems": problems,
                   "stored": {name: len(after[name]) for name in REPOS}, "bytes": stored_bytes(state),
                   "seconds": round(time.monotonic() - started, 1)}
    say(f"closing: {done.count} restores verified ({_kinds(done.by_kind)}), restic check"
        f" {'clean' if not problems else 'see below'}, {state.final['seconds']} s")
    for problem in problems:
        say(f"    FAILED: {problem}")


def stored_bytes(state: Soak) -> dict[str, int]:
    """What each repository takes on its storage: the local directory, the offsite bucket's objects."""
    from restic_orch.lab.s3 import s3_client

    local = Path(state.lab.config.repositories.local.url)
    info = state.lab.services()["s3"]
    pages = s3_client(info).get_paginator("list_objects_v2").paginate(
        Bucket=info["buckets"]["offsite"], Prefix=info.get("offsite_prefix") or "")
    return {"local": sum(p.stat().st_size for p in local.rglob("*") if p.is_file()),
            "offsite": sum(o["Size"] for page in pages for o in page.get("Contents", []))}


def _kinds(by_kind: dict[str, int]) -> str:
    return ", ".join(f"{k} {v}" for k, v in sorted(by_kind.items())) or "none"


def line(result: NightResult) -> str:
    fault = result.fault if result.landed or result.fault == "-" else f"{result.fault} (missed)"
    held = ("L" if result.held.get("local") else "-") + ("O" if result.held.get("offsite") else "-")
    verdict = "ok" if not result.problems else f"{len(result.problems)} PROBLEMS"
    strike = next((n for n in result.notes if n.startswith(("struck", "the run ended"))), "")
    return (f"night {result.number:02d} {result.day}  {fault:<22} exit {result.exit!s:>3} {result.status:<8}"
            f" tonight {held}  local {result.stored.get('local', 0):>2} offsite {result.stored.get('offsite', 0):>2}"
            f"  restores {result.verified}  {verdict}  {result.seconds} s" + (f"  ({strike})" if strike else ""))


def replay(options: Options, number: int) -> str:
    kinds = "" if options.kinds == plan.KINDS else f" --kinds {','.join(options.kinds)}"
    every = "" if options.every_days == 1 else f" --every-days {options.every_days}"
    quick = " --quick" if options.quick else ""
    return f"python -m soak --seed {options.seed} --nights {number}{every}{kinds}{quick}"


def scrub(text: str, lab_dir: Path) -> str:
    """No absolute path in what is printed for the report: the lab becomes <lab>, scratch space <tmp>."""
    return re.sub(r"/tmp/[^\s'\",)\]]+", "<tmp>", text.replace(str(lab_dir), "<lab>"))


def injected(results: list[NightResult]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for result in results:
        if result.landed:
            kind = result.fault.split(":", 1)[0]
            counts[kind] = counts.get(kind, 0) + 1
    return counts

