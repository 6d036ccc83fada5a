"""The "30-night soak" section of docs/reliability.md, rewritten in place between its two markers."""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

from restic_orch import restic

from . import plan, run
from .state import NightResult, Soak

BEGIN = "<!-- soak:begin: written by `python -m soak --report docs/reliability.md`, edit soak/report.py -->"
END = "<!-- soak:end -->"

METHOD = """\
## 30-night soak

`make soak` (`python -m soak [--nights 30] [--seed N] [--report docs/reliability.md]`) starts a lab of its own
and runs the real CLI for 30 simulated nights. The clock is the soak's: night *i* runs at 03:00 UTC, the last one
the day before yesterday (restic's `forget` ignores snapshots dated after its own clock when it looks for the
newest one), and
the run is told its time through `soak/night.py`, which runs the CLI's own `backup` command with
`pipeline.run_backup(..., when=night)` (restic `--time`, the staged day, the manifest). Each night:

1. **the lab changes**: rows inserted, updated and deleted in the four databases (MariaDB triggers update other
   tables), now and then a new role or account; files written, appended, re-moded and deleted in the containers'
   root filesystems; every second night a few 64 KiB clusters rewritten in place in the VM's disk image (what
   its running guest writes); one Terraform state bumped (serial + 1); one vault file re-encrypted with new
   secrets; every third night `/etc/hosts` of the node;
2. **the soak records** what the lab holds, read from the lab's parts (trees with modes, owners and sha256;
   the VMs' configs as an in-place restore keeps them and their disk images' sha256; every table's rows; state
   objects; vault and host files with their modes; the roles and accounts);
3. **a fault may strike** (nights 1, 5, 9, … stay clean; the others take the kinds in a seeded order, every
   kind before any repeats): SIGKILL of the run and its children or SIGTERM of the run in the dump phase
   (a seeded delay after the staged day appears) or in the backup, copy or forget phase (once that restic
   holds its lock in the repository); S3 down before the run or cut during the copy; S3 slow (every chunk +30 ms,
   2 MiB/s); PostgreSQL or MariaDB stopped; the PVE API stopped (no container nor VM can be backed up); one
   container's vzdump failing (the other guests are still backed up); staging on a 32 MiB tmpfs (refused by
   preflight) or on a 96 MiB one filled up once the dumps started; a stale lock (a killed run's leftovers: locks
   in both repositories, crash marker, half-staged day; or a dead admin restic's lock in the local repository);
4. the backup runs, the fault is **healed** (services started again, PVE switches cleared, tmpfs unmounted; a
   killed run's leftovers are left for the next run to clean);
5. **the checks**: the exit code is one the fault allows and agrees with the `--json` summary and
   `last-run.json` (0: no failure, both snapshots; 1: no snapshot; 3: a snapshot and a failure), the failures
   name the fault and only the sources it touched; tonight's snapshot holds every component the lab had less
   exactly what the fault took away; each repository holds exactly the nights its retention keeps (below);
   every offsite copy has its local snapshot's tree; no restic lock, no run lock, no crash marker left by a
   run that ended by itself; `restic check` of both repositories;
6. **restores** with the product's `restore` into a sandbox (`--as-vmid 9990+`, `--target-db soak_<db>`,
   `--target-dir`) or, for a VM, in place (`--force`: stopped, replaced, started again), compared with the
   soak's record of that night: from tonight's local snapshot a container, a VM, a database and a file; from its
   offsite copy a file; from one older kept night a file. After the last night every component comes back from
   the newest snapshot holding it, and one file of every night still kept in either repository.

**Retention.** Local: the role's `keep_within_daily: 7d`, applied by the run itself after a clean run only.
Offsite: the host's offsite is append-only (`retention: null`, a key that cannot delete); the soak plays the
trusted machine of docs/security.md and runs `restic-orch forget` with the admin key and the 30-day policy
after every night. The expectation follows restic 0.14's `forget` (`internal/restic/snapshot_policy.go`):
a keep-within duration counts back from the **newest snapshot** of the group, not from the wall clock, and keeps
the newest snapshot of each day strictly after it (so 7 days with one snapshot a night). After a run that did
not forget, nothing may vanish; after a forget, the repository holds exactly what the policy keeps; around a
killed forget, anything in between. With 30 nights the offsite's 30 days keep everything;
`--every-days 2` makes both policies forget within a short soak.

**Stale locks.** restic 0.14 never passes over a stale lock, so a dead restic's lock (an admin's, or a killed
run's) would stop every later `forget` and `check`. restic-orch runs `restic unlock` (stale locks only, never a
live one) once when a repository answers "locked", then retries; the soak still accepts 3 (or 0) on a night with
a dead admin's lock and heals as an operator would, with `restic unlock`.
A killed run (SIGKILL, or SIGTERM: restic before 0.17 dies on it without removing its lock) may leave stale
restic locks. The soak still expects that night's `check` and restores to work, and the next run to clear them
and exit as if nothing had happened; only the trusted host's forget may refuse while the host's fresh lock is
offsite (from another machine nothing tells it from a live one). A soak whose last night was killed ends with
a recovery run the next day.

The account dumps (`@globals`, `@users`) cannot be restored beside the live server: the soak reads them from
the snapshot and checks that every role and account of that night is created. A failure prints the seed and
the night: `python -m soak --seed N --nights K` replays the same first K nights (the plan depends on the seed
and the night's number only).
"""


def write(path: Path, state: Soak, seconds: float) -> None:
    section = run.scrub("\n".join([BEGIN, METHOD, *figures(state, seconds), END]) + "\n", state.lab.dir)
    text = path.read_text(encoding="utf-8") if path.exists() else ""
    if BEGIN in text and END in text:
        head, rest = text.split(BEGIN, 1)
        text = head + section + rest.split(END, 1)[1].lstrip("\n")
    else:
        text = text.rstrip("\n") + "\n\n" + section
    path.write_text(text, encoding="utf-8")


def figures(state: Soak, seconds: float) -> list[str]:
    results, options = state.results, state.options
    failed = next((r for r in results if r.problems), None)
    final = state.final
    planned = sum(1 for r in results if r.number <= options.nights)
    recovered = " and the recovery run after the killed last night" if len(results) > planned else ""
    verdict = (f"**FAILED on night {failed.number}** (replay: `{run.replay(options, failed.number)}`)" if failed
               else "**FAILED after the last night**" if final.get("problems")
               else f"**green**: {planned} nights{recovered}, nothing lost")
    faults = run.injected(results)
    missed = [r for r in results if r.fault != "-" and not r.landed]
    exits = Counter("killed" if r.exit is not None and r.exit < 0 else str(r.exit) for r in results)
    nightly = sum(r.verified for r in results)
    kinds: Counter[str] = Counter()
    for r in results:
        kinds.update(r.by_kind)
    kinds.update(final.get("by_kind") or {})
    stored = final.get("bytes") or {}
    lines = [f"### Last run: seed {options.seed}, {planned} of {options.nights} nights, {verdict}", "",
             f"- {seconds / 60:.1f} minutes on {_machine()}, restic {restic.version()}, nights"
             f" {results[0].day if results else '-'} to {results[-1].day if results else '-'} at 03:00 UTC"
             f"{'' if options.every_days == 1 else f', every {options.every_days} days'}"
             f"{', quick checks' if options.quick else ''};",
             f"- faults injected: **{sum(faults.values())}** ({_counts(faults, plan.KINDS)})"
             + (f"; {len(missed)} missed their moment (the run was past it)" if missed else "") + ";",
             f"- exit codes: {', '.join(f'{k} × {v}' for k, v in sorted(exits.items()))};",
             f"- restores verified bit-identical against the soak's record: **{nightly + final.get('verified', 0)}**"
             f" ({nightly} nightly, {final.get('verified', 0)} closing; {_counts(dict(kinds))});",
             f"- stored at the end: local {final.get('stored', {}).get('local', '-')} snapshots,"
             f" {_mib(stored.get('local'))}; offsite {final.get('stored', {}).get('offsite', '-')} snapshots,"
             f" {_mib(stored.get('offsite'))}; the runs added {_mib(sum(r.data_added for r in results))};",
             f"- failures: {_failures(results, final)}.", "",
             "| night | fault | struck | exit | tonight | local | offsite | restores | result |",
             "|---|---|---|---|---|---|---|---|---|"]
    return lines + [_row(r, r.number > options.nights) for r in results] + [""]


def _row(r: NightResult, recovery: bool = False) -> str:
    strike = next((n for n in r.notes if n.startswith(("struck", "the run ended"))), "")
    fault = r.fault if r.landed or r.fault == "-" else f"{r.fault} (missed)"
    fault = "- (recovery run)" if recovery else fault
    tonight = "+".join(n for n in ("local", "offsite") if r.held.get(n)) or "none"
    exit_code = "killed" if r.exit is not None and r.exit < 0 else f"{r.exit} {r.status}"
    result = "ok" if not r.problems else "; ".join(r.problems)[:600]
    return (f"| {r.number} | {fault} | {strike or '-'} | {exit_code} | {tonight} | {r.stored.get('local')}"
            f" | {r.stored.get('offsite')} | {r.verified} | {result} |")


def _counts(counts: dict[str, int], order: tuple[str, ...] = ()) -> str:
    keys = [k for k in order if k in counts] + sorted(k for k in counts if k not in order)
    return ", ".join(f"{k} {counts[k]}" for k in keys) or "none"


def _mib(value: int | None) -> str:
    return "-" if value is None else f"{value / 2**20:.1f} MiB"


def _failures(results: list[NightResult], final: dict) -> str:
    problems = [f"night {r.number}: {p}" for r in results for p in r.problems] + \
        [f"closing: {p}" for p in final.get("problems") or []]
    return "none" if not problems else f"{len(problems)}: " + "; ".join(problems)[:2000]


def _machine() -> str:
    return f"{os.cpu_count()} cores"
