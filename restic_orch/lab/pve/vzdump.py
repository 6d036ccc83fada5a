"""The vzdump worker: one backup job over several guests, after PVE::VZDump and PVE::VZDump::LXC."""

from __future__ import annotations

import fcntl
import glob
import os
import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import archive, containers, layout, pctconf, prune, qemu, storage
from .errors import TaskError, TaskExit
from .rootfs import volume_dir
from .schema import parse_prune_backups
from .tasks import Worker
from .vzdump_qemu import QemuBackup
from .vzdump_qemu import cleanup as qemu_cleanup

Disks = list[tuple[str, dict[str, Any]]]  # (rootfs|mpN, parsed mount point): vzdump's $task->{disks}

# PVE::VZDump->new's 'stdexcludes', and the same as tar's anchored patterns (what tests compare against)
STD_EXCLUDE_PATHS = ("/tmp/?*", "/var/tmp/?*", "/var/run/?*.pid")
STD_EXCLUDES = ["." + p for p in STD_EXCLUDE_PATHS]
# String::ShellQuote leaves these unquoted; PVE quotes each argument alone, so '=' gets quoted too
_SHELL_SAFE = re.compile(r"[\w!%+,\-./:@^]+")
TAR_FLAGS = ("tar cpf - --totals --one-file-system -p --sparse --numeric-owner --acls --xattrs "
             "'--xattrs-include=user.*' '--xattrs-include=security.capability' '--warning=no-file-ignored' "
             "'--warning=no-xattr-write' --one-file-system '--warning=no-file-ignored'")


def _format_time(seconds: float) -> str:
    s = int(seconds)
    return f"{s // 3600:02d}:{s % 3600 // 60:02d}:{s % 60:02d}"


def _format_size(size: int) -> str:
    """PVE::VZDump::format_size (archive file size lines)."""
    kb = size / 1024
    if kb < 1024:
        return f"{int(kb)}KB"
    mb = size / (1024 * 1024)
    if mb < 1024:
        return f"{int(mb)}MB"
    gb = mb / 1024
    return f"{gb:.2f}GB" if gb < 1024 else f"{gb / 1024:.2f}TB"


def _rsync_human(n: int) -> str:
    v, units = float(n), ["", "K", "M", "G", "T"]
    i = 0
    while v >= 1024 and i < len(units) - 1:
        v /= 1024
        i += 1
    return f"{int(n)}" if i == 0 else f"{v:.2f}{units[i]}"


def shellquote(arg: str) -> str:
    """PVE::Tools::shellquote of one argument (String::ShellQuote)."""
    if _SHELL_SAFE.fullmatch(arg):
        return arg
    return "'" + arg.replace("'", "'\\''") + "'"


def online_again(stopped_at: float) -> str:
    """vzdump's 'guest is online again' line: whole-second clock readings, '<1' when they are equal."""
    delay = int(time.time()) - int(stopped_at)
    return f"guest is online again after {'<1' if delay < 1 else delay} seconds"


def _frozen_marker(root: Path, vmid: int) -> Path:
    return layout.ct_dir(root, vmid) / "frozen"


def freeze_ct(root: Path, vmid: int) -> None:
    """PVE::LXC::freeze: the container's processes stop (its cgroup is frozen) until thaw()."""
    layout.write_atomic(_frozen_marker(root, vmid), f"{time.time():.3f}\n")


def thaw(root: Path, vmid: int) -> None:
    """PVE::LXC::thaw (a no-op on a container that is not frozen)."""
    _frozen_marker(root, vmid).unlink(missing_ok=True)


def is_frozen(root: Path, vmid: int) -> bool:
    """Whether the container is frozen right now (tests watch a backup's freeze with it)."""
    return _frozen_marker(root, vmid).exists()


def _rsync_excludes(excludes: archive.Excludes, exclude_dirs: list[str]) -> archive.Excludes:
    """Suspend mode's rsync also gets '--exclude=<mp>' for each mount point left out of the backup
    (PVE::VZDump::LXC $task->{exclude_dirs}): those paths are not even an empty directory in the copy."""
    extra = tuple("." + glob.escape(d.rstrip("/")) for d in exclude_dirs)
    return archive.Excludes(anchored=excludes.anchored + extra, unanchored=excludes.unanchored,
                            dirs_only=excludes.dirs_only)


def _fault_for(faults: dict[str, Any], key: str, vmid: int) -> str | None:
    value = faults.get(key)
    if isinstance(value, dict):
        value = value.get(str(vmid))
    return str(value) if value else None


class GuestLog:
    """Lines go to the task log; most also to the per-guest .log file with a timestamp."""

    def __init__(self, w: Worker) -> None:
        self.w = w
        self.lines: list[str] = []

    def __call__(self, level: str, msg: str, to_file: bool = True) -> None:
        prefix = {"info": "INFO:", "warn": "WARN:", "err": "ERROR:"}[level]
        if level == "warn":
            self.w.warn(msg)
        else:
            self.w.print(f"{prefix} {msg}")
        if to_file:
            self.lines.append(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {prefix} {msg}")


@dataclass
class GuestFiles:
    """One guest's files in the dump directory: vzdump's $task->{logfile}, {target}, {tmptar}, {tmpdir}."""

    logfile: Path
    target: Path
    tmptar: Path
    tmpdir: Path
    vmtype: str = "lxc"


class Job:
    def __init__(self, root: Path, node: str, opts: dict[str, Any], vmids: list[int], cmdline: str) -> None:
        self.root, self.node, self.opts, self.vmids, self.cmdline = root, node, opts, vmids, cmdline
        self.lockfile = layout.run_dir(root) / "vzdump.lock"

    # -- job level -------------------------------------------------------------------------

    def run(self, w: Worker) -> None:
        sid = self.opts.get("storage") or "local"
        errors = []
        try:
            scfg = storage.config(self.root, sid)
        except TaskError as exc:
            errors += [f"could not activate storage '{sid}': {exc}",
                       f"could not get storage information for '{sid}': {exc}"]
            scfg = {}
        if scfg and "backup" not in layout.content_set(scfg):
            errors.append(f"could not get storage information for '{sid}': can't use storage '{sid}' for backups"
                          " - wrong content type")
        if errors:
            raise TaskError("\n".join(errors))
        self.sid, self.scfg = sid, scfg
        self.dumpdir = layout.backup_dir(self.root, scfg)
        keep = self.opts.get("prune-backups") or scfg.get("prune-backups") or "keep-all=1"
        self.keep = parse_prune_backups(keep)
        self.remove = int(self.opts.get("remove", 1)) and not self.keep.get("keep-all")
        self.ext = archive.EXTENSIONS[str(self.opts.get("compress", "0"))]
        self.compress = archive.compressor(self.ext, self.opts)
        if not archive.tool_available(self.ext, self.opts):
            raise TaskError(f"unable to find command '{self.compress[0]}'")
        lock_fh = self._getlock(w)
        errcount = 0
        try:
            (layout.run_dir(self.root) / "vzdump.pid").write_text(str(w.upid))
            w.info(f"starting new backup job: {self.cmdline}")
            try:
                for vmid in self.vmids:
                    if not self._backup_guest(w, vmid):
                        errcount += 1
            except TaskError as exc:
                w.err(f"Backup job failed - {exc}")
                raise
            w.info("Backup job finished with errors" if errcount else "Backup job finished successfully")
        finally:
            lock_fh.close()
        if errcount:
            raise TaskError("job errors")
        (layout.run_dir(self.root) / "vzdump.pid").unlink(missing_ok=True)

    def _getlock(self, w: Worker) -> Any:
        """One vzdump per node: flock on run/vzdump.lock, waiting up to 'lockwait' minutes."""
        self.lockfile.parent.mkdir(parents=True, exist_ok=True)
        fh = self.lockfile.open("a")

        def try_lock() -> bool:
            if layout.read_faults(self.root).get("global_lock_held"):
                return False
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return True
            except BlockingIOError:
                return False

        if try_lock():
            return fh
        maxwait = int(self.opts.get("lockwait", 180))
        if not maxwait:
            fh.close()
            w.err(f"can't acquire lock '{self.lockfile}' (wait = 0)")
            raise TaskExit  # the real worker exit()s here: the task log ends without a TASK line
        w.info("trying to get global lock - waiting...")
        minute = float(layout.read_faults(self.root).get("minute_seconds", 60))
        deadline = time.monotonic() + maxwait * minute
        try:
            while time.monotonic() < deadline:
                w.sleep(0.05)  # raises when the task is stopped via the API
                if try_lock():
                    w.info("got global lock")
                    return fh
        except TaskError:
            fh.close()
            raise
        fh.close()
        w.err(f"can't acquire lock '{self.lockfile}' - got timeout")
        raise TaskExit

    # -- one guest -------------------------------------------------------------------------

    def _backup_guest(self, w: Worker, vmid: int) -> bool:
        log = GuestLog(w)
        started = time.time()
        cleanup: dict[str, Any] = {}  # flags, and 'vmstoptime' like PVE's $task->{vmstoptime}
        files: GuestFiles | None = None
        err: str | None = None
        try:
            files = self._guest_files(vmid, started)
            files.tmpdir.mkdir(parents=True, exist_ok=True)
            self._backup_steps(log, vmid, files, cleanup)
        except (TaskError, OSError) as exc:
            err = str(exc)
        self._cleanup_guest(log, vmid, cleanup, files)
        self._log_outcome(log, vmid, started, err)
        if files is not None:
            files.logfile.write_text("\n".join(log.lines) + "\n")
        if err == "interrupted by signal":
            raise TaskError(err)  # a stopped task aborts the whole job, like PVE
        return err is None

    def _guest_files(self, vmid: int, started: float) -> GuestFiles:
        """exec_backup_task's names: '.tar' for containers, '.vma' for QEMU, the compressor's extension
        after it; the temporary file drops the last extension for '.dat'."""
        if containers.exists(self.root, vmid):
            vmtype, ext = "lxc", ".tar"
        elif qemu.exists(self.root, vmid):
            vmtype, ext = "qemu", ".vma"
        else:
            raise TaskError(f"unable to find VM '{vmid}'")
        basename = f"vzdump-{vmtype}-{vmid}-" + time.strftime("%Y_%m_%d-%H_%M_%S", time.localtime(started))
        self._check_backup_limit(vmid, vmtype)
        return GuestFiles(
            logfile=self.dumpdir / f"{basename}.log",
            target=self.dumpdir / f"{basename}{ext}{self.ext}",
            tmptar=self.dumpdir / f"{basename}.dat" if not self.ext else self.dumpdir / f"{basename}{ext}.dat",
            tmpdir=self.dumpdir / f"{basename}.tmp",
            vmtype=vmtype,
        )

    def _backup_steps(self, log: GuestLog, vmid: int, files: GuestFiles, cleanup: dict[str, Any]) -> None:
        if files.vmtype == "qemu":
            QemuBackup(self, log, vmid, files, cleanup).run()
            log("info", f"archive file size: {_format_size(files.target.stat().st_size)}")
            conf = qemu.load(self.root, vmid, self.node)
            self._notes_and_protection(log, vmid, conf.get("name", f"VM {vmid}"), files.target)
            if self.remove:
                self._prune(log, vmid, "qemu")
            return
        log("info", f"Starting Backup of VM {vmid} (lxc)")
        log("info", "Backup started at " + time.strftime("%Y-%m-%d %H:%M:%S"), to_file=False)
        running = containers.is_running(self.root, vmid)
        log("info", f"status = {'running' if running else 'stopped'}")
        containers.set_lock(self.root, vmid, self.node, "backup")
        cleanup["unlock"] = True
        mode = self.opts.get("mode", "snapshot") if running else "stop"
        conf = containers.load(self.root, vmid, self.node)
        volumes: tuple[Disks, list[str]] = ([], [])
        if mode == "snapshot":
            volumes = self._prepare(log, conf)
            # PVE::VZDump::LXC::prepare: has_feature('snapshot') over the volumes that are backed up
            if not all(self._can_snapshot(mp) for _key, mp in volumes[0]):
                log("info", "mode failure - some volumes do not support snapshots")
                log("info", "trying 'suspend' mode instead")
                mode = "suspend"
        self._log_settings(log, mode)
        excludes = tar_excludes(findexcl(self.opts), conf.get("unprivileged") == "1", mode)
        faults = layout.read_faults(self.root)
        if mode == "snapshot":
            self._snapshot(log.w, log, vmid, len(volumes[0]), float(faults.get("snapshot_freeze_seconds", 0)),
                           cleanup)
        else:
            volumes = self._prepare(log, conf)
            if mode == "stop":
                self._stop(log, vmid, running, cleanup)
            else:
                self._suspend(log.w, log, vmid, (files.tmpdir, *volumes), excludes,
                              float(faults.get("suspend_freeze_seconds", 0)), cleanup)
        size = self._archive(log, vmid, conf, (files.target, files.tmptar, files.tmpdir), excludes, mode,
                             _fault_for(faults, "vzdump_fail", vmid), volumes,
                             float(faults.get("task_delay_seconds", 0)))
        log("info", f"archive file size: {_format_size(size)}")
        self._notes_and_protection(log, vmid, conf.get("hostname", f"CT{vmid}"), files.target)
        if self.remove:
            self._prune(log, vmid)

    def _log_settings(self, log: GuestLog, mode: str) -> None:
        log("info", f"backup mode: {mode}")
        if float(self.opts.get("bwlimit") or 0):
            log("info", f"bandwidth limit: {self.opts['bwlimit']} KiB/s")
        log("info", f"ionice priority: {self.opts.get('ionice', 7)}")

    def _stop(self, log: GuestLog, vmid: int, running: bool, cleanup: dict[str, Any]) -> None:
        """Stop mode: a running CT is shut down for the backup and restarted by the cleanup."""
        if running:
            log("info", "stopping virtual guest")
            cleanup["vmstoptime"] = time.time()
            containers.set_running(self.root, vmid, False)
            cleanup["restart"] = True

    def _cleanup_guest(self, log: GuestLog, vmid: int, cleanup: dict[str, Any], files: GuestFiles | None) -> None:
        """Undo what the backup did to the guest (lock, snapshot, freeze, stop) and drop temporary files."""
        if cleanup.get("qemu"):
            qemu_cleanup(self, log, vmid, cleanup)
            cleanup = {}
        if cleanup.get("unlock"):
            try:
                containers.remove_lock(self.root, vmid, self.node, "backup")
            except TaskError as exc:
                log.w.warn_raw(str(exc))
        if cleanup.get("remove_snapshot"):
            log("info", "cleanup temporary 'vzdump' snapshot")
        if cleanup.get("resume"):
            log("info", "resume vm")
            thaw(self.root, vmid)
            log("info", online_again(cleanup["vmstoptime"]))
        elif cleanup.get("restart"):
            log("info", "restarting vm")
            containers.set_running(self.root, vmid, True)
            log("info", online_again(cleanup["vmstoptime"]))
        if files is not None:
            if files.tmptar.exists():
                files.tmptar.unlink()
            if files.tmpdir.exists():
                shutil.rmtree(files.tmpdir, ignore_errors=True)

    def _log_outcome(self, log: GuestLog, vmid: int, started: float, err: str | None) -> None:
        if err is not None:
            log("err", f"Backup of VM {vmid} failed - {err}")
            log("info", "Failed at " + time.strftime("%Y-%m-%d %H:%M:%S"), to_file=False)
        else:
            log("info", f"Finished Backup of VM {vmid} ({_format_time(time.time() - started)})")
            log("info", "Backup finished at " + time.strftime("%Y-%m-%d %H:%M:%S"), to_file=False)

    def _prepare(self, log: GuestLog, conf: dict[str, Any]) -> tuple[Disks, list[str]]:
        """PVE::VZDump::LXC::prepare (pve-container src/PVE/VZDump/LXC.pm): 'CT Name' when the CT has a
        hostname, then every volume (PVE::LXC::Config->get_backup_volumes: rootfs, mp0, mp1, ...) as
        included or excluded with mountpoint_backup_enabled's reason. Returns the included volumes (vzdump's
        $task->{disks}) and the mount paths of the excluded ones ($task->{exclude_dirs}, rsync's excludes)."""
        if conf.get("hostname") is not None:
            log("info", f"CT Name: {conf['hostname']}")
        disks: Disks = []
        exclude_dirs: list[str] = []
        for key, mp in pctconf.volumes(conf):
            if not mp.get("volume") or not mp.get("mp"):
                continue
            included, reason = pctconf.backup_enabled(key, mp)
            if not included:
                exclude_dirs.append(mp["mp"])
                log("info", f"excluding {mp['type']} mount point {key} ('{mp['mp']}') from backup ({reason})")
                continue
            log("info", f"including mount point {key} ('{mp['mp']}') in backup")
            disks.append((key, mp))
        return disks, exclude_dirs

    def _can_snapshot(self, mp: dict[str, Any]) -> bool:
        if mp.get("type") != "volume":
            return False
        return storage.config(self.root, containers.volume_storage(mp["volume"]))["type"] \
            in layout.SNAPSHOT_STORAGE_TYPES

    def _snapshot(self, w: Worker, log: GuestLog, vmid: int, snapshot_count: int, freeze: float,
                  cleanup: dict[str, Any]) -> None:
        """Snapshot mode (pve-manager PVE/VZDump.pm exec_backup_task, pve-container PVE::VZDump::LXC snapshot).

        With more than one volume ($task->{snapshot_count} > 1) vzdump first suspends the CT ('suspend vm to
        make snapshot', PVE::LXC::freeze) and afterwards logs 'resume vm' and 'guest is online again after N
        seconds'. In every case PVE::LXC::Config->snapshot_create (pve-guest-common PVE::AbstractConfig)
        runs __snapshot_freeze (pve-container PVE::LXC::Config: cgroup freeze, syncfs, fsfreeze where the
        storage needs it), snapshots the volumes and thaws, logging nothing: with one volume the freeze
        only shows as the gap between 'create storage snapshot' and the next line of the per-guest log.
        `freeze` (fault snapshot_freeze_seconds) makes that freeze last.
        """
        try:
            if snapshot_count > 1:
                log("info", "suspend vm to make snapshot")
                cleanup["vmstoptime"] = time.time()
                freeze_ct(self.root, vmid)
                cleanup["resume"] = True
            log("info", "create storage snapshot 'vzdump'")
            freeze_ct(self.root, vmid)  # __snapshot_freeze($vmid, 0)
            w.sleep(freeze)
        finally:
            thaw(self.root, vmid)  # __snapshot_freeze($vmid, 1), also when the snapshot failed
        cleanup["remove_snapshot"] = True
        if snapshot_count > 1:
            log("info", "resume vm")
            cleanup["resume"] = False
            thaw(self.root, vmid)
            log("info", online_again(cleanup["vmstoptime"]))

    def _suspend(self, w: Worker, log: GuestLog, vmid: int, where: tuple[Path, Disks, list[str]],
                 excludes: archive.Excludes, freeze: float, cleanup: dict[str, Any]) -> None:
        """rsync to tmpdir, freeze, rsync again, thaw; vzdump's durations are whole-second differences.
        rsync copies each included volume below its mount path and skips the excluded mount paths."""
        tmpdir, disks, exclude_dirs = where
        pid = containers.read_state(self.root, vmid).get("pid", 0)
        src = f"/proc/{pid}/root/"
        t0 = int(time.time())
        log("info", f"starting first sync {src} to {tmpdir}")
        size = archive.tree_bytes(layout.rootfs_dir(self.root, vmid), _rsync_excludes(excludes, exclude_dirs),
                                  self._mounts(vmid, disks))
        log("info", f"first sync finished - transferred {_rsync_human(size)} bytes in {int(time.time()) - t0}s")
        log("info", "suspending guest")
        frozen = cleanup["vmstoptime"] = time.time()
        freeze_ct(self.root, vmid)
        cleanup["resume"] = True
        log("info", f"starting final sync {src} to {tmpdir}")
        w.sleep(freeze)
        log("info", f"final sync finished - transferred 0 bytes in {int(time.time()) - int(frozen)}s")
        log("info", "resuming guest")
        cleanup["resume"] = False
        thaw(self.root, vmid)
        log("info", online_again(frozen))

    def _mounts(self, vmid: int, disks: Disks) -> dict[str, Path]:
        """Tar member name of each backed-up mount point -> the volume's tree."""
        return {"." + mp["mp"].rstrip("/"): volume_dir(self.root, vmid, key) for key, mp in disks if key != "rootfs"}

    def _warn_trailing_slash(self, log: GuestLog, mode: str) -> None:
        # PVE::VZDump::LXC::archive: rsync (suspend) honours 'dir/', tar never matches it
        if mode == "suspend":
            return
        for pattern in findexcl(self.opts):
            if pattern.endswith("/"):
                log("warn", f"tar does not match exclusion with a trailing slash '{pattern}'")

    def _archive(self, log: GuestLog, vmid: int, conf: dict[str, Any], paths: tuple[Path, Path, Path],
                 excludes: archive.Excludes, mode: str, fail: str | None, volumes: tuple[Disks, list[str]],
                 delay: float = 0.0) -> int:
        """tar of './' and '.<mp>' per backed-up volume (snapshot and stop mode, --one-file-system), or of
        the rsynced copy '.' (suspend mode), as PVE::VZDump::LXC::archive. `delay` (fault
        task_delay_seconds) is time the tar takes, after the 'creating vzdump archive' line."""
        target, tmptar, tmpdir = paths
        disks, exclude_dirs = volumes
        saved = {k: v for k, v in conf.items() if k not in ("lock", "snapshots", "parent", "pending")}
        fw = layout.ct_dir(self.root, vmid) / "firewall.fw"
        unpriv = conf.get("unprivileged") == "1"
        # tar runs inside the container's user namespace: host root is unmapped there (nobody).
        head_owner = 65534 if unpriv else 0
        head = [("./etc/vzdump/pct.conf", pctconf.render(saved).encode(), head_owner, head_owner),
                ("./etc/vzdump/pct.fw", fw.read_bytes() if fw.is_file() else b"", head_owner, head_owner)]

        def map_id(i: int) -> int:
            if not unpriv:
                return i
            if 100000 <= i < 165536:
                return i - 100000
            return 65534 if os.geteuid() == 0 else i

        log("info", f"creating vzdump archive '{target}'")
        self._warn_trailing_slash(log, mode)
        t0 = time.time()
        log.w.sleep(delay)
        suspend = mode == "suspend"
        try:
            count = archive.write_archive(tmptar, self.compress, head, layout.rootfs_dir(self.root, vmid),
                                          _rsync_excludes(excludes, exclude_dirs) if suspend else excludes,
                                          map_id, fail, self._mounts(vmid, disks), one_file_system=not suspend)
        except archive.ArchiveError as exc:
            for line in exc.lines:
                log("info", line)
            pipeline = self._pipeline(vmid, excludes, mode, (tmpdir, tmptar), disks)
            raise TaskError(f"command '{pipeline}' failed: exit code 2") from exc
        log("info", archive.totals_line("written", count, time.time() - t0))
        os.rename(tmptar, target)
        return target.stat().st_size

    def _pipeline(self, vmid: int, excludes: archive.Excludes, mode: str, paths: tuple[Path, Path],
                  disks: Disks) -> str:
        """The tar | compressor command vzdump reports when it fails (PVE::Tools::cmd2string)."""
        tmpdir, tmptar = paths
        snapdir = tmpdir if mode == "suspend" else layout.rootfs_dir(self.root, vmid)
        tar = (f"{TAR_FLAGS} {shellquote(f'--directory={tmpdir}')} ./etc/vzdump/pct.conf ./etc/vzdump/pct.fw "
               f"{shellquote(f'--directory={snapdir}')} --no-anchored")
        tar += "".join(f" {shellquote('--exclude=' + p)}" for p in excludes.unanchored)
        tar += " --anchored" + "".join(f" {shellquote('--exclude=' + p)}" for p in excludes.anchored)
        tar += " ." if mode == "suspend" else " ./" + "".join(
            f" {shellquote('.' + mp['mp'])}" for key, mp in disks if key != "rootfs")
        comp = f" | {' '.join(shellquote(a) for a in self.compress)}" if self.compress else ""
        return f"set -o pipefail && {tar}{comp} >{shellquote(str(tmptar))}"

    def _notes_and_protection(self, log: GuestLog, vmid: int, guestname: str, target: Path) -> None:
        template = self.opts.get("notes-template")
        if template:
            log("info", "adding notes to backup")
            try:
                (target.parent / (target.name + ".notes")).write_text(
                    render_notes(template, guestname, self.node, vmid))
            except ValueError as exc:
                log("warn", f"unable to add notes - {exc}")
        if self.opts.get("protected"):
            log("info", "marking backup as protected")
            (target.parent / (target.name + ".protected")).touch()

    def _backups_of(self, vmid: int, vmtype: str = "lxc") -> list[dict[str, Any]]:
        # PVE::Storage::prune_backups with the guest type: only that type's archives of the VMID
        return [b for b in storage.list_backups(self.root, self.sid, vmid) if b.get("subtype") in (vmtype, "unknown")]

    def _check_backup_limit(self, vmid: int, vmtype: str = "lxc") -> None:
        limit = 0 if self.keep.get("keep-all") else sum(self.keep.values())
        if limit and not self.remove and not self.opts.get("protected"):
            count = sum(1 for b in self._backups_of(vmid, vmtype) if not b.get("protected"))
            if count >= limit:
                raise TaskError(f"There is a max backup limit of {limit} enforced by the target storage or the "
                                "vzdump parameters. Either increase the limit or delete old backups.")

    def _prune(self, log: GuestLog, vmid: int, vmtype: str = "lxc") -> None:
        log("info", f"prune older backups with retention: {prune.keep_string(self.keep)}")
        pruned = 0
        for entry in prune.mark([b for b in self._backups_of(vmid, vmtype) if "ctime" in b], self.keep):
            if entry["mark"] != "remove":
                continue
            pruned += 1
            log("info", f"removing backup '{entry['volid']}'")
            remove_archive(storage.backup_path(self.root, entry["volid"]))
        extra = " not covered by keep-retention policy" if pruned else ""
        log("info", f"pruned {pruned} backup(s){extra}")


def split_excludes(value: str) -> list[str]:
    # PVE's HTTP server joins repeated form fields with NUL; vzdump splits them again.
    return [p for p in str(value).split("\0") if p]


def findexcl(opts: dict[str, Any]) -> list[str]:
    """PVE::VZDump->new's findexcl: the job's exclude-path values, then the standard excludes."""
    paths = split_excludes(opts.get("exclude-path", ""))
    return paths + list(STD_EXCLUDE_PATHS) if int(opts.get("stdexcludes", 1)) else paths


def tar_excludes(paths: list[str], unprivileged: bool, mode: str) -> archive.Excludes:
    """PVE::VZDump::LXC::archive: '/x' patterns go anchored as './x', the others unanchored; an
    unprivileged CT's tar also skips every lost+found; suspend mode's rsync honours 'dir/'."""
    unanchored = (["lost+found"] if unprivileged else []) + [p for p in paths if not p.startswith("/")]
    return archive.Excludes(anchored=tuple("." + p for p in paths if p.startswith("/")),
                            unanchored=tuple(unanchored),
                            dirs_only=tuple(p.rstrip("/") for p in paths if p.endswith("/") and mode == "suspend"))


def render_notes(template: str, guestname: str, node: str, vmid: int) -> str:
    """PVE's notes-template: \\n and \\\\ escapes, {{cluster|guestname|node|vmid}} variables."""
    def unescape(m: re.Match[str]) -> str:
        if m.group(1) == "\\":
            return "\\"
        if m.group(1) == "n":
            return "\n"
        raise ValueError(f"unexpected escape character '{m.group(1)}'")

    text = re.sub(r"\\(.)", unescape, template)
    values = {"cluster": "", "guestname": guestname, "node": node, "vmid": str(vmid)}
    text = re.sub(r"\{\{(cluster|guestname|node|vmid)\}\}", lambda m: values[m.group(1)], text)
    m = re.search(r"\{\{([^\s]+)\}\}", text)
    if m:
        raise ValueError(f"unexpected variable name '{m.group(1)}'")
    return text


def remove_archive(path: Path) -> None:
    """PVE::Storage::archive_remove: refuses protected ones, takes .log and .notes along."""
    if path.with_name(path.name + ".protected").exists():
        raise TaskError(f"cannot remove protected archive '{path}'")
    path.unlink(missing_ok=True)
    info = storage.archive_info(path.name)
    if info:
        (path.parent / info["logfilename"]).unlink(missing_ok=True)
    path.with_name(path.name + ".notes").unlink(missing_ok=True)
