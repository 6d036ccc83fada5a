"""How long vzdump froze a container, read from its logs (pure functions, no I/O).

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
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime

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
