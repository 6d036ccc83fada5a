"""`python -m soak [--nights 30] [--seed N] [--report docs/reliability.md]`: see soak/__init__.py."""

from __future__ import annotations

import argparse
import secrets
import signal
import sys
import time
from pathlib import Path

from . import plan, report, run
from .state import Options


def parse(argv: list[str]) -> tuple[Options, Path | None]:
    parser = argparse.ArgumentParser(prog="python -m soak", description=__doc__)
    parser.add_argument("--nights", type=int, default=30)
    parser.add_argument("--seed", type=int, default=None, help="default: a new one, printed first")
    parser.add_argument("--report", type=Path, default=None, help="write the figures into this Markdown file's"
                        " '30-night soak' section (docs/reliability.md)")
    parser.add_argument("--every-days", type=int, default=1, help="days between two nights (retention sooner)")
    parser.add_argument("--kinds", default=",".join(plan.KINDS), help="the fault kinds to draw from")
    parser.add_argument("--quick", action="store_true", help="one restore a night, restic check at the end only")
    parser.add_argument("--lab-dir", type=Path, default=None, help="default: a new directory under /tmp")
    parser.add_argument("--keep-lab", action="store_true", help="leave the lab's directory (stopped) behind")
    parser.add_argument("--keep-going", action="store_true", help="go on after a failed night")
    args = parser.parse_args(argv)
    if args.nights < 1 or args.every_days < 1:
        parser.error("--nights and --every-days must be at least 1")
    kinds = tuple(k for k in args.kinds.split(",") if k)
    if set(kinds) - set(plan.KINDS):
        parser.error(f"--kinds: unknown {sorted(set(kinds) - set(plan.KINDS))}; known: {', '.join(plan.KINDS)}")
    seed = args.seed if args.seed is not None else secrets.randbelow(10**6)
    return Options(seed, args.nights, args.every_days, kinds, args.quick, args.lab_dir, args.keep_lab,
                   args.keep_going), args.report


def _stop(signum: int, _frame: object) -> None:
    raise KeyboardInterrupt(f"stopped by {signal.Signals(signum).name}")  # the lab is brought down on the way out


def main(argv: list[str]) -> int:
    options, report_path = parse(argv)
    for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
        signal.signal(sig, _stop)
    print(f"soak: seed {options.seed}, {options.nights} nights; replay: {run.replay(options, options.nights)}",
          flush=True)
    started = time.monotonic()
    state = run.soak(options, say=lambda text: print(text, flush=True))
    seconds = time.monotonic() - started
    failed = next((r for r in state.results if r.problems), None)
    if report_path is not None:
        report.write(report_path, state, seconds)
        print(f"soak: report written to {report_path}")
    if failed is not None:
        print(f"soak: FAILED on night {failed.number}; replay: {run.replay(options, failed.number)}")
        return 1
    if state.final.get("problems"):
        print(f"soak: FAILED after the last night; replay: {run.replay(options, options.nights)}")
        return 1
    faults = sum(run.injected(state.results).values())
    recovery = " and the recovery run" if len(state.results) > options.nights else ""
    print(f"soak: {options.nights} nights{recovery} green, {faults} faults injected, seed {options.seed},"
          f" {seconds / 60:.1f} min")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
