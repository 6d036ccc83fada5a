"""What the container hook and the VM hook share: one PVE API client for one guest type.

A subclass sets the guest type (the API's `lxc` or `qemu`), how messages name one guest, the archive's
extension, and implements the per-guest dump (`_dump_one`), the restore's create call and its check.
Everything else is the same for both in PVE 8: the vzdump API and its task log, the dump storage, the
prune limit, the token's rights, placing an archive back for a restore, and destroying a drill's guest.
"""

from __future__ import annotations

import errno
import logging
import os
import re
import shutil
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

from proxmoxer import ProxmoxAPI
from proxmoxer.core import ResourceException

from restic_orch import masking
from restic_orch.config import Config, ProxmoxSource

from . import _pve_access
from ._files import replacing
from ._pve_access import Need
from .base import (
    Artifact,
    DumpContext,
    DumpOutcome,
    Failure,
    Fetch,
    Hook,
    MissingRight,
    Notice,
    RestoreOptions,
    RestoreOutcome,
    Sandbox,
    sha256_file,
)
from .registry import KindOption

log = logging.getLogger("restic_orch.hooks.pve")

ARCHIVE_RE = re.compile(r"creating (?:vzdump )?archive '([^']+)'")
MODE_RE = re.compile(r"backup mode: (\w+)")
PRUNED_RE = re.compile(r"removing backup '([^']+)'")
# task polling: start short (small containers finish in well under a second), never sleep long after the end
POLL_FIRST, POLL_GROWTH, POLL_MAX = 0.1, 1.5, 0.5
# one option for both guest types: a restore beside the original, under another VMID
AS_VMID = KindOption("as_vmid", "--as-vmid", int, "Restore a container or VM beside the original, as this VMID.")
GUEST_TYPES = ("lxc", "qemu")
# A copy restored beside the original (a drill, --as-vmid) is left stopped: the static IP inside it is the
# original's. It must not start at the host's next boot either, so the restore POST overrides the backed-up
# onboot. PVE 8 applies such keys over the archive's config: qemu-server PVE/API2/Qemu.pm create_vm passes
# them as override_conf to PVE/QemuServer.pm restore_merge_config; pve-container PVE/API2/LXC.pm create_vm
# puts them into the new config (update_pct_config) and PVE/LXC/Create.pm sanitize_and_merge_config only
# fills keys not given. Both check them first as edits of the option, on /vms/<new vmid>: onboot is a general
# option, VM.Config.Options (Qemu.pm $check_vm_modify_config_perm / $generaloptions, PVE/LXC.pm
# check_ct_modify_config_perm's default branch); _pve_access.restore_needs names it.
BESIDE_OVERRIDES: dict[str, Any] = {"onboot": 0}
BESIDE_ONBOOT = "0 (restored beside the original: it does not start at the host's next boot)"


class PveError(Exception):
    pass


def task_ok(exitstatus: str) -> bool:
    """PVE::Tools upid_status_is_error: 'OK' and 'WARNINGS: n' are success, anything else failed."""
    return exitstatus == "OK" or exitstatus.startswith("WARNINGS")


def bridges(config: dict[str, Any]) -> list[str]:
    """The bridge (and VLAN tag) of every netN of a guest config: the SDN paths a restore is checked on."""
    found = []
    for key, value in config.items():
        if re.fullmatch(r"net\d+", key):
            opts = dict(part.split("=", 1) for part in str(value).split(",") if "=" in part)
            if opts.get("bridge"):
                found.append(opts["bridge"] + (f"/{opts['tag']}" if opts.get("tag") else ""))
    return found


def backup_limit(storage: dict[str, Any]) -> int:
    """The number of archives per guest the storage's prune-backups keeps (0: keep-all or none set)."""
    text = storage.get("prune-backups") or ""
    keep = text if isinstance(text, dict) else dict(i.partition("=")[::2] for i in str(text).split(",") if "=" in i)
    if not keep or int(keep.get("keep-all", 0) or 0):
        return 0
    return sum(int(v) for k, v in keep.items() if k.startswith("keep-"))


def backup_subdir(storage: dict[str, Any]) -> str:
    """pve-storage Plugin.pm get_subdir: 'dump', unless content-dirs maps 'backup' elsewhere."""
    dirs = storage.get("content-dirs") or ""
    items = dirs.items() if isinstance(dirs, dict) else (i.partition("=")[::2] for i in str(dirs).split(","))
    for vtype, value in items:
        if vtype.strip() == "backup" and str(value).strip():
            return str(value).strip().lstrip("/")
    return "dump"


def onboot_check(restored: dict[str, Any]) -> tuple[str, bool]:
    """What a copy beside the original has for onboot, and whether that is the 0 the restore asked for."""
    found = str(restored.get("onboot", "0"))  # PVE's default is 0: an absent key never starts at boot
    if found in ("0", "False", "false"):
        return BESIDE_ONBOOT, True
    return f"{found}: the copy beside the original would start at the host's next boot (onboot=0 not applied)", False


def cause(log: list[str]) -> str:
    """The guest's own error lines: the last line, `TASK ERROR: job errors`, says nothing about why."""
    lines = [line.strip() for line in log
             if ("ERROR" in line and "job errors" not in line) or "tar:" in line or "zstd:" in line
             or "No space left" in line]
    return f" ({' | '.join(lines[-3:])})" if lines else ""


class PveGuestHook(Hook):
    """The PVE API plumbing of one guest type; subclasses dump and restore their guests."""

    guest_type: ClassVar[str] = ""   # the API's path segment and vzdump's vmtype: lxc or qemu
    noun: ClassVar[str] = ""         # "container", "VM"
    short: ClassVar[str] = ""        # "CT", "VM": how a guest is named with its VMID
    archive_ext: ClassVar[str] = ""  # ".tar", ".vma": what the archive's base name ends before
    config_command: ClassVar[str] = ""  # the host's command that shows a guest's config: pct config, qm config
    destroy_params: ClassVar[dict[str, Any]] = {}  # DELETE /nodes/{node}/<type>/{vmid} parameters

    def __init__(self, source: ProxmoxSource) -> None:
        self.source = source
        self.name = "proxmox"
        self._api: ProxmoxAPI | None = None
        self.drill_vmids: tuple[int, int] | None = None

    @classmethod
    def from_config(cls, config: Config) -> list[Hook]:
        source = config.sources.proxmox
        if source is not None and source.guests not in ("all", cls.guest_type):
            return []
        hooks = cls.one_if_enabled(source)
        for hook in hooks:
            hook.drill_vmids = tuple(config.drill.vmid_range)  # type: ignore[attr-defined]
        return hooks

    @classmethod
    def sandbox_options(cls, artifact: Artifact, options: RestoreOptions, sandbox: Sandbox) -> None:
        options.params["as_vmid"] = sandbox.spare_id()

    # --- API plumbing -----------------------------------------------------------------------------
    @property
    def api(self) -> ProxmoxAPI:
        if self._api is None:
            src = self.source
            token = masking.read_secret(src.token_file)
            verify: bool | str = str(src.ca_file) if src.ca_file else src.verify_ssl
            self._api = ProxmoxAPI(src.host, port=src.port, user=src.user, token_name=src.token_name,
                                   token_value=token, verify_ssl=verify, backend="https", timeout=60)
        return self._api

    @property
    def node(self) -> str:
        return self.source.node or socket.gethostname().split(".")[0]

    @property
    def prefix(self) -> str:
        return self.spec.prefix

    def guest_api(self, vmid: int | None = None) -> Any:
        """/nodes/{node}/lxc or /qemu, or one guest below it."""
        typed = getattr(self.api.nodes(self.node), self.guest_type)
        return typed if vmid is None else typed(vmid)

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
            raise PveError(f"PVE API {what}: {type(exc).__name__}: {masking.mask(str(exc))}") from None

    def wait_task(self, upid: str, timeout: float,
                  on_poll: Callable[[list[str]], None] | None = None) -> tuple[str, list[str]]:
        """Wait for a UPID task; return its exitstatus and whole log (proxmoxer never checks exitstatus).

        on_poll, when given, is handed the log read so far at every poll of a running task.
        """
        tasks = self.api.nodes(self.node).tasks(upid)
        deadline = time.monotonic() + timeout
        delay = POLL_FIRST
        seen: list[str] = []
        while True:
            status = self._call("task status", tasks.status.get)
            if status.get("status") == "stopped":
                break
            if on_poll is not None:
                try:
                    seen += self._task_log(tasks, len(seen))
                    on_poll(seen)
                except Exception as exc:  # a progress display is never worth failing a backup (or orphaning vzdump)
                    log.debug("task log not followed any more", extra={"upid": upid, "error": masking.mask(str(exc))})
                    on_poll = None
            if time.monotonic() > deadline:
                raise PveError(f"task {upid} still running after {timeout:.0f} s")
            time.sleep(delay)
            delay = min(delay * POLL_GROWTH, POLL_MAX)
        return str(status.get("exitstatus", "")), self._task_log(tasks, 0)

    def _task_log(self, tasks: Any, start: int) -> list[str]:
        lines: list[str] = []
        while True:
            chunk = self._call("task log", tasks.log.get, start=start, limit=500) or []
            lines += [entry.get("t", "") for entry in chunk]
            if len(chunk) < 500:
                return lines
            start += len(chunk)

    def storage_entry(self) -> dict[str, Any]:
        """The dump storage's entry of GET /storage (the index needs only Datastore.AllocateSpace; GET
        /storage/{id} would need Datastore.Allocate)."""
        sid = self.source.storage
        listed = self._call("storage list", self.api.storage.get) or []
        info = next((s for s in listed if s.get("storage") == sid), None)
        if info is None:
            raise PveError(f"storage {sid} is not visible to {self.tokenid}: it does not exist, or the token lacks"
                           f" Datastore.AllocateSpace on /storage/{sid}")
        return info

    def dump_dir(self) -> Path:
        """Where PVE reads and writes the dump storage's archives (content-dirs honoured)."""
        if self.source.dump_dir:
            return Path(self.source.dump_dir)
        info = self.storage_entry()
        if not info.get("path"):
            raise PveError(f"storage {self.source.storage} ({info.get('type')}) has no local path: vzdump archives"
                           " must go to a directory storage (set sources.proxmox.storage to one, or"
                           " sources.proxmox.dump_dir)")
        return Path(info["path"]) / backup_subdir(info)

    def backup_limit(self) -> int:
        """The archives per guest vzdump keeps on the dump storage: its effective prune-backups, the node's
        vzdump.conf included (GET vzdump/defaults needs only Datastore.AllocateSpace on the storage)."""
        defaults = self._call("vzdump defaults", self.api.nodes(self.node).vzdump.defaults.get,
                              storage=self.source.storage) or {}
        return backup_limit(defaults)

    def remove_param(self, vmid: int, limit: int) -> int:
        """vzdump's `remove` for this guest (pve-manager PVE/VZDump.pm exec_backup_task).

        remove=0 keeps every other archive but turns on vzdump's max-backups check: with N archives of the
        guest already there under a storage limit of N, the guest fails. Then remove=1: the backup is made
        and vzdump prunes by the storage's own prune-backups, as the user's own jobs do.
        """
        if not limit:
            return 0
        volumes = self._call(f"backups of {self.short} {vmid}", self.api.nodes(self.node)
                             .storage(self.source.storage).content.get, content="backup", vmid=vmid) or []
        # PVE/VZDump.pm counts the guest's own unprotected archives of its type
        count = sum(1 for v in volumes if not v.get("protected") and v.get("subtype") in (None, self.guest_type))
        return 1 if count >= limit else 0

    @property
    def tokenid(self) -> str:
        return f"{self.source.user}!{self.source.token_name}"

    def missing(self, needs: list[Need]) -> list[MissingRight]:
        """The needs the token lacks, from GET /access/permissions (a token may always read its own)."""
        held: dict[str, dict[str, Any]] = {}
        out = []
        for need in _pve_access.unique(needs):
            if need.path not in held:
                res = self._call(f"permissions on {need.path}", self.api.access.permissions.get, path=need.path)
                held[need.path] = (res or {}).get(need.path) or {}
            if need.priv not in held[need.path]:
                out.append(MissingRight(self.kind, self.name, need.label(), need.why,
                                        need.grant(self.source.user, self.tokenid)))
        return out

    def taken_ids(self) -> set[int]:
        """Every VMID in use cluster-wide, QEMU and LXC, on every node (a drill must not reuse one)."""
        resources = self._call("cluster resources", self.api.cluster.resources.get, type="vm") or []
        return {int(r["vmid"]) for r in resources if "vmid" in r}

    # --- which guests are this hook's -------------------------------------------------------------
    def _listed(self, guest_type: str | None = None) -> list[dict[str, Any]]:
        kind = guest_type or self.guest_type
        noun = "containers" if kind == "lxc" else "VMs"
        return self._call(f"list {noun}", getattr(self.api.nodes(self.node), kind).get) or []

    @property
    def reports_unknown(self) -> bool:
        """The hook that reports a listed VMID no chosen guest type has: the first type `guests` covers."""
        return self.guest_type == next(t for t in GUEST_TYPES if self.source.guests in ("all", t))

    def selection(self) -> tuple[list[dict[str, Any]], list[tuple[int, str]]]:
        """This hook's guests to back up, and (vmid, why) for each listed VMID no chosen type has.

        `vmids: all` is this type's guests on this node (on a cluster each node backs up its own, once).
        An explicit VMID belongs to the hook whose listing has it; the one in neither listing is reported
        by one hook only (reports_unknown), which lists the other type once to say what it is.
        """
        listed = self._listed()
        by_vmid = {int(g["vmid"]): g for g in listed}
        skipped = set(self.source.exclude)
        if self.source.vmids == "all":
            resources = self._call("cluster resources", self.api.cluster.resources.get, type="vm")
            vmids = sorted(int(r["vmid"]) for r in resources
                           if r.get("type") == self.guest_type and r.get("node") == self.node)
            return [by_vmid.get(v, {"vmid": v, "missing": True}) for v in vmids if v not in skipped], []
        wanted = [v for v in self.source.vmids if v not in skipped]
        rest = [v for v in wanted if v not in by_vmid]
        if not rest or not self.reports_unknown:
            return [by_vmid[v] for v in wanted if v in by_vmid], []
        other = next(t for t in GUEST_TYPES if t != self.guest_type)
        other_noun = "container" if other == "lxc" else "VM"
        try:
            theirs = {int(g["vmid"]) for g in self._listed(other)}
        except PveError:
            theirs = set()  # only the hint is lost: the VMID is still not one of ours
        unknown = []
        for vmid in rest:
            if vmid not in theirs:
                unknown.append((vmid, f"{self.noun} {vmid} does not exist on node {self.node}"
                                + ("" if self.source.guests != "all" else f", nor does a {other_noun}: no guest"
                                   " has this VMID")))
            elif self.source.guests != "all":
                unknown.append((vmid, f"VMID {vmid} is a {other_noun}, not a {self.noun}: guests:"
                                f" {self.source.guests} leaves it out (set sources.proxmox.guests: all)"))
        return [by_vmid[v] for v in wanted if v in by_vmid], unknown

    def _own_vmids(self) -> list[int] | None:
        """The VMIDs whose rights this hook checks: None for every guest (`vmids: all`)."""
        if self.source.vmids == "all":
            return None
        guests, unknown = self.selection()
        return [int(g["vmid"]) for g in guests] + [vmid for vmid, _ in unknown]

    def missing_rights(self, operation: str) -> list[MissingRight]:
        vmids = self._own_vmids()
        if vmids == []:
            return []  # every listed VMID is the other hook's
        needs: list[Need] = []
        if operation in ("backup", "all"):
            needs += _pve_access.backup_needs(vmids, self.source.storage, self.noun)
        if operation in ("restore", "all"):
            nets: list[str] = []
            for vmid in vmids if vmids is not None else [int(g["vmid"]) for g in self._listed()]:
                try:
                    nets += bridges(self._call(f"{self.short} {vmid} config", self.guest_api(vmid).config.get))
                except PveError:
                    continue  # an unreadable config is reported as the VM.Audit it lacks
            targets: list[tuple[int | None, int | None]] = [(v, None) for v in vmids] if vmids else [(None, None)]
            if operation == "all" and self.drill_vmids and vmids:
                # the drill restores each guest beside itself, into the first VMIDs of its range
                targets += [(self.drill_vmids[0], v) for v in vmids]
            needs += _pve_access.restore_needs(targets, self.source.storage, self.source.restore_storage, nets,
                                               self.noun)
        return self.missing(needs)

    # --- dump -------------------------------------------------------------------------------------
    def dump(self, ctx: DumpContext) -> DumpOutcome:
        outcome = DumpOutcome()
        try:
            version = self._call("version", self.api.version.get)
            outcome.tools["pve-manager"] = str(version.get("version", "?"))
            guests, unknown = self.selection()
            if self.source.vmids != "all" and not guests and not unknown:
                return outcome  # every listed VMID is the other guest type's
            vmids = None if self.source.vmids == "all" else [int(g["vmid"]) for g in guests] + [v for v, _ in unknown]
            lacking = self.missing(_pve_access.backup_needs(vmids, self.source.storage, self.noun))
            blocked: dict[str, list[MissingRight]] = {}
            for m in lacking:
                if " on /vms/" in m.right:
                    blocked.setdefault(m.right.rsplit(" on /vms/", 1)[1], []).append(m)
            general = [m for m in lacking if " on /vms/" not in m.right]
            if general:
                # no guest can be backed up: fail before any vzdump, naming every missing privilege
                raise PveError("; ".join(m.message() for m in general + [x for v in blocked.values() for x in v]))
            if not self.source.dump_dir:
                self.dump_dir()  # a storage without a local path (PBS) fails here, before vzdump writes to it
            limit = self.backup_limit() if guests else 0
        except (PveError, OSError) as exc:
            outcome.failures.append(Failure(self.kind, self.name, f"{self.prefix}:*", str(exc)))
            return outcome
        for vmid, why in unknown:
            # a VMID nobody may see is invisible, not absent: name the rights it lacks
            reason = "; ".join(m.message() for m in blocked[str(vmid)]) if str(vmid) in blocked else why
            outcome.failures.append(Failure(self.kind, self.name, f"{self.prefix}:{vmid}", reason))
        out = ctx.out_dir(self.kind) if guests else ctx.day_dir
        for guest in guests:
            self._dump_guest(ctx, guest, out, outcome, limit, blocked)
        return outcome

    def _dump_guest(self, ctx: DumpContext, guest: dict[str, Any], out: Path, outcome: DumpOutcome, limit: int,
                    blocked: dict[str, list[MissingRight]]) -> None:
        vmid = int(guest["vmid"])
        component = f"{self.prefix}:{vmid}"
        if str(vmid) in blocked:
            outcome.failures.append(Failure(self.kind, self.name, component,
                                            "; ".join(m.message() for m in blocked[str(vmid)])))
            return
        if guest.get("missing"):
            outcome.failures.append(Failure(self.kind, self.name, component,
                                            f"{self.noun} {vmid} does not exist on node {self.node}"))
            return
        try:
            self._dump_one(ctx, vmid, out, outcome, limit)
        except (PveError, OSError) as exc:
            ctx.log.error(f"{self.noun} backup failed", extra={"vmid": vmid, "error": str(exc)})
            outcome.failures.append(Failure(self.kind, self.name, component, str(exc)))

    def _dump_one(self, ctx: DumpContext, vmid: int, out: Path, outcome: DumpOutcome, limit: int) -> None:
        raise NotImplementedError

    def _vzdump(self, vmid: int, params: dict[str, Any],
                on_poll: Callable[[list[str]], None] | None = None) -> tuple[str, str, list[str], float]:
        """Run vzdump for one guest and wait for its task: (upid, exit status, log, seconds)."""
        src = self.source
        started = time.monotonic()
        params = {"vmid": str(vmid), "mode": src.mode, "compress": src.compress, "storage": src.storage,
                  **params, "lockwait": src.lockwait_minutes}
        upid = self._call(f"vzdump {vmid}", self.api.nodes(self.node).vzdump.post, **params)
        exitstatus, log = self.wait_task(upid, src.timeout_seconds, on_poll)
        if not task_ok(exitstatus):
            raise PveError(f"vzdump of {self.short} {vmid} failed: {exitstatus}" + cause(log))
        return upid, exitstatus, log, time.monotonic() - started

    def _archive_of(self, vmid: int, text: str) -> Path:
        """Where the archive vzdump's task log names is, as this host sees it."""
        archive_match = ARCHIVE_RE.findall(text)
        if not archive_match:
            raise PveError(f"vzdump of {self.short} {vmid}: the task log names no archive")
        # the path vzdump logs is where it wrote, content-dirs included; dump_dir maps it when the API's
        # host sees the storage elsewhere
        logged = Path(archive_match[-1].removesuffix(".dat"))
        source_path = Path(self.source.dump_dir) / logged.name if self.source.dump_dir else logged
        if not source_path.is_file():
            raise PveError(f"vzdump of {self.short} {vmid}: archive {source_path} not found (vzdump wrote {logged};"
                           " set sources.proxmox.dump_dir if the storage is mounted elsewhere here)")
        return source_path

    def log_name(self, name: str) -> str:
        """vzdump's per-guest log beside an archive: <base>.log, the base being the name before its extension."""
        return name.split(self.archive_ext)[0] + ".log"

    def _pruned_notice(self, vmid: int, text: str, limit: int, outcome: DumpOutcome) -> None:
        pruned = PRUNED_RE.findall(text)
        if pruned:
            outcome.notices.append(Notice(self.kind, self.name, f"{self.short} {vmid}: the dump storage already"
                                          f" held the {limit} archives its prune-backups keeps; vzdump pruned by"
                                          f" that policy: {', '.join(pruned)} (give restic-orch a storage without"
                                          " prune-backups to keep them)"))

    def _take(self, source_path: Path, target: Path, name: str) -> None:
        """Move the archive into staging (a rename on one filesystem); copy when PVE should keep its copy."""
        if not self.source.delete_after:
            with replacing(target) as partial:
                shutil.copyfile(source_path, partial)
            return
        try:
            os.rename(source_path, target)
        except OSError as exc:
            if exc.errno != errno.EXDEV:
                raise
            with replacing(target) as partial:  # a half copy would fill staging for the other sources
                shutil.copyfile(source_path, partial)
            self._remove_volume(name, source_path)
        # vzdump's side files: <base>.log and <archive>.notes; the log is kept in staging by the caller
        for side in (source_path.parent / self.log_name(name), source_path.with_name(name + ".notes")):
            if side.exists():
                side.unlink()

    def _remove_volume(self, name: str, path: Path) -> None:
        volid = f"{self.source.storage}:backup/{name}"
        try:
            upid = self._call("delete volume", self.api.nodes(self.node).storage(self.source.storage)
                              .content(volid).delete)
            if isinstance(upid, str) and upid.startswith("UPID:") and not task_ok(self.wait_task(upid, 300)[0]):
                raise PveError(f"removing {volid} failed")
        except PveError:
            if path.exists():
                path.unlink()

    # --- restore ----------------------------------------------------------------------------------
    def restore(self, artifact: Artifact, fetch: Fetch, options: RestoreOptions) -> RestoreOutcome:
        meta = artifact.meta
        vmid = int(options.param("as_vmid") or meta["vmid"])
        component = artifact.component
        created: dict[str, Any] = {}
        try:
            needs = _pve_access.restore_needs([(vmid, int(meta["vmid"]))], self.source.storage,
                                              self.source.restore_storage, bridges(meta.get("config") or {}),
                                              self.noun)
            lacking = self.missing(needs)
            if lacking:
                return RestoreOutcome(component, False, "; ".join(m.message() for m in lacking),
                                      {"missing_rights": [m.to_json() for m in lacking]})
            existing = {int(g["vmid"]): g for g in self._listed()}
            if vmid in existing and not options.force:
                return RestoreOutcome(component, False, f"{self.short} {vmid} exists on {self.node}: refusing to"
                                      " overwrite it without --force (or restore beside it with --as-vmid N)")
            if options.drill and vmid in self.taken_ids():
                return RestoreOutcome(component, False, f"VMID {vmid} is in use in the cluster: a drill never"
                                      " restores over a guest it did not create")
            if options.drill and (crowded := self._no_room(artifact)):
                return RestoreOutcome(component, False, crowded)
            name = Path(artifact.path).name
            exitstatus, log, stopped_here = self._replace(artifact, fetch, vmid, existing, created)
            if not task_ok(exitstatus):
                left = (f"; {self.short} {vmid} was stopped for the restore and is left stopped: check it with"
                        f" `{self.config_command} {vmid}` before starting it") if stopped_here else ""
                return RestoreOutcome(component, False, f"restore task failed: {exitstatus}" + cause(log) + left,
                                      created=created)
            return self._verify(artifact, vmid, name, options, created)
        except (PveError, OSError) as exc:
            return RestoreOutcome(component, False, str(exc), created=created)

    def _no_room(self, artifact: Artifact) -> str:
        """Why a drill must not restore this guest next to production's volumes, or "" when there is room.

        The need is the archive's size (what the guest's volumes hold: vzdump leaves free blocks out), three times
        that for a compressed one; PVE's thin volumes take no more than what is written into them."""
        sid = self.source.restore_storage
        status = self._call(f"storage {sid} status", self.api.nodes(self.node).storage(sid).status.get)
        total, avail = int(status.get("total") or 0), int(status.get("avail") or 0)
        need = artifact.size * (1 if artifact.meta.get("compress", "0") in ("0", 0, None) else 3)
        keep = total * self.source.drill_min_free_percent / 100
        if avail - need >= keep:
            return ""
        return (f"not restored: storage {sid} has {avail / 2**30:.1f} GiB free of {total / 2**30:.1f} GiB; this"
                f" {self.noun} needs ~{need / 2**30:.1f} GiB and a drill keeps"
                f" {self.source.drill_min_free_percent:g} % free (drill_min_free_percent) next to production")

    def _finish(self, artifact: Artifact, vmid: int, name: str, options: RestoreOptions, restored: dict[str, Any],
                checks: dict[str, Any], created: dict[str, Any]) -> RestoreOutcome:
        """After the config check: start the guest when it ran and is back in its own place, and the outcome.

        A copy beside the original (a drill, --as-vmid) keeps the static IP set inside the guest: new MACs do not
        stop it from answering on the original's address, so it stays stopped, and the restore asked for
        onboot=0 so a copy left behind never starts at boot next to production either."""
        meta = artifact.meta
        beside = vmid != int(meta["vmid"])
        ran = meta.get("status") == "running"
        onboot_ok, started = True, False
        if beside:
            checks["onboot"], onboot_ok = onboot_check(restored)
            if ran:
                checks["started"] = "not started: restored beside the original (same IP address inside the guest)"
        elif ran and not options.drill:
            upid = self._call(f"start {self.short} {vmid}", self.guest_api(vmid).status.start.post)
            start_status, log = self.wait_task(upid, 300)
            started = task_ok(start_status)  # 'WARNINGS: n' is a started guest
            checks["started"] = started if started else f"{start_status}{cause(log)}"
        message = f"{self.short} {vmid} restored on {self.node} from {name}" + (" and started" if started else "")
        ok = checks["config"] == "ok" and onboot_ok and (started or not ran or options.drill or beside)
        return RestoreOutcome(artifact.component, ok, message, checks, restored_to=f"{self.short} {vmid}",
                              created=created)

    def _replace(self, artifact: Artifact, fetch: Fetch, vmid: int, existing: dict[int, dict[str, Any]],
                 created: dict[str, Any]) -> tuple[str, list[str], bool]:
        """Put the archive back, stop the guest it replaces, run PVE's restore task and wait for it:
        (exit status, log, whether this stopped the old guest). Fills `created` once the task exists."""
        name = Path(artifact.path).name
        # everything that can fail without touching the running guest comes before it is stopped
        local = self.dump_dir() / name
        ours = self._place_archive(local, artifact, fetch)
        stopped_here = False
        try:
            if vmid in existing and existing[vmid].get("status") == "running":
                self._power(vmid, "stop")
                stopped_here = True
            params = self._create_params(vmid, f"{self.source.storage}:backup/{name}", artifact.meta,
                                         vmid in existing)
            if vmid != int(artifact.meta["vmid"]):
                params.update(BESIDE_OVERRIDES)  # in place, the backed-up onboot stays
            upid = self._call(f"restore {self.short} {vmid}", self.guest_api().post, **params)
            if vmid not in existing:
                created.update(vmid=vmid, upid=upid)
            exitstatus, log = self.wait_task(upid, self.source.timeout_seconds)
        except PveError as exc:
            if stopped_here:
                raise PveError(f"{exc}{self._restart(vmid)}") from None
            raise
        finally:
            if ours and local.exists():
                local.unlink()
        return exitstatus, log, stopped_here

    def _create_params(self, vmid: int, volid: str, meta: dict[str, Any], exists: bool) -> dict[str, Any]:
        """The POST /nodes/{node}/<type> parameters that restore `volid` as `vmid`."""
        raise NotImplementedError

    def _verify(self, artifact: Artifact, vmid: int, name: str, options: RestoreOptions,
                created: dict[str, Any]) -> RestoreOutcome:
        raise NotImplementedError

    def _power(self, vmid: int, action: str, what: str = "") -> None:
        """Stop or start a guest and wait for it (PveError naming the guest when PVE's task failed)."""
        status, log = self.wait_task(self._call(f"{action} {self.short} {vmid}",
                                                getattr(self.guest_api(vmid).status, action).post), 300)
        if not task_ok(status):  # 'WARNINGS: n' is a stopped or started guest
            verb = "stopping" if action == "stop" else "starting"
            raise PveError(f"{verb} {what}{self.short} {vmid} failed: {status}" + cause(log))

    def _place_archive(self, local: Path, artifact: Artifact, fetch: Fetch) -> bool:
        """Put the archive where PVE reads it; True when we wrote it (and must remove it afterwards).

        With delete_after: false PVE keeps its own copy, which is the same file when its sha256 is the
        manifest's: that copy is used and left in place.
        """
        if local.exists():
            if local.is_file() and sha256_file(local) == artifact.sha256:
                return False
            raise PveError(f"{local} exists in the dump storage and differs from the backed-up archive: remove it"
                           " or restore another snapshot")
        try:
            fetch(local)
        except BaseException:
            local.unlink(missing_ok=True)  # a half archive would make the next restore refuse as "differs"
            raise
        return True

    def _restart(self, vmid: int) -> str:
        """Start again a guest this restore stopped before failing (the old one is intact until PVE's task ran)."""
        try:
            status, _ = self.wait_task(self._call(f"start {self.short} {vmid}",
                                                  self.guest_api(vmid).status.start.post), 300)
        except PveError as exc:
            return f"; {self.short} {vmid} was stopped for the restore and could not be started again: {exc}"
        return f"; {self.short} {vmid} was started again" if task_ok(status) else \
            f"; {self.short} {vmid} was stopped for the restore and starting it again failed: {status}"

    def discard(self, artifact: Artifact, outcome: RestoreOutcome, options: RestoreOptions) -> str:
        """Destroy the spare guest this drill's restore created, and nothing else."""
        vmid = outcome.created.get("vmid")
        if not vmid or vmid != options.param("as_vmid") or vmid == int(artifact.meta.get("vmid", -1)):
            return f"nothing to clean up: this restore created no {self.noun}"
        existing = {int(g["vmid"]): g for g in self._listed()}
        if vmid not in existing:
            return f"{self.short} {vmid} was not created"
        if existing[vmid].get("status") == "running":
            self._power(vmid, "stop", "drill ")
        status, log = self.wait_task(self._call(f"destroy {self.short} {vmid}", self.guest_api(vmid).delete,
                                                **self.destroy_params), 300)
        if not task_ok(status):
            raise PveError(f"destroying drill {self.short} {vmid} failed: {status}" + cause(log))
        return f"destroyed {self.short} {vmid}"
