"""Optional run-parts style user hooks: <hooks_dir>/{pre-backup.d,post-backup.d,on-failure.d}/*."""

from __future__ import annotations

import logging
import os
import re
from typing import TYPE_CHECKING

from . import runner

if TYPE_CHECKING:
    from .config import Config
    from .report import RunSummary

log = logging.getLogger("restic_orch.userhooks")
NAME = re.compile(r"^[A-Za-z0-9_-]+$")  # run-parts' rule: editor backups and .dpkg-old files are skipped


def run_parts(config: Config, phase: str, summary: RunSummary) -> None:
    """Run each executable in the phase directory in name order; a failing pre-backup hook fails the run."""
    if config.hooks_dir is None:
        return
    folder = config.hooks_dir / phase
    if not folder.is_dir():
        return
    env = {"RESTIC_ORCH_RUN_ID": summary.run_id, "RESTIC_ORCH_STATUS": summary.status,
           "RESTIC_ORCH_PHASE": phase, "RESTIC_ORCH_HOST": config.host}
    for entry in sorted(folder.iterdir()):
        if not (entry.is_file() and NAME.match(entry.name) and os.access(entry, os.X_OK)):
            continue
        try:
            runner.run([str(entry)], env=env, timeout=600)
            log.info("user hook ran", extra={"hook": str(entry)})
        except runner.CommandError as exc:
            log.error("user hook failed", extra={"hook": str(entry), "error": str(exc)})
            if phase == "pre-backup.d":
                raise
