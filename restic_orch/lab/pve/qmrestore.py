"""POST /nodes/{node}/qemu with 'archive': the qmrestore task, after qemu-server's PVE/API2/Qemu.pm
create_vm and PVE/QemuServer.pm restore_file_archive / restore_vma_archive / restore_update_config_line."""

from __future__ import annotations

import os
import re
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO

from . import access, config_perms, layout, qemu, qmconf, storage, vma
from .api_storage import check_volume_access
from .app import Ctx
from .errors import ApiError, ParamError, TaskError
from .schema import BOOL, NODE, STORAGE_OPT, VMID, Prop, schema
from .tasks import Worker

_CONFIG_PROPS: dict[str, Prop] = {
    "name": Prop(format="dns-name"), "memory": Prop(), "cores": Prop(type="integer", minimum=1),
    "sockets": Prop(type="integer", minimum=1), "description": Prop(max_length=8192), "onboot": BOOL,
    "tags": Prop(), "protection": BOOL, "agent": Prop(), "ostype": Prop(), "boot": Prop(),
}
DRIVE_KEY = r"(ide|sata|scsi|virtio|efidisk|tpmstate)\d+"

SCHEMA = schema({
    "node": NODE, "vmid": VMID, "archive": Prop(max_length=255), "storage": STORAGE_OPT,
    "force": Prop(type="boolean", requires="archive"), "unique": Prop(type="boolean", requires="archive"),
    "live-restore": BOOL, "pool": Prop(), "bwlimit": Prop(type="integer", minimum=0), "start": BOOL,
    **_CONFIG_PROPS,
}, patterns=((r"net\d+", Prop()), (DRIVE_KEY, Prop()), (r"unused\d+", Prop())))

_OPTIONS = ("node", "vmid", "archive", "storage", "force", "unique", "live-restore", "pool", "bwlimit", "start")
_DECOMPRESS = {"zst": ["zstd", "-q", "-d", "-c"], "gz": ["pigz", "-dc"], "lzo": ["lzop", "-d", "-c", "-"]}


def start(ctx: Ctx, p: dict[str, Any]) -> str:
    """The synchronous part of create_vm for a restore: permissions, archive access, create_and_lock_config."""
    root, node, vmid = ctx.root, ctx.node, int(p["vmid"])
    archive, force = p.get("archive"), bool(p.get("force"))
    if p.get("storage"):
        ctx.check(f"/storage/{p['storage']}", "Datastore.AllocateSpace")
    if p.get("pool"):
        raise TaskError(f"pool '{p['pool']}' does not exist")
    if not (ctx.check(f"/vms/{vmid}", "VM.Allocate", noerr=True)
            or (archive and force and qemu.exists(root, vmid) and ctx.check(f"/vms/{vmid}", "VM.Backup", noerr=True))):
        raise ApiError(403, "Permission check failed\n")  # raise_perm_exc() without a path
    if not archive:
        raise TaskError(f"unable to create VM {vmid} - this fake node only supports restoring backups")
    for key in sorted(p):
        if re.fullmatch(DRIVE_KEY, key):
            raise ParamError({key: "option conflicts with option 'archive'"})
    if archive == "-":
        raise TaskError("pipe requires cli environment")
    if ":" not in archive:
        if not ctx.is_root:
            raise TaskError("Only root can pass arbitrary filesystem paths. at /usr/share/perl5/PVE/Storage.pm "
                            "line 582.")
        raise TaskError("restoring from absolute paths is not supported by the fake node")
    check_volume_access(ctx, archive, vmid, "backup")
    # the keys left beside the archive override the backed-up config (restore_merge_config), each checked as
    # an edit of that option first (Qemu.pm create_vm -> $check_vm_modify_config_perm: onboot is VM.Config.Options)
    overrides = {k: str(v) for k, v in p.items() if k not in _OPTIONS}
    config_perms.check_qemu_options(ctx, vmid, overrides)
    _check_bridges(ctx.root, ctx.user, overrides)
    for key in [k for k in overrides if re.fullmatch(r"net\d+", k)]:  # add_random_macs
        net = qmconf.parse_net(overrides[key])
        net.setdefault("macaddr", qmconf.random_mac())
        overrides[key] = qmconf.print_net(net)
    _create_and_lock_config(root, node, vmid, force)
    job = RestoreJob(ctx, p, vmid, archive, overrides)
    return ctx.tasks.spawn("qmrestore", str(vmid), ctx.user, job.run)


def _create_and_lock_config(root: Path, node: str, vmid: int, force: bool) -> None:
    """PVE::AbstractConfig->create_and_lock_config: the VMID unused (PVE::Cluster::check_vmid_unused, an
    existing VM allowed with force), not locked, then a config holding only 'lock: create'."""
    emsg = f"unable to restore VM {vmid} -"
    with qemu.config_lock(root, vmid):
        existed = qemu.exists(root, vmid)
        if vmid in layout.list_vmids(root):
            raise TaskError(f"{emsg} CT {vmid} already exists on node '{node}'")
        if qemu.exists(root, vmid) and not force:
            raise TaskError(f"{emsg} VM {vmid} already exists on node '{node}'")
        conf = qemu.load(root, vmid, node) if qemu.exists(root, vmid) else {}
        try:
            qemu.check_lock(conf)
        except TaskError as exc:
            raise TaskError(f"{emsg} {exc}") from None
        conf["lock"] = "create"
        qemu.write(root, vmid, conf)
        if not existed:
            qemu.set_running(root, vmid, False)


def _check_bridges(root: Path, user: str, conf: dict[str, Any]) -> None:
    """PVE::QemuServer::check_bridge_access: SDN.Use on each netN's bridge (zone 'localnetwork' for plain
    Linux bridges, the VLAN tag as a further level), via PVE::GuestHelpers::check_vnet_access."""
    if user == access.ROOT:
        return
    for key in sorted(k for k in conf if re.fullmatch(r"net\d+", k)):
        net = qmconf.parse_net(str(conf[key]))
        path = f"/sdn/zones/localnetwork/{net.get('bridge', '')}" + (f"/{net['tag']}" if net.get("tag") else "")
        try:
            access.check(root, user, path, ("SDN.Use",))
        except ApiError as exc:
            raise TaskError(exc.message.rstrip("\n")) from None


@contextmanager
def _stream(path: Path, comp: str | None) -> Iterator[BinaryIO]:
    """The archive's VMA stream, through the decompressor PVE::Storage::decompressor_info names."""
    if not comp:
        with path.open("rb") as fh:
            yield fh
        return
    proc = subprocess.Popen([*_DECOMPRESS[comp], str(path)], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    assert proc.stdout is not None
    try:
        yield proc.stdout  # type: ignore[misc]
    finally:
        proc.stdout.close()
        proc.kill()
        proc.wait()


def _ctime(epoch: int) -> str:
    """ctime(3), as vma's print_content writes the archive's CTIME line."""
    return time.strftime("%a %b ", time.localtime(epoch)) + f"{time.localtime(epoch).tm_mday:2d}" + \
        time.strftime(" %H:%M:%S %Y", time.localtime(epoch))


class RestoreJob:
    def __init__(self, ctx: Ctx, p: dict[str, Any], vmid: int, volid: str, overrides: dict[str, str]) -> None:
        self.root, self.node, self.user, self.tasks = ctx.root, ctx.node, ctx.user, ctx.tasks
        self.p, self.vmid, self.volid, self.overrides = p, vmid, volid, overrides
        self.emsg = f"unable to restore VM {vmid} -"
        self.restored_data = False
        self.allocated: dict[str, str] = {}  # virtdev -> new volid

    def run(self, w: Worker) -> None:
        """create_vm's qmrestore worker: on failure drop the 'create' lock, say what is left, die."""
        try:
            self._restorefn(w)
        except (TaskError, ApiError) as exc:
            try:
                qemu.remove_lock(self.root, self.vmid, self.node, "create")
            except TaskError as lock_exc:
                w.warn_raw(str(lock_exc))
            if self.restored_data:
                w.warn_raw("error after data was restored, VM disks should be OK but config may require adaptions. "
                           f"VM {self.vmid} state is NOT cleaned up.")
            else:
                w.warn_raw("error before or during data restore, some or all disks were not completely restored. "
                           f"VM {self.vmid} state is NOT cleaned up.")
            raise TaskError(exc.message.rstrip("\n") if isinstance(exc, ApiError) else str(exc)) from exc
        if self.p.get("start"):
            from .api_qemu import vm_start

            w.print("Execute autostart")
            vm_start(Ctx(self.root, self.node, self.tasks, self.user), {"node": self.node, "vmid": self.vmid})

    def _restorefn(self, w: Worker) -> None:
        conf = qemu.load(self.root, self.vmid, self.node)
        if conf.get("protection") == "1":
            raise TaskError(f"{self.emsg} protection mode enabled")  # PVE::AbstractConfig->check_protection
        if qemu.is_running(self.root, self.vmid):
            raise TaskError(f"{self.emsg} vm is running")
        with qemu.config_lock(self.root, self.vmid):
            path = storage.backup_path(self.root, self.volid)
            info = storage.archive_info(path.name)
            comp = info["format"].partition(".")[2] if info else ""
            try:  # best effort, the real check follows the restore
                with _stream(path, comp) as src:
                    header = vma.read_header(src)
                backed_up = qmconf.parse(header.configs["qemu-server.conf"].decode())
            except (vma.VmaError, OSError, KeyError) as exc:
                w.warn_raw(f"Could not extract backed up config: {exc}")
                w.warn_raw("Skipping early checks!")
            else:
                _check_bridges(self.root, self.user, {**backed_up, **self.overrides})
            self._restore_vma(w, path, comp)
            self.restored_data = True

    def _restore_vma(self, w: Worker, path: Path, comp: str) -> None:
        """restore_vma_archive: `vma extract` reads the header, the devmap allocates the disks, the data
        follows; on failure the new volumes go again."""
        pid = os.getpid()
        tmpdir, fifo = f"/var/tmp/vzdumptmp{pid}", f"/var/tmp/vzdumptmp{pid}.fifo"  # noqa: S108 - log text
        cmd = f"vma extract -v -r {fifo} {'-' if comp else path} {tmpdir}"
        if comp:
            cmd = " ".join(_DECOMPRESS[comp]) + f" {path} | {cmd}"
        w.print(f"restore vma archive: {cmd}")
        oldconf = qemu.load(self.root, self.vmid, self.node)
        try:
            with _stream(path, comp) as src:
                new_raw = self._extract(w, src, oldconf)
        except (vma.VmaError, OSError) as exc:
            w.print(f"** (process:{pid}): ERROR **: {time.strftime('%H:%M:%S')}.000: {_vma_error(exc)}")
            self._destroy_new_volumes(w)
            raise TaskError(f"command 'set -o pipefail && {cmd}' failed: exit code 133") from exc
        except TaskError:
            self._destroy_new_volumes(w)
            raise
        new_conf = qmconf.parse(new_raw)
        new_conf.update(self.overrides)  # restore_merge_config
        _check_bridges(self.root, self.user, new_conf)
        qemu.write(self.root, self.vmid, new_conf)
        w.print("rescan volumes...")
        self._rescan(new_conf)

    def _extract(self, w: Worker, src: BinaryIO, oldconf: dict[str, Any]) -> str:
        header = vma.read_header(src)
        for name, data in header.configs.items():
            w.print(f"CFG: size: {len(data)} name: {name}")
        for dev in header.devices.values():
            w.print(f"DEV: dev_id={dev.dev_id} size: {dev.size} devname: {dev.devname}")
        w.print(f"CTIME: {_ctime(header.ctime)}")
        raw, targets = self._devmap(w, header, oldconf)
        _Progress(w, header, set(targets)).run(src, targets)
        return raw

    def _devmap(self, w: Worker, header: vma.VmaHeader, oldconf: dict[str, Any]) -> tuple[str, dict[str, Path]]:
        """$print_devmap: parse the '#qmdump#map' hints, free the overwritten VM's disks, allocate the new
        ones and rewrite the config lines."""
        if "qemu-server.conf" not in header.configs:
            raise TaskError("unable to read qemu-server.conf - No such file or directory")
        text = header.configs["qemu-server.conf"].decode()
        if "qemu-server.fw" in header.configs:
            (layout.qemu_dir(self.root, self.vmid) / "firewall.fw").write_bytes(header.configs["qemu-server.fw"])
        hints = self._backup_hints(header, text)
        mapped = {h["devname"] for h in hints.values()}
        for dev in header.devices.values():
            if dev.devname not in mapped:
                raise TaskError(f"found no device mapping information for device '{dev.devname}'")
        if oldconf:  # cfs_read_file: also the new VM's {lock: create}
            qemu.write(self.root, self.vmid, {"memory": "128"})
            for key, drive in qmconf.drives(oldconf):
                volid = str(drive.get("file", ""))
                if key in hints and ":" in volid and qemu.volume_owner(volid) == self.vmid:
                    qemu.free_image(self.root, volid)
        targets: dict[str, Path] = {}
        for virtdev in sorted(hints):
            hint = hints[virtdev]
            volid = qemu.alloc_image(self.root, hint["storeid"], self.vmid, -(-hint["size"] // 1024))
            w.print(f"new volume ID is '{volid}'")
            self.allocated[virtdev] = volid
        for virtdev in sorted(hints):
            target = qemu.image_path(self.root, self.allocated[virtdev])
            w.print(f"map '{hints[virtdev]['devname']}' to '{target}' (write zeros = 0)")
            targets[hints[virtdev]["devname"]] = target
        unique = bool(self.p.get("unique"))
        return "".join(update_config_line(line, self.allocated, unique) for line in text.splitlines(True)), targets

    def _backup_hints(self, header: vma.VmaHeader, text: str) -> dict[str, dict[str, Any]]:
        """$parse_backup_hints: the target storage (parameter, else the backed-up one, else 'local') must hold
        images and the caller needs Datastore.AllocateSpace on it."""
        sizes = {d.devname: d.size for d in header.devices.values()}
        hints: dict[str, dict[str, Any]] = {}
        for line in text.splitlines():
            m = re.match(r"^#qmdump#map:(\S+):(\S+):(\S*):(\S*):$", line)
            if not m:
                continue
            virtdev, devname, storeid = m.group(1), m.group(2), m.group(3)
            if devname not in sizes:
                raise TaskError(f"archive does not contain data for drive '{virtdev}'")
            storeid = (self.p.get("storage") or "local") if "storage" in self.p else (storeid or "local")
            scfg = storage.config(self.root, storeid)
            if "images" not in layout.content_set(scfg):
                raise TaskError(f"Content type 'images' is not available on storage '{storeid}'")
            if self.user != access.ROOT:
                access.check(self.root, self.user, f"/storage/{storeid}", ("Datastore.AllocateSpace",))
            hints[virtdev] = {"devname": devname, "storeid": storeid, "size": sizes[devname]}
        return hints

    def _destroy_new_volumes(self, w: Worker) -> None:
        for volid in self.allocated.values():
            qemu.free_image(self.root, volid)
            w.print(f"temporary volume '{volid}' successfully removed")

    def _rescan(self, conf: dict[str, Any]) -> None:
        """PVE::QemuServer::rescan: images of the VM the config does not reference become unusedN."""
        referenced = {str(d.get("file")) for _k, d in qmconf.drives(conf)}
        free = (f"unused{i}" for i in range(256) if f"unused{i}" not in conf)
        changed = False
        for volid in qemu.owned_volumes(self.root, self.vmid):
            if volid not in referenced and volid not in conf.values():
                conf[next(free)] = volid
                changed = True
        if changed:
            qemu.write(self.root, self.vmid, conf)


def _vma_error(exc: Exception) -> str:
    """vma extract's g_error text: reader errors come after 'restore failed - ' unless the header failed."""
    msg = str(exc)
    header_errors = ("not a vma file", "wrong vma header", "can't read vma header", "wrong vma version",
                     "wrong vma blob", "vma contains invalid")
    return msg if msg.startswith(header_errors) else f"restore failed - {msg}"


def update_config_line(line: str, mapping: dict[str, str], unique: bool) -> str:
    """PVE::QemuServer::restore_update_config_line."""
    if re.match(r"^(#qmdump#|#vzdump#|lock:|unused\d+:|parent:)", line):
        return ""
    m = re.match(r"^(net\d+):\s*(\S+)\s*$", line)
    if m and unique:
        net = qmconf.parse_net(m.group(2))
        if net.get("macaddr"):
            net["macaddr"] = qmconf.random_mac()
        return f"{m.group(1)}: {qmconf.print_net(net)}\n"
    m = re.match(rf"^({DRIVE_KEY}):\s*(\S+)\s*$", line)
    if m:
        drive = qmconf.parse_drive(m.group(3))
        if drive.get("backup") in ("0", "no", "off", "false"):
            return f"#{line}"
        if m.group(1) in mapping:
            drive.pop("format", None)  # format can change on restore
            drive["file"] = mapping[m.group(1)]
            return f"{m.group(1)}: {qmconf.print_drive(drive)}\n"
        return line
    m = re.match(r"^vmgenid: (.*)", line)
    if m:  # a valid vmgenid is always regenerated
        return f"vmgenid: {qmconf.new_uuid() if m.group(1) != '0' else '0'}\n"
    m = re.match(r"^(smbios1: )(.*)", line)
    if m and unique:
        _first, props = qmconf.parse_props(m.group(2), "uuid")
        props["uuid"] = qmconf.new_uuid()
        return m.group(1) + qmconf.print_smbios1(props) + "\n"
    return line


class _Progress:
    """vma-reader.c's verbose restore output: 'progress N%' per changed percentage, then the totals."""

    def __init__(self, w: Worker, header: vma.VmaHeader, names: set[str]) -> None:
        self.w, self.header, self.start = w, header, int(time.time())
        self.count = sum(d.size // vma.CLUSTER_SIZE for d in header.devices.values() if d.devname in names)
        self.read = self.zero = self.partial = 0
        self.percent = 0

    def cluster(self, device: vma.Device, cluster_num: int, mask: int) -> None:
        self.read += 1
        percent = self.read * 100 // self.count if self.count else 100
        if percent != self.percent:
            self.w.print(f"progress {percent}% (read {self.read * vma.CLUSTER_SIZE} bytes, duration "
                         f"{int(time.time()) - self.start} sec)")
            self.percent = percent
        for j in range(vma.BLOCKS_PER_CLUSTER):
            offset = cluster_num * vma.CLUSTER_SIZE + j * vma.BLOCK_SIZE
            if not mask & (1 << j) and offset < device.size:
                size = (min(offset + vma.BLOCK_SIZE, device.size) - offset) // 512 * 512
                self.zero += size
                self.partial += size if mask else 0

    def run(self, src: BinaryIO, targets: dict[str, Path]) -> None:
        vma.extract(src, targets, self.header, self.cluster)
        total = self.read * vma.CLUSTER_SIZE
        if not self.read:
            self.w.print("vma archive contains no image data")
            return
        self.w.print(f"total bytes read {total}, sparse bytes {self.zero} ({100.0 * self.zero / total:.3g}%)")
        if total - self.zero:
            self.w.print(f"space reduction due to 4K zero blocks {100.0 * self.partial / (total - self.zero):.3g}%")
