"""Metrics, pings and notifications: real HTTP servers on loopback, real files."""

from __future__ import annotations

import json
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


def test_pings_and_webhook_carry_status_and_never_the_secret_uuid_in_logs(tmp_path):
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


def test_unreachable_notification_does_not_raise(tmp_path):
    config = config_for(tmp_path, "http://127.0.0.1:1/ping/x", "http://127.0.0.1:1/hook")
    summary = RunSummary("backup", "r2", "pve1", "")
    summary.finish("failure")
    notify.finished(config, summary)  # must not raise


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
    dashboard = json.loads(DASHBOARD.read_text())
    import re

    exprs = " ".join(t["expr"] for p in dashboard["panels"] for t in p["targets"])
    names = set(re.findall(r"restic_orch_[a-z_]+", exprs))
    source = (Path(report.__file__)).read_text()
    assert names and all(name in source for name in names), names
