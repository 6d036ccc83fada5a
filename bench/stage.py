"""Stage a day with the product's own pre-hooks, without restic: `python -m bench.stage --config C --day-dir D`.

Used for raw restic's (b) tree, staged afresh just before it, for the VI1 suspend-mode probe, and as the
fallback when the copy of the end-to-end run's staging was missed. Prints a JSON object: per-hook seconds,
artifacts (component, path, size, meta), failures.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

from restic_orch import staging
from restic_orch.config import load_config
from restic_orch.hooks import build_hooks
from restic_orch.hooks.base import DumpContext


def stage(config_path: Path, day_dir: Path, only: set[str] | None = None) -> dict:
    config = load_config(config_path)
    day_dir.mkdir(parents=True, exist_ok=True)
    ctx = DumpContext(config=config, day_dir=day_dir, run_id="bench", log=logging.getLogger("restic_orch.bench"))
    result: dict = {"hooks": [], "artifacts": [], "failures": []}
    for hook in build_hooks(config, only):
        t0 = time.monotonic()
        outcome = hook.dump(ctx)
        result["hooks"].append({"kind": hook.kind, "name": hook.name, "seconds": round(time.monotonic() - t0, 3)})
        result["artifacts"] += [a.to_json() for a in outcome.artifacts]
        result["failures"] += [f.to_json() for f in outcome.failures]
    staging.write_manifest(day_dir, {"format": 1, "run_id": "bench", "artifacts": result["artifacts"],
                                     "failures": result["failures"]})
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.stage")
    parser.add_argument("--config", required=True, type=Path)
    parser.add_argument("--day-dir", required=True, type=Path)
    parser.add_argument("--only", default=None)
    args = parser.parse_args(argv)
    only = {k for k in args.only.split(",") if k} if args.only else None
    print(json.dumps(stage(args.config, args.day_dir, only), default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
