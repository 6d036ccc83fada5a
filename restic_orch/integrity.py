"""`restic check` on the configured repositories, each result kept in the run summary; and whether the escrow
sheet on record still matches them (a warning, never a failure)."""

from __future__ import annotations

from typing import Any

from . import progress, restic, rotation
from .config import Config
from .report import RunSummary


def check_repositories(config: Config, summary: RunSummary, only: str | None = None,
                       read_data_subset: str | None = None) -> dict[str, dict[str, Any]]:
    """{name: {"ok", "output", "read_data_subset"}} for each repository (or `only`); a failed one fails the
    summary, which is finished.

    Without an explicit `read_data_subset` and with check.rotation_parts set, each repository reads its next
    part (rotation.py); only a check that passed moves its rotation on, so a failed part is read again next time.
    """
    from .repos import open_all

    rotating = read_data_subset is None and config.check.rotation_parts > 0
    state = rotation.load(config.state_dir) if rotating else {}
    if config.check.rotation_parts == 0:
        rotation.forget(config.state_dir)
    results: dict[str, dict[str, Any]] = {}
    for name, repo in open_all(config).items():
        if only and name != only:
            continue
        subset = rotation.next_subset(state, name, config.check.rotation_parts) if rotating else read_data_subset
        try:
            with progress.current().phase(f"check:{name}") as task:
                result = repo.check(subset, progress=task.on_status)
            results[name] = {"ok": result.ok, "output": result.output[-4000:], "read_data_subset": subset}
        except restic.ResticError as exc:
            results[name] = {"ok": False, "output": str(exc), "read_data_subset": subset}
        if rotating and subset and results[name]["ok"]:
            rotation.record_read(state, name, subset)
            rotation.save(config.state_dir, state)
    summary.extra["repositories"] = results
    for name, res in results.items():
        if not res["ok"]:
            summary.fail("check", name, res["output"][-500:])
    summary.finish("failure" if summary.failures else "success")
    return results


def escrow_warnings(config: Config, summary: RunSummary, only: str | None = None) -> list[str]:
    """Why the escrow sheet on record is out of date (docs/escrow.md), also kept as notices of the run.

    IDs are compared for the repositories checked (`only`); addresses and secret files for all of them.
    """
    from .escrow import repository_ids, stale_warnings

    warnings = stale_warnings(config, repository_ids(config, only))
    summary.notices += [{"kind": "escrow", "source": "escrow", "message": w} for w in warnings]
    return warnings
