"""Proxmox VE virtual machines (QEMU): vzdump through the API, archive moved into staging; restore with
POST /nodes/{node}/qemu (archive=<volid>).

Layout: `<day>/qemu/vzdump-qemu-<vmid>-<YYYY_MM_DD-HH_MM_SS>.vma[.zst]` plus the task log beside it. The
source is the same `sources.proxmox` as the containers' (`guests` chooses lxc, qemu or both); the API client,
the dump storage, the token's rights and the drill's clean-up are shared (hooks/_pve_guest.py).

Snapshot mode copies a running VM's disks live (QEMU's backup job): vzdump freezes nothing itself, only the
guest agent's fs-freeze makes the file systems consistent, so the artifact records whether it happened.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ._pve_guest import AS_VMID, MODE_RE, PveGuestHook
from ._vzdump_log import FsFreeze, fs_freeze, fs_freeze_window, last_progress
from .base import Artifact, DumpContext, DumpOutcome, Notice, RestoreOptions, RestoreOutcome
from .registry import SourceKind

KIND = "qemu"
PREFIX = "vm"
# configuration keys that must come back identical; with unique=1 PVE gives the copy new net MACs, a new
# vmgenid and a new smbios1 uuid (qemu-server PVE/QemuServer.pm restore_update_config_line)
CHECKED_KEYS = ("name", "memory", "balloon", "cores", "sockets", "numa", "cpu", "ostype", "bios", "machine",
                "scsihw", "boot", "agent")
DISK_RE = re.compile(r"(ide|sata|scsi|virtio|efidisk|tpmstate)\d+")
NET_RE = re.compile(r"net\d+")
NET_MODELS = ("e1000", "e1000e", "i82551", "ne2k_isa", "ne2k_pci", "pcnet", "rtl8139", "virtio", "vmxnet3")


def _options(value: Any) -> tuple[str, dict[str, str]]:
    """A drive or net property string: its leading value (volid, or model=MAC) and its key=value options."""
    parts = [p for p in str(value).split(",") if p]
    head = parts[0] if parts and "=" not in parts[0] else ""
    return head, dict(p.split("=", 1) for p in parts if "=" in p)


def agent_enabled(config: dict[str, Any]) -> bool:
    """Whether the VM config turns the guest agent on (`agent: 1` or `agent: enabled=1,...`)."""
    head, opts = _options(config.get("agent", "0"))
    return str(opts.get("enabled", head or "0")).strip() in ("1", "yes", "on", "true")


def freeze_state(logged: FsFreeze, config: dict[str, Any], status: str, mode: str) -> str:
    """What happened to a VM's file systems: vzdump's logged state, or why it logged none."""
    if logged.state != "not-logged":
        return logged.state
    if mode == "stop":
        return "stop-mode"      # shut down for the copy: consistent without a freeze
    if status != "running":
        return "not-running"
    if not agent_enabled(config):
        return "no-agent"       # copied live, not frozen: crash-consistent only
    return "not-logged"


def _net(value: Any) -> dict[str, str]:
    """A netN value without its MAC: model, bridge, tag and the other options."""
    _, opts = _options(value)
    out = {k: v for k, v in opts.items() if k not in NET_MODELS and k != "macaddr"}
    out["model"] = next((k for k in opts if k in NET_MODELS), "")
    return out


def _mac(value: Any) -> str:
    """A netN value's MAC: `<model>=<MAC>` (or the older macaddr=)."""
    _, opts = _options(value)
    return next((v for k, v in opts.items() if k in NET_MODELS), opts.get("macaddr", "")).upper()


def not_in_backup(config: dict[str, Any]) -> list[str]:
    """The disks marked backup=0: vzdump leaves them out and qmrestore writes their line back commented out
    (qemu-server PVE/QemuServer.pm restore_update_config_line), so a restore cannot bring them back."""
    return sorted(k for k, v in config.items() if DISK_RE.fullmatch(k)
                  and str(_options(v)[1].get("backup", "1")).lower() in ("0", "no", "off", "false"))


def config_diffs(expected: dict[str, Any], restored: dict[str, Any], beside: bool) -> dict[str, dict[str, Any]]:
    """Key by key, what the restored VM config lacks or changed; {} when it is the backed-up one.

    Disks come back on the restore storage under new volume names: their slots and sizes must match.
    Networks keep model, bridge and VLAN; their MACs stay only when restored in place.
    """
    diffs: dict[str, dict[str, Any]] = {}

    def differ(key: str, want: Any, found: Any) -> None:
        if want != found:
            diffs[key] = {"expected": want, "found": found}

    for key in CHECKED_KEYS:
        if key in expected or key in restored:
            differ(key, None if key not in expected else str(expected[key]),
                   None if key not in restored else str(restored[key]))
    skipped = set(not_in_backup(expected))
    for key in sorted(k for k in {*expected, *restored} if DISK_RE.fullmatch(k) and k not in skipped):
        want, found = _options(expected.get(key, ""))[1], _options(restored.get(key, ""))[1]
        if want.get("media") == "cdrom" or found.get("media") == "cdrom":
            continue  # an ISO is not backed up; the drive line is
        differ(key, want.get("size") if key in expected else None, found.get("size") if key in restored else None)
    for key in sorted(k for k in {*expected, *restored} if NET_RE.fullmatch(k)):
        want = _net(expected[key]) if key in expected else None
        found = _net(restored[key]) if key in restored else None
        differ(key, want, found)
        if not beside and key in expected and key in restored:
            differ(f"{key} MAC", _mac(expected[key]), _mac(restored[key]))
    return diffs


class QemuHook(PveGuestHook):
    kind = KIND
    spec = SourceKind(KIND, PREFIX, order=1, examples="vm:200, vm:all", drill_scenario="vm",
                      redeploy_after=True, options=(AS_VMID,))
    detail_keys = ("name", "mode_used", "fs_freeze")
    guest_type, noun, short, archive_ext, config_command = "qemu", "VM", "VM", ".vma", "qm config"
    # a drill's VM also leaves backup and replication jobs and HA (qemu-server destroy_vm's purge)
    destroy_params = {"purge": 1}

    @classmethod
    def describe_restore(cls, artifact: Artifact, options: RestoreOptions) -> tuple[str, bool]:
        vmid = artifact.meta.get("vmid", artifact.component.split(":", 1)[1])
        target = options.param("as_vmid") or vmid
        text = f"restore VM {vmid} ({artifact.meta.get('name', '?')}) as VM {target}"
        return text, options.param("as_vmid") is None

    # --- dump -------------------------------------------------------------------------------------
    def _dump_one(self, ctx: DumpContext, vmid: int, out: Path, outcome: DumpOutcome, limit: int) -> None:
        src = self.source
        qemu = self.guest_api(vmid)
        config = self._call(f"VM {vmid} config", qemu.config.get)
        status = str(self._call(f"VM {vmid} status", qemu.status.current.get).get("status", ""))
        ctx.progress(f"VM {vmid}", 0.0)
        # the task log is read while vzdump runs only for a live display (cron: no extra API reads)
        watch = _relay(ctx.progress, f"VM {vmid}") if ctx.shows_progress else None
        upid, exitstatus, log, duration = self._vzdump(vmid, {"remove": self.remove_param(vmid, limit)}, watch)
        text = "\n".join(log)
        modes = MODE_RE.findall(text)
        mode_used = modes[-1] if modes else src.mode
        source_path = self._archive_of(vmid, text)
        name = source_path.name
        self._pruned_notice(vmid, text, limit, outcome)
        # the per-guest log has the timestamps of fs-freeze and fs-thaw; _take removes it with the archive
        guest_log = source_path.parent / self.log_name(name)
        guest_text = guest_log.read_text(errors="replace") if guest_log.is_file() else ""
        logged = fs_freeze(text)
        state = freeze_state(logged, config, status, mode_used)
        window = fs_freeze_window(guest_text) if logged.frozen else None
        if state in ("failed", "agent-not-running"):
            outcome.notices.append(Notice(KIND, self.name, f"VM {vmid}: the guest agent did not freeze its file"
                                          f" systems ({state}{': ' + logged.error if logged.error else ''}): the"
                                          " backup is crash-consistent only"))
        if vmid in src.exclude_paths:
            outcome.notices.append(Notice(KIND, self.name, f"VM {vmid}: exclude_paths applies to containers only;"
                                          " a VM's disks are backed up whole"))
        if mode_used != src.mode:
            outcome.notices.append(Notice(KIND, self.name, f"VM {vmid}: vzdump used {mode_used} mode instead of"
                                          f" {src.mode}"))
        target = out / name
        self._take(source_path, target, name)
        (out / self.log_name(name)).write_text(text + "\n", encoding="utf-8")
        meta = {
            "vmid": vmid, "name": config.get("name", ""), "node": self.node, "status": status,
            "archive": name, "compress": src.compress, "mode_requested": src.mode, "mode_used": mode_used,
            "upid": upid, "exitstatus": exitstatus, "duration_seconds": round(duration, 3),
            "config": {k: v for k, v in config.items() if k not in ("digest", "lock")},
            "log_excerpt": log[-15:],
            # whether the guest agent froze the file systems; how long only when both lines are timestamped
            "fs_frozen": logged.frozen, "fs_freeze": state, "fs_freeze_error": logged.error or None,
            "fs_freeze_seconds_min": window.lower if window else None,
            "fs_freeze_seconds_max": window.upper if window else None,
        }
        outcome.artifacts.append(ctx.artifact(target, component=f"{PREFIX}:{vmid}", kind=KIND, source=self.name,
                                              meta=meta))
        ctx.progress(f"VM {vmid}", 1.0)
        ctx.log.info("VM archived", extra={"vmid": vmid, "mode": mode_used, "bytes": target.stat().st_size})

    # --- restore ----------------------------------------------------------------------------------
    def _create_params(self, vmid: int, volid: str, meta: dict[str, Any], exists: bool) -> dict[str, Any]:
        params: dict[str, Any] = {"vmid": vmid, "archive": volid, "storage": self.source.restore_storage}
        if exists:
            params["force"] = 1
        if vmid != int(meta["vmid"]):
            params["unique"] = 1  # beside the original: new MACs, vmgenid and smbios uuid
        return params

    def _verify(self, artifact: Artifact, vmid: int, name: str, options: RestoreOptions,
                created: dict[str, Any]) -> RestoreOutcome:
        meta = artifact.meta
        restored = self._call(f"VM {vmid} config", self.guest_api(vmid).config.get)
        diffs = config_diffs(meta.get("config") or {}, restored, beside=vmid != int(meta["vmid"]))
        checks: dict[str, Any] = {"config": "ok" if not diffs else diffs, "sha256": True,
                                  "fs_freeze": meta.get("fs_freeze", "unknown")}
        if skipped := not_in_backup(meta.get("config") or {}):
            checks["not_in_backup"] = skipped  # backup=0 on the VM: never in the archive, by the owner's choice
        return self._finish(artifact, vmid, name, options, restored, checks, created)


def _relay(progress: Callable[[str, float | None], None], label: str) -> Callable[[list[str]], None]:
    """A task-log watcher that hands each new percentage vzdump logged to progress(label, fraction)."""
    last: list[float] = []

    def watch(lines: list[str]) -> None:
        found = last_progress(lines)
        if found is not None and (not last or found.fraction != last[-1]):
            last.append(found.fraction)
            progress(label, found.fraction)

    return watch


HOOK = QemuHook
