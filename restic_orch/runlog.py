"""One recorded run of a command that writes to a repository: the host's lock, a run log, a summary saved at the end.

backup runs its own guard (pipeline.run_backup takes the lock); restore, drill, check and forget run inside
`recorded_run`, so each holds the same lock, runs at the configured priority and leaves the same traces.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from . import logs
from .config import Config
from .lock import exclusive
from .report import RunSummary, new_run_id


@dataclass
class Run:
    """What the command's body gets: the run's id, its log file and the summary to fill (or replace)."""

    run_id: str
    log_file: Path
    summary: RunSummary
    _handler: logging.Handler | None = None

    def close_log(self) -> None:
        """Flush and detach the run log now (a drill copies its tail into the report before the run ends)."""
        if self._handler is not None:
            logs.close_run_log(self._handler)
            self._handler = None


@contextmanager
def opened_log(config: Config) -> Iterator[tuple[str, Path]]:
    """A new run id and its JSON-lines log under log_dir, detached when the block ends."""
    run_id = new_run_id()
    path, handler = logs.open_run_log(config.log_dir, run_id)
    try:
        yield run_id, path
    finally:
        logs.close_run_log(handler)


@contextmanager
def recorded_run(config: Config, command: str, what: str, *, cap_cpu: bool = False,
                 record: bool = True) -> Iterator[Run]:
    """Hold lock.exclusive (priority, and the CPU budget when cap_cpu), open the run log, yield the Run.

    When the block ends normally and `record` is set, the summary is saved with the metrics and the
    notifications (`forget` is not recorded: a ping from it must not tell the dead-man switch that the nightly
    backup ran). A block that raises records nothing. Raises lock.Busy, naming the holder, when another run
    holds the lock.
    """
    with exclusive(config, what, cap_cpu=cap_cpu):
        run_id = new_run_id()
        path, handler = logs.open_run_log(config.log_dir, run_id)
        started = datetime.now(UTC).isoformat(timespec="seconds")
        run = Run(run_id, path, RunSummary(command, run_id, config.host, started, log_file=str(path)), handler)
        try:
            yield run
            if record:
                save(config, run.summary)
        finally:
            run.close_log()


def save(config: Config, summary: RunSummary) -> None:
    """Summary file, metrics and notifications of a finished run."""
    from . import notify
    from .report import save_summary, write_metrics

    save_summary(config.state_dir, summary, keep=config.keep_runs)
    if config.monitoring.textfile_dir:
        write_metrics(config.monitoring.textfile_dir, config.state_dir)
    notify.finished(config, summary)
