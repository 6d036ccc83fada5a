"""Each fault: set up before the run, struck while it runs, healed after it (as test_faults.py does each once).

Healing puts the lab back (services, PVE switches, the staging disk); what the product must recover from by
itself (a killed run's stale locks, staging and crash marker) is left for the next night's run.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path

from restic_orch.lab import manager, procs, pve
from restic_orch.lab.pve import qemu, qmconf
from restic_orch.lab.pve.layout import list_qemu_vmids, list_vmids
from restic_orch.lab.s3 import s3_client

from . import proctree
from .lab import Lab
from .plan import Fault

SLOW = ("--delay", "0.03", "--kib-per-second", "2048")
FULL_PREFLIGHT_MIB = 32     # below limits.min_free_bytes (64 MiB): preflight refuses
FULL_DUMPS_MIB = 96         # passes preflight, then a filler leaves this little room:
FULL_DUMPS_LEFT = 3 * 2**20
PHASE_WORDS = {"backup": ("restic", "backup"), "copy": ("restic", "copy"), "forget": ("restic", "forget")}
LOCKED_REPO = {"backup": "local", "copy": "offsite", "forget": "local"}  # where that restic takes its lock


@dataclass
class Injection:
    fault: Fault
    landed: bool = False
    notes: list[str] = field(default_factory=list)
    slow_pid: int | None = None
    mounted: Path | None = None


# ---------------------------------------------------------------- before the run
def before(lab: Lab, fault: Fault, night_date: str) -> Injection:
    inj = Injection(fault)
    kind, variant = fault.kind, fault.variant
    if fault.label == "s3-down:start":
        manager.stop_service(lab.dir, "s3proxy")
    elif kind == "s3-slow":
        inj.slow_pid = _slow_s3(lab)
    elif kind == "db-down":
        manager.stop_service(lab.dir, variant)
    elif kind == "pve-down":
        manager.stop_service(lab.dir, "pve")
    elif kind == "vzdump-fail":
        pve.write_faults(lab.pve_root, vzdump_fail={variant: "No space left on device"})
    elif kind == "disk-full":
        inj.mounted = _small_staging(lab, FULL_PREFLIGHT_MIB if variant == "preflight" else FULL_DUMPS_MIB)
    elif kind == "stale-lock":
        _stale_locks(lab, inj, ("local", "offsite") if variant == "killed-run" else ("local",))
        if variant == "killed-run":
            _killed_run_leftovers(lab, inj, night_date)
    inj.landed = kind not in ("sigkill", "sigterm") and fault.label not in ("s3-down:copy", "disk-full:dumps")
    return inj


def _slow_s3(lab: Lab) -> int:
    services = lab.services()
    port = int(services["s3proxy"]["port"])
    manager.stop_service(lab.dir, "s3proxy")
    log = lab.dir / "slow-s3.log"
    env = dict(os.environ, PYTHONPATH=str(proctree.ROOT))
    pid = procs.start_daemon([sys.executable, "-m", "soak.slowproxy", "--listen", str(port), "--target",
                              str(services["s3"]["port"]), *SLOW], log, cwd=proctree.ROOT, env=env)
    procs.wait_ready(procs.tcp_ready("127.0.0.1", port), pid=pid, log_path=log, timeout=30, what="slow S3 proxy")
    return pid


def _small_staging(lab: Lab, mib: int) -> Path:
    staging = lab.config.staging_dir
    staging.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={mib}m,mode=0700", "tmpfs", str(staging)], check=True)
    return staging


def locks(lab: Lab, name: str) -> list[str]:
    """restic's lock objects in a repository, read from the storage itself (directory or bucket)."""
    config = lab.config
    if name == "local":
        names = [p.name for p in (Path(config.repositories.local.url) / "locks").glob("*")]
    else:
        info = lab.services()["s3"]
        prefix = "/".join(filter(None, [info.get("offsite_prefix"), "locks/"]))
        listing = s3_client(info).list_objects_v2(Bucket=info["buckets"]["offsite"], Prefix=prefix)
        names = [o["Key"].rsplit("/", 1)[1] for o in listing.get("Contents", [])]
    return sorted(n for n in names if re.fullmatch(r"[0-9a-f]{64}", n))  # not restic's <id>-tmp-<n> files


def _stale_locks(lab: Lab, inj: Injection, names: tuple[str, ...]) -> None:
    """A restic that held a lock and died (OOM, a killed admin command): its lock stays, stale."""
    repos = lab.repos()
    for name in names:
        repo, before = repos[name], set(locks(lab, name))
        argv = ["restic", *[a for k, v in repo.options.items() for a in ("-o", f"{k}={v}")], "backup", "--stdin",
                "--stdin-filename", "held-open", "--host", "soak-admin", "--tag", "soak-admin"]
        holder = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                  env={**os.environ, **repo.env()})
        deadline = time.monotonic() + 30
        while not set(locks(lab, name)) - before and time.monotonic() < deadline:
            time.sleep(0.05)
        holder.kill()
        holder.wait()
        inj.notes.append(f"stale lock left in {name} by restic pid {holder.pid}")


def _killed_run_leftovers(lab: Lab, inj: Injection, night_date: str) -> None:
    """What a backup killed the night before leaves besides its locks: the crash marker and a staged day."""
    config = lab.config
    config.state_dir.mkdir(parents=True, exist_ok=True)
    (config.state_dir / "run-in-progress.json").write_text(json.dumps({"run_id": "killed", "pid": 2**22 + 1}) + "\n")
    the_day_before = (date.fromisoformat(night_date) - timedelta(days=1)).isoformat()
    stale = config.staging_dir / the_day_before / "proxmox"
    stale.mkdir(parents=True, exist_ok=True)
    (stale / "vzdump-lxc-101.tar.partial").write_bytes(os.urandom(256 * 1024))
    inj.notes.append("crash marker and a half-staged day left behind")


# ---------------------------------------------------------------- while it runs
def during(lab: Lab, inj: Injection, proc: subprocess.Popen, night_date: str, timeout: float = 600) -> None:
    """Wait for the fault's moment and strike; return when it struck or the run ended without it."""
    fault = inj.fault
    if inj.landed or not (fault.kind in ("sigkill", "sigterm") or fault.label in ("s3-down:copy", "disk-full:dumps")):
        return
    phase = fault.variant if fault.kind in ("sigkill", "sigterm") else "copy" if fault.kind == "s3-down" else "dump"
    if phase == "dump":
        day = lab.config.staging_dir / night_date
        ready, delay = day.is_dir, fault.delay
    else:
        ready, delay = _holding_its_lock(lab, proc, phase), fault.delay / 10
    if not proctree.wait_until(proc, ready, timeout):
        inj.notes.append(f"the run ended before the {phase} phase: fault not injected")
        return
    time.sleep(delay)
    if proc.poll() is not None:
        inj.notes.append(f"the run ended {delay:.2f} s into the {phase} phase: fault not injected")
        return
    _strike(lab, inj, proc)
    inj.landed = True
    inj.notes.append(f"struck {delay:.2f} s into the {phase} phase")


def _holding_its_lock(lab: Lab, proc: subprocess.Popen, phase: str) -> Callable[[], bool]:
    """restic of that phase runs and its lock is in the repository: past its key derivation, mid-work."""
    words, repo = PHASE_WORDS[phase], LOCKED_REPO[phase]
    known = set(locks(lab, repo))  # stale ones a killed run left: the run's preflight may remove them

    def ready() -> bool:
        return proctree.child_named(proc.pid, *words) and bool(set(locks(lab, repo)) - known)
    return ready


def _strike(lab: Lab, inj: Injection, proc: subprocess.Popen) -> None:
    kind = inj.fault.kind
    if kind == "sigkill":
        proctree.kill_tree(proc)
    elif kind == "sigterm":
        proc.send_signal(signal.SIGTERM)
    elif kind == "s3-down":
        manager.stop_service(lab.dir, "s3proxy")
    elif kind == "disk-full" and inj.mounted is not None:
        _fill(inj.mounted, FULL_DUMPS_LEFT)


def _fill(mount: Path, leave: int) -> None:
    chunk = b"\0" * 2**20
    with open(mount / ".soak-filler", "wb") as handle:
        try:
            while shutil.disk_usage(mount).free > leave + len(chunk):
                handle.write(chunk)
                handle.flush()
        except OSError:
            pass  # the run's own files got there first


# ---------------------------------------------------------------- after the run
def heal(lab: Lab, inj: Injection) -> None:
    """Put the lab back as the next night expects it (what an operator or the services themselves would do)."""
    if inj.slow_pid is not None:
        procs.stop_pid(inj.slow_pid, timeout=10, match="soak.slowproxy")
    if inj.mounted is not None:
        subprocess.run(["umount", "-l", str(inj.mounted)], check=False)
    status = manager.status(lab.dir)["services"]
    for name, info in status.items():
        if not info["alive"]:
            lab.restart(name)
    pve.write_faults(lab.pve_root)
    if inj.fault.label == "stale-lock:foreign" and locks(lab, "local"):
        lab.repos()["local"].unlock()  # what the operator does on reading the failure: stale locks only
        inj.notes.append("the operator ran restic unlock (stale locks only)")
    wait_pve_idle(lab)


def wait_pve_idle(lab: Lab, timeout: float = 60) -> None:
    """No guest still locked by a vzdump task a killed run started (the fake finishes it on its own)."""
    root = lab.pve_root
    deadline = time.monotonic() + timeout
    for vmid in list_vmids(root):
        while "lock" in pve.read_config(root, vmid) and time.monotonic() < deadline:
            time.sleep(0.2)
    for vmid in list_qemu_vmids(root):
        while "lock" in _vm_config(root, vmid) and time.monotonic() < deadline:
            time.sleep(0.2)


def _vm_config(root: Path, vmid: int) -> dict[str, object]:
    try:
        return qmconf.parse(qemu.conf_path(root, vmid).read_text())
    except FileNotFoundError:
        return {}  # being restored: PVE writes it again
