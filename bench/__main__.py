"""`python -m bench [--quick] [--ct-mib N] [--db-mib M] ...`: run the benchmark, write bench/results.json,
print the Markdown tables. `python -m bench --report` prints the tables of the stored results only.

Sizes (flags win over environment variables):
  --quick / BENCH_QUICK=1      4 x 64 MiB containers + ~64 MiB of databases (a few minutes)
  --ct-mib / BENCH_CT_MIB      per-container root filesystem size, default 1024 (the target size)
  --db-mib / BENCH_DB_MIB      PostgreSQL + MariaDB data together, default 1024
  --churn / BENCH_CHURN        day-2 change rate, default 0.02
  --pages-into / BENCH_PAGES_INTO  data (default) or largest: which files get day 2's in-place page writes
  --raw-stage / BENCH_RAW_STAGE  fresh (default), copy or linked: the tree raw restic (b) backs up
  --pairs / BENCH_PAIRS        each day's (a)/(b) pair this many times, overhead judged on the median, default 5
  --profile                    also profile one more backup with py-spy (not part of the measured runs)

Last, the restore lane (r) empties the lab and times the host-lost restore from offsite (the RTO) against its
floor: raw restic restore + PVE restores + database loads (--skip restore leaves it out).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from . import report
from .context import EXCLUDES, Settings
from .lab import PAGE_TARGETS
from .run import run

RESULTS = Path(__file__).resolve().parent / "results.json"


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    return int(value) if value else default


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", default=os.environ.get("BENCH_QUICK") == "1")
    parser.add_argument("--ct-mib", type=int, default=None)
    parser.add_argument("--db-mib", type=int, default=None)
    parser.add_argument("--churn", type=float, default=float(os.environ.get("BENCH_CHURN", "0.02")))
    parser.add_argument("--pages-into", choices=PAGE_TARGETS, default=os.environ.get("BENCH_PAGES_INTO", "data"),
                        help="where day 2's in-place page writes go: files services rewrite in place (data) "
                        "or the three largest files of any kind (largest, the first model)")
    parser.add_argument("--cpu-percent", type=float, default=float(os.environ.get("BENCH_CPU_PERCENT", "30")),
                        help="limits.cpu_percent of the capped run: the product holds itself to it (cgroup quota)")
    parser.add_argument("--exclude-paths", default=os.environ.get("BENCH_EXCLUDE_PATHS", ",".join(EXCLUDES)),
                        help="comma-separated sources.proxmox.exclude_paths for every container ('' for none)")
    parser.add_argument("--gomaxprocs", type=int, default=_env_int("BENCH_GOMAXPROCS", 1),
                        help="limits.gomaxprocs for the product and raw restic (the Ansible role's default: 1)")
    parser.add_argument("--raw-stage", choices=("fresh", "copy", "linked"),
                        default=os.environ.get("BENCH_RAW_STAGE", "fresh"),
                        help="the tree raw restic (b) backs up: staged afresh by the product's pre-hooks just "
                        "before (fresh), a byte copy of (a)'s staging (copy) or hard links to it (linked)")
    parser.add_argument("--pairs", type=int, default=_env_int("BENCH_PAIRS", 5),
                        help="run each day's (a) uncapped and (b) this many times from the same checkpoint, "
                        "alternating their order, and judge the overhead on the median (1: once)")
    parser.add_argument("--base-dir", type=Path, default=Path(os.environ.get("BENCH_DIR", "/tmp/restic-orch-bench")))
    parser.add_argument("--skip", default=os.environ.get("BENCH_SKIP", ""),
                        help="comma-separated: capped,raw,naive,borg,zstd,zstd-rsyncable,fs,vi1,vma,restore")
    parser.add_argument("--profile", action="store_true",
                        help="after day 2, profile one more backup with py-spy (pip install py-spy into the venv)")
    parser.add_argument("--keep", action="store_true", help="leave the lab running and the work files in place")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--report", action="store_true", help="print the tables of the stored results and exit")
    return parser


def _settings(args: argparse.Namespace) -> Settings:
    """The run's settings; its name says its size (quick, full, or ct<N>-db<M>)."""
    ct = args.ct_mib or _env_int("BENCH_CT_MIB", 64 if args.quick else 1024)
    db = args.db_mib or _env_int("BENCH_DB_MIB", 64 if args.quick else 1024)
    name = "quick" if (ct, db) == (64, 64) else "full" if (ct, db) == (1024, 1024) else f"ct{ct}-db{db}"
    return Settings(name=name, ct_mib=ct, db_mib=db, churn=args.churn, pages_into=args.pages_into,
                    cpu_percent=args.cpu_percent,
                    exclude_paths=[p.strip() for p in args.exclude_paths.split(",") if p.strip()],
                    gomaxprocs=args.gomaxprocs or None, base_dir=args.base_dir, keep=args.keep,
                    skip={s.strip() for s in args.skip.split(",") if s.strip()}, profile=args.profile,
                    raw_stage=args.raw_stage, pairs=max(1, args.pairs))


def _save(out: Path, settings: Settings, result: dict[str, Any]) -> None:
    """The run replaces its own entry (by size) in the results file; the other sizes' stay."""
    data = {"schema": 1, "runs": {}}
    if out.exists():
        try:
            data = json.loads(out.read_text())
        except ValueError:
            pass
    data.setdefault("runs", {})[settings.name] = result
    # committed evidence names no path of the machine that made it: the bench's work tree is <bench-dir>
    text = json.dumps(data, indent=1, default=str).replace(str(settings.base_dir), "<bench-dir>")
    out.write_text(text + "\n")


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.report:
        data = json.loads(args.out.read_text())
        for result in data["runs"].values():
            print(report.render(result))
        return 0
    settings = _settings(args)
    result = run(settings)
    _save(args.out, settings, result)
    print(report.render(result))
    print(f"results: {args.out} (run '{settings.name}')", file=sys.stderr)
    return 0

if __name__ == "__main__":
    sys.exit(main())
