"""Healthchecks-style pings (start, success, fail with the log tail) and a webhook on failure.

A notification that fails is logged and never changes the run's result.
"""

from __future__ import annotations

import json
import logging
import urllib.error
import urllib.request
from pathlib import Path

from .config import Config
from .masking import mask, read_secret
from .report import RunSummary

log = logging.getLogger("restic_orch.notify")


def _url(path: Path | None) -> str | None:
    if path is None:
        return None
    try:
        return read_secret(path) or None  # ping URLs embed a secret uuid: masked like one
    except OSError as exc:
        log.warning("cannot read notification URL file", extra={"file": str(path), "error": str(exc)})
        return None


def _send(url: str, body: bytes | None, timeout: float, content_type: str = "text/plain") -> None:
    if not url.startswith(("https://", "http://")):
        log.warning("notification URL must be http(s)", extra={"url": mask(url)})
        return
    request = urllib.request.Request(url, data=body, method="POST" if body is not None else "GET",  # noqa: S310
                                     headers={"Content-Type": content_type, "User-Agent": "restic-orch"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310 - scheme checked above
            response.read(1024)
    except (urllib.error.URLError, OSError, ValueError) as exc:
        log.warning("notification failed (the run's result is unchanged)",
                    extra={"url": mask(url), "error": mask(str(exc))})


def started(config: Config, summary: RunSummary) -> None:
    url = _url(config.monitoring.healthchecks_url_file)
    if url:
        _send(url.rstrip("/") + "/start", None, config.monitoring.timeout_seconds)


def _log_tail(summary: RunSummary, lines: int = 30) -> str:
    if not summary.log_file or not Path(summary.log_file).exists():
        return ""
    return "\n".join(Path(summary.log_file).read_text(encoding="utf-8", errors="replace").splitlines()[-lines:])


def finished(config: Config, summary: RunSummary) -> None:
    timeout = config.monitoring.timeout_seconds
    ping = _url(config.monitoring.healthchecks_url_file)
    if ping:
        text = f"{summary.command} {summary.run_id}: {summary.status}\n" + "\n".join(
            f"{f['kind']} {f['source']}: {f['message']}" for f in summary.failures)
        if summary.status != "success":
            text += "\n--- log tail ---\n" + _log_tail(summary)
        suffix = "" if summary.status == "success" else "/fail"
        _send(ping.rstrip("/") + suffix, mask(text).encode()[:100_000], timeout)
    hook = _url(config.monitoring.webhook_url_file)
    if hook and summary.status != "success":
        payload = {"text": f"restic-orch {summary.command} on {summary.host}: {summary.status.upper()}",
                   "summary": summary.to_json()}
        _send(hook, mask(json.dumps(payload, default=str)).encode(), timeout, "application/json")
