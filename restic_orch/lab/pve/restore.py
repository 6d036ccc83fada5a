"""POST /nodes/{node}/lxc with restore=1: the vzrestore task, after PVE::API2::LXC and LXC::Create."""

from __future__ import annotations

import os
import random
import re
import shutil
import tarfile
import time
from pathlib import Path
from typing import Any

from . import access, archive, config_perms, containers, layout, pctconf, storage
from .api_storage import check_volume_access
from .app import Ctx
from .errors import ApiError, ParamError, TaskError
from .rootfs import volume_dir
from .schema import BOOL, NODE, STORAGE_OPT, VMID, Prop, schema
from .tasks import Worker

_CT_PROPS: dict[str, Prop] = {
    "arch": Prop(enum=("amd64", "i386", "arm64", "armhf", "riscv32", "riscv64")),
    "cmode": Prop(enum=("shell", "console", "tty")),
    "console": BOOL, "cores": Prop(type="integer", minimum=1, maximum=8192),
    "cpulimit": Prop(type="number", minimum=0, maximum=8192),
    "cpuunits": Prop(type="integer", minimum=0, maximum=500000),
    "debug": BOOL, "description": Prop(max_length=8192), "features": Prop(), "hookscript": Prop(),
    "hostname": Prop(format="dns-name", max_length=255), "memory": Prop(type="integer", minimum=16),
    "nameserver": Prop(), "onboot": BOOL,
    "ostype": Prop(enum=("debian", "devuan", "ubuntu", "centos", "fedora", "opensuse", "archlinux", "alpine",
                         "gentoo", "nixos", "unmanaged")),
    "protection": BOOL, "rootfs": Prop(), "searchdomain": Prop(), "startup": Prop(),
    "swap": Prop(type="integer", minimum=0), "tags": Prop(), "template": BOOL, "timezone": Prop(),
    "tty": Prop(type="integer", minimum=0, maximum=6), "unprivileged": BOOL,
}

SCHEMA = schema({
    "node": NODE, "vmid": VMID, "ostemplate": Prop(optional=False, max_length=255),
    "password": Prop(min_length=5), "storage": STORAGE_OPT, "force": BOOL, "restore": BOOL,
    "unique": Prop(type="boolean", requires="restore"), "pool": Prop(), "ignore-unpack-errors": BOOL,
    "ssh-public-keys": Prop(), "bwlimit": Prop(type="number", minimum=0), "start": BOOL, "ha-managed": BOOL,
    **_CT_PROPS,
}, patterns=((r"net\d+", Prop()), (r"mp\d+", Prop()), (r"unused\d+", Prop()), (r"dev\d+", Prop())))

# The parameters create_vm extracts before check_ct_modify_config_perm sees the rest.
_EXTRACTED = ("node", "vmid", "ignore-unpack-errors", "bwlimit", "start", "ha-managed", "unprivileged", "restore",
              "unique", "force", "password", "ssh-public-keys", "pool", "ostemplate", "storage")
# Keys never taken over from the backed-up config (PVE's sanitize_and_merge_config).
_NOT_RESTORED = ("digest", "rootfs", "snapshots", "unprivileged", "parent", "template", "lock")


def start(ctx: Ctx, p: dict[str, Any]) -> str:
    """The synchronous part of pve-container PVE/API2/LXC.pm create_vm for a restore."""
    root, node, user, tasks = ctx.root, ctx.node, ctx.user, ctx.tasks
    vmid = int(p["vmid"])
    restore = bool(p.get("restore"))
    force = bool(p.get("force"))
    same_exists = containers.exists(root, vmid)
    if not restore:
        raise TaskError("unable to create CT {vmid} - this fake node only supports restoring backups")
    if not (same_exists and force):
        if same_exists:
            raise TaskError(f"CT {vmid} already exists on node '{node}'")
        if layout.qemu_dir(root, vmid).joinpath("qemu-server.conf").is_file():  # PVE::Cluster::check_vmid_unused
            raise TaskError(f"VM {vmid} already exists on node '{node}'")
    else:
        if containers.is_running(root, vmid):
            raise TaskError("can't overwrite running container")
        if containers.load(root, vmid, node).get("protection") == "1":
            raise TaskError(f"unable to restore CT {vmid} - protection mode enabled")
    # create_vm: VM.Allocate, or VM.Backup when overwriting an existing CT; else a bare raise_perm_exc()
    if not (ctx.check(f"/vms/{vmid}", "VM.Allocate", noerr=True)
            or (same_exists and force and ctx.check(f"/vms/{vmid}", "VM.Backup", noerr=True))):
        raise ApiError(403, "Permission check failed\n")
    # then every config key given beside the archive (e.g. onboot=0), before the archive is looked at
    given = {k: v for k, v in p.items() if k not in _EXTRACTED}
    config_perms.check_ct_options(ctx, vmid, given, bool(p.get("unprivileged")))
    archive_volid = p["ostemplate"]
    if archive_volid == "-":
        raise TaskError("pipe requires cli environment")
    if ":" not in archive_volid:
        if user != "root@pam":
            # PVE dies without a newline here, so Perl appends the source location.
            raise TaskError("Only root can pass arbitrary filesystem paths. "
                            "at /usr/share/perl5/PVE/Storage.pm line 613.")
        raise TaskError("restoring from absolute paths is not supported by the fake node")
    vtype, _volname, _owner = storage.parse_volname(root, archive_volid)
    if vtype != "backup":
        raise TaskError(f"unable to use volume {archive_volid} - content type needs to be 'backup'")
    check_volume_access(ctx, archive_volid, vmid)
    target_sid = p.get("storage", "local")
    scfg = storage.config(root, target_sid)
    if "rootdir" not in layout.content_set(scfg):
        raise ParamError({"storage": f"storage '{target_sid}' does not support container directories"})
    ctx.check(f"/storage/{target_sid}", "Datastore.AllocateSpace")  # create_vm check_and_activate_storage
    with containers.config_lock(root, vmid):
        if same_exists:
            try:
                containers.check_lock(containers.load(root, vmid, node))
            except TaskError as exc:
                raise TaskError(f"unable to restore CT {vmid} - {exc}") from None
            containers.set_lock(root, vmid, node, "create")
        else:
            containers.write(root, vmid, {"lock": "create"})
            containers.set_running(root, vmid, False)
    job = RestoreJob(root, node, user, tasks, p, vmid, archive_volid, target_sid, same_exists)
    return tasks.spawn("vzrestore", str(vmid), user, job.run)


class RestoreJob:
    def __init__(self, root: Path, node: str, user: str, tasks: Any, p: dict[str, Any], vmid: int, volid: str,
                 sid: str, same_exists: bool) -> None:
        self.root, self.node, self.user, self.tasks, self.p = root, node, user, tasks, p
        self.vmid, self.volid, self.sid, self.same_exists = vmid, volid, sid, same_exists
        # Existing CT: until its volumes are touched a failure only drops the 'create' lock.
        self.destroy_config_on_error = not same_exists

    def run(self, w: Worker) -> None:
        try:
            self._restore(w)
        except (TaskError, archive.ArchiveError, OSError) as exc:
            if self.destroy_config_on_error:
                containers.destroy(self.root, self.vmid)
            else:
                try:
                    containers.remove_lock(self.root, self.vmid, self.node, "create")
                except TaskError:
                    pass
            raise TaskError(f"unable to restore CT {self.vmid} - {exc}") from exc
        if self.p.get("start"):
            from .api_lxc import spawn_start

            spawn_start(self.root, self.node, self.user, self.tasks, self.vmid)

    def _restore(self, w: Worker) -> None:
        root, vmid = self.root, self.vmid
        faults = layout.read_faults(root)
        path, orig = self._recover_config(w)
        volumes, delayed = self._recovered_volumes(w, orig)
        w.sleep(float(faults.get("task_delay_seconds", 0)))
        old_conf = containers.load(root, vmid, self.node)
        self.destroy_config_on_error = True
        scfg = storage.config(root, self.sid)
        disks = self._create_disks(scfg, old_conf, volumes)
        conf = self._given_config(orig, disks)
        staging = layout.ct_dir(root, vmid) / "rootfs.restoring"
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        shift = 100000 if conf.get("unprivileged") == "1" and os.geteuid() == 0 else 0
        _extract(w, self.volid, path, staging, shift, faults.get("restore_fail"))
        staged = self._split_mountpoints(staging, disks, shift)
        # Swap in the new volumes only now: the old volumes are destroyed after the new exist.
        rootfs = layout.rootfs_dir(root, vmid)
        shutil.rmtree(rootfs, ignore_errors=True)
        os.rename(staging, rootfs)
        self._swap_mountpoints(old_conf, staged)
        conf["arch"] = conf.get("arch") or _detect_arch(w, rootfs)
        w.print("merging backed-up and given configuration..")
        self._merge(conf, orig, rootfs)
        conf.setdefault("hostname", f"CT{vmid}")
        conf.setdefault("memory", "512")
        conf.setdefault("swap", "512")
        conf.update(delayed)
        containers.write(root, vmid, conf)
        containers.set_running(root, vmid, False)

    def _recover_config(self, w: Worker) -> tuple[Path, dict[str, Any]]:
        """The archive's path and the configuration backed up in it, checked as create_vm does before
        any disk is made."""
        if containers.is_running(self.root, self.vmid):
            raise TaskError("can't overwrite running container")
        w.print(f"recovering backed-up configuration from '{self.volid}'")
        path = storage.backup_path(self.root, self.volid)
        raw, _member = archive.read_config(path)
        orig = pctconf.parse(raw)
        self._check_bridges(orig)
        orig_rootfs = pctconf.parse_mountpoint(orig.get("rootfs", ""))
        if not orig_rootfs.get("volume"):
            raise TaskError("rootfs configuration could not be recovered, please check and specify manually!")
        if not orig_rootfs.get("size"):
            raise TaskError("unable to detect disk size - please specify rootfs (size)")
        return path, orig

    def _given_config(self, orig: dict[str, Any], disks: dict[str, str]) -> dict[str, Any]:
        """The new config before the merge: the container options given as parameters, 'unprivileged'
        (given, else backed up) and the new volumes."""
        conf: dict[str, Any] = {k: str(v) for k, v in self.p.items()
                                if (k in _CT_PROPS or re.fullmatch(r"net\d+", k)) and k != "rootfs"}
        unpriv = self.p.get("unprivileged", orig.get("unprivileged"))
        if unpriv is not None:
            conf["unprivileged"] = str(unpriv)
        conf.update(disks)
        return conf

    def _check_bridges(self, orig: dict[str, Any]) -> None:
        """create_vm's early check (before disks are made): SDN.Use on the bridge of every restored netN
        not given as a parameter (PVE::LXC check_bridge_access -> PVE::GuestHelpers check_vnet_access;
        plain Linux bridges live in the zone 'localnetwork', a VLAN tag adds its own path level)."""
        if self.user == access.ROOT:
            return
        for key, value in orig.items():
            if re.fullmatch(r"net\d+", key) and key not in self.p:
                net = pctconf.parse_network(value)
                path = f"/sdn/zones/localnetwork/{net.get('bridge', '')}" + (f"/{net['tag']}" if net.get("tag") else "")
                try:
                    access.check(self.root, self.user, path, ("SDN.Use",))
                except ApiError as exc:
                    raise TaskError(exc.message.rstrip("\n")) from None

    def _merge(self, conf: dict[str, Any], orig: dict[str, Any], rootfs: Path) -> None:
        for key, value in orig.items():
            if key in _NOT_RESTORED or re.fullmatch(r"(mp|unused)\d+", key):
                continue
            if key == "lxc":
                continue  # raw lxc keys are only restored for root@pam
            if self.p.get("unique") and key.startswith("net"):
                net = pctconf.parse_network(value)
                net["hwaddr"] = "BC:24:11:" + ":".join(f"{random.randrange(256):02X}" for _ in range(3))  # noqa: S311
                conf[key] = pctconf.print_network(net)
                continue
            conf.setdefault(key, value)
        (rootfs / "etc/vzdump/pct.conf").unlink(missing_ok=True)
        fw = rootfs / "etc/vzdump/pct.fw"
        # Like PVE: an empty pct.fw stays behind in the container, a non-empty one is moved.
        if fw.is_file() and not fw.is_symlink() and fw.stat().st_size:
            shutil.copyfile(fw, layout.ct_dir(self.root, self.vmid) / "firewall.fw")
            fw.unlink()

    # -- mount points (pve-container src/PVE/API2/LXC.pm create_vm, PVE::LXC create_disks) -------------

    def _recovered_volumes(self, w: Worker, orig: dict[str, Any]) -> tuple[list[tuple[str, dict[str, Any]]],
                                                                        dict[str, str]]:
        """create_vm restoring with only a storage given: every volume of the backed-up config (rootfs,
        mp0, ...; backed up or not) is made anew on the target storage with its recorded size. Bind and
        device mount points are for root@pam only and go back into the config after the extraction."""
        volumes: list[tuple[str, dict[str, Any]]] = []
        delayed: dict[str, str] = {}
        for key, mp in pctconf.volumes(orig):
            kind = mp["type"]
            if kind == "volume":
                if not mp.get("size"):
                    raise TaskError(f"unable to detect disk size - please specify {key} (size)")
                volumes.append((key, mp))
                continue
            if key == "rootfs":
                raise TaskError(f"restoring rootfs to {kind} mount is only possible by specifying -rootfs manually!")
            if self.user != "root@pam":
                raise TaskError(f"restoring '{key}' to {kind} mount is only possible for root")
            if str(mp.get("backup", "0")) in ("1", "yes", "on", "true"):
                for line in ("WARNING - unsupported configuration!",
                             f"backup was enabled for {kind} mount point {key} ('{mp.get('mp')}')",
                             "mount point configuration will be restored after archive extraction!",
                             "contained files will be restored to wrong directory!"):
                    w.print(line)
            delayed[key] = pctconf.print_ct_mountpoint(mp, nomp=False)
        return volumes, delayed

    def _create_disks(self, scfg: dict[str, Any], old_conf: dict[str, Any],
                      volumes: list[tuple[str, dict[str, Any]]]) -> dict[str, str]:
        """PVE::LXC::create_disks: one new volume per mount point in key order, sized "$storage:$gb" rounded
        down to whole MiB, named by find_free_diskname past the old CT's volumes (destroyed only later)."""
        taken = {storage.parse_volume_id(mp["volume"])[1] for _key, mp in pctconf.volumes(old_conf)
                 if mp["type"] == "volume"}
        res: dict[str, str] = {}
        for key, mp in volumes:
            volname = containers.new_subvol_name(self.root, scfg, self.vmid, taken)
            taken.add(volname)
            new = {k: v for k, v in mp.items() if k != "type"}
            new["volume"] = f"{self.sid}:{volname}"
            new["size"] = int(mp["size"] / 2**30 * 1024) * 1024 * 1024
            res[key] = pctconf.print_ct_mountpoint(new, nomp=key == "rootfs")
        return res

    def _split_mountpoints(self, staging: Path, disks: dict[str, str], shift: int) -> dict[str, Path]:
        """PVE extracts the archive with every new volume mounted at its path (PVE::LXC::mount_all), so
        what lies below a mount path lands in that volume: move each such subtree (deepest first) out of the
        extracted tree into the volume's own; the rootfs keeps an empty mount point directory. A volume the
        archive holds nothing for (not backed up) starts empty, owned by the container's root."""
        staged: dict[str, Path] = {}
        mps = [(key, str(pctconf.parse_mountpoint(value).get("mp", ""))) for key, value in disks.items()
               if key != "rootfs"]
        for key, mp in sorted(mps, key=lambda m: -len([p for p in m[1].split("/") if p])):
            parts = [p for p in mp.split("/") if p]
            if not mp.startswith("/") or not parts or ".." in parts:
                raise TaskError(f"invalid mount point path '{mp}'")
            src = staging
            for part in parts:  # PVE::LXC walk_tree_nofollow: never through a symlink
                src = src / part
                if src.is_symlink():
                    raise TaskError(f"symlink encountered at: {src}")
            dst = layout.ct_dir(self.root, self.vmid) / f"{key}.restoring"
            shutil.rmtree(dst, ignore_errors=True)
            if src.is_dir():
                os.rename(src, dst)
            elif src.exists():
                raise TaskError(f"mount point '{mp}' is not a directory in the archive")
            else:
                _mkdir_owned(dst, shift)
            current = staging
            for part in parts:
                current = current / part
                if not current.exists():
                    _mkdir_owned(current, shift)
            staged[key] = dst
        return staged

    def _swap_mountpoints(self, old_conf: dict[str, Any], staged: dict[str, Path]) -> None:
        for key, _mp in pctconf.volumes(old_conf):
            if key != "rootfs":
                shutil.rmtree(volume_dir(self.root, self.vmid, key), ignore_errors=True)
        for key, path in staged.items():
            target = volume_dir(self.root, self.vmid, key)
            shutil.rmtree(target, ignore_errors=True)
            os.rename(path, target)


def _mkdir_owned(path: Path, shift: int) -> None:
    """A directory as PVE makes a new volume's root or a mount point: 0755, the container's root owns it."""
    path.mkdir(mode=0o755)
    os.chmod(path, 0o755)  # noqa: S103 - a normal directory mode inside a container
    if os.geteuid() == 0:
        os.chown(path, shift, shift)


def _extract(w: Worker, volid: str, path: Path, staging: Path, shift: int, fail: str | None) -> None:
    """Extract the archive into `staging`; a failure reports tar's lines and the command PVE ran."""
    w.print(f"restoring '{volid}' now..")
    w.print(f"extracting archive '{path}'")
    t0 = time.time()
    try:
        count = archive.extract(path, staging, lambda m: _shift_member(m, shift, fail))
    except archive.ArchiveError as exc:
        for line in exc.lines:
            w.print(line)
        shutil.rmtree(staging, ignore_errors=True)
        comp = {".zst": " --zstd", ".gz": " -z", ".lzo": " --lzop", "": ""}[archive.archive_ext(path)]
        raise TaskError(f"command 'lxc-usernsexec -m u:0:100000:65536 -m g:0:100000:65536 -- tar xpf -{comp} "
                        "--totals --one-file-system -p --sparse --numeric-owner --acls --xattrs "
                        "'--xattrs-include=user.*' '--xattrs-include=security.capability' "
                        f"'--warning=no-file-ignored' '--warning=no-xattr-write' -C {staging} --skip-old-files "
                        "--anchored --exclude './dev/*'' failed: exit code 2") from exc
    w.print(archive.totals_line("read", count, time.time() - t0))


def _shift_member(member: tarfile.TarInfo, shift: int, fail: str | None) -> tarfile.TarInfo | None:
    name = member.name[2:] if member.name.startswith("./") else member.name
    if name.startswith("dev/") and name != "dev/":
        return None  # --exclude './dev/*'
    if fail and member.isreg() and not name.startswith("etc/vzdump/"):
        raise archive.ArchiveError(fail, [f"tar: ./{name}: Cannot write: {fail}",
                                          "tar: Exiting with failure status due to previous errors"])
    if shift and member.uid < 65536:
        member = member.replace(uid=member.uid + shift, gid=member.gid + shift, deep=False)
    return member


def _detect_arch(w: Worker, rootfs: Path) -> str:
    """PVE::LXC::Create::detect_architecture, reading the ELF header of /bin/sh."""
    machines = {0x03: "i386", 0x3E: "amd64", 0x28: "armhf", 0xB7: "arm64"}
    path = rootfs / "bin/sh"
    try:
        real = os.path.realpath(path)
        if not real.startswith(os.path.realpath(rootfs)):
            real = os.path.realpath(rootfs / "usr/bin/sh")
        data = Path(real).read_bytes()[:20]
        if data[:4] != b"\x7fELF":
            raise ValueError("'/bin/sh' does not resolve to an ELF!")
        arch = machines[int.from_bytes(data[18:20], "little")]
    except (OSError, ValueError, KeyError) as exc:
        w.print(f"Architecture detection failed: {exc}\nFalling back to amd64.\n"
                "Use `pct set VMID --arch ARCH` to change.")
        return "amd64"
    w.print(f"Detected container architecture: {arch}")
    return arch
