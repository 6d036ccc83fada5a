"""Live progress on a terminal: one rich display per command, one line (a task) per running phase.

restic's status reports (restic.ResticStatus) fill a bar with bytes, files and restic's own ETA; a phase that
reports nothing (restic 0.14's restore, a dump whose hook says no fraction) is a spinner with its elapsed time.
Off a terminal, in --json mode, with TERM=dumb or --no-progress, every call here does nothing at all: cron and
pipes see exactly what they saw before, and restic runs with exactly the arguments it had.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import IO, TYPE_CHECKING, Any

from .restic import ResticStatus
from .units import human_bytes

if TYPE_CHECKING:  # rich is imported when a display is shown: the CLI starts faster without it
    from rich.console import Console
    from rich.progress import TaskID

log = logging.getLogger("restic_orch.progress_display")


def should_show(stream: IO[str] | None = None, *, as_json: bool = False, quiet: bool = False,
                disabled: bool = False) -> bool:
    """Whether a command shows live progress: stderr is a terminal that can redraw, and nobody opted out."""
    stream = stream if stream is not None else sys.stderr
    if disabled or as_json or quiet or os.environ.get("TERM") == "dumb":
        return False
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # a closed or odd stream is no terminal
        return False


def clock(seconds: float) -> str:
    seconds = int(seconds)
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"


def figures(status: ResticStatus) -> str:
    """The counts of one status report as one short text: bytes done / total, files, a counter's items."""
    parts = []
    if status.total_bytes:
        parts.append(f"{human_bytes(status.bytes_done or 0)} / {human_bytes(status.total_bytes)}")
    elif status.bytes_done:
        parts.append(human_bytes(status.bytes_done))
    if status.total_files:
        parts.append(f"{status.files_done or 0}/{status.total_files} files")
    if status.unit:
        total = f" / {status.count_total}" if status.count_total else ""
        parts.append(f"{status.count_done or 0}{total} {status.unit}")
    if status.error_count:
        parts.append(f"{status.error_count} errors")
    return "  ".join(parts)


class Task:
    """One phase on the display. `on_status` is what restic.Repo methods take as `progress` (None when nothing
    is shown, so restic runs unchanged); `step` is what a pre-hook's DumpContext.progress calls."""

    def __init__(self, display: Display | None, task_id: TaskID | None, name: str) -> None:
        self._display = display
        self._id = task_id
        self.name = name

    @property
    def on_status(self) -> Callable[[ResticStatus], None] | None:
        return self.status if self._display is not None else None

    def status(self, status: ResticStatus) -> None:
        if self._display is None or self._id is None:
            return
        fraction = status.fraction
        eta = f"ETA {clock(status.seconds_remaining)}" if status.seconds_remaining else ""
        fields: dict[str, Any] = {"detail": figures(status), "eta": eta}
        if fraction is not None:
            fields.update(total=100, completed=fraction * 100)
        self._display.update(self._id, **fields)

    def step(self, label: str, fraction: float | None = None) -> None:
        """What the phase is doing now (a pre-hook's own words) and how far it is, None when it cannot say."""
        if self._display is None or self._id is None:
            return
        description = f"{self.name} {label}".strip()
        if fraction is None:
            self._display.indeterminate(self._id, description)
        else:
            self._display.update(self._id, description=description, total=100,
                                 completed=max(0.0, min(fraction, 1.0)) * 100, detail="", eta="")


NULL_TASK = Task(None, None, "")


class Display:
    """The live display of one command on `console` (stderr): running phases only, each removed when it ends
    (the phase's end is logged above the display, as it always was)."""

    def __init__(self, console: Console) -> None:
        from rich.progress import (
            BarColumn,
            Progress,
            SpinnerColumn,
            TaskProgressColumn,
            TextColumn,
            TimeElapsedColumn,
        )

        self.console = console
        self._lock = threading.Lock()
        self._progress = Progress(
            SpinnerColumn(), TextColumn("{task.description}"), BarColumn(bar_width=30), TaskProgressColumn(),
            TextColumn("{task.fields[detail]}"), TextColumn("{task.fields[eta]}"), TimeElapsedColumn(),
            console=console, transient=True, redirect_stdout=False, redirect_stderr=True, refresh_per_second=8,
        )
        self._saved_streams: list[tuple[logging.StreamHandler[Any], Any]] = []

    @contextmanager
    def phase(self, name: str) -> Iterator[Task]:
        task_id = self._progress.add_task(name, total=None, detail="", eta="")
        try:
            yield Task(self, task_id, name)
        finally:
            # drawn once more before it goes: restic's last report of a short phase would otherwise never show
            self._progress.refresh()
            self._progress.remove_task(task_id)

    def update(self, task_id: TaskID, **fields: Any) -> None:
        try:
            self._progress.update(task_id, **fields)
        except KeyError:  # the phase ended while a thread still reported on it
            pass

    def indeterminate(self, task_id: TaskID, description: str) -> None:
        for task in self._progress.tasks:
            if task.id == task_id:
                task.total = None  # rich's update() cannot take a total back to "unknown"
        self.update(task_id, description=description, completed=0, detail="", eta="")

    @contextmanager
    def paused(self) -> Iterator[None]:
        """The display off while a question waits for an answer on the terminal, back on after."""
        self.stop()
        try:
            yield
        finally:
            self.start()

    def start(self) -> None:
        with self._lock:
            self._progress.start()
            # the console log handlers hold the real stderr: through rich's proxy their lines print above the bar
            for handler in _console_handlers():
                self._saved_streams.append((handler, handler.setStream(sys.stderr)))

    def stop(self) -> None:
        with self._lock:
            for handler, stream in self._saved_streams:
                handler.setStream(stream)
            self._saved_streams.clear()
            self._progress.stop()


class _NullDisplay:
    """Off a terminal: nothing drawn, no restic option added."""

    @contextmanager
    def phase(self, name: str) -> Iterator[Task]:
        yield NULL_TASK

    @contextmanager
    def paused(self) -> Iterator[None]:
        yield


NULL = _NullDisplay()
_state: dict[str, Any] = {"show": False, "current": NULL}


def _console_handlers() -> list[logging.StreamHandler[Any]]:
    return [h for h in logging.getLogger("restic_orch").handlers
            if getattr(h, "_restic_orch_console", False) and isinstance(h, logging.StreamHandler)]


def configure(show: bool) -> None:
    """Whether commands of this process show progress (the CLI decides once, from should_show)."""
    _state["show"] = show


def current() -> Display | _NullDisplay:
    """The display of the running command; the null one when there is none (library use, tests, cron)."""
    return _state["current"]


@contextmanager
def live(console: Console | None = None) -> Iterator[Display | _NullDisplay]:
    """The command's display for the block: on `console` (default: stderr, when configure() said so); nothing
    when that is no terminal. Inside a block that already has one, that one."""
    if isinstance(_state["current"], Display):
        yield _state["current"]
        return
    if console is None and _state["show"]:
        from rich.console import Console

        console = Console(stderr=True)
    if console is None or not console.is_terminal or console.is_dumb_terminal:
        yield NULL
        return
    display = Display(console)
    display.start()
    _state["current"] = display
    try:
        yield display
    finally:
        _state["current"] = NULL
        display.stop()
