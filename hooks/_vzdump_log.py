"""How long vzdump froze a guest, and how far a VM's backup has got, read from its logs (pure functions, no I/O).

What PVE 8 logs (pve-manager PVE/VZDump.pm `exec_backup_task`, pve-container PVE/VZDump/LXC.pm):

- suspend and stop mode, and snapshot mode when more than one volume is backed up (vzdump then suspends
  the container around the snapshot: "suspend vm to make snapshot" ... "resume vm"): the line
  "guest is online again after N seconds", N the difference of two whole-second clock readings, '<1'
  when they are equal.
- snapshot mode with one volume: no timing at all. The freeze happens inside `snapshot_create`
  (pve-guest-common PVE/AbstractConfig.pm) through `__snapshot_freeze` (pve-container
  PVE/LXC/Config.pm: cgroup freeze, syncfs, thaw) right after the line "create storage snapshot
  'vzdump'", which nothing is logged during. Only the per-guest log `<archive-base>.log` (written by
  debugmsg in pve-guest-common PVE/VZDump/Plugin.pm as "%Y-%m-%d %H:%M:%S LEVEL: message") has
  timestamps; the task log has none.

A freeze that cannot be read from the log is None ("not measured"), never 0.

A VM (qemu-server PVE/VZDump/QemuServer.pm) is never frozen by vzdump itself in snapshot mode: QEMU copies
the disks live, and only the guest agent can quiesce the file systems. `qga_fs_freeze` logs
"issuing guest-agent 'fs-freeze' command" (an "ERROR: ..." line right after it when the agent failed) and
"issuing guest-agent 'fs-thaw' command", or one of two "skipping guest-agent 'fs-freeze', ..." lines; it
logs nothing when the VM has no agent configured, is stopped or paused, or in stop mode. While QEMU copies,
`backup_vm_status` logs "%3d%% (<done> of <total>) in <duration>, read: <rate>, write: <rate>" whenever the
percentage changed and more than 2 s passed, and the last one when the job ends (tar archives of containers
log no percentage).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime

FS_FREEZE_LINE = "issuing guest-agent 'fs-freeze' command"
FS_THAW_LINE = "issuing guest-agent 'fs-thaw' command"
# qga_fs_freeze's two ways of not freezing a VM whose agent is configured, and the state recorded for each
FS_FREEZE_SKIPPED = {
    "skipping guest-agent 'fs-freeze', agent configured but not running?": "agent-not-running",
    "skipping guest-agent 'fs-freeze', disabled in VM options": "disabled-in-vm-options",
}
PROGRESS_RE = re.compile(r"(?:^|INFO:)\s*(\d{1,3})% \((.+?) of (.+?)\) in (.+?), read: (.+?), write: (.+?)\s*$")

SNAPSHOT_LINE = "create storage snapshot 'vzdump'"
ONLINE_RE = re.compile(r"guest is online again after (<1|\d+) seconds")
# one line of the per-guest log: PVE::VZDump::Plugin::debugmsg prints "$timestr $pre $line"
_STAMPED_RE = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d) (INFO|WARN|ERROR): (.*)$")
_STAMP_FORMAT = "%Y-%m-%d %H:%M:%S"


@dataclass(frozen=True)
class FreezeBound:
    """The container was frozen for between `lower` and `upper` seconds (whole-second clock readings).

    source: 'online-again' (vzdump's own "guest is online again after N seconds", N in `logged`) or
    'snapshot-timestamps' (the per-guest log's timestamps of "create storage snapshot 'vzdump'" and the
    line after it, their difference in `logged`). A budget is judged on `upper`.
    """

    lower: float
    upper: float
    source: str
    logged: str


def freeze_bounds(logged: str) -> tuple[float, float]:
    """(freeze_seconds, freeze_seconds_max) from vzdump's 'online again after N seconds' N.

    Same semantics as hooks.proxmox.freeze_bounds: N is the difference of two whole-second clock readings,
    so the real freeze lay between N - 1 and N + 1 s; freeze_seconds is vzdump's own N ('<1', equal
    readings, is 0) and freeze_seconds_max the bound a budget must be checked against.
    """
    seconds = 0.0 if logged == "<1" else float(logged)
    return seconds, seconds + 1.0


def online_again_freeze(log_text: str) -> FreezeBound | None:
    """The last "guest is online again after N seconds" of a task log or per-guest log, or None."""
    found = ONLINE_RE.findall(log_text)
    if not found:
        return None
    logged = found[-1]
    n, upper = freeze_bounds(logged)
    return FreezeBound(lower=max(0.0, n - 1.0), upper=upper, source=ONLINE_AGAIN, logged=logged)


def _stamped(line: str) -> tuple[datetime, str] | None:
    match = _STAMPED_RE.match(line.rstrip("\r"))
    if not match:
        return None
    try:
        return datetime.strptime(match.group(1), _STAMP_FORMAT), match.group(3)
    except ValueError:
        return None


def snapshot_freeze(guest_log: str) -> FreezeBound | None:
    """The snapshot freeze bound from the per-guest log's timestamps, or None when not measurable.

    With t_snap the timestamp of "create storage snapshot 'vzdump'" and t_next that of the line after it,
    both truncated to the second, the freeze lay within [max(0, t_next - t_snap - 1), t_next - t_snap + 1].
    The lower end assumes the gap is the freeze itself (vzdump also mounts the snapshot in it, unfrozen);
    the upper end holds in any case. None when there is no timestamped snapshot line (a task log, another
    mode), no timestamped line after it (a cut log), or the clock went backwards (a DST change).
    """
    lines = [parsed for parsed in (_stamped(line) for line in guest_log.splitlines()) if parsed is not None]
    for index, (when, message) in enumerate(lines):
        if message != SNAPSHOT_LINE:
            continue
        if index + 1 >= len(lines):
            return None
        gap = (lines[index + 1][0] - when).total_seconds()
        if gap < 0:
            return None
        return FreezeBound(lower=max(0.0, gap - 1.0), upper=gap + 1.0, source="snapshot-timestamps",
                           logged=f"{gap:g}")
    return None


ONLINE_AGAIN = "online-again"


def guest_freeze(task_log: str, guest_log: str | None = None) -> FreezeBound | None:
    """The freeze of one guest's backup from its logs, or None ("not measured").

    "guest is online again" wins when vzdump logged it (suspend or stop mode, or a snapshot of several
    volumes, where the suspension covers the snapshot's own freeze); else the snapshot timestamps of the
    per-guest log (the task log itself when no other is given). A task log of a one-volume snapshot backup
    has neither: None.
    """
    return online_again_freeze(task_log) or snapshot_freeze(task_log if guest_log is None else guest_log)


@dataclass(frozen=True)
class Progress:
    """One percentage line of a VM's backup: "NN% (<done> of <total>) in <elapsed>, read: <r>, write: <w>"."""

    percent: int
    done: str
    total: str
    elapsed: str
    read: str
    write: str

    @property
    def fraction(self) -> float:
        return min(self.percent, 100) / 100.0


def progress_line(line: str) -> Progress | None:
    """The progress a task-log or per-guest-log line reports, or None when it is no percentage line."""
    match = PROGRESS_RE.search(line)
    if not match:
        return None
    percent, done, total, elapsed, read, write = match.groups()
    return Progress(int(percent), done, total, elapsed, read, write)


def last_progress(lines: list[str]) -> Progress | None:
    """The latest percentage among these log lines, or None when they have none (a container's tar)."""
    for line in reversed(lines):
        found = progress_line(line)
        if found is not None:
            return found
    return None


@dataclass(frozen=True)
class FsFreeze:
    """What the guest agent did to a VM's file systems during its backup, as vzdump logged it.

    state: 'frozen' (fs-freeze issued and no error after it), 'failed' (the agent answered an error:
    `error`), 'agent-not-running', 'disabled-in-vm-options', or 'not-logged' (vzdump logs nothing when
    the VM has no agent, is not running or paused, or in stop mode: the caller knows which).
    """

    state: str
    error: str = ""

    @property
    def frozen(self) -> bool:
        return self.state == "frozen"


def fs_freeze(task_log: str) -> FsFreeze:
    """Whether the guest agent froze the VM's file systems, from its vzdump task log (or per-guest log)."""
    lines = [line.strip() for line in task_log.splitlines()]
    for index, line in enumerate(lines):
        if line.endswith(FS_FREEZE_LINE):
            # qga_fs_freeze logs the agent's error right after (logerr) and still thaws
            after = lines[index + 1] if index + 1 < len(lines) else ""
            if "ERROR:" in after:
                return FsFreeze("failed", after.split("ERROR:", 1)[1].strip())
            return FsFreeze("frozen")
        for text, state in FS_FREEZE_SKIPPED.items():
            if line.endswith(text):
                return FsFreeze(state)
    return FsFreeze("not-logged")


def fs_freeze_window(guest_log: str) -> FreezeBound | None:
    """How long the agent kept the file systems frozen: between the per-guest log's timestamps of
    "issuing guest-agent 'fs-freeze' command" and "... 'fs-thaw' command" (whole seconds, so within
    [gap - 1, gap + 1]); None without both timestamped lines."""
    lines = [parsed for parsed in (_stamped(line) for line in guest_log.splitlines()) if parsed is not None]
    frozen = next((when for when, message in lines if message == FS_FREEZE_LINE), None)
    thawed = next((when for when, message in lines if message == FS_THAW_LINE), None)
    if frozen is None or thawed is None or thawed < frozen:
        return None
    gap = (thawed - frozen).total_seconds()
    return FreezeBound(lower=max(0.0, gap - 1.0), upper=gap + 1.0, source="fs-freeze-timestamps",
                       logged=f"{gap:g}")
