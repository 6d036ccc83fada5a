"""Stage a day with the product's own pre-hooks, without restic: `python -m bench.stage --config C --day-dir D`.

Used for raw restic's (b) tree, staged afresh just before it, for the VI1 suspend-mode probe, and as the
fallback when the copy of the end-to-end run's staging was missed. Prints a JSON object: per-hook seconds,
artifacts (component, path, size, meta), failures.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from restic_orch import pipeline
from restic_orch.config import load_config
from restic_orch.hooks import build_hooks
from restic_orch.report import RunSummary
from restic_orch.staging import Manifest

DUMP = "dump:"


def stage(config_path: Path, day_dir: Path, only: set[str] | None = None) -> dict[str, Any]:
    """The pipeline's own stage phase, nothing else: the same hooks, failure isolation and manifest."""
    config = load_config(config_path)
    day_dir.mkdir(parents=True, exist_ok=True)
    summary = RunSummary("stage", "bench", config.host, "")
    manifest = Manifest(run_id="bench", host=config.host)
    pipeline.stage(config, build_hooks(config, only), day_dir, summary, manifest)
    hooks = []
    for phase in summary.phases:
        if phase.name.startswith(DUMP):
            kind, _, name = phase.name[len(DUMP):].partition(":")
            hooks.append({"kind": kind, "name": name, "seconds": phase.seconds})
    return {"hooks": hooks, "artifacts": [a.to_json() for a in manifest.artifacts],
            "failures": list(manifest.failures)}


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
