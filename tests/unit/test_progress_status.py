"""restic's progress reports read from its stdout lines, and the live display they drive (only on a terminal)."""

from __future__ import annotations

import io
import json
import re
import sys
from pathlib import Path

from rich.console import Console

from restic_orch import progress, runner
from restic_orch.restic import ResticStatus, parse_status_line

# as restic 0.14 backup --json prints them (the first before any file is read, the last with the totals)
BACKUP_LINES = [
    '{"message_type":"status","percent_done":0,"total_files":1,"total_bytes":3000000}',
    '{"message_type":"status","seconds_elapsed":2,"seconds_remaining":75,"percent_done":0.5,"total_files":40,'
    '"files_done":12,"total_bytes":10485760,"bytes_done":5242880,"current_files":["/a","/b"],'
    '"a_field_of_a_later_restic":{"x":1}}',
]
# restic 0.17 restore --json: skipped files and bytes count as done
RESTORE_LINE = ('{"message_type":"status","seconds_elapsed":1,"percent_done":0.25,"total_files":8,"files_restored":2,'
                '"files_skipped":2,"total_bytes":4096,"bytes_restored":1024,"bytes_skipped":1024}')


def test_json_status_lines_are_read_and_unknown_fields_ignored() -> None:
    first, second = (parse_status_line(line) for line in BACKUP_LINES)
    assert first == ResticStatus(percent_done=0.0, total_files=1, total_bytes=3000000)
    assert first.fraction == 0.0 and first.bytes_done is None and first.files_done is None
    assert second == ResticStatus(percent_done=0.5, seconds_elapsed=2, seconds_remaining=75, total_bytes=10485760,
                                  bytes_done=5242880, total_files=40, files_done=12, current_files=("/a", "/b"))
    restore = parse_status_line(RESTORE_LINE)
    assert restore is not None and (restore.files_done, restore.bytes_done, restore.fraction) == (4, 2048, 0.5)


def test_the_status_lines_of_every_sampled_restic_version_are_read() -> None:
    samples = sorted(Path(__file__).parents[1].glob("fixtures/restic/*/backup*.json"))
    versions = set()
    for sample in samples:
        for line in sample.read_text().splitlines():
            status = parse_status_line(line)
            if json.loads(line).get("message_type") != "status":
                assert status is None
                continue
            versions.add(sample.parent.name)
            assert status is not None and status.total_bytes and status.fraction is not None
    assert {"0.14", "0.16", "0.18"} <= versions


def test_counters_of_check_and_copy_are_read() -> None:
    packs = parse_status_line("[0:04] 50.00%  3 / 6 packs copied")
    assert packs == ResticStatus(percent_done=0.5, seconds_elapsed=4, unit="packs copied", count_done=3, count_total=6)
    assert parse_status_line("[1:02:03] 100.00%  4 / 4 packs").seconds_elapsed == 3723
    open_ended = parse_status_line("[0:00]          7 snapshots")
    assert open_ended is not None and open_ended.count_total is None and open_ended.fraction is None


def test_other_lines_are_not_status() -> None:
    for line in ['{"message_type":"summary","snapshot_id":"abc"}', '{"message_type":"status"', "[1, 2]",
                 "snapshot 1a611915 saved", "no errors were found", "", '{"message_type": "verbose_status"}']:
        assert parse_status_line(line) is None, line
    odd = parse_status_line('{"message_type":"status","percent_done":"half","total_bytes":true}')
    assert odd == ResticStatus()  # wrong types are unknown, not an error


def _terminal() -> tuple[io.StringIO, Console]:
    out = io.StringIO()
    return out, Console(file=out, force_terminal=True, width=140, color_system=None)


def test_the_display_shows_bytes_percent_files_and_eta() -> None:
    out, console = _terminal()
    with progress.live(console) as display:
        assert progress.current() is display
        with display.phase("backup:local") as task:
            assert task.on_status is not None
            for line in BACKUP_LINES:
                task.on_status(parse_status_line(line))
                display._progress.refresh()
        with display.phase("dump:files:host") as task:
            task.step("/etc", 0.25)
            display._progress.refresh()
            task.step("hashing", None)  # back to a spinner
            display._progress.refresh()
        with display.paused():  # a question on the terminal: the display stops, then comes back
            pass
    assert progress.current() is progress.NULL
    text = out.getvalue()
    assert "backup:local" in text and "5.0 MiB / 10.0 MiB" in text and "12/40 files" in text
    assert re.search(r"\b50%", text) and "ETA 1:15" in text
    assert "dump:files:host /etc" in text and re.search(r"\b25%", text) and "dump:files:host hashing" in text


def test_off_a_terminal_nothing_is_written_and_restic_gets_no_callback() -> None:
    out = io.StringIO()
    with progress.live(Console(file=out)) as display:  # a file, a pipe: no terminal
        with display.phase("backup:local") as task:
            assert task.on_status is None
            task.step("x", 0.5)
            task.status(ResticStatus(percent_done=0.5))
    assert out.getvalue() == ""
    progress.configure(False)
    with progress.live() as display:
        assert display is progress.NULL
    assert not progress.should_show(io.StringIO())
    assert not progress.should_show(sys.stdin, as_json=True) and not progress.should_show(sys.stdin, disabled=True)


def test_the_runner_hands_over_lines_as_they_come_and_keeps_stdout() -> None:
    seen: list[str] = []
    script = ("import sys, time\nfor i in range(3):\n    print(f'line {i}', flush=True)\n"
              "    sys.stderr.write('e' * 100000)\n    time.sleep(0.05)\n")
    result = runner.run([sys.executable, "-c", script], on_line=seen.append, timeout=30)
    assert seen == ["line 0", "line 1", "line 2"] and result.stdout == "line 0\nline 1\nline 2\n"
    assert len(result.stderr) == 300000  # drained meanwhile: a chatty stderr never blocks the child

    def broken(line: str) -> None:
        raise RuntimeError("display broke")

    assert runner.run([sys.executable, "-c", "print(1); print(2)"], on_line=broken).stdout == "1\n2\n"


def test_a_timeout_stops_a_command_read_line_by_line() -> None:
    script = "import time\nprint('started', flush=True)\ntime.sleep(60)\n"
    seen: list[str] = []
    try:
        runner.run([sys.executable, "-c", script], on_line=seen.append, timeout=1)
    except runner.CommandTimeout as exc:
        assert "timed out after 1 s" in str(exc)
    else:
        raise AssertionError("no timeout")
    assert seen == ["started"] and not runner._active
