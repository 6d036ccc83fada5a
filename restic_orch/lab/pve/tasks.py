"""Worker tasks: UPIDs, task logs, status and the finished-task index, like PVE's fork_worker."""

from __future__ import annotations

import itertools
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import layout
from .errors import TaskError, TaskExit
from .upid import Upid, decode

_pid_counter = itertools.count(1)


@dataclass
class Worker:
    """Handle given to a task body for writing its log."""

    upid: Upid
    logfile: Path
    warnings: int = 0
    aborted: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def print(self, line: str) -> None:
        with self._lock, self.logfile.open("a", encoding="utf-8") as fh:
            for part in line.rstrip("\n").split("\n"):
                fh.write(part + "\n")

    def info(self, msg: str) -> None:
        self.print(f"INFO: {msg}")

    def err(self, msg: str) -> None:
        self.print(f"ERROR: {msg}")

    def warn(self, msg: str) -> None:
        """PVE::RESTEnvironment::log_warn: 'WARN: ...' and the task ends 'WARNINGS: n'."""
        self.warnings += 1
        self.print(f"WARN: {msg}")

    def warn_raw(self, msg: str) -> None:
        """A Perl `warn` inside a worker: printed as-is but still counted."""
        self.warnings += 1
        self.print(msg)

    def sleep(self, seconds: float) -> None:
        """Sleep, but die like a signalled worker when the task is stopped via the API."""
        end = time.monotonic() + max(0.0, seconds)
        while True:
            if self.aborted.is_set():
                raise TaskError("interrupted by signal")
            left = end - time.monotonic()
            if left <= 0:
                return
            time.sleep(min(left, 0.05))


def read_status(logfile: Path) -> str:
    """PVE::UPID::read_status: derive the exit status from the log's last line."""
    try:
        data = logfile.read_bytes()[-4096:]
    except OSError as exc:
        return f"unable to open file - {exc.strerror}"
    lines = data.decode("utf-8", "replace").rstrip("\n").split("\n")
    if not data:
        return "unable to read tail (got 0 bytes)"
    last = lines[-1]
    if last == "TASK OK":
        return "OK"
    if last.startswith("TASK ERROR: "):
        return last[len("TASK ERROR: "):]
    if last.startswith("TASK WARNINGS: "):
        return last[len("TASK "):]
    return "unexpected status"


def split_token(user: str) -> dict[str, str]:
    """Tasks API reports token tasks as user + tokenid (PVE's convert_token_task)."""
    if "!" in user:
        u, tok = user.split("!", 1)
        return {"user": u, "tokenid": tok}
    return {"user": user}


class TaskManager:
    def __init__(self, root: Path, node: str) -> None:
        self.root = root
        self.node = node
        self.active: dict[str, Worker] = {}
        self._guard = threading.Lock()
        layout.tasks_dir(root).mkdir(parents=True, exist_ok=True)

    def logfile(self, upid: Upid) -> Path:
        return layout.tasks_dir(self.root) / upid.subdir / str(upid)

    def spawn(self, dtype: str, task_id: str, user: str, body: Callable[[Worker], None]) -> str:
        with self._guard:
            # PIDs must differ for tasks started in the same second, like real workers.
            pid = (os.getpid() + next(_pid_counter)) % 0x400000 or 1
            upid = Upid(self.node, pid, int(time.monotonic() * 100) & 0xFFFFFFFF, int(time.time()),
                        dtype, task_id, user)
            path = self.logfile(upid)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.touch()
            worker = Worker(upid, path)
            self.active[str(upid)] = worker
        threading.Thread(target=self._run, args=(worker, body), name=f"task-{dtype}-{task_id}",
                         daemon=True).start()
        return str(upid)

    def _run(self, worker: Worker, body: Callable[[Worker], None]) -> None:
        final: str | None
        try:
            body(worker)
            final = f"TASK WARNINGS: {worker.warnings}" if worker.warnings else "TASK OK"
        except TaskExit:
            final = None
        except TaskError as exc:
            final = "TASK ERROR: " + " ".join(str(exc).rstrip("\n").split("\n"))
        except Exception as exc:  # a bug in the fake must still end the task visibly
            final = f"TASK ERROR: {type(exc).__name__}: {exc}"
        if final:
            worker.print(final)
        status = read_status(worker.logfile)
        line = f"{worker.upid} {int(time.time()):08X} {status}\n"
        with self._guard:
            with (layout.tasks_dir(self.root) / "index").open("a", encoding="utf-8") as fh:
                fh.write(line)
            self.active.pop(str(worker.upid), None)

    def stop(self, upid: str) -> None:
        worker = self.active.get(upid)
        if worker:
            worker.aborted.set()

    def is_running(self, upid: str) -> bool:
        return upid in self.active

    def status(self, upid_text: str) -> dict[str, Any] | None:
        upid = decode(upid_text)
        if upid is None or not self.logfile(upid).is_file():
            return None
        res: dict[str, Any] = {
            "upid": upid_text, "node": upid.node, "pid": upid.pid, "pstart": upid.pstart,
            "starttime": upid.starttime, "type": upid.type, "id": upid.id, **split_token(upid.user),
        }
        if self.is_running(upid_text):
            res["status"] = "running"
        else:
            res["status"] = "stopped"
            res["exitstatus"] = read_status(self.logfile(upid))
        return res

    def log(self, upid: Upid, start: int, limit: int) -> tuple[int, list[dict[str, Any]]]:
        """PVE::Tools::dump_logfile: 1-based line numbers, limit 0 reads to the end."""
        try:
            text = self.logfile(upid).read_text(encoding="utf-8", errors="replace")
        except OSError as exc:
            return 1, [{"n": 1, "t": f"unable to open file - {exc.strerror}"}]
        lines = text.split("\n")
        if lines and lines[-1] == "":
            lines.pop()
        out = []
        for count, line in enumerate(lines, start=1):
            if count <= start:
                continue
            if limit and len(out) >= limit:
                continue
            out.append({"n": count, "t": line})
        if not lines:
            return 1, [{"n": 1, "t": "no content"}]
        return len(lines), out

    def finished(self) -> list[dict[str, Any]]:
        """Index entries, newest first (PVE reads the index backwards)."""
        try:
            raw = (layout.tasks_dir(self.root) / "index").read_text(encoding="utf-8").splitlines()
        except FileNotFoundError:
            return []
        res = []
        for line in reversed(raw):
            parts = line.split(" ", 2)
            upid = decode(parts[0])
            if upid is None:
                continue
            entry = {"upid": parts[0], "node": upid.node, "pid": upid.pid, "pstart": upid.pstart,
                     "starttime": upid.starttime, "type": upid.type, "id": upid.id, **split_token(upid.user)}
            if len(parts) > 1:
                entry["endtime"] = int(parts[1], 16)
            if len(parts) > 2:
                entry["status"] = parts[2]
            res.append(entry)
        return res

    def running(self) -> list[dict[str, Any]]:
        with self._guard:
            workers = list(self.active.values())
        return [{"upid": str(w.upid), "node": w.upid.node, "pid": w.upid.pid, "pstart": w.upid.pstart,
                 "starttime": w.upid.starttime, "type": w.upid.type, "id": w.upid.id,
                 **split_token(w.upid.user), "status": "RUNNING"} for w in workers]
