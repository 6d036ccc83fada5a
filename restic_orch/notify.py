"""Healthchecks-style pings (start, success, fail with the log tail), a webhook on failure, and Apprise
notifications routed by event (monitoring.notify: failure, partial, success, rpo_breach, drill, check).

A notification that fails is logged and never changes the run's result; Apprise's all end within
monitoring.timeout_seconds (notify_apprise).
"""

from __future__ import annotations

import json
import logging
import urllib.error
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .config import Config
from .masking import mask, read_secret
from .notify_apprise import Delivery, Target, read_targets, send
from .report import RunSummary, backup_in_progress

if TYPE_CHECKING:
    from .notify_text import Message

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
    if config.monitoring.notify:
        from .notify_text import for_summary  # rich, through render: only when there is something to send

        try:
            announce(config, for_summary(config, summary))
        except Exception as exc:  # a notification never hides the run's own result
            log.warning("could not send the notifications", extra={"error": mask(f"{type(exc).__name__}: {exc}")})


def targets_for(config: Config, events: set[str]) -> list[Target]:
    """The Apprise URLs of every route that takes one of these events, each once; an unreadable file is logged."""
    targets: list[Target] = []
    seen: set[str] = set()
    for route in config.monitoring.notify:
        if not events & set(route.events):
            continue
        try:
            found = read_targets(route.urls_file)
        except (OSError, UnicodeDecodeError) as exc:
            log.warning("cannot read notification URL file", extra={"file": str(route.urls_file), "error": str(exc)})
            continue
        for target in found:
            if target.url not in seen:
                seen.add(target.url)
                targets.append(target)
    return targets


def announce(config: Config, message: Message) -> Delivery:
    """Send the message to every route of its events, within monitoring.timeout_seconds in all."""
    return send(targets_for(config, message.events), message.title, message.body, message.level,
                config.monitoring.timeout_seconds)


RPO_STATE = "notify-rpo.json"
# a backup running now (the night's, started at 03:00) is about to end the breach: not told while it runs,
# unless it has run that long (hung)
RPO_RUN_GRACE_SECONDS = 3 * 3600


def rpo_breach(config: Config, data: dict[str, Any]) -> Delivery | None:
    """Tell the rpo_breach routes about repositories whose newest good backup is older than the RPO target.

    Once per breach: state_dir/notify-rpo.json remembers, per repository, the newest complete snapshot it was
    sent for; a repository back within the RPO leaves it (so the next breach is sent again), and a breach no
    target accepted is tried again on the next `status`. None when there was nothing to send. Raises nothing.
    """
    if not any("rpo_breach" in route.events for route in config.monitoring.notify):
        return None
    if backup_in_progress(config.state_dir, RPO_RUN_GRACE_SECONDS):
        log.info("a backup is running: the RPO breach is not told before it ends")
        return None
    try:
        return _rpo_breach(config, data)
    except Exception as exc:  # status reports the breach itself; its exit code never depends on a notification
        log.warning("could not send the RPO breach notification", extra={"error": mask(f"{type(exc).__name__}: {exc}")})
        return None


def _rpo_breach(config: Config, data: dict[str, Any]) -> Delivery | None:
    # unreachable repositories are not a breach here: status reports them, and the backup's failure says why
    breached = {name: repo for name, repo in data["repositories"].items() if "error" not in repo and not repo["ok"]}
    path = config.state_dir / RPO_STATE
    told = _load_told(path)
    now = {name: repo["newest_complete"] for name, repo in breached.items()}
    still = {name: snap for name, snap in told.items() if now.get(name, "-") == snap}
    delivery = None
    if any(name not in still for name in now):
        from .notify_text import for_rpo_breach

        delivery = announce(config, for_rpo_breach(config, breached, data))
        if delivery.sent:
            still = now
    if still != told:
        _save_told(path, still)
    return delivery


def _load_told(path: Path) -> dict[str, str | None]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _save_told(path: Path, told: dict[str, str | None]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o750)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(told, indent=2) + "\n", encoding="utf-8")
    tmp.replace(path)
