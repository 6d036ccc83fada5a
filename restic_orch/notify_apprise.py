"""Apprise notifications (ntfy, Gotify, e-mail, Matrix, Telegram...) under one hard deadline per event.

Each URL is sent to from its own daemon thread; the caller waits for all of them at most `deadline` seconds and
then abandons the rest, so a receiver that is down or hangs never delays a run by more, nor changes its result.
The URLs embed tokens and passwords: each line, and every value Apprise itself calls private, is registered as
a secret, and Apprise's own log messages only reach ours masked.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .masking import mask, register_secret

log = logging.getLogger("restic_orch.notify")

LEVELS = ("info", "success", "warning", "failure")  # Apprise's NotifyType values


@dataclass
class Target:
    """One Apprise URL and where it was written (FILE:LINE, the only way to name it without its secret)."""

    url: str
    where: str


@dataclass
class Delivery:
    """What became of one event's notifications, each target named by its FILE:LINE and Apprise's private form."""

    sent: list[str] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)
    timed_out: list[str] = field(default_factory=list)


def read_targets(path: Path) -> list[Target]:
    """The URLs of a file, one a line ('#' starts a comment line); each registered as a secret. Raises OSError."""
    targets = []
    for number, raw in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
        line = raw.strip()
        if line and not line.startswith("#"):
            register_secret(line)
            targets.append(Target(line, f"{path}:{number}"))
    return targets


class _Capture(logging.Handler):
    """Apprise's log records, kept per thread so each failed send can say why; never passed on unmasked."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.by_thread: dict[int, list[str]] = {}
        self._guard = threading.Lock()

    def emit(self, record: logging.LogRecord) -> None:
        with self._guard:
            self.by_thread.setdefault(record.thread or 0, []).append(record.getMessage())

    def take(self) -> str:
        with self._guard:
            lines = self.by_thread.pop(threading.get_ident(), [])
        return mask("; ".join(lines[-3:]))


_capture = _Capture()
_apprise: Any = None
_import_lock = threading.Lock()


def _load() -> Any:
    """apprise, imported on the first notification (it takes a fraction of a second and loads ~190 plugins)."""
    global _apprise
    with _import_lock:
        if _apprise is None:
            import apprise

            # apprise's records would otherwise reach stderr (Python's last-resort handler) unmasked
            logger = logging.getLogger("apprise")
            logger.propagate = False
            logger.addHandler(_capture)
            _apprise = apprise
    return _apprise


def _register_private(plugin: Any) -> None:
    """Mask every value the plugin's own schema marks private (tokens, passwords, keys), not just the whole URL."""
    values = [getattr(plugin, "password", None)]
    for key, meta in {**plugin.template_tokens, **plugin.template_args}.items():
        if isinstance(meta, dict) and meta.get("private"):
            value = getattr(plugin, meta.get("map_to", key), None)
            values += value if isinstance(value, list | tuple) else [value]
    for value in values:
        if isinstance(value, str):
            register_secret(value)


def _label(target: Target, plugin: Any) -> str:
    # FILE:LINE and the service only: Apprise's privacy form still shows what some services treat as the secret
    # (an ntfy topic is the only thing between the internet and your phone)
    service = plugin.url(privacy=True).split("://", 1)[0] if plugin is not None else "(not an Apprise URL)"
    return mask(f"{target.where} {service}")


def _instantiate(apprise: Any, target: Target) -> tuple[Any, str]:
    """(the plugin or None, why not), built in the caller's thread: plugin lookup is not meant to run concurrently."""
    try:
        plugin = apprise.Apprise.instantiate(target.url, asset=apprise.AppriseAsset(async_mode=False))
    except Exception as exc:  # a plugin's constructor refusing its URL: the same as an unknown one
        plugin, why = None, mask(f"{type(exc).__name__}: {exc}")
    else:
        why = "" if plugin is not None else "not a URL Apprise knows"
    reason = _capture.take()
    if plugin is not None:
        _register_private(plugin)
    return plugin, why + (f" ({reason})" if reason and why else "")


@dataclass
class _Job:
    label: str
    plugin: Any
    error: str = ""
    done: threading.Event = field(default_factory=threading.Event)


def _deliver(job: _Job, apprise: Any, title: str, body: str, level: str) -> None:
    try:
        ok = job.plugin.notify(body=body, title=title, notify_type=level, body_format=apprise.NotifyFormat.TEXT)
        job.error = "" if ok else "the service did not accept it"
    except Exception as exc:  # whatever a plugin raises is this target's failure, never the run's
        job.error = mask(f"{type(exc).__name__}: {exc}")
    finally:
        reason = _capture.take()
        if job.error and reason:
            job.error += f" ({reason})"
        job.done.set()


def send(targets: list[Target], title: str, body: str, level: str, deadline: float) -> Delivery:
    """Send title and body to every target at once; return within `deadline` seconds whatever they do.

    A target still sending then is abandoned (its daemon thread ends with its own timeout or with the process).
    Failures and timeouts are logged as warnings, masked. Raises nothing.
    """
    start = time.monotonic()
    delivery = Delivery()
    if not targets:
        return delivery
    title, body = mask(title), mask(body)
    try:
        apprise = _load()
    except ImportError as exc:
        log.warning("cannot send notifications: apprise is not installed", extra={"error": str(exc)})
        return delivery
    jobs = []
    for target in targets:
        plugin, why = _instantiate(apprise, target)
        if plugin is None:
            delivery.failed.append((_label(target, None), why))
            continue
        job = _Job(_label(target, plugin), plugin)
        threading.Thread(target=_deliver, args=(job, apprise, title, body, level), daemon=True,
                         name=f"notify {target.where}").start()
        jobs.append(job)
    for job in jobs:
        if not job.done.wait(max(0.0, start + deadline - time.monotonic())):
            delivery.timed_out.append(job.label)
        elif job.error:
            delivery.failed.append((job.label, job.error))
        else:
            delivery.sent.append(job.label)
    _report(delivery, title, deadline)
    return delivery


def _report(delivery: Delivery, title: str, deadline: float) -> None:
    for label, error in delivery.failed:
        log.warning("notification failed (the run's result is unchanged)",
                    extra={"target": label, "error": error, "title": title})
    for label in delivery.timed_out:
        log.warning(f"notification abandoned after {deadline:g} s (the run's result is unchanged)",
                    extra={"target": label, "title": title})
    if delivery.sent:
        log.info("notification sent", extra={"targets": delivery.sent, "title": title})
