"""Retention: `restic forget` by each repository's policy, then prune when it is due."""

from __future__ import annotations

import time

from . import restic
from .config import Config
from .report import RunSummary
from .tags import TAG


def _prune_due(config: Config, name: str, every_days: int) -> bool:
    if every_days <= 0:
        return True
    try:
        last = float((config.state_dir / f"prune-{name}.stamp").read_text().strip())
    except (FileNotFoundError, ValueError):
        return True
    # an hour of slack: a nightly run that starts a little earlier than last time still prunes on its day
    return time.time() - last >= every_days * 86400 - 3600


def _skipped(name: str) -> str:
    if name == "offsite":
        # the append-only offsite (docs/security.md): this host's key cannot delete, a trusted machine
        # with the delete-capable key runs forget/prune
        return ("left to the trusted host: retention is null here (append-only offsite), run"
                " `restic-orch forget` there with the key that may delete")
    return "no retention configured (retention: null, append-only repository)"


def apply_retention(config: Config, repos: dict[str, restic.Repo], summary: RunSummary,
                    dry_run: bool = False) -> None:
    """Forget our snapshots of this host by each repository's policy, prune when due; one phase per repository."""
    for name, repo in repos.items():
        settings = getattr(config.repositories, name)
        started = time.monotonic()
        if settings.retention is None:
            why = _skipped(name)
            summary.retention[name] = {"skipped": why}
            summary.phase(f"retention:{name}", started, True, why)
            continue
        try:
            groups = repo.forget(settings.retention.restic_args(), host=config.host, tags=[TAG], dry_run=dry_run)
            removed = sum(len(g.remove) for g in groups)
            kept = sum(len(g.keep) for g in groups)
            pruned = False
            if not dry_run and removed and _prune_due(config, name, settings.prune_every_days):
                repo.prune()
                (config.state_dir / f"prune-{name}.stamp").write_text(str(time.time()))
                pruned = True
            summary.retention[name] = {"kept": kept, "removed": removed, "pruned": pruned}
            summary.phase(f"retention:{name}", started, True, f"kept {kept}, removed {removed}")
        except restic.ResticError as exc:
            summary.phase(f"retention:{name}", started, False, str(exc))
            summary.fail("retention", name, str(exc))
