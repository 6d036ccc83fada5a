"""Proxmox VE containers: vzdump through the API (proxmoxer), archive moved into staging; restore with pct's API.

Layout: `<day>/proxmox/vzdump-lxc-<vmid>-<YYYY_MM_DD-HH_MM_SS>.tar[.zst]` plus the task log beside it.
"""

from __future__ import annotations

import errno
import os
import re
import shlex
import shutil
import socket
import time
from pathlib import Path
from typing import Any

from proxmoxer import ProxmoxAPI
from proxmoxer.core import ResourceException

from restic_orch import runner
from restic_orch.config import Config, ProxmoxSource

from .base import Artifact, DumpContext, DumpOutcome, Failure, Fetch, Hook, Notice, RestoreOptions, RestoreOutcome

KIND = "proxmox"
# configuration keys that must come back identical; network keys change with unique=1 (new MAC)
CHECKED_KEYS = ("hostname", "arch", "ostype", "cores", "memory", "swap", "unprivileged", "features")
ARCHIVE_RE = re.compile(r"creating (?:vzdump )?archive '([^']+)'")
MODE_RE = re.compile(r"backup mode: (\w+)")
FALLBACK_RE = re.compile(r"trying '(\w+)' mode instead")
# vzdump logs the difference of two whole-second clock readings, and '<1' when they are equal
ONLINE_RE = re.compile(r"guest is online again after (<1|\d+) seconds")
JOB_RE = re.compile(r"starting new backup job: (.*)")
# task polling: start short (small containers finish in well under a second), never sleep long after the end
POLL_FIRST, POLL_GROWTH, POLL_MAX = 0.1, 1.5, 0.5


class PveError(Exception):
    pass


def _cause(log: list[str]) -> str:
    """The guest's own error lines: the last line, `TASK ERROR: job errors`, says nothing about why."""
    lines = [line.strip() for line in log
             if ("ERROR" in line and "job errors" not in line) or "tar:" in line or "zstd:" in line
             or "No space left" in line]
    return f" ({' | '.join(lines[-3:])})" if lines else ""


def freeze_bounds(logged: str) -> tuple[float, float]:
    """(freeze_seconds, freeze_seconds_max) from vzdump's 'online again after N seconds'.

    N is the difference of two whole-second clock readings, so the real freeze lay between N - 1 and
    N + 1 s: freeze_seconds is vzdump's own N ('<1', equal readings, is 0) and freeze_seconds_max the
    bound a budget must be checked against.
    """
    seconds = 0.0 if logged == "<1" else float(logged)
    return seconds, seconds + 1.0


def logged_excludes(log_text: str) -> list[str] | None:
    """The --exclude-path values of the command line vzdump logs first, or None without that line."""
    match = JOB_RE.search(log_text)
    if not match:
        return None
    try:
        args = shlex.split(match.group(1))
    except ValueError:
        return None
    return [value for flag, value in zip(args, args[1:], strict=False) if flag == "--exclude-path"]


class ProxmoxHook(Hook):
    kind = KIND

    def __init__(self, source: ProxmoxSource) -> None:
        self.source = source
        self.name = "proxmox"
        self._api: ProxmoxAPI | None = None

    @classmethod
    def from_config(cls, config: Config) -> list[Hook]:
        return cls.one_if_enabled(config.sources.proxmox)

    # --- API plumbing -----------------------------------------------------------------------------
    @property
    def api(self) -> ProxmoxAPI:
        if self._api is None:
            src = self.source
            token = runner.read_secret(src.token_file)
            verify: bool | str = str(src.ca_file) if src.ca_file else src.verify_ssl
            self._api = ProxmoxAPI(src.host, port=src.port, user=src.user, token_name=src.token_name,
                                   token_value=token, verify_ssl=verify, backend="https", timeout=60)
        return self._api

    @property
    def node(self) -> str:
        return self.source.node or socket.gethostname().split(".")[0]

    def _call(self, what: str, func: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except ResourceException as exc:
            if exc.status_code == 401:
                raise PveError(f"PVE API {what}: authentication failed ({exc.status_message}): check"
                               f" {self.source.token_file}, user {self.source.user} and token"
                               f" {self.source.token_name}") from None
            raise PveError(f"PVE API {what}: {exc}") from None
        except Exception as exc:  # requests' connection errors and TLS failures
            raise PveError(f"PVE API {what}: {type(exc).__name__}: {runner.mask(str(exc))}") from None

    def wait_task(self, upid: str, timeout: float) -> tuple[str, list[str]]:
        """Wait for a UPID task; return its exitstatus and whole log (proxmoxer never checks exitstatus)."""
        tasks = self.api.nodes(self.node).tasks(upid)
        deadline = time.monotonic() + timeout
        delay = POLL_FIRST
        while True:
            status = self._call("task status", tasks.status.get)
            if status.get("status") == "stopped":
                break
            if time.monotonic() > deadline:
                raise PveError(f"task {upid} still running after {timeout:.0f} s")
            time.sleep(delay)
            delay = min(delay * POLL_GROWTH, POLL_MAX)
        lines: list[str] = []
        start = 0
        while True:
            chunk = self._call("task log", tasks.log.get, start=start, limit=500) or []
            lines += [entry.get("t", "") for entry in chunk]
            if len(chunk) < 500:
                break
            start += len(chunk)
        return str(status.get("exitstatus", "")), lines

    def dump_dir(self) -> Path:
        if self.source.dump_dir:
            return Path(self.source.dump_dir)
        info = self._call(f"storage {self.source.storage}", self.api.storage(self.source.storage).get)
        if "path" not in info:
            raise PveError(f"storage {self.source.storage} ({info.get('type')}) has no local path: set"
                           " sources.proxmox.dump_dir or use a directory storage for backups")
        return Path(info["path"]) / "dump"

    def guests(self) -> list[dict[str, Any]]:
        """The containers to back up: on a cluster, `all` means those on this node, so each is done once."""
        listed = self._call("list containers", self.api.nodes(self.node).lxc.get)
        by_vmid = {int(g["vmid"]): g for g in listed}
        if self.source.vmids == "all":
            resources = self._call("cluster resources", self.api.cluster.resources.get, type="vm")
            vmids = sorted(int(r["vmid"]) for r in resources if r.get("type") == "lxc" and r.get("node") == self.node)
        else:
            vmids = list(self.source.vmids)
        return [by_vmid.get(v, {"vmid": v, "missing": True}) for v in vmids if v not in set(self.source.exclude)]

    # --- dump -------------------------------------------------------------------------------------
    def dump(self, ctx: DumpContext) -> DumpOutcome:
        outcome = DumpOutcome()
        try:
            version = self._call("version", self.api.version.get)
            outcome.tools["pve-manager"] = str(version.get("version", "?"))
            guests = self.guests()
            dump_dir = self.dump_dir()
        except (PveError, OSError) as exc:
            outcome.failures.append(Failure(KIND, self.name, "ct:*", str(exc)))
            return outcome
        out = ctx.out_dir(KIND)
        for guest in guests:
            vmid = int(guest["vmid"])
            if guest.get("missing"):
                outcome.failures.append(Failure(KIND, self.name, f"ct:{vmid}",
                                                f"container {vmid} does not exist on node {self.node}"))
                continue
            try:
                self._dump_one(ctx, vmid, dump_dir, out, outcome)
            except (PveError, OSError) as exc:
                ctx.log.error("container backup failed", extra={"vmid": vmid, "error": str(exc)})
                outcome.failures.append(Failure(KIND, self.name, f"ct:{vmid}", str(exc)))
        return outcome

    def _dump_one(self, ctx: DumpContext, vmid: int, dump_dir: Path, out: Path, outcome: DumpOutcome) -> None:
        src = self.source
        lxc = self.api.nodes(self.node).lxc(vmid)
        config = self._call(f"CT {vmid} config", lxc.config.get)
        status = self._call(f"CT {vmid} status", lxc.status.current.get)
        started = time.monotonic()
        params: dict[str, Any] = {"vmid": str(vmid), "mode": src.mode, "compress": src.compress,
                                  "storage": src.storage, "remove": 0, "lockwait": src.lockwait_minutes}
        excludes = src.exclude_paths_for(vmid)
        if excludes:
            # a list goes out as repeated form fields; PVE hands vzdump the values NUL-separated
            params["exclude-path"] = excludes
        upid = self._call(f"vzdump {vmid}", self.api.nodes(self.node).vzdump.post, **params)
        exitstatus, log = self.wait_task(upid, src.timeout_seconds)
        duration = time.monotonic() - started
        if exitstatus != "OK" and not exitstatus.startswith("WARNINGS"):
            raise PveError(f"vzdump of CT {vmid} failed: {exitstatus}" + _cause(log))
        text = "\n".join(log)
        modes = MODE_RE.findall(text)
        mode_used = modes[-1] if modes else src.mode
        fallback = FALLBACK_RE.search(text)
        online = ONLINE_RE.findall(text)
        archive_match = ARCHIVE_RE.findall(text)
        if not archive_match:
            raise PveError(f"vzdump of CT {vmid}: the task log names no archive")
        name = Path(archive_match[-1]).name.removesuffix(".dat")
        source_path = dump_dir / name
        if not source_path.is_file():
            raise PveError(f"vzdump of CT {vmid}: archive {source_path} not found (is dump_dir right?)")
        if fallback and src.require_snapshot:
            self._remove_volume(name, source_path)
            raise PveError(f"CT {vmid}: snapshot mode failed and vzdump fell back to {fallback.group(1)};"
                           " require_snapshot is set (put the container's volumes on zfspool, lvmthin, rbd or btrfs)")
        if fallback or mode_used != src.mode:
            outcome.notices.append(Notice(KIND, self.name, f"CT {vmid}: vzdump used {mode_used} mode instead of"
                                          f" {src.mode}" + (f"; guest frozen {online[-1]} s" if online else "")))
        target = out / name
        self._take(source_path, target, name)
        log_target = out / (name.split(".tar")[0] + ".log")
        log_target.write_text(text + "\n", encoding="utf-8")
        meta = {
            "vmid": vmid, "name": config.get("hostname", ""), "node": self.node,
            "status": status.get("status", ""), "archive": name, "compress": src.compress,
            "mode_requested": src.mode, "mode_used": mode_used, "fallback": bool(fallback),
            "upid": upid, "exitstatus": exitstatus,
            "duration_seconds": round(duration, 3),
            "config": {k: v for k, v in config.items() if k not in ("digest", "lock")},
            "log_excerpt": log[-15:],
        }
        freeze, freeze_max = freeze_bounds(online[-1]) if online else (None, None)
        meta.update(freeze_seconds=freeze, freeze_seconds_max=freeze_max,
                    exclude_paths=self._confirm_excludes(vmid, excludes, text, outcome))
        outcome.artifacts.append(ctx.artifact(target, component=f"ct:{vmid}", kind=KIND, source=self.name,
                                              meta=meta))
        ctx.log.info("container archived", extra={"vmid": vmid, "mode": mode_used, "bytes": target.stat().st_size})

    def _confirm_excludes(self, vmid: int, requested: list[str], log_text: str, outcome: DumpOutcome) -> list[str]:
        """The requested patterns vzdump's own command line shows: only those may be reported as not backed up."""
        if not requested:
            return []
        logged = logged_excludes(log_text) or []
        confirmed = [p for p in requested if p in logged]
        missing = [p for p in requested if p not in confirmed]
        if missing:
            outcome.notices.append(Notice(KIND, self.name, f"CT {vmid}: vzdump's command line does not show"
                                          f" exclude-path {', '.join(missing)}: these may still be in the archive"))
        return confirmed

    def _take(self, source_path: Path, target: Path, name: str) -> None:
        """Move the archive into staging (a rename on one filesystem); copy when PVE should keep its copy."""
        if not self.source.delete_after:
            shutil.copyfile(source_path, target)
            return
        try:
            os.rename(source_path, target)
        except OSError as exc:
            if exc.errno != errno.EXDEV:
                raise
            try:
                shutil.copyfile(source_path, target)
            except OSError:
                target.unlink(missing_ok=True)  # a half copy would fill staging for the other sources
                raise
            self._remove_volume(name, source_path)
        # vzdump's side files: <base>.log and <archive>.notes; the log is kept in staging by the caller
        for side in (source_path.parent / (name.split(".tar")[0] + ".log"), source_path.with_name(name + ".notes")):
            if side.exists():
                side.unlink()

    def _remove_volume(self, name: str, path: Path) -> None:
        volid = f"{self.source.storage}:backup/{name}"
        try:
            upid = self._call("delete volume", self.api.nodes(self.node).storage(self.source.storage)
                              .content(volid).delete)
            if isinstance(upid, str) and upid.startswith("UPID:"):
                self.wait_task(upid, 300)
        except PveError:
            if path.exists():
                path.unlink()

    # --- restore ----------------------------------------------------------------------------------
    def restore(self, artifact: Artifact, fetch: Fetch, options: RestoreOptions) -> RestoreOutcome:
        meta = artifact.meta
        vmid = int(options.as_vmid or meta["vmid"])
        component = artifact.component
        try:
            existing = {int(g["vmid"]): g for g in self._call("list containers", self.api.nodes(self.node).lxc.get)}
            if vmid in existing and not options.force:
                return RestoreOutcome(component, False, f"CT {vmid} exists on {self.node}: refusing to overwrite it"
                                      " without --force (or restore beside it with --as-vmid N)")
            if vmid in existing and existing[vmid].get("status") == "running":
                upid = self._call(f"stop CT {vmid}", self.api.nodes(self.node).lxc(vmid).status.stop.post)
                self.wait_task(upid, 300)
            dump_dir = self.dump_dir()
            name = Path(artifact.path).name
            local = dump_dir / name
            if local.exists():
                raise PveError(f"{local} exists already in the dump storage: remove it or restore another snapshot")
            fetch(local)
            try:
                params: dict[str, Any] = {"vmid": vmid, "ostemplate": f"{self.source.storage}:backup/{name}",
                                          "restore": 1, "storage": self.source.restore_storage}
                if vmid in existing:
                    params["force"] = 1
                if vmid != int(meta["vmid"]):
                    params["unique"] = 1  # beside the original: new MAC addresses, no duplicate on the bridge
                upid = self._call(f"restore CT {vmid}", self.api.nodes(self.node).lxc.post, **params)
                exitstatus, log = self.wait_task(upid, self.source.timeout_seconds)
            finally:
                if local.exists():
                    local.unlink()
            if exitstatus != "OK" and not exitstatus.startswith("WARNINGS"):
                return RestoreOutcome(component, False, f"restore task failed: {exitstatus}" + _cause(log))
            restored = self._call(f"CT {vmid} config", self.api.nodes(self.node).lxc(vmid).config.get)
            expected = meta.get("config") or {}
            diffs = {k: {"expected": expected.get(k), "found": restored.get(k)} for k in CHECKED_KEYS
                     if str(expected.get(k)) != str(restored.get(k))}
            checks: dict[str, Any] = {"config": "ok" if not diffs else diffs, "sha256": True}
            if meta.get("exclude_paths"):
                # left out by vzdump at backup time: the restored CT lacks them (e.g. a database's files)
                checks["not_in_backup"] = list(meta["exclude_paths"])
            started = False
            # a copy beside the original keeps its static IP: starting it would clash on the network
            beside = vmid != int(meta["vmid"])
            if beside and meta.get("status") == "running":
                checks["started"] = "not started: restored beside the original (same IP address)"
            if meta.get("status") == "running" and not options.drill and not beside:
                upid = self._call(f"start CT {vmid}", self.api.nodes(self.node).lxc(vmid).status.start.post)
                start_status, _ = self.wait_task(upid, 300)
                started = start_status == "OK"
                checks["started"] = started
            message = f"CT {vmid} restored on {self.node} from {name}" + (" and started" if started else "")
            ok = not diffs and (started or meta.get("status") != "running" or options.drill or beside)
            return RestoreOutcome(component, ok, message, checks, restored_to=f"CT {vmid}")
        except (PveError, OSError) as exc:
            return RestoreOutcome(component, False, str(exc))

    def discard(self, artifact: Artifact, outcome: RestoreOutcome, options: RestoreOptions) -> str:
        """Destroy the spare container a drill restored into (never the original VMID)."""
        vmid = options.as_vmid
        if not vmid or vmid == int(artifact.meta.get("vmid", -1)):
            return "nothing to clean up"
        existing = {int(g["vmid"]): g for g in self._call("list containers", self.api.nodes(self.node).lxc.get)}
        if vmid not in existing:
            return f"CT {vmid} was not created"
        lxc = self.api.nodes(self.node).lxc(vmid)
        if existing[vmid].get("status") == "running":
            self.wait_task(self._call(f"stop CT {vmid}", lxc.status.stop.post), 300)
        self.wait_task(self._call(f"destroy CT {vmid}", lxc.delete), 300)
        return f"destroyed CT {vmid}"


HOOK = ProxmoxHook
