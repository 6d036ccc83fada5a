"""Apprise notifications reaching real receivers on 127.0.0.1: an SMTP server (aiosmtpd), an HTTP server that
takes ntfy's and Gotify's requests, a closed port and a server that accepts and never answers."""

from __future__ import annotations

import copy
import json
import logging
import os
import socket
import subprocess
import threading
import time
from email import message_from_string
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult

from restic_orch import notify, runlog, status
from restic_orch.config import Config, ConfigError, load_config
from restic_orch.notify_text import events_for
from restic_orch.report import RunSummary
from tests.clihelp import restic_orch
from tests.configs import host_dirs

GOTIFY_TOKEN = "AgT0k3nSecret99"
GOTIFY_DOWN_TOKEN = "AdownT0kenSecret77"
MAIL_PASSWORD = "m4il-Passw0rd-secret"
DEADLINE = 2


class Http(BaseHTTPRequestHandler):
    """Answers like ntfy and Gotify do (200, a JSON object) and keeps each request."""

    calls: list[tuple[str, dict[str, str], dict]] = []

    def do_POST(self):  # noqa: N802 - http.server's name
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        Http.calls.append((self.path, dict(self.headers), json.loads(body or b"{}")))
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(b'{"id": 1}')

    def log_message(self, *args):
        pass


class Mailbox:
    def __init__(self):
        self.messages: list[Message] = []
        self.logins: list[tuple[bytes, bytes]] = []

    async def handle_DATA(self, server, session, envelope):  # noqa: N802 - aiosmtpd's name
        self.messages.append(message_from_string(envelope.content.decode("utf-8", "replace")))
        return "250 OK"

    def authenticate(self, server, session, envelope, mechanism, auth_data):
        self.logins.append((auth_data.login, auth_data.password))
        return AuthResult(success=True)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def receivers():
    http = ThreadingHTTPServer(("127.0.0.1", 0), Http)
    threading.Thread(target=http.serve_forever, daemon=True).start()
    mailbox = Mailbox()
    smtp = Controller(mailbox, hostname="127.0.0.1", port=free_port(), authenticator=mailbox.authenticate,
                      auth_require_tls=False)
    smtp.start()
    # accepts connections (the kernel's backlog) and never answers a byte
    hanging = socket.socket()
    hanging.bind(("127.0.0.1", 0))
    hanging.listen(16)
    yield {"http": http.server_address[1], "smtp": smtp.port, "mailbox": mailbox,
           "hanging": hanging.getsockname()[1], "closed": free_port()}
    hanging.close()
    smtp.stop()
    http.shutdown()


def urls_file(path: Path, *urls: str) -> Path:
    path.write_text("# one Apprise URL per line\n\n" + "\n".join(urls) + "\n")
    path.chmod(0o600)
    return path


def write_config(tmp_path: Path, routes: list[tuple[list[str], list[str]]], timeout: int = DEADLINE) -> Path:
    """A configuration with a local repository and one monitoring.notify route per (urls, events)."""
    pw = tmp_path / "pw"
    pw.write_text("repository-password\n")
    pw.chmod(0o600)
    text = host_dirs(tmp_path) + (f"repositories:\n  local:\n    url: {tmp_path}/repo\n    password_file: {pw}\n"
                                  f"    retention: {{keep_last: 3}}\nlimits: {{cpu_percent: null}}\n"
                                  f"monitoring:\n  timeout_seconds: {timeout}\n  notify:\n")
    for index, (urls, events) in enumerate(routes):
        f = urls_file(tmp_path / f"route{index}.urls", *urls)
        text += f"    - urls_file: {f}\n      events: [{', '.join(events)}]\n"
    path = tmp_path / "config.yml"
    path.write_text(text)
    return path


def ops_and_daily(tmp_path: Path, r: dict) -> Config:
    mail = (f"mailto://orch:{MAIL_PASSWORD}@127.0.0.1:{r['smtp']}?from=orch@example.com&to=ops@example.com"
            "&mode=insecure")
    ops = [mail, f"ntfy://127.0.0.1:{r['http']}/ops-alerts", f"gotify://127.0.0.1:{r['http']}/{GOTIFY_TOKEN}",
           f"gotify://127.0.0.1:{r['closed']}/{GOTIFY_DOWN_TOKEN}"]
    daily = [f"ntfy://127.0.0.1:{r['http']}/daily-summary"]
    return load_config(write_config(tmp_path, [(ops, ["failure", "partial", "rpo_breach", "drill", "check"]),
                                               (daily, ["success"])]))


def ntfy(topic: str) -> list[dict]:
    return [body for _path, _headers, body in Http.calls if body.get("topic") == topic]


def test_a_failure_reaches_mail_ntfy_and_gotify_naming_the_source_and_the_command(tmp_path, receivers, caplog):
    caplog.set_level(logging.DEBUG, logger="restic_orch")
    config = ops_and_daily(tmp_path, receivers)
    Http.calls.clear()
    receivers["mailbox"].messages.clear()
    # a recorded run, as check/drill/restore make: runlog.save writes the summary, then notifies
    with runlog.recorded_run(config, "check", "check") as run:
        run.summary.fail("check", "offsite", "Fatal: pack 3f2a1b is damaged", component="offsite")
        run.summary.finish("failure")
    assert run.summary.exit_code == 1

    [mail] = receivers["mailbox"].messages
    assert receivers["mailbox"].logins == [(b"orch", MAIL_PASSWORD.encode())]
    text = next(p for p in mail.walk() if p.get_content_type() == "text/plain").get_payload(decode=True).decode()
    assert mail["Subject"] == "restic-orch check on pve1: PROBLEMS FOUND"
    assert "offsite: Fatal: pack 3f2a1b is damaged" in text and run.run_id in text
    assert "restic-orch status" in text and "restic-orch check --repo offsite" in text
    assert f"log: {run.log_file}" in text
    [alert] = ntfy("ops-alerts")
    assert alert["title"] == mail["Subject"] and "pack 3f2a1b is damaged" in alert["message"]
    [gotify] = [(headers, body) for path, headers, body in Http.calls if path == "/message"]
    assert gotify[0].get("X-Gotify-Key") == GOTIFY_TOKEN  # what a real Gotify server authenticates
    assert gotify[1]["title"] == mail["Subject"] and "restic-orch check --repo offsite" in gotify[1]["message"]
    assert ntfy("daily-summary") == []  # success only

    # the down receiver was reported, named without its token, in the run log and the summary neither
    log_text = run.log_file.read_text()
    assert "notification failed" in log_text and "route0.urls:6" in log_text
    assert "ops-alerts" not in log_text  # an ntfy topic is its only secret: receivers are named by FILE:LINE
    saved = (config.state_dir / "runs" / f"{run.run_id}-check.json").read_text()
    for secret in (GOTIFY_TOKEN, GOTIFY_DOWN_TOKEN, MAIL_PASSWORD):
        assert secret not in log_text and secret not in saved
        assert secret not in "\n".join(f"{r.getMessage()} {vars(r)}" for r in caplog.records)


def test_a_success_summary_goes_only_where_success_is_listed(tmp_path, receivers):
    config = ops_and_daily(tmp_path, receivers)
    Http.calls.clear()
    receivers["mailbox"].messages.clear()
    summary = RunSummary("backup", "20260101T020000Z-ab12", "pve1", "", log_file="/var/log/restic-orch/x.jsonl")
    summary.snapshots = {"local": "1a2b3c4d", "offsite": "5e6f7a8b"}
    summary.data_added = {"local": 3 * 2**20, "offsite": 3 * 2**20}
    summary.finish("success")
    summary.duration_seconds = 421.5
    notify.finished(config, summary)
    [daily] = ntfy("daily-summary")
    assert daily["title"] == "restic-orch backup on pve1: success"
    for part in ("421.5 s", "local 1a2b3c4d", "offsite 5e6f7a8b", "local 3.0 MiB", "20260101T020000Z-ab12"):
        assert part in daily["message"], part
    assert ntfy("ops-alerts") == [] and receivers["mailbox"].messages == []
    assert not [c for c in Http.calls if c[0] == "/message"]


def test_a_receiver_down_or_hanging_changes_nothing_and_waits_no_longer_than_the_deadline(tmp_path, receivers,
                                                                                         caplog):
    caplog.set_level(logging.WARNING, logger="restic_orch")
    urls = [f"ntfy://127.0.0.1:{receivers['closed']}/down-topic",
            f"gotify://127.0.0.1:{receivers['hanging']}/{GOTIFY_TOKEN}"]
    config = load_config(write_config(tmp_path, [(urls, ["partial"])]))
    started = time.monotonic()
    with runlog.recorded_run(config, "restore", "restore") as run:
        run.summary.fail("restore", "app-db", "database exists", component="app-db")
        run.summary.finish("partial")
    elapsed = time.monotonic() - started
    assert elapsed < DEADLINE + 1.5, elapsed
    assert run.summary.exit_code == 3
    assert json.loads((config.state_dir / "last-restore.json").read_text())["status"] == "partial"
    messages = [r.getMessage() for r in caplog.records]
    assert any(m.startswith("notification failed") for m in messages), messages
    assert any(m.startswith(f"notification abandoned after {DEADLINE} s") for m in messages), messages
    assert GOTIFY_TOKEN not in run.log_file.read_text()


def test_the_configuration_names_an_unknown_event_and_a_url_file_others_can_read(tmp_path):
    path = write_config(tmp_path, [(["ntfy://127.0.0.1:1/t"], ["failure", "sucess"])])
    with pytest.raises(ConfigError) as bad_event:
        load_config(path)
    assert "monitoring.notify[0].events[1]: Input should be 'failure', 'partial', 'success'" in str(bad_event.value)
    path = write_config(tmp_path, [(["ntfy://127.0.0.1:1/t"], ["failure"])])
    (tmp_path / "route0.urls").chmod(0o644)
    with pytest.raises(ConfigError) as readable:
        load_config(path)
    assert (f"monitoring.notify[0].urls_file: secret file {tmp_path / 'route0.urls'} is readable by group or others"
            in str(readable.value))


@pytest.mark.parametrize(("command", "status", "events"), [
    ("backup", "partial", {"partial"}), ("restore", "success", {"success"}), ("drill", "failure", {"drill", "failure"}),
    ("check", "success", {"check"}), ("check", "failure", {"check", "failure"})])
def test_which_events_a_run_is_sent_under(command, status, events):
    summary = RunSummary(command, "r", "pve1", "")
    summary.finish(status)
    assert events_for(summary) == events


def restic(config: Config, *args: str) -> str:
    repo = config.repositories.local
    return subprocess.run(["restic", "--repo", repo.url, "--password-file", str(repo.password_file), "-q", *args],
                          check=True, capture_output=True, text=True, timeout=60).stdout


def test_status_tells_rpo_breach_routes_once_per_breach(tmp_path, receivers):
    urls = [f"ntfy://127.0.0.1:{receivers['http']}/rpo-topic"]
    path = write_config(tmp_path, [(urls, ["rpo_breach"])])
    config = load_config(path)
    (tmp_path / "data").write_text("x")
    restic(config, "init")
    restic(config, "backup", "--host", "pve1", "--tag", "restic-orch,status:complete", "--time", "2020-01-02 03:04:05",
           str(tmp_path / "data"))
    Http.calls.clear()

    # tonight's backup is running (its marker, a live pid): the breach it is about to end is not told yet
    marker = config.state_dir / "run-in-progress.json"
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.write_text(json.dumps({"run_id": "tonight", "pid": os.getpid()}))
    assert notify.rpo_breach(config, status.collect(config)) is None and ntfy("rpo-topic") == []
    marker.write_text(json.dumps({"run_id": "killed", "pid": 2**22 + 1}))  # a SIGKILLed run's marker: no pid

    assert restic_orch(path, "status").returncode == 1
    [breach] = ntfy("rpo-topic")
    assert breach["title"] == "restic-orch on pve1: RPO BREACHED (local)"
    assert "target 24 h" in breach["message"] and "restic-orch snapshots --repo local" in breach["message"]
    # the scheduled form: silent, exit 0 (the routes are the alert), and the breach was already told
    watched = restic_orch(path, "status", "--notify-only")
    assert (watched.returncode, watched.stdout) == (0, "") and len(ntfy("rpo-topic")) == 1

    # what status does each hour, on the same findings (restic's key derivation makes each CLI run cost a second)
    data = status.collect(config)
    assert notify.rpo_breach(config, data) is None and len(ntfy("rpo-topic")) == 1  # already told
    cleared = copy.deepcopy(data)
    cleared["repositories"]["local"].update(ok=True, newest_complete="0a1b2c3d", age_seconds=60)
    assert notify.rpo_breach(config, cleared) is None  # a good backup: the breach is over
    assert notify.rpo_breach(config, data) is not None and len(ntfy("rpo-topic")) == 2  # the next one is told

    # a breach no receiver took is tried again on the next status
    notify.rpo_breach(config, cleared)
    urls_file(tmp_path / "route0.urls", f"ntfy://127.0.0.1:{receivers['closed']}/rpo-topic")
    for _ in range(2):
        delivery = notify.rpo_breach(config, data)
        assert delivery is not None and delivery.failed and not delivery.sent
