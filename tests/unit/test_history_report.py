"""`restic-orch report`: the page is drawn from the run summaries report.py writes, and shows their figures."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from html.parser import HTMLParser
from pathlib import Path

import pytest
from click.testing import CliRunner

from restic_orch.cli import main
from restic_orch.history import collect
from restic_orch.history_render import render_page
from restic_orch.report import Phase, RunSummary, new_run_id, save_summary
from tests.configs import host_dirs

NOW = datetime.now(UTC).replace(microsecond=0)
HOSTILE = '<script>alert("x")</script><img src=x onerror=alert(1)> & "quotes"'


def _summary(command: str, started: datetime, seconds: float, status: str, **fields: object) -> RunSummary:
    summary = RunSummary(command, new_run_id(started), "pve1", started.isoformat(timespec="seconds"), **fields)
    summary.finish(status)  # sets the exit code as a real run would; the times are then made synthetic
    summary.finished = (started + timedelta(seconds=seconds)).isoformat(timespec="seconds")
    summary.duration_seconds = seconds
    return summary


MEASURED_SINCE = 20  # older summaries were written before runs measured repository sizes
UNMEASURED_OFFSITE = 8  # that night the offsite listing failed: its figures are unknown (null)


def _sizes(day: int) -> dict[str, object]:
    """The figures a run records since it measures storage: offsite's copy growth and both stored sizes."""
    if day > MEASURED_SINCE:
        return {}
    offsite = None if day == UNMEASURED_OFFSITE else 50_000_000 - 700_000 * day
    return {"bytes_added": {"offsite": None if offsite is None else 700_000 + day},
            "stored_bytes": {"local": 80_000_000 - 1_000_000 * day, "offsite": offsite}}


def _backup(day: int, status: str = "success") -> RunSummary:
    started = NOW - timedelta(days=day) + timedelta(hours=1)
    phases = [Phase("preflight", 1.5 + day, True), Phase("dump:x:y", 20.0 + day, True), Phase("dump:x:z", 3.25, True),
              Phase("backup:local", 10.0, True), Phase("copy:offsite", 7.5, True)]
    # restic copy reports no bytes: only the older summaries (a straight backup offsite) have offsite's data_added
    data_added = {"local": 1_000_000 * (day + 1), **({"offsite": 900_000 * (day + 1)} if day > MEASURED_SINCE else {})}
    return _summary("backup", started, 45.0 + day, status, phases=phases, snapshots={"local": "aa", "offsite": "bb"},
                    data_added=data_added, **_sizes(day))


@pytest.fixture(scope="module")
def state_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """35 days of nightly backups (day 3 failed, day 5 partial), a drill each week, one with runlog's empty start."""
    state = tmp_path_factory.mktemp("history") / "state"
    for day in range(35, 0, -1):
        save_summary(state, _backup(day, {3: "failure", 5: "partial"}.get(day, "success")))
    drills = [(33, 60.0, "success"), (20, 95.5, "success"), (13, 2400.0, "failure"), (6, 300.25, "success")]
    for day, rto, status in drills:
        report = {"passed": status == "success", "rto": {"seconds": rto, "target_seconds": 1800}}
        save_summary(state, _summary("drill", NOW - timedelta(days=day), rto + 4, status, extra={"report": report}))
    hostile = _summary("check", NOW - timedelta(hours=2), 12.0, "failure", phases=[Phase(HOSTILE, 1.0, False)])
    hostile.fail("check", "local", HOSTILE)
    hostile.started = ""  # as runlog.recorded_run leaves it: the run id dates the run
    save_summary(state, hostile)
    return state


class Tags(HTMLParser):
    """Every tag and attribute of a page, and the text of its <style> elements."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: set[str] = set()
        self.attrs: list[tuple[str, str]] = []
        self.styles: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.add(tag)
        self.attrs += [(name, value or "") for name, value in attrs]

    def handle_data(self, data: str) -> None:
        if self.lasttag == "style":
            self.styles.append(data)


class Cells(HTMLParser):
    """{row id: {data-k: data-v}} of every element carrying data-k inside a <tr id=...>."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: dict[str, dict[str, str]] = {}
        self.row: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        if tag == "tr":
            self.row = found.get("id")
            if self.row:
                self.rows[self.row] = {}
        elif self.row and "data-k" in found:
            self.rows[self.row][found["data-k"] or ""] = found.get("data-v") or ""


def _cells(page: str) -> dict[str, dict[str, str]]:
    parser = Cells()
    parser.feed(page)
    return parser.rows


def test_the_page_shows_the_summaries_figures_and_only_the_last_days(state_dir: Path) -> None:
    history = collect(state_dir, 30, rto_target_seconds=1800, rpo_target_seconds=86400, now=NOW)
    rows = _cells(render_page(history))
    summaries = [json.loads(p.read_text()) for p in sorted((state_dir / "runs").glob("*.json"))]
    shown = [s for s in summaries if f"run-{s['run_id']}" in rows]
    backups = [s for s in shown if s["command"] == "backup"]
    assert len(backups) == 30 and len(shown) == 30 + 3 + 1  # day 35..31 and the first drill are older than 30 days
    for summary in shown:
        cells = rows[f"run-{summary['run_id']}"]
        assert float(cells["duration"]) == summary["duration_seconds"]
        assert int(cells["exit"]) == summary["exit_code"] and cells["command"] == summary["command"]
        for repo, added in summary["data_added"].items():
            assert int(cells[f"added:{repo}"]) == added
        if summary["command"] != "backup":
            continue
        # offsite's bytes added: restic's figure when it backed up there, else the storage's growth over the copy
        offsite = summary["data_added"].get("offsite", (summary.get("bytes_added") or {}).get("offsite"))
        assert cells["added:offsite"] == ("" if offsite is None else str(offsite))
        for repo in ("local", "offsite"):
            assert cells[f"stored:{repo}"] == str((summary.get("stored_bytes") or {}).get(repo) or "")
    day_five = next(rows[f"run-{s['run_id']}"] for s in backups if s["duration_seconds"] == 50.0)
    assert day_five["exit"] == "3" and float(day_five["phase:dump"]) == 25.0 + 3.25
    assert sorted(int(rows[f"run-{s['run_id']}"]["exit"]) for s in backups).count(1) == 1
    drills = {float(v["rto"]): v for k, v in rows.items() if k.startswith("drill-")}
    assert sorted(drills) == [95.5, 300.25, 2400.0]
    assert drills[2400.0]["passed"] == "False" and float(drills[95.5]["target"]) == 1800


def test_repository_growth_follows_the_stored_sizes_with_gaps(state_dir: Path) -> None:
    history = collect(state_dir, 30, now=NOW)
    summaries = [json.loads(p.read_text()) for p in sorted((state_dir / "runs").glob("*.json"))]
    measured = [s for s in summaries if s["command"] == "backup" and s.get("stored_bytes")]
    assert len(measured) == MEASURED_SINCE
    # one point per backup from the first measured one on; older summaries are not drawn, a failed measure is a gap
    for repo in ("local", "offsite"):
        assert [size for _, size in history.growth[repo]] == [s["stored_bytes"][repo] for s in measured]
    assert [size for _, size in history.growth["offsite"]].count(None) == 1
    page = render_page(history)
    growth = page.split("<h2>Repository growth</h2>", 1)[1].split("<h2>", 1)[0]
    assert growth.count("<polyline") == 1 + 2  # local in one line, offsite broken by its gap into two
    assert growth.count("<circle") == 2 * MEASURED_SINCE - 1
    assert "local" in growth and "offsite" in growth and "Not drawn" not in page
    rows = _cells(page)
    gap = next(r for r in history.runs if r.stored_bytes.get("offsite", 0) is None)
    assert rows[f"run-{gap.run_id}"]["stored:offsite"] == "" and gap.added("offsite") is None
    assert "unknown</td>" in page and "not recorded" not in page.split("<h2>Runs (newest first)</h2>")[1]


def test_old_summaries_alone_still_render(tmp_path: Path) -> None:
    state = tmp_path / "state"
    old = _backup(30)  # written before the sizes: no stored_bytes, no bytes_added
    data = old.to_json()
    del data["stored_bytes"], data["bytes_added"]
    (state / "runs").mkdir(parents=True)
    (state / "runs" / f"{old.run_id}-backup.json").write_text(json.dumps(data))
    history = collect(state, 40, now=NOW)
    assert history.growth == {} and history.runs[0].stored_bytes == {}
    assert history.runs[0].added("offsite") == 900_000 * 31
    page = render_page(history)
    assert "Not drawn: the run summaries carry no repository size" in page


def test_rpo_age_is_measured_from_the_newest_good_backup(state_dir: Path) -> None:
    history = collect(state_dir, 30, rto_target_seconds=1800, rpo_target_seconds=86400, now=NOW)
    ages = {p.run_id: p.age_seconds for p in history.rpo}
    runs = {r.run_id: r for r in history.runs}
    day_three = next(r for r in history.runs if r.command == "backup" and r.exit_code == 1)
    # day 3 failed: at its end the newest good backup is day 4's, one day and its 48 s before
    assert ages[day_three.run_id] == 86400 + 48.0
    good = next(r for r in history.runs if r.command == "backup" and r.duration_seconds == 46.0)
    assert ages[good.run_id] == 46.0 and runs[good.run_id].exit_code == 0


def test_hostile_strings_are_escaped_and_nothing_is_fetched_or_run(state_dir: Path) -> None:
    page = render_page(collect(state_dir, 30, now=NOW))
    assert "<script" not in page.lower() and "<img" not in page.lower()
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in page
    tags = Tags()
    tags.feed(page)
    assert tags.tags.isdisjoint({"script", "img", "iframe", "link", "object", "embed", "image", "use", "foreignobject"})
    fetching = {"src", "href", "xlink:href", "srcset"}
    assert not [name for name, _ in tags.attrs if name in fetching or name.startswith("on")]
    assert not [value for _, value in tags.attrs if re.search(r"url\(|https?:|javascript:", value, re.IGNORECASE)]
    assert not re.search(r"url\(|@import", "".join(tags.styles))
    assert "RTO target 30.0 min" in page  # no target given: 30 min


def test_report_command_writes_the_page_and_prints_its_figures(state_dir: Path, tmp_path: Path) -> None:
    config = tmp_path / "config.yml"
    config.write_text(host_dirs(tmp_path).replace(f"{tmp_path}/state", str(state_dir))
                      + f"targets:\n  rto_minutes: 10\nrepositories:\n  local:\n    url: {tmp_path}/repo\n"
                      f"    password_file: {tmp_path}/missing-password\n    retention:\n      keep_daily: 7\n")
    result = CliRunner().invoke(main, ["--config", str(config), "report"])
    assert result.exit_code == 0, result.output
    page = state_dir / "report.html"
    assert result.stdout.strip() == str(page) and page.stat().st_mode & 0o777 == 0o640
    out = tmp_path / "week.html"
    result = CliRunner().invoke(main, ["--config", str(config), "--json", "report", "--days", "7", "--out", str(out)])
    figures = json.loads(result.stdout)
    assert figures["path"] == str(out) and out.is_file()
    assert figures["rto_target_seconds"] == 600 and [d["rto_seconds"] for d in figures["drills"]] == [300.25]
    assert len([r for r in figures["runs"] if r["command"] == "backup"]) == 7
