"""The role's OnFailure= reporter (ansible/roles/backup/files/on_failure.py), run as systemd runs it.

systemd (>= 251) starts restic-orch-failure@<failed unit>.service with MONITOR_SERVICE_RESULT, MONITOR_EXIT_CODE
and MONITOR_EXIT_STATUS set. The reporter always logs the failure at priority err; it pings Healthchecks /fail
and posts to the webhook unless the run's own summary names this invocation (restic-orch reported it itself),
and never prints the secret URLs.
"""

from __future__ import annotations

import http.server
import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

ROLE = Path(__file__).resolve().parents[2] / "ansible" / "roles" / "backup"
REPORTER = ROLE / "files" / "on_failure.py"
UNIT = "restic-orch-backup.service"


class _Recorder(http.server.BaseHTTPRequestHandler):
    received: list[tuple[str, bytes, str]] = []

    def do_POST(self) -> None:  # noqa: N802 - http.server's name
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.received.append((self.path, body, self.headers.get("Content-Type", "")))
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b"OK")

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def receiver():
    _Recorder.received = []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Recorder)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", _Recorder.received
    server.shutdown()
    server.server_close()


def _secret(path: Path, text: str) -> Path:
    path.write_text(text + "\n")
    os.chmod(path, 0o600)
    return path


@pytest.fixture
def config(tmp_path, receiver) -> list[str]:
    """The reporter's arguments as the role's restic-orch-failure@.service passes them."""
    base, _ = receiver
    secrets = tmp_path / "secrets"
    secrets.mkdir(mode=0o700)
    hc = _secret(secrets / "healthchecks.url", f"{base}/hc/5ec7e7-uuid")
    hook = _secret(secrets / "webhook.url", f"{base}/hook/s3cr3t-path")
    (tmp_path / "state").mkdir()
    return ["--state-dir", str(tmp_path / "state"), "--log-dir", str(tmp_path / "log"),
            "--healthchecks-url-file", str(hc), "--webhook-url-file", str(hook), "--timeout", "5"]


def report(args: list[str], **monitor: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MONITOR_")}
    env.update({f"MONITOR_{k.upper()}": v for k, v in monitor.items()})
    # not the project's interpreter environment: the reporter must work when the package is broken
    return subprocess.run([sys.executable, "-I", REPORTER, "--unit", UNIT, *args], env=env,
                          capture_output=True, text=True, timeout=60)


def _state_dir(args: list[str]) -> Path:
    return Path(args[args.index("--state-dir") + 1])


def test_a_killed_run_is_logged_at_err_and_notified(config, receiver):
    _, received = receiver
    result = report(config, service_result="signal", exit_code="killed", exit_status="KILL")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith(f"<3>{UNIT} on ")
    assert f"failed: signal (killed KILL). See: journalctl -u {UNIT}" in lines[0]
    paths = sorted(path for path, _, _ in received)
    assert paths == ["/hc/5ec7e7-uuid/fail", "/hook/s3cr3t-path"]
    [(_, body, ctype)] = [r for r in received if r[0].startswith("/hook")]
    payload = json.loads(body)
    assert ctype == "application/json"
    assert payload["unit"] == UNIT and payload["service_result"] == "signal"
    assert payload["text"].startswith(f"restic-orch: {UNIT} on ")
    # the URLs hold secrets: never in the journal
    assert "5ec7e7" not in result.stdout + result.stderr and "s3cr3t" not in result.stdout + result.stderr


@pytest.mark.parametrize("status", ["1", "3"])
def test_a_failure_restic_orch_reported_itself_is_logged_only(config, receiver, status):
    """Its summary carries this invocation's id: restic-orch has already pinged and posted."""
    _, received = receiver
    (_state_dir(config) / "last-run.json").write_text(json.dumps({"invocation_id": "0123abcd", "status": "x"}))
    result = report(config, service_result="exit-code", exit_code="exited", exit_status=status,
                    invocation_id="0123abcd")
    assert result.returncode == 0, result.stderr
    assert f"failed: exit-code (exited {status})" in result.stdout.splitlines()[0]
    assert received == []


def test_a_crash_that_wrote_no_summary_is_notified(config, receiver):
    """exit 1 from a traceback, a held lock or a broken upgrade: no summary of this invocation, so notify."""
    _, received = receiver
    (_state_dir(config) / "last-run.json").write_text(json.dumps({"invocation_id": "an-older-run"}))
    result = report(config, service_result="exit-code", exit_code="exited", exit_status="1",
                    invocation_id="0123abcd")
    assert result.returncode == 0, result.stderr
    assert sorted(path for path, _, _ in received) == ["/hc/5ec7e7-uuid/fail", "/hook/s3cr3t-path"]


def test_a_timed_out_run_is_notified(config, receiver):
    _, received = receiver
    result = report(config, service_result="timeout", exit_code="killed", exit_status="TERM")
    assert result.returncode == 0, result.stderr
    assert sorted(path for path, _, _ in received) == ["/hc/5ec7e7-uuid/fail", "/hook/s3cr3t-path"]


def test_an_unusable_configuration_is_notified(config, receiver):
    """exit 2: the configuration could not be loaded, so restic-orch could not notify; the reporter can."""
    _, received = receiver
    result = report(config, service_result="exit-code", exit_code="exited", exit_status="2")
    assert result.returncode == 0, result.stderr
    assert f"<3>{UNIT} on " in result.stdout
    assert sorted(path for path, _, _ in received) == ["/hc/5ec7e7-uuid/fail", "/hook/s3cr3t-path"]


def test_the_product_records_its_invocation_id(monkeypatch):
    from restic_orch.report import RunSummary

    monkeypatch.setenv("INVOCATION_ID", "feedbeef")
    assert RunSummary("backup", "r", "h", "").to_json()["invocation_id"] == "feedbeef"
