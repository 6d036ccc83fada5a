"""Report a failed restic-orch systemd unit: run by restic-orch-failure@.service, the OnFailure= of each unit.

It logs the failure at priority err (`journalctl -p err -t restic-orch`, and `systemctl status` shows the
unit failed), naming the run's result and where its logs are. Unless the run's own summary shows that
restic-orch reported this very invocation itself (its last-*.json in the state directory carries systemd's
INVOCATION_ID, equal to MONITOR_INVOCATION_ID here), it also pings Healthchecks `/fail` and posts to the
webhook, with the run's last log lines (the URLs masked). That covers what restic-orch cannot report:
a signal, the OOM killer, a timeout, a crash, a broken upgrade, a configuration it could not load, a lock
held by another run. Standard library only: the package itself may be what broke.

usage: on_failure.py --unit UNIT --state-dir DIR [--log-dir DIR] [--healthchecks-url-file F]
                     [--webhook-url-file F] [--timeout S]    (systemd >= 251 passes MONITOR_* in the environment)
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path

ERR, WARNING, INFO = "<3>", "<4>", "<6>"  # sd-daemon priority prefixes: journald files each line at that level


def say(level: str, text: str) -> None:
    print(level + text, flush=True)


def log_tail(unit: str, lines: int = 30) -> str:
    """The failed run's own last lines from the journal (this invocation only, when systemd says which)."""
    invocation = os.environ.get("MONITOR_INVOCATION_ID")
    argv = ["journalctl", "--no-pager", "-o", "cat", "-n", str(lines)]
    argv += [f"_SYSTEMD_INVOCATION_ID={invocation}"] if invocation else ["-u", unit]
    try:
        return subprocess.run(argv, capture_output=True, text=True, timeout=30).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def read_url(path: Path | None) -> str | None:
    if path is None:
        return None
    try:
        return Path(path).read_text(encoding="utf-8").strip() or None
    except OSError as exc:
        say(WARNING, f"cannot read the notification URL file {path}: {exc}")
        return None


def send(url: str, body: bytes, timeout: float, content_type: str) -> bool:
    if not url.startswith(("https://", "http://")):
        say(WARNING, "a notification URL must be http(s)")
        return False
    request = urllib.request.Request(url, data=body, method="POST",  # noqa: S310 - scheme checked above
                                     headers={"Content-Type": content_type, "User-Agent": "restic-orch"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310
            response.read(1024)
        return True
    except (OSError, ValueError) as exc:  # the URL embeds a secret: never print it
        say(WARNING, f"notification failed: {type(exc).__name__}")
        return False


def reported_itself(state_dir: Path | None) -> bool:
    """True when a summary restic-orch wrote names this failed invocation: it has notified already."""
    invocation = os.environ.get("MONITOR_INVOCATION_ID")
    if not invocation or state_dir is None:
        return False
    for path in Path(state_dir).glob("last-*.json"):
        try:
            if json.loads(path.read_text(encoding="utf-8")).get("invocation_id") == invocation:
                return True
        except (OSError, ValueError):
            continue
    return False


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--unit", required=True)
    parser.add_argument("--state-dir", type=Path)
    parser.add_argument("--log-dir", type=Path)
    parser.add_argument("--healthchecks-url-file", type=Path)
    parser.add_argument("--webhook-url-file", type=Path)
    parser.add_argument("--timeout", type=float, default=10.0)
    args = parser.parse_args(argv)
    result = os.environ.get("MONITOR_SERVICE_RESULT", "")
    code, status = os.environ.get("MONITOR_EXIT_CODE", ""), os.environ.get("MONITOR_EXIT_STATUS", "")
    how = f"{result or 'failed'}" + (f" ({code} {status})" if code or status else "")
    host = socket.gethostname()
    where = f"; run logs in {args.log_dir}" if args.log_dir else ""
    say(ERR, f"{args.unit} on {host} failed: {how}. See: journalctl -u {args.unit}{where}")
    if reported_itself(args.state_dir):
        return 0
    hc, hook = read_url(args.healthchecks_url_file), read_url(args.webhook_url_file)
    if not (hc or hook):
        return 0
    tail = log_tail(args.unit)
    for secret in (hc, hook):  # a run may have logged a URL: they carry secrets
        if secret:
            tail = tail.replace(secret, "****")
    text = f"restic-orch: {args.unit} on {host} failed: {how}"
    if hc and send(hc.rstrip("/") + "/fail", (text + "\n--- log tail ---\n" + tail).encode()[:100_000],
                   args.timeout, "text/plain"):
        say(INFO, "Healthchecks pinged /fail")
    payload = {"text": text, "host": host, "unit": args.unit, "service_result": result, "exit_code": code,
               "exit_status": status, "log_tail": tail}
    if hook and send(hook, json.dumps(payload).encode(), args.timeout, "application/json"):
        say(INFO, "webhook notified")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
