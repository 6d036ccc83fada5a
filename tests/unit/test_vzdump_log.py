"""hooks/_vzdump_log.py: a guest's freeze read from vzdump's logs, None when it cannot be."""

from __future__ import annotations

import pytest

from restic_orch.hooks._vzdump_log import (
    FreezeBound,
    freeze_bounds,
    guest_freeze,
    online_again_freeze,
    snapshot_freeze,
)

# A per-guest log of a one-volume snapshot backup, as PVE 8 writes <archive-base>.log (lines abridged)
SNAPSHOT_LOG = """\
2024-05-01 03:00:01 INFO: Starting Backup of VM 101 (lxc)
2024-05-01 03:00:01 INFO: status = running
2024-05-01 03:00:01 INFO: CT Name: proxy
2024-05-01 03:00:01 INFO: including mount point rootfs ('/') in backup
2024-05-01 03:00:01 INFO: backup mode: snapshot
2024-05-01 03:00:01 INFO: ionice priority: 7
2024-05-01 03:00:02 INFO: create storage snapshot 'vzdump'
2024-05-01 03:00:05 INFO: creating vzdump archive '/var/lib/vz/dump/vzdump-lxc-101-2024_05_01-03_00_01.tar.zst'
2024-05-01 03:00:09 INFO: Total bytes written: 1048576 (1.0MiB, 256KiB/s)
2024-05-01 03:00:09 INFO: archive file size: 512KB
2024-05-01 03:00:09 INFO: cleanup temporary 'vzdump' snapshot
2024-05-01 03:00:09 INFO: Finished Backup of VM 101 (00:00:08)
"""

# The task log of the same backup: no timestamps, so nothing to measure
TASK_LOG = "\n".join(line.split(" ", 2)[2] for line in SNAPSHOT_LOG.splitlines())

# Two backed-up volumes: vzdump suspends around the snapshot and logs the time itself
MULTI_VOLUME_LOG = """\
2024-05-01 03:00:01 INFO: including mount point rootfs ('/') in backup
2024-05-01 03:00:01 INFO: including mount point mp0 ('/srv/data') in backup
2024-05-01 03:00:01 INFO: backup mode: snapshot
2024-05-01 03:00:01 INFO: suspend vm to make snapshot
2024-05-01 03:00:01 INFO: create storage snapshot 'vzdump'
2024-05-01 03:00:04 INFO: resume vm
2024-05-01 03:00:04 INFO: guest is online again after 3 seconds
2024-05-01 03:00:04 INFO: creating vzdump archive '/var/lib/vz/dump/vzdump-lxc-150-2024_05_01-03_00_01.tar'
"""


def test_snapshot_freeze_from_the_timestamps_around_the_snapshot_line():
    bound = snapshot_freeze(SNAPSHOT_LOG)
    assert bound == FreezeBound(lower=2.0, upper=4.0, source="snapshot-timestamps", logged="3")
    assert bound.lower <= 3 <= bound.upper and bound.lower <= 2 <= bound.upper and not bound.lower <= 4.5 <= bound.upper


def test_snapshot_freeze_within_one_second_has_no_lower_bound():
    log = SNAPSHOT_LOG.replace("03:00:05 INFO: creating", "03:00:02 INFO: creating")
    assert snapshot_freeze(log) == FreezeBound(0.0, 1.0, "snapshot-timestamps", "0")
    log = SNAPSHOT_LOG.replace("03:00:05 INFO: creating", "03:00:03 INFO: creating")
    assert snapshot_freeze(log) == FreezeBound(0.0, 2.0, "snapshot-timestamps", "1")


def test_snapshot_freeze_across_midnight():
    log = ("2024-05-01 23:59:59 INFO: create storage snapshot 'vzdump'\n"
           "2024-05-02 00:00:01 INFO: creating vzdump archive '/x.tar'\n")
    assert snapshot_freeze(log) == FreezeBound(1.0, 3.0, "snapshot-timestamps", "2")


@pytest.mark.parametrize("log", [
    TASK_LOG,  # the task log: the line is there, its time is not
    "",
    SNAPSHOT_LOG.replace("create storage snapshot", "starting first sync"),  # suspend mode: no snapshot
    "\n".join(SNAPSHOT_LOG.splitlines()[:7]),  # cut right after the snapshot line
    # the clock went back (DST ends at 03:00 in much of Europe): not measurable rather than negative
    "2024-10-27 02:59:59 INFO: create storage snapshot 'vzdump'\n"
    "2024-10-27 02:00:00 INFO: creating vzdump archive 'x'\n",
])
def test_snapshot_freeze_not_measurable_is_none(log: str):
    assert snapshot_freeze(log) is None


def test_a_warning_after_the_snapshot_line_still_bounds_it():
    log = ("2024-05-01 03:00:02 INFO: create storage snapshot 'vzdump'\n"
           "2024-05-01 03:00:04 WARN: tar does not match exclusion with a trailing slash '/srv/'\n")
    assert snapshot_freeze(log) == FreezeBound(1.0, 3.0, "snapshot-timestamps", "2")


@pytest.mark.parametrize(("logged", "expected"), [("<1", (0.0, 1.0)), ("0", (0.0, 1.0)), ("3", (3.0, 4.0))])
def test_freeze_bounds_keeps_the_hooks_semantics(logged: str, expected: tuple[float, float]):
    assert freeze_bounds(logged) == expected


def test_online_again_in_task_and_guest_logs():
    assert online_again_freeze("INFO: resuming guest\nINFO: guest is online again after <1 seconds\n") == \
        FreezeBound(0.0, 1.0, "online-again", "<1")
    assert online_again_freeze(MULTI_VOLUME_LOG) == FreezeBound(2.0, 4.0, "online-again", "3")
    assert online_again_freeze(TASK_LOG) is None


def test_guest_freeze_prefers_what_vzdump_logged():
    assert guest_freeze(MULTI_VOLUME_LOG).source == "online-again"
    assert guest_freeze(SNAPSHOT_LOG).source == "snapshot-timestamps"
    # not measured is None, never a freeze of 0 s
    assert guest_freeze(TASK_LOG) is None
