"""Backup retention marking, following PVE::Storage::prune_mark_backup_group."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any


def _ids() -> list[tuple[str, Callable[[int], str]]]:
    def fmt(pattern: str) -> Callable[[int], str]:
        return lambda ctime: time.strftime(pattern, time.localtime(ctime))

    return [
        ("keep-last", lambda ctime: str(ctime)),
        ("keep-hourly", fmt("%H/%d/%m/%Y")),
        ("keep-daily", fmt("%d/%m/%Y")),
        ("keep-weekly", fmt("%V/%G")),
        ("keep-monthly", fmt("%m/%Y")),
        ("keep-yearly", fmt("%Y")),
    ]


def mark(backups: list[dict[str, Any]], keep: dict[str, int]) -> list[dict[str, Any]]:
    """Sort newest first and set 'mark' to keep / remove / protected on each backup."""
    entries = sorted(backups, key=lambda b: b["ctime"], reverse=True)
    for entry in entries:
        entry["mark"] = "protected" if entry.get("protected") else None
    if keep.get("keep-all"):
        for entry in entries:
            entry["mark"] = entry["mark"] or "keep"
        return entries
    for option, id_of in _ids():
        count = keep.get(option, 0)
        if not count:
            continue
        already = {id_of(e["ctime"]) for e in entries if e["mark"] == "keep"}
        newly: set[str] = set()
        for entry in entries:
            ident = id_of(entry["ctime"])
            if entry["mark"] is not None or ident in already:
                continue
            if ident not in newly:
                if len(newly) >= count:
                    break
                newly.add(ident)
                entry["mark"] = "keep"
            else:
                entry["mark"] = "remove"
    for entry in entries:
        entry["mark"] = entry["mark"] or "remove"
    return entries


def keep_string(keep: dict[str, int]) -> str:
    return ", ".join(f"{k}={v}" for k, v in sorted(keep.items()))
