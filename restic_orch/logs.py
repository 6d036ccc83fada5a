"""Structured logging: one JSON object per line in the run's log file, a short human line on stderr."""

from __future__ import annotations

import json
import logging
import os
import sys
from datetime import UTC, datetime
from pathlib import Path

from .masking import mask

_STANDARD = set(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        data = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _STANDARD and not key.startswith("_"):
                data[key] = value
        if record.exc_info and record.exc_info[1] is not None:
            data["error"] = f"{type(record.exc_info[1]).__name__}: {record.exc_info[1]}"
        # the last line of defence: a secret that slipped into a message never reaches the file
        return mask(json.dumps(data, default=str, ensure_ascii=False))


class HumanFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        extras = {k: v for k, v in record.__dict__.items() if k not in _STANDARD and not k.startswith("_")}
        tail = " ".join(f"{k}={v}" for k, v in extras.items())
        return mask(f"{record.levelname.lower()}: {record.getMessage()}" + (f" ({tail})" if tail else ""))


def setup_console(verbosity: int) -> None:
    """verbosity: -1 quiet (errors), 0 warnings, 1 info, 2 debug."""
    root = logging.getLogger("restic_orch")
    root.setLevel(logging.DEBUG)
    for handler in list(root.handlers):
        if getattr(handler, "_restic_orch_console", False):
            root.removeHandler(handler)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(HumanFormatter())
    handler.setLevel({-1: logging.ERROR, 0: logging.WARNING, 1: logging.INFO}.get(verbosity, logging.DEBUG))
    handler._restic_orch_console = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    if verbosity == 0 and sys.stderr.isatty():
        # a person at a terminal sees each phase end; cron (no TTY) stays silent unless something fails
        progress = logging.StreamHandler(sys.stderr)
        progress.setFormatter(logging.Formatter("%(message)s"))
        progress.setLevel(logging.INFO)
        progress.addFilter(lambda record: record.name == "restic_orch.progress")
        progress._restic_orch_console = True  # type: ignore[attr-defined]
        root.addHandler(progress)


def open_run_log(log_dir: Path, run_id: str) -> tuple[Path, logging.Handler]:
    """A JSON-lines log file for one run (0600: it names hosts and paths)."""
    log_dir.mkdir(parents=True, exist_ok=True, mode=0o750)
    path = log_dir / f"{run_id}.jsonl"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    handler = logging.StreamHandler(os.fdopen(fd, "a", encoding="utf-8"))
    handler.setFormatter(JsonFormatter())
    handler.setLevel(logging.DEBUG)
    logging.getLogger("restic_orch").addHandler(handler)
    return path, handler


def close_run_log(handler: logging.Handler) -> None:
    logging.getLogger("restic_orch").removeHandler(handler)
    handler.close()
