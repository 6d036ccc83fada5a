"""vzdump of a QEMU guest into a .vma archive: qemu-server's PVE/VZDump/QemuServer.pm (prepare, assemble,
archive_vma, qga_fs_freeze/thaw, $query_backup_status_loop) driven by pve-manager's PVE/VZDump.pm
exec_backup_task, whose job-level parts (lock, log file, notes, pruning) vzdump.Job shares."""

from __future__ import annotations

import math
import re
import subprocess
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

from . import layout, pctconf, qemu, qmconf, vma
from .errors import TaskError

if TYPE_CHECKING:
    from .vzdump import GuestFiles, GuestLog, Job

PROGRESS_STEPS = 4  # status lines while the data flows (real vzdump polls query-backup every second)
STEP_SECONDS = 0.15


def render_bytes(value: float, precision: int = 2) -> str:
    """PVE::Format::render_bytes."""
    units = ("B", "KiB", "MiB", "GiB", "TiB", "PiB")
    unit = 0
    if value > 1023:
        unit = int(math.log(value) / math.log(1024))
        value /= 1024**unit
    return f"{value:.{precision}f} {units[unit]}"


def render_duration(seconds: float) -> str:
    """PVE::Format::render_duration (without auto-limited accuracy)."""
    rest = round(seconds)
    if not rest:
        return "0s"
    parts = []
    for unit, length in (("w", 7 * 86400), ("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if rest // length > 0:
            parts.append(f"{rest // length}{unit}")
            rest -= rest // length * length
    return " ".join(parts)


def _mbps(nbytes: int, delta: int) -> str:
    # $query_backup_status_loop's $get_mbps
    return "0 B/s" if nbytes <= 0 else render_bytes(int(nbytes / delta), 1) + "/s"


@dataclass
class Disk:
    """One entry of $task->{disks} (PVE::VZDump::QemuServer::prepare)."""

    virtdev: str
    volid: str
    path: Path
    size: int
    storeid: str
    fmt: str = "raw"

    @property
    def qmdevice(self) -> str:
        return f"drive-{self.virtdev}"


@dataclass
class Progress:
    """query-backup's counters and the loop's last_* values."""

    target: int
    start: int = field(default_factory=lambda: int(time.time()))
    transferred: int = 0
    zero: int = 0
    last_time: int = 0
    last_percent: int = -1
    last_transferred: int = 0
    last_zero: int = 0

    def line(self) -> str:
        """The status line exactly as $query_backup_status_loop formats it (whole-second clock)."""
        now = int(time.time())
        percent = int(self.transferred * 100 / self.target) if self.target else 100
        rbytes = self.transferred - self.last_transferred
        wbytes = rbytes - (self.zero - self.last_zero)
        timediff = (now - (self.last_time or self.start)) or 1
        return (f"{percent:3d}% ({render_bytes(self.transferred, 1)} of {render_bytes(self.target, 1)}) in "
                f"{render_duration(now - self.start)}, read: {_mbps(rbytes, timediff)}, write: "
                f"{_mbps(wbytes, timediff)}")

    def printed(self) -> None:
        self.last_percent = int(self.transferred * 100 / self.target) if self.target else 100
        self.last_time, self.last_transferred, self.last_zero = int(time.time()), self.transferred, self.zero


class QemuBackup:
    """One guest's backup inside vzdump.Job._backup_guest; `cleanup` carries what Job._cleanup_guest undoes."""

    def __init__(self, job: Job, log: GuestLog, vmid: int, files: GuestFiles, cleanup: dict[str, Any]) -> None:
        self.job, self.log, self.vmid, self.files, self.cleanup = job, log, vmid, files, cleanup
        self.root, self.node = job.root, job.node
        self.disks: list[Disk] = []
        self.conf: dict[str, Any] = {}
        self.mode = "snapshot"
        self.was_running = False
        self.was_paused = False
        cleanup["qemu"] = True

    def run(self) -> None:
        """exec_backup_task from 'Starting Backup' to the archive's size line."""
        log, vmid = self.log, self.vmid
        log("info", f"Starting Backup of VM {vmid} (qemu)")
        log("info", "Backup started at " + time.strftime("%Y-%m-%d %H:%M:%S"), to_file=False)
        running = qemu.is_running(self.root, vmid)
        log("info", f"status = {'running' if running else 'stopped'}")
        qemu.set_lock(self.root, vmid, self.node, "backup")
        self.cleanup["unlock"] = True
        mode = self.job.opts.get("mode", "snapshot") if running else "stop"
        if mode == "snapshot":
            self._prepare()
        self.job._log_settings(log, mode)
        self.mode = mode
        if mode == "stop":
            self._prepare()
            if running:
                log("info", "stopping virtual guest")
                self.cleanup["vmstoptime"] = time.time()
                qemu.set_running(self.root, vmid, False)  # qm shutdown --skiplock --keepActive
                self.cleanup["restart"] = True
        elif mode == "suspend":
            self._prepare()
            log("info", "suspending guest")
            self.cleanup["vmstoptime"] = time.time()
            qemu.set_running(self.root, vmid, True, "paused")  # qm suspend --skiplock
            self.cleanup["resume"] = True
        config = self._assemble()
        log("info", f"creating vzdump archive '{self.files.target}'")
        self._archive_vma(config)
        self.files.tmptar.rename(self.files.target)

    def _prepare(self) -> None:
        """PVE::VZDump::QemuServer::prepare: 'VM Name', then include/exclude per disk
        (PVE::QemuConfig->get_backup_volumes: cdroms skipped silently, backup=0 excluded)."""
        conf = qemu.load(self.root, self.vmid, self.node)
        self.conf = conf
        state = qemu.read_state(self.root, self.vmid)
        self.was_running = state.get("status") == "running"
        self.was_paused = self.was_running and state.get("qmpstatus") == "paused"
        if conf.get("name") is not None:
            self.log("info", f"VM Name: {conf['name']}")
        self.disks = []
        for key, drive in qmconf.drives(conf):
            if qmconf.is_cdrom(drive):
                continue
            volid = str(drive.get("file", ""))
            if "backup" in drive and drive["backup"] in ("0", "no", "off", "false"):
                self.log("info", f"exclude disk '{key}' '{volid}' (backup=no)")
                continue
            text = f"include disk '{key}' '{volid}'"
            if drive.get("size") is not None:
                text += f" {pctconf.format_size(int(drive['size']))}"
            self.log("info", text)
            path = qemu.image_path(self.root, volid)
            if not path.is_file():
                raise TaskError(f"cannot determine size of volume '{volid}' - no such volume")
            self.disks.append(Disk(key, volid, path, path.stat().st_size, volid.split(":", 1)[0]))

    def _assemble(self) -> list[tuple[str, bytes]]:
        """PVE::VZDump::QemuServer::assemble: qemu-server.conf without snapshots, pending, unused disks,
        lock and parent, plus one '#qmdump#map' line per disk; the firewall config beside it."""
        text = qemu.load_text(self.root, self.vmid, self.node)
        out, section = [], False
        for line in text.splitlines(keepends=True):
            if line.startswith(("#vzdump#", "#qmdump#")):
                continue
            if re.match(r"^\[(.*)\]\s*$", line):
                section = True
            if section:
                continue
            m = re.match(r"^unused\d+:\s*(\S+)\s*", line)
            if m:
                self.log("info", f"skip unused drive '{m.group(1)}' (not included into backup)")
                continue
            if not line.startswith(("lock:", "parent:")):
                out.append(line)
        out += [f"#qmdump#map:{d.virtdev}:{d.qmdevice}:{d.storeid}:{d.fmt}:\n" for d in self.disks]
        if section:
            self.log("info", "snapshots found (not included into backup)")
        configs = [("qemu-server.conf", "".join(out).encode())]
        fw = layout.qemu_dir(self.root, self.vmid) / "firewall.fw"
        if fw.is_file():
            configs.append(("qemu-server.fw", fw.read_bytes()))
        return configs

    # -- archive_vma ------------------------------------------------------------------------------------

    def _archive_vma(self, configs: list[tuple[str, bytes]]) -> None:
        if not self.disks:
            self._diskless(configs)
            return
        self._enforce_running()
        err: str | None = None
        try:
            with self._output() as out:
                self._run_backup_job(configs, out)
        except TaskError as exc:
            err = str(exc)
            self.log("err", err)
            self.log("info", "aborting backup job")
            self._resume_after_job_start()
        self._restore_power_state()
        if err is not None:
            raise TaskError(err)

    def _diskless(self, configs: list[tuple[str, bytes]]) -> None:
        self.log("info", "backup contains no disks")
        conffile = self.files.tmpdir / "qemu-server.conf"
        conffile.write_bytes(configs[0][1])
        comp = " ".join(self.job.compress) if self.job.compress else "cat"
        self.log("info", "starting diskless backup")
        self.log("info", f"/usr/bin/vma create -v -c {conffile} exec:{comp} > {self.files.tmptar}")
        with self._output() as out:
            vma.write_vma(out, configs, [])

    def _enforce_running(self) -> None:
        """enforce_vm_running_for_backup: a stopped guest gets a paused ('prelaunch') QEMU for the job."""
        if qemu.is_running(self.root, self.vmid):
            self.was_running = True
            return
        self.log("info", "starting kvm to execute backup task")
        qemu.set_running(self.root, self.vmid, True, "prelaunch")

    def _output(self) -> _Output:
        return _Output(self.files.tmptar, self.job.compress)

    def _fs_freeze(self) -> bool:
        """qga_fs_freeze: only with the agent enabled, a guest that ran before the job and is not paused."""
        if not qmconf.agent_enabled(self.conf) or self.mode == "stop" or not self.was_running or self.was_paused:
            return False
        if qemu.read_state(self.root, self.vmid).get("qmpstatus") != "running":  # qga_check_running: no answer
            self.log("info", "skipping guest-agent 'fs-freeze', agent configured but not running?")
            return False
        if qmconf.agent_key(self.conf, "freeze-fs-on-backup") in ("0", "off", "no", "false"):
            self.log("info", "skipping guest-agent 'fs-freeze', disabled in VM options")
            return False
        self.log("info", "issuing guest-agent 'fs-freeze' command")
        return True

    def _run_backup_job(self, configs: list[tuple[str, bytes]], out: BinaryIO) -> None:
        """The QMP 'backup' command (pve-backup.c writing the VMA), started between fs-freeze and fs-thaw,
        then the status loop while the clusters flow."""
        writer = vma.VmaWriter(out)
        for name, data in configs:
            writer.add_config(name, data)
        ids = [(writer.register_stream(d.qmdevice, d.size), d) for d in self.disks]
        if self._fs_freeze():
            self.log("info", "issuing guest-agent 'fs-thaw' command")
        self.log("info", f"started backup task '{uuid.UUID(bytes=writer.uuid)}'")
        self._resume_after_job_start()
        progress = Progress(sum(d.size for d in self.disks))
        self._stream(writer, ids, progress)
        writer.close()
        self._final_lines(progress)

    def _stream(self, writer: vma.VmaWriter, ids: list[tuple[int, Disk]], progress: Progress) -> None:
        faults = layout.read_faults(self.root)
        fail = _fault_for(faults, "vzdump_fail", self.vmid)
        total = sum(writer.streams[dev_id].cluster_count for dev_id, _d in ids)
        marks = {max(1, total * step // PROGRESS_STEPS) for step in range(1, PROGRESS_STEPS)}
        delay = float(faults.get("task_delay_seconds", 0)) + STEP_SECONDS * (PROGRESS_STEPS - 1)
        done = 0
        for dev_id, disk in ids:
            with disk.path.open("rb") as image:
                for cluster_num in range(writer.streams[dev_id].cluster_count):
                    buf = image.read(vma.CLUSTER_SIZE)
                    transferred, zero = writer.write_cluster(dev_id, cluster_num, buf if buf.strip(b"\0") else None)
                    progress.transferred += transferred
                    progress.zero += zero
                    done += 1
                    if done in marks:
                        self.log.w.sleep(delay / len(marks))
                        self._status_line(progress)
                        if fail:
                            raise TaskError(f"vma_queue_write: write error - {fail}")
            writer.close_stream(dev_id)

    def _status_line(self, progress: Progress) -> None:
        # the real loop prints when the percentage changed and more than 2 s passed; the fake compresses time
        percent = int(progress.transferred * 100 / progress.target) if progress.target else 100
        if percent != progress.last_percent:
            self.log("info", progress.line())
            progress.printed()

    def _final_lines(self, progress: Progress) -> None:
        """The loop's last round (status 'done') and its summary lines."""
        if progress.last_percent < 100:
            self.log("info", progress.line())
        duration = int(time.time()) - progress.start
        if progress.zero:
            zero_per = int(progress.zero * 100 / progress.target) if progress.target else 0
            self.log("info", f"backup is sparse: {render_bytes(progress.zero)} ({zero_per}%) total zero data")
        if progress.transferred:
            done = render_bytes(progress.transferred)
            if duration:
                self.log("info", f"transferred {done} in {duration} seconds ({_mbps(progress.transferred, duration)})")
            else:
                self.log("info", f"transferred {done} in <1 seconds")

    def _resume_after_job_start(self) -> None:
        """resume_vm_after_job_start: a guest that was running runs on once the job has started."""
        if not self.was_running or self.was_paused:
            return
        stoptime = self.cleanup.get("vmstoptime")
        if stoptime is not None:
            self.cleanup["vmstoptime"] = None  # avoid printing 'online after ..' twice
            self.log("info", f"resuming VM again after {int(time.time()) - int(stoptime)} seconds")
        else:
            self.log("info", "resuming VM again")
        qemu.set_running(self.root, self.vmid, True)

    def _restore_power_state(self) -> None:
        """restore_vm_power_state: a QEMU started only for the backup stops again."""
        if self.was_running:
            return
        if qemu.read_state(self.root, self.vmid).get("qmpstatus") == "prelaunch":
            self.log("info", "stopping kvm after backup task")
            qemu.set_running(self.root, self.vmid, False)
        else:
            self.log("info", "kvm status changed after backup ('running') - keep VM running")


class _Output:
    """The archive file, through the compressor when one is configured ($fork_compressor_pipe)."""

    def __init__(self, path: Path, compress: list[str]) -> None:
        self.path, self.compress = path, compress
        self.fh: BinaryIO | None = None
        self.proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> BinaryIO:
        self.fh = self.path.open("wb")
        if not self.compress:
            return self.fh
        self.proc = subprocess.Popen(self.compress, stdin=subprocess.PIPE, stdout=self.fh)
        assert self.proc.stdin is not None
        return self.proc.stdin  # type: ignore[return-value]

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if self.proc is not None:
            assert self.proc.stdin is not None
            if exc_type is not None:
                self.proc.kill()
            self.proc.stdin.close()
            code = self.proc.wait()
            if code and exc_type is None:
                assert self.fh is not None
                self.fh.close()
                raise TaskError(f"{self.compress[0]} failed - wrong exit status {code}")
        assert self.fh is not None
        self.fh.close()


def cleanup(job: Job, log: GuestLog, vmid: int, flags: dict[str, Any]) -> None:
    """exec_backup_task's clean-up for a QEMU guest: unlock, then resume or restart what the backup
    stopped, and 'guest is online again' only if resume_vm_after_job_start did not report it already."""
    from .vzdump import online_again

    if flags.get("unlock"):
        try:
            qemu.remove_lock(job.root, vmid, job.node, "backup")
        except TaskError as exc:
            log.w.warn_raw(str(exc))
    if not (flags.get("resume") or flags.get("restart")):
        return
    if flags.get("resume"):
        log("info", "resume vm")
        qemu.set_running(job.root, vmid, True)  # qm resume --skiplock
    elif not qemu.is_running(job.root, vmid):
        log("info", "restarting vm")
        qemu.set_running(job.root, vmid, True)  # qm start --skiplock
    if flags.get("vmstoptime") is not None:
        log("info", online_again(flags["vmstoptime"]))


def _fault_for(faults: dict[str, Any], key: str, vmid: int) -> str | None:
    value = faults.get(key)
    if isinstance(value, dict):
        value = value.get(str(vmid))
    return str(value) if value else None
