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

from restic_orch import masking
from restic_orch.config import Config, ProxmoxSource

from . import _pve_access
from ._files import replacing
from ._pve_access import Need
from ._vzdump_log import ONLINE_AGAIN, freeze_bounds, guest_freeze
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
from .registry import KindOption, SourceKind

KIND = "proxmox"
# configuration keys that must come back identical; network keys change with unique=1 (new MAC)
CHECKED_KEYS = ("hostname", "arch", "ostype", "cores", "memory", "swap", "unprivileged", "features")
ARCHIVE_RE = re.compile(r"creating (?:vzdump )?archive '([^']+)'")
MODE_RE = re.compile(r"backup mode: (\w+)")
FALLBACK_RE = re.compile(r"trying '(\w+)' mode instead")
JOB_RE = re.compile(r"starting new backup job: (.*)")
PRUNED_RE = re.compile(r"removing backup '([^']+)'")
# task polling: start short (small containers finish in well under a second), never sleep long after the end
POLL_FIRST, POLL_GROWTH, POLL_MAX = 0.1, 1.5, 0.5


class PveError(Exception):
    pass


def task_ok(exitstatus: str) -> bool:
    """PVE::Tools upid_status_is_error: 'OK' and 'WARNINGS: n' are success, anything else failed."""
    return exitstatus == "OK" or exitstatus.startswith("WARNINGS")


def bridges(config: dict[str, Any]) -> list[str]:
    """The bridge (and VLAN tag) of every netN of a container config: the SDN paths a restore is checked on."""
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


def _cause(log: list[str]) -> str:
    """The guest's own error lines: the last line, `TASK ERROR: job errors`, says nothing about why."""
    lines = [line.strip() for line in log
             if ("ERROR" in line and "job errors" not in line) or "tar:" in line or "zstd:" in line
             or "No space left" in line]
    return f" ({' | '.join(lines[-3:])})" if lines else ""


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
    spec = SourceKind(
        KIND, "ct", order=0, examples="ct:101, ct:all, ct:102:/etc/file", inner_paths=True,
        drill_scenario="container", redeploy_after=True,
        options=(KindOption("as_vmid", "--as-vmid", int, "Restore a container beside the original."),))
    detail_keys = ("name", "mode_used")

    @classmethod
    def describe_restore(cls, artifact: Artifact, options: RestoreOptions) -> tuple[str, bool]:
        vmid = artifact.meta.get("vmid", artifact.component.split(":", 1)[1])
        target = options.param("as_vmid") or vmid
        text = f"restore container {vmid} ({artifact.meta.get('name', '?')}) as CT {target}"
        return text, options.param("as_vmid") is None

    @classmethod
    def sandbox_options(cls, artifact: Artifact, options: RestoreOptions, sandbox: Sandbox) -> None:
        options.params["as_vmid"] = sandbox.spare_id()

    @classmethod
    def bootstrap_lines(cls, config: Config) -> list[str]:
        px = config.sources.proxmox
        if not px:
            return []
        missing = "" if Path(px.token_file).exists() else " (MISSING: --set sources.proxmox.token_file=...)"
        return [f"proxmox: https://{px.host}:{px.port} node {px.node or '(this host)'} token "
                f"{px.user}!{px.token_name} from {px.token_file}{missing}"]

    def __init__(self, source: ProxmoxSource) -> None:
        self.source = source
        self.name = "proxmox"
        self._api: ProxmoxAPI | None = None
        self.drill_vmids: tuple[int, int] | None = None

    @classmethod
    def from_config(cls, config: Config) -> list[Hook]:
        hooks = cls.one_if_enabled(config.sources.proxmox)
        for hook in hooks:
            hook.drill_vmids = tuple(config.drill.vmid_range)  # type: ignore[attr-defined]
        return hooks

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
        volumes = self._call(f"backups of CT {vmid}", self.api.nodes(self.node).storage(self.source.storage)
                             .content.get, content="backup", vmid=vmid) or []
        # PVE/VZDump.pm counts the guest's own unprotected archives of its type
        count = sum(1 for v in volumes if not v.get("protected") and v.get("subtype") in (None, "lxc"))
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
                out.append(MissingRight(KIND, self.name, need.label(), need.why,
                                        need.grant(self.source.user, self.tokenid)))
        return out

    def _vmids(self) -> list[int] | None:
        if self.source.vmids == "all":
            return None
        return [v for v in self.source.vmids if v not in set(self.source.exclude)]

    def missing_rights(self, operation: str) -> list[MissingRight]:
        vmids = self._vmids()
        needs: list[Need] = []
        if operation in ("backup", "all"):
            needs += _pve_access.backup_needs(vmids, self.source.storage)
        if operation in ("restore", "all"):
            nets: list[str] = []
            for vmid in vmids if vmids is not None else [int(g["vmid"]) for g in self._listed()]:
                try:
                    nets += bridges(self._call(f"CT {vmid} config", self.api.nodes(self.node).lxc(vmid).config.get))
                except PveError:
                    continue  # an unreadable config is reported as the VM.Audit it lacks
            targets: list[tuple[int | None, int | None]] = [(v, None) for v in vmids] if vmids else [(None, None)]
            if operation == "all" and self.drill_vmids and vmids:
                # the drill restores each container beside itself, into the first VMIDs of its range
                targets += [(self.drill_vmids[0], v) for v in vmids]
            needs += _pve_access.restore_needs(targets, self.source.storage, self.source.restore_storage, nets)
        return self.missing(needs)

    def _listed(self) -> list[dict[str, Any]]:
        return self._call("list containers", self.api.nodes(self.node).lxc.get) or []

    def taken_ids(self) -> set[int]:
        """Every VMID in use cluster-wide, QEMU and LXC, on every node (a drill must not reuse one)."""
        resources = self._call("cluster resources", self.api.cluster.resources.get, type="vm") or []
        return {int(r["vmid"]) for r in resources if "vmid" in r}

    def guests(self) -> list[dict[str, Any]]:
        """The containers to back up: on a cluster, `all` means those on this node, so each is done once."""
        listed = self._listed()
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
            lacking = self.missing(_pve_access.backup_needs(self._vmids(), self.source.storage))
            blocked: dict[str, list[MissingRight]] = {}
            for m in lacking:
                if " on /vms/" in m.right:
                    blocked.setdefault(m.right.rsplit(" on /vms/", 1)[1], []).append(m)
            general = [m for m in lacking if " on /vms/" not in m.right]
            if general:
                # no container can be backed up: fail before any vzdump, naming every missing privilege
                raise PveError("; ".join(m.message() for m in general + [x for v in blocked.values() for x in v]))
            if not self.source.dump_dir:
                self.dump_dir()  # a storage without a local path (PBS) fails here, before vzdump writes to it
            guests = self.guests()
            limit = self.backup_limit()
        except (PveError, OSError) as exc:
            outcome.failures.append(Failure(KIND, self.name, "ct:*", str(exc)))
            return outcome
        out = ctx.out_dir(KIND)
        for guest in guests:
            vmid = int(guest["vmid"])
            if str(vmid) in blocked:
                outcome.failures.append(Failure(KIND, self.name, f"ct:{vmid}",
                                                "; ".join(m.message() for m in blocked[str(vmid)])))
                continue
            if guest.get("missing"):
                outcome.failures.append(Failure(KIND, self.name, f"ct:{vmid}",
                                                f"container {vmid} does not exist on node {self.node}"))
                continue
            try:
                self._dump_one(ctx, vmid, out, outcome, limit)
            except (PveError, OSError) as exc:
                ctx.log.error("container backup failed", extra={"vmid": vmid, "error": str(exc)})
                outcome.failures.append(Failure(KIND, self.name, f"ct:{vmid}", str(exc)))
        return outcome

    def _dump_one(self, ctx: DumpContext, vmid: int, out: Path, outcome: DumpOutcome, limit: int) -> None:
        src = self.source
        lxc = self.api.nodes(self.node).lxc(vmid)
        config = self._call(f"CT {vmid} config", lxc.config.get)
        status = self._call(f"CT {vmid} status", lxc.status.current.get)
        excludes = src.exclude_paths_for(vmid)
        upid, exitstatus, log, duration = self._vzdump(vmid, limit, excludes)
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
        pruned = PRUNED_RE.findall(text)
        if pruned:
            outcome.notices.append(Notice(KIND, self.name, f"CT {vmid}: the dump storage already held the {limit}"
                                          " archives its prune-backups keeps; vzdump pruned by that policy:"
                                          f" {', '.join(pruned)} (give restic-orch a storage without prune-backups"
                                          " to keep them)"))
        # vzdump logs how long a suspended guest was frozen; a snapshot's own freeze only shows between the
        # timestamps of the per-guest log, which _take removes with the archive
        guest_log = source_path.parent / (name.split(".tar")[0] + ".log")
        bound = guest_freeze(text, guest_log.read_text(errors="replace") if guest_log.is_file() else "")
        online = bound if bound and bound.source == ONLINE_AGAIN else None
        if fallback or mode_used != src.mode:
            frozen = f"; guest frozen {online.logged} s" if online else ""
            outcome.notices.append(Notice(KIND, self.name, f"CT {vmid}: vzdump used {mode_used} mode instead of"
                                          f" {src.mode}{frozen}"))
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
        # a freeze nobody measured is "not measured", never 0
        meta.update(freeze_seconds=freeze_bounds(online.logged)[0] if online else None,
                    freeze_seconds_min=bound.lower if bound else None,
                    freeze_seconds_max=bound.upper if bound else None,
                    freeze_measured_by=bound.source if bound else "not measured",
                    exclude_paths=self._confirm_excludes(vmid, excludes, text, outcome))
        outcome.artifacts.append(ctx.artifact(target, component=f"ct:{vmid}", kind=KIND, source=self.name,
                                              meta=meta))
        ctx.log.info("container archived", extra={"vmid": vmid, "mode": mode_used, "bytes": target.stat().st_size})

    def _vzdump(self, vmid: int, limit: int, excludes: list[str]) -> tuple[str, str, list[str], float]:
        """Run vzdump for one guest and wait for its task: (upid, exit status, log, seconds)."""
        src = self.source
        started = time.monotonic()
        params: dict[str, Any] = {"vmid": str(vmid), "mode": src.mode, "compress": src.compress,
                                  "storage": src.storage, "remove": self.remove_param(vmid, limit),
                                  "lockwait": src.lockwait_minutes}
        if excludes:
            # a list goes out as repeated form fields; PVE hands vzdump the values NUL-separated
            params["exclude-path"] = excludes
        upid = self._call(f"vzdump {vmid}", self.api.nodes(self.node).vzdump.post, **params)
        exitstatus, log = self.wait_task(upid, src.timeout_seconds)
        if not task_ok(exitstatus):
            raise PveError(f"vzdump of CT {vmid} failed: {exitstatus}" + _cause(log))
        return upid, exitstatus, log, time.monotonic() - started

    def _archive_of(self, vmid: int, text: str) -> Path:
        """Where the archive vzdump's task log names is, as this host sees it."""
        archive_match = ARCHIVE_RE.findall(text)
        if not archive_match:
            raise PveError(f"vzdump of CT {vmid}: the task log names no archive")
        # the path vzdump logs is where it wrote, content-dirs included; dump_dir maps it when the API's
        # host sees the storage elsewhere
        logged = Path(archive_match[-1].removesuffix(".dat"))
        source_path = Path(self.source.dump_dir) / logged.name if self.source.dump_dir else logged
        if not source_path.is_file():
            raise PveError(f"vzdump of CT {vmid}: archive {source_path} not found (vzdump wrote {logged};"
                           " set sources.proxmox.dump_dir if the storage is mounted elsewhere here)")
        return source_path

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
        for side in (source_path.parent / (name.split(".tar")[0] + ".log"), source_path.with_name(name + ".notes")):
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
                                              self.source.restore_storage, bridges(meta.get("config") or {}))
            lacking = self.missing(needs)
            if lacking:
                return RestoreOutcome(component, False, "; ".join(m.message() for m in lacking),
                                      {"missing_rights": [m.to_json() for m in lacking]})
            existing = {int(g["vmid"]): g for g in self._listed()}
            if vmid in existing and not options.force:
                return RestoreOutcome(component, False, f"CT {vmid} exists on {self.node}: refusing to overwrite it"
                                      " without --force (or restore beside it with --as-vmid N)")
            if options.drill and vmid in self.taken_ids():
                return RestoreOutcome(component, False, f"VMID {vmid} is in use in the cluster: a drill never"
                                      " restores over a guest it did not create")
            name = Path(artifact.path).name
            # everything that can fail without touching the running CT comes before it is stopped
            local = self.dump_dir() / name
            ours = self._place_archive(local, artifact, fetch)
            stopped_here = False
            try:
                if vmid in existing and existing[vmid].get("status") == "running":
                    upid = self._call(f"stop CT {vmid}", self.api.nodes(self.node).lxc(vmid).status.stop.post)
                    stopped, log = self.wait_task(upid, 300)
                    if not task_ok(stopped):
                        raise PveError(f"stopping CT {vmid} failed: {stopped}" + _cause(log))
                    stopped_here = True
                params: dict[str, Any] = {"vmid": vmid, "ostemplate": f"{self.source.storage}:backup/{name}",
                                          "restore": 1, "storage": self.source.restore_storage}
                if vmid in existing:
                    params["force"] = 1
                if vmid != int(meta["vmid"]):
                    params["unique"] = 1  # beside the original: new MAC addresses, no duplicate on the bridge
                upid = self._call(f"restore CT {vmid}", self.api.nodes(self.node).lxc.post, **params)
                if vmid not in existing:
                    created = {"vmid": vmid, "upid": upid}
                exitstatus, log = self.wait_task(upid, self.source.timeout_seconds)
            except PveError as exc:
                if stopped_here:
                    raise PveError(f"{exc}{self._restart(vmid)}") from None
                raise
            finally:
                if ours and local.exists():
                    local.unlink()
            if not task_ok(exitstatus):
                left = (f"; CT {vmid} was stopped for the restore and is left stopped: check it with"
                        f" `pct config {vmid}` before starting it") if stopped_here else ""
                return RestoreOutcome(component, False, f"restore task failed: {exitstatus}" + _cause(log) + left,
                                      created=created)
            return self._verify(artifact, vmid, name, options, created)
        except (PveError, OSError) as exc:
            return RestoreOutcome(component, False, str(exc), created=created)

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
        """Start again a CT this restore stopped before failing (the old one is intact until PVE's task ran)."""
        try:
            status, _ = self.wait_task(self._call(f"start CT {vmid}",
                                                  self.api.nodes(self.node).lxc(vmid).status.start.post), 300)
        except PveError as exc:
            return f"; CT {vmid} was stopped for the restore and could not be started again: {exc}"
        return f"; CT {vmid} was started again" if task_ok(status) else \
            f"; CT {vmid} was stopped for the restore and starting it again failed: {status}"

    def _verify(self, artifact: Artifact, vmid: int, name: str, options: RestoreOptions,
                created: dict[str, Any]) -> RestoreOutcome:
        meta, component = artifact.meta, artifact.component
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
            start_status, log = self.wait_task(upid, 300)
            started = task_ok(start_status)  # 'WARNINGS: n' is a started container
            checks["started"] = started if started else f"{start_status}{_cause(log)}"
        message = f"CT {vmid} restored on {self.node} from {name}" + (" and started" if started else "")
        ok = not diffs and (started or meta.get("status") != "running" or options.drill or beside)
        return RestoreOutcome(component, ok, message, checks, restored_to=f"CT {vmid}", created=created)

    def discard(self, artifact: Artifact, outcome: RestoreOutcome, options: RestoreOptions) -> str:
        """Destroy the spare container this drill's restore created, and nothing else."""
        vmid = outcome.created.get("vmid")
        if not vmid or vmid != options.param("as_vmid") or vmid == int(artifact.meta.get("vmid", -1)):
            return "nothing to clean up: this restore created no container"
        existing = {int(g["vmid"]): g for g in self._listed()}
        if vmid not in existing:
            return f"CT {vmid} was not created"
        lxc = self.api.nodes(self.node).lxc(vmid)
        if existing[vmid].get("status") == "running":
            stopped, log = self.wait_task(self._call(f"stop CT {vmid}", lxc.status.stop.post), 300)
            if not task_ok(stopped):
                raise PveError(f"stopping drill CT {vmid} failed: {stopped}" + _cause(log))
        status, log = self.wait_task(self._call(f"destroy CT {vmid}", lxc.delete), 300)
        if not task_ok(status):
            raise PveError(f"destroying drill CT {vmid} failed: {status}" + _cause(log))
        return f"destroyed CT {vmid}"


HOOK = ProxmoxHook
