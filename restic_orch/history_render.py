"""The run history as one self-contained HTML page: inline CSS, SVG charts drawn here, no script and no
resource fetched at view time, so the file can be mailed, archived or opened on a machine without network.
Every string from the summaries goes through html.escape: a failure message may quote anything."""

from __future__ import annotations

import os
from collections.abc import Callable
from datetime import UTC, datetime
from html import escape
from pathlib import Path

from .history import History, RunRow, parse_time

WIDTH, HEIGHT, LEFT, RIGHT, TOP, BOTTOM = 1080, 240, 70, 20, 14, 34
PALETTE = ["#4e79a7", "#f28e2b", "#59a14f", "#b07aa1", "#76b7b2", "#edc948", "#9c755f", "#bab0ac", "#e15759"]
EXIT_COLOURS = {0: "#2e7d32", 3: "#ef6c00"}  # anything else is a failure: red
Fmt = Callable[[float], str]
CSS = """body{font:14px/1.4 system-ui,sans-serif;margin:24px;color:#222;max-width:1120px}
h1{font-size:22px}h3{font-size:14px;margin:14px 0 2px}h2{font-size:17px;margin-top:28px;border-bottom:1px solid #ddd}
table{border-collapse:collapse;font-size:12px;width:100%}td,th{border:1px solid #ddd;padding:2px 6px;text-align:right}
td.t,th.t{text-align:left}.fail{color:#c62828}.ok{color:#2e7d32}.partial{color:#ef6c00}.note{color:#666}
.legend span{display:inline-block;margin-right:14px}.legend i{display:inline-block;width:11px;height:11px;
margin-right:4px;vertical-align:-1px}svg{background:#fafafa;border:1px solid #eee}
svg text{font:11px system-ui,sans-serif;fill:#555}"""


def fmt_seconds(value: float | None) -> str:
    if value is None:
        return "—"
    if value < 120:
        return f"{value:.1f} s"
    return f"{value / 60:.1f} min" if value < 7200 else f"{value / 3600:.1f} h"


def fmt_bytes(value: float | None) -> str:
    if value is None:
        return "not recorded"
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(value) < 1024:
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TiB"


def _label(moment: str) -> str:
    parsed = parse_time(moment)
    return parsed.strftime("%m-%d %H:%M") if parsed else moment


def _axis(top: float, fmt: Fmt) -> str:
    """Four horizontal grid lines labelled with fmt(value); top is the value at the top of the plot."""
    parts = []
    for i in range(5):
        value = top * i / 4
        y = HEIGHT - BOTTOM - (HEIGHT - TOP - BOTTOM) * i / 4
        parts.append(f'<line x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{y:.1f}" y2="{y:.1f}" stroke="#e4e4e4"/>'
                     f'<text x="{LEFT - 6}" y="{y + 4:.1f}" text-anchor="end">{escape(fmt(value))}</text>')
    return "".join(parts)


def _target_line(target: float | None, top: float, text: str) -> str:
    if target is None:
        return ""
    y = HEIGHT - BOTTOM - (HEIGHT - TOP - BOTTOM) * min(target / top, 1)
    return (f'<line x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{y:.1f}" y2="{y:.1f}" stroke="#c62828" '
            f'stroke-dasharray="6 4"/><text x="{WIDTH - RIGHT - 4}" y="{y - 4:.1f}" text-anchor="end" '
            f'style="fill:#c62828">{escape(text)}</text>')


def bar_chart(labels: list[str], series: dict[str, list[float | None]], fmt: Fmt, *, stacked: bool,
              target: float | None = None, target_text: str = "", marks: list[str] | None = None,
              ticks: list[float] | None = None) -> str:
    """Bars per label (stacked, or side by side per series); marks: a colour per label drawn under its bar;
    ticks: a value per label drawn as a black line across its bar."""
    names = list(series)
    totals = [sum(v or 0 for v in vals) if stacked else max([v or 0 for v in vals] or [0])
              for vals in zip(*series.values(), strict=True)] if names else []
    top = max(totals + (ticks or []) + [target * 1.1 if target else 0, 1e-9]) * 1.08
    # a few runs: narrow slots, left-aligned, rather than bars a page wide
    plot_h, slot = HEIGHT - TOP - BOTTOM, min((WIDTH - LEFT - RIGHT) / max(len(labels), 1), 90)
    width = slot * 0.8 / (1 if stacked else max(len(names), 1))
    body = [_axis(top, fmt)]
    for i, label in enumerate(labels):
        x0, base = LEFT + slot * i + slot * 0.1, 0.0
        for j, name in enumerate(names):
            value = series[name][i] or 0
            h = plot_h * value / top
            x = x0 if stacked else x0 + j * width
            y = HEIGHT - BOTTOM - plot_h * base / top - h
            body.append(f'<rect x="{x:.1f}" y="{y:.1f}" width="{max(width - 1, 1):.1f}" height="{h:.1f}" '
                        f'fill="{PALETTE[j % len(PALETTE)]}"><title>{escape(label)} {escape(name)}: '
                        f'{escape(fmt(value))}</title></rect>')
            base += value if stacked else 0
        if ticks:
            y = HEIGHT - BOTTOM - plot_h * ticks[i] / top
            body.append(f'<line x1="{x0 - 2:.1f}" x2="{x0 + slot * 0.8 + 2:.1f}" y1="{y:.1f}" y2="{y:.1f}" '
                        f'stroke="#000" stroke-width="2"><title>{escape(label)} wall time: '
                        f'{escape(fmt(ticks[i]))}</title></line>')
        if marks:
            body.append(f'<rect x="{x0:.1f}" y="{HEIGHT - BOTTOM + 3}" width="{slot * 0.8:.1f}" height="5" '
                        f'fill="{marks[i]}"/>')
        if i % -(-len(labels) // 10) == 0:  # about ten labels: more would overlap
            body.append(f'<text x="{x0 + slot * 0.4:.1f}" y="{HEIGHT - 8}" text-anchor="middle">'
                        f'{escape(_label(label))}</text>')
    body.append(_target_line(target, top, target_text))
    return f'<svg width="{WIDTH}" height="{HEIGHT}" role="img">{"".join(body)}</svg>'


def line_chart(points: list[tuple[str, float]], fmt: Fmt, *, target: float | None = None,
               target_text: str = "") -> str:
    """One series over time (x: the timestamps, to scale), dots with their value on hover."""
    times = [(parse_time(t) or datetime.min, v) for t, v in points]
    top = max([v for _, v in times] + [target * 1.1 if target else 0, 1e-9]) * 1.08
    t0 = min(t for t, _ in times).timestamp() if times else 0
    span = max((max(t for t, _ in times).timestamp() - t0) if times else 0, 1)
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    xy = [(LEFT + plot_w * (t.timestamp() - t0) / span, HEIGHT - BOTTOM - plot_h * v / top) for t, v in times]
    body = [_axis(top, fmt), _target_line(target, top, target_text)]
    if xy:
        body.append('<polyline fill="none" stroke="#4e79a7" stroke-width="1.5" points="'
                    + " ".join(f"{x:.1f},{y:.1f}" for x, y in xy) + '"/>')
    for (x, y), (moment, value) in zip(xy, points, strict=True):
        body.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="2.5" fill="#4e79a7"><title>{escape(_label(moment))}: '
                    f'{escape(fmt(value))}</title></circle>')
    for moment, anchor in [(points[0][0], "start"), (points[-1][0], "end")] if points else []:
        x = LEFT + plot_w * ((parse_time(moment) or datetime.min).timestamp() - t0) / span
        body.append(f'<text x="{x:.1f}" y="{HEIGHT - 8}" text-anchor="{anchor}">{escape(_label(moment))}</text>')
    return f'<svg width="{WIDTH}" height="{HEIGHT}" role="img">{"".join(body)}</svg>'


def lines_chart(series: dict[str, list[tuple[str, float | None]]], fmt: Fmt) -> str:
    """Several series over one time axis (to scale), a colour each; a None value breaks its line (a gap)."""
    stamps = [(parse_time(t) or datetime.min).timestamp() for points in series.values() for t, _ in points]
    values = [v for points in series.values() for _, v in points if v is not None]
    top = max(values + [1e-9]) * 1.08
    t0 = min(stamps) if stamps else 0
    span = max((max(stamps) - t0) if stamps else 0, 1)
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    body = [_axis(top, fmt)]
    for j, (name, points) in enumerate(series.items()):
        colour = PALETTE[j % len(PALETTE)]
        segments: list[list[tuple[float, float]]] = [[]]
        for moment, value in points:
            if value is None:
                segments.append([])
                continue
            x = LEFT + plot_w * ((parse_time(moment) or datetime.min).timestamp() - t0) / span
            y = HEIGHT - BOTTOM - plot_h * value / top
            segments[-1].append((x, y))
            body.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="2.5" fill="{colour}"><title>{escape(name)} '
                        f'{escape(_label(moment))}: {escape(fmt(value))}</title></circle>')
        body += [f'<polyline fill="none" stroke="{colour}" stroke-width="1.5" points="'
                 + " ".join(f"{x:.1f},{y:.1f}" for x, y in seg) + '"/>' for seg in segments if len(seg) > 1]
    if stamps:
        for stamp, anchor in ((t0, "start"), (t0 + span, "end")):
            moment = datetime.fromtimestamp(stamp, UTC).isoformat()
            x = LEFT + plot_w * (stamp - t0) / span
            body.append(f'<text x="{x:.1f}" y="{HEIGHT - 8}" text-anchor="{anchor}">{escape(_label(moment))}</text>')
    return f'<svg width="{WIDTH}" height="{HEIGHT}" role="img">{"".join(body)}</svg>'


def _legend(names: list[str]) -> str:
    return '<p class="legend">' + "".join(f'<span><i style="background:{PALETTE[j % len(PALETTE)]}"></i>'
                                          f"{escape(n)}</span>" for j, n in enumerate(names)) + "</p>"


def _attr(key: str, value: object) -> str:
    return f'data-k="{escape(key)}" data-v="{escape(str(value))}"'


def _repos(history: History) -> list[str]:
    seen: dict[str, None] = {}
    for run in history.runs:
        seen.update(dict.fromkeys([*run.data_added, *run.repositories, *run.bytes_added, *run.stored_bytes]))
    return list(seen)


def _durations(runs: list[RunRow]) -> str:
    groups = list(dict.fromkeys(g for run in runs for g in run.phases))
    chart = bar_chart([run.started for run in runs], {g: [run.phases.get(g) for run in runs] for g in groups},
                      fmt_seconds, stacked=True, marks=[EXIT_COLOURS.get(run.exit_code, "#c62828") for run in runs],
                      ticks=[run.duration_seconds for run in runs])
    return f"<h3>{escape(runs[0].command)} ({len(runs)} run{'s' if len(runs) > 1 else ''})</h3>{_legend(groups)}{chart}"


def _runs_section(history: History) -> str:
    runs, repos = history.runs, _repos(history)
    if not runs:
        return "<h2>Runs</h2><p class=note>No run in these days.</p>"
    # one chart per command: a drill's half hour would flatten the backups' minutes
    commands = list(dict.fromkeys(run.command for run in runs))
    durations = "".join(_durations([run for run in runs if run.command == c]) for c in commands)
    saving = [run for run in runs if run.data_added or run.repositories or run.bytes_added]
    added = bar_chart([run.started for run in saving], {r: [run.added(r) for run in saving] for r in repos},
                      fmt_bytes, stacked=False)
    unrecorded = [r for r in repos if any(r in run.repositories and run.added(r) is None for run in runs)]
    note = (f"<p class=note>Bytes added to {escape(', '.join(unrecorded))} are not known for some runs (older "
            "summaries, or a size that could not be measured: drawn as no bar, listed as “not recorded” or "
            "“unknown”).</p>") if unrecorded else ""
    return ("<h2>Duration by phase</h2>"
            '<p class="legend">Mark under each bar: exit code <span><i style="background:#2e7d32"></i>0</span>'
            '<span><i style="background:#ef6c00"></i>3 partial</span><span><i style="background:#c62828"></i>'
            "1 or other</span></p><p class=note>Black line: the run's wall time. Phases are stacked as the run "
            f"timed them; some are timed inside others, so a stack can reach past the line.</p>{durations}"
            "<h2>Bytes added per repository</h2><p class=note>A backup: what restic says it added. A copy offsite:"
            f" what the storage grew by during the copy.</p>{_legend(repos)}{added}{note}")


def _run_row(run: RunRow, repos: list[str]) -> str:
    css = {"success": "ok", "partial": "partial"}.get(run.status, "fail")
    phases = ", ".join(f'<span {_attr("phase:" + name, secs)}>{escape(name)} {fmt_seconds(secs)}</span>'
                       for name, secs in run.phases.items())
    added = "".join(_size_cell("added:" + r, run.added(r), r in run.bytes_added or r in run.repositories)
                    for r in repos)
    stored = "".join(_size_cell("stored:" + r, run.stored_bytes.get(r), r in run.stored_bytes) for r in repos)
    failures = "<br>".join(escape(message) for message in run.failures)
    return (f'<tr id="run-{escape(run.run_id)}"><td class=t>{escape(_label(run.started))}</td>'
            f"<td class=t {_attr('command', run.command)}>{escape(run.command)}</td>"
            f"<td class='t {css}' {_attr('status', run.status)}>{escape(run.status)}</td>"
            f"<td {_attr('exit', run.exit_code)}>{run.exit_code}</td>"
            f"<td {_attr('duration', run.duration_seconds)}>{fmt_seconds(run.duration_seconds)}</td>"
            f"{added}{stored}<td class=t>{phases}</td><td class='t fail'>{failures}</td></tr>")


def _size_cell(key: str, value: int | None, expected: bool) -> str:
    """A byte count; when missing: “unknown” if the run tried, “not recorded” if it should have, else empty."""
    if value is not None:
        return f"<td {_attr(key, value)}>{fmt_bytes(value)}</td>"
    return f"<td {_attr(key, '')}>{'unknown' if expected else ''}</td>"


def _runs_table(history: History) -> str:
    repos = _repos(history)
    head = "".join(f"<th>added {escape(r)}</th>" for r in repos) + "".join(f"<th>stored {escape(r)}</th>"
                                                                          for r in repos)
    rows = "".join(_run_row(run, repos) for run in reversed(history.runs))
    return (f"<h2>Runs (newest first)</h2><table><tr><th class=t>started (UTC)</th><th class=t>command</th>"
            f"<th class=t>status</th><th>exit</th><th>duration</th>{head}<th class=t>phases</th>"
            f"<th class=t>failures</th></tr>{rows}</table>")


def _rpo_section(history: History) -> str:
    points: list[tuple[str, float]] = [(p.at, p.age_seconds) for p in history.rpo if p.age_seconds is not None]
    target = history.rpo_target_seconds
    if not points:
        return "<h2>RPO age</h2><p class=note>No good backup known in these days.</p>"
    chart = line_chart(points, fmt_seconds, target=target, target_text=f"RPO target {fmt_seconds(target)}")
    return ("<h2>RPO age at each run</h2><p class=note>Age of the newest good (complete) backup at the end of each "
            f"run, from the start of the run that saved it.</p>{chart}")


def _drills_section(history: History) -> str:
    target = history.rto_target_seconds
    if not history.drills:
        return f"<h2>Drills: RTO</h2><p class=note>No drill in these days (RTO target {fmt_seconds(target)}).</p>"
    drills = history.drills
    chart = bar_chart([d.started for d in drills], {"measured RTO": [d.rto_seconds for d in drills]}, fmt_seconds,
                      stacked=True, target=target, target_text=f"RTO target {fmt_seconds(target)}",
                      marks=["#2e7d32" if d.passed else "#c62828" for d in drills])
    rows = "".join(
        f'<tr id="drill-{escape(d.run_id)}"><td class=t>{escape(_label(d.started))}</td>'
        f"<td {_attr('rto', d.rto_seconds if d.rto_seconds is not None else '')}>{fmt_seconds(d.rto_seconds)}</td>"
        f"<td {_attr('target', d.target_seconds)}>{fmt_seconds(d.target_seconds)}</td>"
        f"<td class='t {'ok' if d.passed else 'fail'}' {_attr('passed', d.passed)}>"
        f"{'passed' if d.passed else 'FAILED'}</td></tr>" for d in reversed(drills))
    return (f"<h2>Drills: RTO against the target ({fmt_seconds(target)})</h2>"
            '<p class="legend">Mark under each bar: <span><i style="background:#2e7d32"></i>passed</span>'
            f'<span><i style="background:#c62828"></i>failed</span></p>{chart}'
            "<table><tr><th class=t>started (UTC)</th><th>measured RTO</th><th>target</th><th class=t>verdict</th>"
            f"</tr>{rows}</table>")


def _growth_section(history: History) -> str:
    if not history.growth:
        return ("<h2>Repository growth</h2><p class=note>Not drawn: the run summaries carry no repository size "
                "(only the bytes each run added, above).</p>")
    series = {repo: [(t, None if b is None else float(b)) for t, b in points]
              for repo, points in history.growth.items()}
    return ("<h2>Repository growth</h2><p class=note>What each repository's storage holds at the end of each backup "
            "run; a gap: the size was not measured then.</p>"
            f"{_legend(list(series))}{lines_chart(series, fmt_bytes)}")


def render_page(history: History, title: str = "restic-orch: the last runs") -> str:
    """The whole page; nothing in it is fetched or run by the browser."""
    runs = history.runs
    failed = sum(1 for run in runs if run.exit_code not in (0,))
    summary = (f"{len(runs)} runs from {escape(_label(history.since))} to {escape(_label(history.until))} UTC "
               f"({history.days} days): {failed} not successful, {len(history.drills)} drills.")
    unreadable = (f"<p class=fail>Unreadable summaries skipped: {escape(', '.join(history.unreadable))}</p>"
                  if history.unreadable else "")
    return ("<!DOCTYPE html><html lang=en><head><meta charset=utf-8>"
            f"<title>{escape(title)}</title><style>{CSS}</style></head><body>"
            f"<h1>{escape(title)}</h1><p>{summary}</p>{unreadable}"
            f"{_runs_section(history)}{_rpo_section(history)}{_drills_section(history)}"
            f"{_growth_section(history)}{_runs_table(history)}</body></html>\n")


def write_page(history: History, out: Path, title: str = "restic-orch: the last runs") -> Path:
    """Write the page atomically, 0640 like the summaries it is made of (they may name hosts and paths)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o640)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(render_page(history, title))
    os.replace(tmp, out)
    return out
