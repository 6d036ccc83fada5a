"""The staged day the baselines back up: the bytes (a) backed up, hard-linked away while (a) runs, or a
fallback staged by the product's pre-hooks when that copy was missed."""

from __future__ import annotations

import hashlib
import os
import shutil
import threading
import time
from pathlib import Path
from typing import Any

from .context import Context, du


class StagingCopier(threading.Thread):
    """Hard-link the product's staging day into `dest` as soon as its manifest.json exists (the pipeline
    writes it after the last pre-hook, before restic starts, and removes the day after the backup)."""

    def __init__(self, day_dir: Path, dest: Path) -> None:
        super().__init__(name="staging-copier", daemon=True)
        self.day_dir, self.dest = day_dir, dest
        self.ok = False
        self.error = ""
        self._halt = threading.Event()

    def run(self) -> None:
        while not self._halt.is_set():
            if (self.day_dir / "manifest.json").exists():
                try:
                    for dirpath, _dirs, files in os.walk(self.day_dir):
                        target = self.dest / os.path.relpath(dirpath, self.day_dir)
                        target.mkdir(parents=True, exist_ok=True)
                        for name in files:
                            os.link(os.path.join(dirpath, name), target / name)
                    self.ok = True
                except OSError as exc:
                    self.error = str(exc)
                return
            self._halt.wait(0.02)

    def stop(self) -> None:
        self._halt.set()
        self.join(timeout=10)


def ensure_stage(ctx: Context, day: str, product_row: dict[str, Any] | None) -> Path:
    stage = ctx.stage_root / ctx.date
    # the product removes its staging once the snapshot is saved: a copy the removal overtook is short
    if (product_row and product_row.get("staging_copied") and (stage / "manifest.json").exists()
            and du(stage) == product_row.get("bytes_staged")):
        return stage
    shutil.rmtree(stage, ignore_errors=True)
    ctx.say(f"{day} staging with the product's pre-hooks (bench.stage)")
    ctx.probe(f"{day}-stage", ctx.stage_argv(stage), "stage")
    return stage


def sha_seconds(stage: Path) -> float:
    """What the product spends hashing artifacts (sha256 of every staged file, as ctx.artifact does)."""
    t0 = time.monotonic()
    for dirpath, _dirs, files in os.walk(stage):
        for name in files:
            digest = hashlib.sha256()
            with open(os.path.join(dirpath, name), "rb") as fh:
                while block := fh.read(4 * 2**20):
                    digest.update(block)
    return round(time.monotonic() - t0, 3)
