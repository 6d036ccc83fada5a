"""Metrics, pings and notifications: real HTTP servers on loopback, real files."""

from __future__ import annotations

import json
import logging
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from restic_orch import notify, report
from restic_orch.config import Config
from restic_orch.report import RunSummary

DASHBOARD = Path(__file__).resolve().parents[2] / "docs" / "grafana-dashboard.json"


class Recorder(BaseHTTPRequestHandler):
    calls: list[tuple[str, str, bytes]] = []

    def _handle(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        Recorder.calls.append((self.command, self.path, body))
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b"OK")

    do_GET = do_POST = _handle

    def log_message(self, *args):  # quiet
        pass


def config_for(tmp_path, ping_url: str | None, webhook: str | None) -> Config:
    pw = tmp_path / "pw"
    pw.write_text("x" * 12)
    pw.chmod(0o600)
    data = {"state_dir": str(tmp_path / "state"), "staging_dir": str(tmp_path / "st"), "log_dir": str(tmp_path / "l"),
            "repositories": {"local": {"url": str(tmp_path / "r"), "password_file": str(pw),
                                       "retention": {"keep_last": 1}}},
            "monitoring": {"textfile_dir": str(tmp_path / "metrics")}}
    for key, url in (("healthchecks_url_file", ping_url), ("webhook_url_file", webhook)):
        if url:
            f = tmp_path / key
            f.write_text(url + "\n")
            f.chmod(0o600)
            data["monitoring"][key] = str(f)
    return Config.model_validate(data)


def logged(caplog) -> str:
    """Every record restic_orch logged, its extra fields included (they reach the JSON log file too)."""
    return "\n".join(f"{r.getMessage()} {vars(r)}" for r in caplog.records)


def test_pings_and_webhook_carry_status_and_never_the_secret_uuid_in_logs(tmp_path, caplog):
    caplog.set_level(logging.DEBUG, logger="restic_orch")
    server = ThreadingHTTPServer(("127.0.0.1", 0), Recorder)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    Recorder.calls.clear()
    try:
        config = config_for(tmp_path, f"{base}/ping/0f3c2e1a-uuid", f"{base}/hook")
        summary = RunSummary("backup", "r1", "pve1", "")
        notify.started(config, summary)
        summary.fail("postgres", "pg", "connection refused")
        summary.finish("partial")
        notify.finished(config, summary)
    finally:
        server.shutdown()
    paths = [(m, p) for m, p, _ in Recorder.calls]
    assert ("GET", "/ping/0f3c2e1a-uuid/start") in paths
    assert ("POST", "/ping/0f3c2e1a-uuid/fail") in paths
    hook = [b for m, p, b in Recorder.calls if p == "/hook"]
    assert hook and json.loads(hook[0])["summary"]["status"] == "partial"
    fail_body = [b for m, p, b in Recorder.calls if p.endswith("/fail")][0].decode()
    assert "connection refused" in fail_body
    assert "0f3c2e1a-uuid" not in logged(caplog)


def test_unreachable_notification_is_logged_masked_and_does_not_raise(tmp_path, caplog):
    caplog.set_level(logging.DEBUG, logger="restic_orch")
    config = config_for(tmp_path, "http://127.0.0.1:1/ping/5ec7e7-ping-uuid", "http://127.0.0.1:1/hook/5ec7e7-token")
    summary = RunSummary("backup", "r2", "pve1", "")
    summary.finish("failure")
    notify.finished(config, summary)  # returns: a notification never changes the run's result
    failed = [r for r in caplog.records if r.getMessage().startswith("notification failed")]
    assert len(failed) == 2, logged(caplog)  # the ping and the webhook, each said once
    assert all(r.levelno == logging.WARNING for r in failed)
    assert "5ec7e7" not in logged(caplog)


def test_metrics_keep_last_success_after_a_failed_run(tmp_path):
    state = tmp_path / "state"
    ok = RunSummary("backup", "r1", "pve1", "")
    ok.snapshots = {"local": "abcd1234"}
    ok.finish("success")
    report.save_summary(state, ok)
    report.remember_repositories(state, ok.snapshots, {"local": 3})
    bad = RunSummary("backup", "r2", "pve1", "")
    bad.fail("run", "preflight", "disk full")
    bad.finish("failure")
    report.save_summary(state, bad)
    text = report.write_metrics(tmp_path / "metrics", state).read_text()
    assert 'restic_orch_last_run_status{command="backup"} 1' in text
    assert 'restic_orch_last_success_timestamp_seconds{repo="local"}' in text
    assert 'restic_orch_snapshots{repo="local"} 3' in text
    assert "restic_orch_failures 1" in text
    # every sample line parses as "name{labels} value"
    for line in text.splitlines():
        if line and not line.startswith("#"):
            float(line.rsplit(" ", 1)[1])


def test_dashboard_uses_only_metrics_we_write(tmp_path):
    """Every series the dashboard queries is in a metrics file written after a backup, a check and a drill."""
    state = tmp_path / "state"
    backup = RunSummary("backup", "r1", "pve1", "")
    backup.snapshots = {"local": "abcd1234", "offsite": "ef567890"}
    backup.data_added = {"local": 2048, "offsite": 1024}
    backup.finish("success")
    report.save_summary(state, backup)
    report.remember_repositories(state, backup.snapshots, {"local": 7, "offsite": 30})
    check = RunSummary("check", "r2", "pve1", "")
    check.finish("success")
    report.save_summary(state, check)
    drill = RunSummary("drill", "r3", "pve1", "")
    drill.extra = {"report": {"passed": True, "rto": {"seconds": 42.5}}}
    drill.finish("success")
    report.save_summary(state, drill)
    written = report.write_metrics(tmp_path / "metrics", state).read_text()
    series = {line.split("{")[0].split(" ")[0] for line in written.splitlines() if line and not line.startswith("#")}
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = " ".join(t["expr"] for p in dashboard["panels"] for t in p["targets"])
    names = set(re.findall(r"restic_orch_[a-z_]+", exprs))
    assert names, "the dashboard queries no restic_orch series"
    assert names <= series, sorted(names - series)
