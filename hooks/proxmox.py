"""Proxmox VE containers: vzdump through the API (proxmoxer), archive moved into staging; restore with pct's API.

Layout: `<day>/proxmox/vzdump-lxc-<vmid>-<YYYY_MM_DD-HH_MM_SS>.tar[.zst]` plus the task log beside it.
The API client, the dump storage, the token's rights and the drill's clean-up are shared with the VM hook
(hooks/_pve_guest.py).
"""

from __future__ import annotations

import re
import shlex
import time  # noqa: F401  (the task polling's clock: tests reach it as hooks.proxmox.time)
from pathlib import Path
from typing import Any

from restic_orch.config import Config

from ._pve_guest import (
    AS_VMID,
    MODE_RE,
    PveError,
    PveGuestHook,
    backup_limit,
    backup_subdir,
    bridges,
    task_ok,
)
from ._vzdump_log import ONLINE_AGAIN, freeze_bounds, guest_freeze
from .base import Artifact, DumpContext, DumpOutcome, Notice, RestoreOptions, RestoreOutcome
from .registry import SourceKind

# the names other modules and tests import from here
__all__ = ["CHECKED_KEYS", "KIND", "ProxmoxHook", "PveError", "backup_limit", "backup_subdir", "bridges",
           "freeze_bounds", "logged_excludes", "task_ok"]

KIND = "proxmox"
# configuration keys that must come back identical; network keys change with unique=1 (new MAC)
CHECKED_KEYS = ("hostname", "arch", "ostype", "cores", "memory", "swap", "unprivileged", "features")
FALLBACK_RE = re.compile(r"trying '(\w+)' mode instead")
JOB_RE = re.compile(r"starting new backup job: (.*)")


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


class ProxmoxHook(PveGuestHook):
    kind = KIND
    spec = SourceKind(
        KIND, "ct", order=0, examples="ct:101, ct:all, ct:102:/etc/file", inner_paths=True,
        drill_scenario="container", redeploy_after=True, options=(AS_VMID,))
    detail_keys = ("name", "mode_used")
    guest_type, noun, short, archive_ext, config_command = "lxc", "container", "CT", ".tar", "pct config"

    @classmethod
    def describe_restore(cls, artifact: Artifact, options: RestoreOptions) -> tuple[str, bool]:
        vmid = artifact.meta.get("vmid", artifact.component.split(":", 1)[1])
        target = options.param("as_vmid") or vmid
        text = f"restore container {vmid} ({artifact.meta.get('name', '?')}) as CT {target}"
        return text, options.param("as_vmid") is None

    @classmethod
    def bootstrap_lines(cls, config: Config) -> list[str]:
        px = config.sources.proxmox
        if not px:
            return []
        missing = "" if Path(px.token_file).exists() else " (MISSING: --set sources.proxmox.token_file=...)"
        return [f"proxmox: https://{px.host}:{px.port} node {px.node or '(this host)'} token "
                f"{px.user}!{px.token_name} from {px.token_file}{missing}"]

    # --- dump -------------------------------------------------------------------------------------
    def _dump_one(self, ctx: DumpContext, vmid: int, out: Path, outcome: DumpOutcome, limit: int) -> None:
        src = self.source
        lxc = self.guest_api(vmid)
        config = self._call(f"CT {vmid} config", lxc.config.get)
        status = self._call(f"CT {vmid} status", lxc.status.current.get)
        excludes = src.exclude_paths_for(vmid)
        params: dict[str, Any] = {"remove": self.remove_param(vmid, limit)}
        if excludes:
            # a list goes out as repeated form fields; PVE hands vzdump the values NUL-separated
            params["exclude-path"] = excludes
        ctx.progress(f"CT {vmid}", None)  # vzdump logs no percentage for a container's tar
        upid, exitstatus, log, duration = self._vzdump(vmid, params)
        text = "\n".join(log)
        modes = MODE_RE.findall(text)
        mode_used = modes[-1] if modes else src.mode
        fallback = FALLBACK_RE.search(text)
        source_path = self._archive_of(vmid, text)
        name = source_path.name
        if fallback and src.require_snapshot:
            self._remove_volume(name, source_path)
            raise PveError(f"CT {vmid}: snapshot mode failed and vzdump fell back to {fallback.group(1)};"
                           " require_snapshot is set (put the container's volumes on zfspool, lvmthin, rbd or btrfs)")
        self._pruned_notice(vmid, text, limit, outcome)
        # vzdump logs how long a suspended guest was frozen; a snapshot's own freeze only shows between the
        # timestamps of the per-guest log, which _take removes with the archive
        guest_log = source_path.parent / self.log_name(name)
        bound = guest_freeze(text, guest_log.read_text(errors="replace") if guest_log.is_file() else "")
        online = bound if bound and bound.source == ONLINE_AGAIN else None
        if fallback or mode_used != src.mode:
            frozen = f"; guest frozen {online.logged} s" if online else ""
            outcome.notices.append(Notice(KIND, self.name, f"CT {vmid}: vzdump used {mode_used} mode instead of"
                                          f" {src.mode}{frozen}"))
        target = out / name
        self._take(source_path, target, name)
        log_target = out / self.log_name(name)
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
        # a freeze nobody measured is "not measured", never 0
        meta.update(freeze_seconds=freeze_bounds(online.logged)[0] if online else None,
                    freeze_seconds_min=bound.lower if bound else None,
                    freeze_seconds_max=bound.upper if bound else None,
                    freeze_measured_by=bound.source if bound else "not measured",
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

    def _create_params(self, vmid: int, volid: str, meta: dict[str, Any], exists: bool) -> dict[str, Any]:
        params: dict[str, Any] = {"vmid": vmid, "ostemplate": volid, "restore": 1,
                                  "storage": self.source.restore_storage}
        if exists:
            params["force"] = 1
        if vmid != int(meta["vmid"]):
            params["unique"] = 1  # beside the original: new MAC addresses, no duplicate on the bridge
        return params

    def _verify(self, artifact: Artifact, vmid: int, name: str, options: RestoreOptions,
                created: dict[str, Any]) -> RestoreOutcome:
        meta = artifact.meta
        restored = self._call(f"CT {vmid} config", self.guest_api(vmid).config.get)
        expected = meta.get("config") or {}
        diffs = {k: {"expected": expected.get(k), "found": restored.get(k)} for k in CHECKED_KEYS
                 if str(expected.get(k)) != str(restored.get(k))}
        checks: dict[str, Any] = {"config": "ok" if not diffs else diffs, "sha256": True}
        if meta.get("exclude_paths"):
            # left out by vzdump at backup time: the restored CT lacks them (e.g. a database's files)
            checks["not_in_backup"] = list(meta["exclude_paths"])
        return self._finish(artifact, vmid, name, options, restored, checks, created)


HOOK = ProxmoxHook
