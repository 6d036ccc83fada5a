"""The benchmark: lab up, day 1, churn, day 2, each for the product and its three baselines; lab down.

Per day:
  (a) `restic-orch --json backup` end to end, uncapped, and held by the product itself to
      limits.cpu_percent (30 % of the host: a cgroup quota it sets up, as a deployed run does);
      its staging tree is hard-linked away the moment manifest.json appears, so (b)-(d) and the zstd
      comparison use exactly the bytes the product backed up;
  (b) raw restic: init (day 1), then a tree staged afresh by the product's pre-hooks (untimed; --raw-stage
      copy/linked use (a)'s bytes instead), backup to a local repository, copy to S3, forget (the floor);
  (c) the naive script: tar | zstd | upload to the same S3;
  (d) borg create of the same staged tree (Debian's borgbackup, repokey-blake2, lz4);
  (z) vzdump compress=zstd instead of 0: the staged container tars recompressed with zstd exactly as
      PVE 8 and the fake PVE do (no --rsyncable) and as PVE 7 did (--rsyncable), each into its own restic repo;
  (e) restic on the containers' root filesystems directly (file level, what a ZFS-snapshot source would
      give), with the day-2 bytes split by kind of change.
Then (a) uncapped and (b) run again, s.pairs - 1 times, from a checkpoint of their repositories taken
before the day (bench/checkpoint.py), in alternating order: the overhead is judged on the pairs' median.
After day 2: a VI1 probe (CT 101 in suspend mode with a simulated freeze) and, with --profile, one more
backup under py-spy.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import platform
import secrets
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from . import cgroups, report
from . import lab as blab
from . import s3 as bs3
from .checkpoint import Checkpoint
from .sampler import Sampler, host_cpu

REPO_ROOT = Path(__file__).resolve().parent.parent
# what a homelab's operator leaves out of the container archives: a cache that rebuilds itself and the live
# database directories, which the postgres and mysql hooks already dump consistently
EXCLUDES = ("/var/cache/nginx", "/var/lib/postgresql", "/var/lib/mysql")
LAB_GROUPS = {"pve": ("pve",), "s3": ("s3", "s3proxy"), "postgres": ("postgres",), "mariadb": ("mariadb",)}


@dataclass
class Settings:
    name: str
    ct_mib: int
    db_mib: int
    churn: float = 0.02
    pages_into: str = "data"
    cpu_percent: float = 30.0
    exclude_paths: list[str] = field(default_factory=lambda: list(EXCLUDES))
    gomaxprocs: int | None = 1
    base_dir: Path = Path("/tmp/restic-orch-bench")
    keep: bool = False
    skip: set[str] = field(default_factory=set)
    freeze_seconds: float = 2.5
    profile: bool = False
    raw_stage: str = "fresh"
    pairs: int = 5


class Interrupted(Exception):
    pass


def _du(path: Path) -> int:
    total = 0
    for dirpath, _dirs, files in os.walk(path):
        for name in files:
            with contextlib.suppress(FileNotFoundError):
                total += os.lstat(os.path.join(dirpath, name)).st_size
    return total


def _tool_version(argv: list[str]) -> str:
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=30)
        return (out.stdout or out.stderr).strip().splitlines()[0]
    except (OSError, IndexError, subprocess.SubprocessError):
        return "?"


def machine_info() -> dict[str, Any]:
    model = "?"
    with open("/proc/cpuinfo") as fh:
        for line in fh:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    mem = 0
    with open("/proc/meminfo") as fh:
        for line in fh:
            if line.startswith("MemTotal:"):
                mem = int(line.split()[1]) * 1024
    return {
        "nproc": os.cpu_count(), "memory_bytes": mem, "cpu_model": model, "kernel": platform.release(),
        "restic": _tool_version(["restic", "version"]), "borg": _tool_version(["borg", "--version"]),
        "zstd": _tool_version(["zstd", "--version"]), "python": platform.python_version(),
        "loadavg_at_start": os.getloadavg(),
    }


class StagingCopier(threading.Thread):
    """Hard-link the product's staging day into `dest` as soon as its manifest.json exists (the pipeline
    writes it after the last pre-hook, before restic starts, and removes the day after the backup)."""

    def __init__(self, day_dir: Path, dest: Path) -> None:
        super().__init__(name="staging-copier", daemon=True)
        self.day_dir, self.dest = day_dir, dest
        self.ok = False
        self.error = ""
        self._halt = threading.Event()

    def run(self) -> None:
        while not self._halt.is_set():
            if (self.day_dir / "manifest.json").exists():
                try:
                    for dirpath, _dirs, files in os.walk(self.day_dir):
                        target = self.dest / os.path.relpath(dirpath, self.day_dir)
                        target.mkdir(parents=True, exist_ok=True)
                        for name in files:
                            os.link(os.path.join(dirpath, name), target / name)
                    self.ok = True
                except OSError as exc:
                    self.error = str(exc)
                return
            self._halt.wait(0.02)

    def stop(self) -> None:
        self._halt.set()
        self.join(timeout=10)


class Bench:
    def __init__(self, settings: Settings) -> None:
        self.s = settings
        self.base = settings.base_dir / settings.name
        self.lab_dir = self.base / "lab"
        self.work = self.base / "work"
        self.ncores = os.cpu_count() or 1
        self.cg = cgroups.Cgroups() if cgroups.available() else None
        self.sampler = Sampler()
        self.py = sys.executable
        self.env = dict(os.environ, PYTHONPATH=str(REPO_ROOT))
        self.env.pop("RESTIC_REPOSITORY", None)
        self.groups: dict[str, Path] = {}
        self.date = datetime.now(UTC).date().isoformat()
        self.wall_offset = time.time() - time.monotonic()
        self.stage_root = self.work / "stage"
        self.results: dict[str, Any] = {}
        self.log_lines: list[str] = []

    # --- plumbing ----------------------------------------------------------------------------------
    def say(self, msg: str) -> None:
        line = f"[{time.strftime('%H:%M:%S')}] {msg}"
        self.log_lines.append(line)
        print(line, file=sys.stderr, flush=True)

    def group(self, name: str) -> Path | None:
        if self.cg is None:
            return None
        if name not in self.groups:
            self.groups[name] = self.cg.acct(name)
            self.sampler.watch(name, self.groups[name])
        return self.groups[name]

    def cpu_of(self, name: str) -> float:
        path = self.groups.get(name)
        return cgroups.usage_ns(path) / 1e9 if path else 0.0

    def probe(self, tag: str, argv: list[str], group: str, *,
              env: dict[str, str] | None = None, cwd: Path | None = None) -> dict[str, Any]:
        pdir = self.work / "probes"
        pdir.mkdir(parents=True, exist_ok=True)
        out = pdir / f"{tag}.json"
        cmd = [self.py, "-m", "bench.probe", "--out", str(out), "--stdout", str(pdir / f"{tag}.out"),
               "--stderr", str(pdir / f"{tag}.err")]
        acct = self.group(group)
        if acct:
            cmd += ["--cgroup", str(acct)]
        if cwd:
            cmd += ["--cwd", str(cwd)]
        cmd += ["--", *argv]
        lab0 = {g: self.cpu_of(f"lab-{g}") for g in LAB_GROUPS}
        cpu0 = self.cpu_of(group)
        host0 = host_cpu()[0]
        t0 = time.monotonic()
        proc = subprocess.Popen(cmd, env=env or self.env, cwd=REPO_ROOT)
        try:
            proc.wait()
        except BaseException:
            proc.terminate()  # the probe passes SIGTERM on: restic-orch stops its children and records the run
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            raise
        t1 = time.monotonic()
        if proc.returncode != 0 or not out.exists():
            raise RuntimeError(f"probe for {tag} failed (rc {proc.returncode})")
        res = json.loads(out.read_text())
        res.update(t0=t0, t1=t1, stdout=str(pdir / f"{tag}.out"), stderr=str(pdir / f"{tag}.err"))
        cpu = (self.cpu_of(group) - cpu0) if acct else res["user"] + res["sys"]
        res["cpu_s"] = round(cpu, 3)
        res["cpu_pct"] = round(100 * cpu / max(res["wall"], 1e-6) / self.ncores, 1)
        res["lab_cpu_s"] = {g: round(self.cpu_of(f"lab-{g}") - lab0[g], 3) for g in LAB_GROUPS}
        res["host_cpu_pct"] = round(100 * (host_cpu()[0] - host0) / max(t1 - t0, 1e-6) / self.ncores, 1)
        return res

    @staticmethod
    def brief(res: dict[str, Any]) -> dict[str, Any]:
        keys = ("rc", "wall", "cpu_s", "cpu_pct", "maxrss_kib", "rchar", "read_bytes", "wchar", "lab_cpu_s",
                "host_cpu_pct", "throttled")
        return {k: res[k] for k in keys if k in res}

    # --- set-up ------------------------------------------------------------------------------------
    def setup(self) -> None:
        if self.base.exists():
            with contextlib.suppress(Exception):
                blab.down(self.lab_dir)
            shutil.rmtree(self.base)
        self.base.mkdir(parents=True)
        os.chmod(self.s.base_dir, 0o755)  # noqa: S103
        self.sampler.start()
        self.say(f"lab up: 4 x {self.s.ct_mib} MiB containers, ~{self.s.db_mib} MiB of databases "
                 f"(db_scale {blab.db_scale_for(self.s.db_mib)}) in {self.lab_dir}")
        t0 = time.monotonic()
        blab.up(self.lab_dir, self.s.ct_mib, self.s.db_mib)
        self.results["lab"] = {"setup_seconds": round(time.monotonic() - t0, 1),
                               "db_scale": blab.db_scale_for(self.s.db_mib)}
        self.say(f"lab ready in {self.results['lab']['setup_seconds']} s")
        if self.cg:
            for gname, services in LAB_GROUPS.items():
                path = self.group(f"lab-{gname}")
                for svc in services:
                    pid = blab.service_pids(self.lab_dir).get(svc)
                    if pid:
                        for p in blab.descendants(pid):
                            self.cg.move(p, path)
        st = blab.state(self.lab_dir)
        self.pve_root = Path(st["services"]["pve"]["root"])
        self.results["lab"].update(containers=blab.container_bytes(self.pve_root),
                                   databases=blab.db_sizes(self.lab_dir))
        self.s3info = blab.s3_info(self.lab_dir)
        self.s3 = bs3.client(self.s3info["endpoint"], bs3.lab_env_file(self.s3info))
        self.secrets = self.lab_dir / "secrets"
        lanes = {"uncapped": "bench-orch-uncapped", "capped": "bench-orch-capped"}
        self.lanes = {}
        for lane, bucket in lanes.items():
            if lane == "capped" and ("capped" in self.s.skip or not self.cg):
                continue
            ldir = self.work / lane
            # the capped lane holds itself to its budget (limits.cpu_percent), as a deployed run does
            self.lanes[lane] = {"dir": ldir, "bucket": bucket, "capped": lane == "capped",
                                "config": blab.lane_config(self.lab_dir, ldir, offsite_bucket=bucket,
                                                           gomaxprocs=self.s.gomaxprocs,
                                                           cpu_percent=self.s.cpu_percent if lane == "capped" else None,
                                                           proxmox=self._proxmox_settings())}
        self.results["settings"] = {
            "ct_mib": self.s.ct_mib, "db_mib": self.s.db_mib, "churn": self.s.churn,
            "churn_pages_into": self.s.pages_into,
            "cpu_percent": self.s.cpu_percent, "exclude_paths": self.s.exclude_paths,
            "gomaxprocs": self.s.gomaxprocs, "restic_compression": "auto", "vzdump_compress": "0",
            "cgroups": bool(self.cg), "skip": sorted(self.s.skip), "raw_stage": self.s.raw_stage,
            "overhead_pairs": self.s.pairs,
        }

    def _proxmox_settings(self) -> dict[str, Any]:
        return {"exclude_paths": {"all": self.s.exclude_paths}} if self.s.exclude_paths else {}

    # --- (a) the product ---------------------------------------------------------------------------
    def product(self, lane: str, day: str, again: int = 0) -> dict[str, Any]:
        """(a) once; `again` > 0 numbers a repeat of the day's run (no staging copy: (b)-(d) have theirs)."""
        info = self.lanes[lane]
        ldir, bucket = info["dir"], info["bucket"]
        local0, (s3_0, _) = _du(ldir / "repo"), bs3.bucket_bytes(self.s3, bucket)
        copier = None
        rep_tag = _again_tag(again)
        if lane == "uncapped" and not again:
            copier = StagingCopier(ldir / "staging" / self.date, self.stage_root / self.date)
            copier.start()
        exe = Path(self.py).parent / "restic-orch"
        argv = [str(exe)] if exe.exists() else [self.py, "-m", "restic_orch.cli"]
        self.say(f"{day} (a) restic-orch backup [{lane}]" + _again_say(again))
        res = self.probe(f"{day}-a-{lane}{rep_tag}", argv + ["--config", str(info["config"]), "--json", "backup"],
                         f"a-{lane}")
        if copier:
            copier.stop()
            res["staging_copied"] = copier.ok
            if not copier.ok:
                self.say(f"staging copy missed ({copier.error or 'no manifest seen'}): fallback staging")
        summary = json.loads(Path(res["stdout"]).read_text())
        local1, (s3_1, _) = _du(ldir / "repo"), bs3.bucket_bytes(self.s3, bucket)
        out = self.brief(res)
        out.update(status=summary["status"], exit_code=summary["exit_code"],
                   duration_seconds=summary["duration_seconds"], bytes_staged=summary["bytes_staged"],
                   data_added=summary.get("data_added", {}), local_added=local1 - local0,
                   offsite_added=s3_1 - s3_0, notices=summary.get("notices", []), failures=summary.get("failures", []),
                   log_file=summary.get("log_file"), staging_copied=res.get("staging_copied"),
                   cpu_cap=summary.get("extra", {}).get("cpu_cap"),
                   restic_total_duration=summary.get("extra", {}).get("restic_total_duration", {}))
        if summary.get("log_file") and Path(summary["log_file"]).exists():
            lines = Path(summary["log_file"]).read_text().splitlines()
            out["log_lines"] = len(lines)
            out["commands"] = commands_from_log(lines)
        out["phases"] = self.phase_rows(summary, res, f"a-{lane}", local1 - local0, s3_1 - s3_0,
                                        self.last_command_end(summary.get("log_file")))
        out["vi1"] = self.vi1_from_manifest(info, summary)
        self.say(f"   {summary['status']} in {res['wall']:.1f} s, CPU {out['cpu_pct']} % of host, "
                 f"local +{(local1 - local0) / 2**20:.1f} MiB, offsite +{(s3_1 - s3_0) / 2**20:.1f} MiB")
        return out

    def last_command_end(self, log_file: str | None) -> float | None:
        """Monotonic time at which the run's last child command (the last restic forget) ended, from the
        JSON-lines run log; the phases end there, the clean-up and the report follow."""
        if not log_file or not Path(log_file).exists():
            return None
        last = None
        for line in Path(log_file).read_text().splitlines():
            with contextlib.suppress(ValueError):
                item = json.loads(line)
                if item.get("msg") == "command":
                    last = datetime.fromisoformat(item["ts"]).timestamp()
        return None if last is None else last - self.wall_offset

    def phase_rows(self, summary: dict[str, Any], res: dict[str, Any], group: str, local_added: int,
                   offsite_added: int, anchor: float | None = None) -> list[dict[str, Any]]:
        """Per-phase figures. The summary gives each phase's seconds in order; the windows are laid out
        backwards from the end of the last child command (run log; gaps between phases are milliseconds),
        and CPU, peak RSS and bytes read come from the 4 Hz samples of the lane's cpuacct group inside
        each window."""
        phases = [p for p in summary["phases"] if not p["name"].startswith("open:")]
        end = anchor if anchor is not None and res["t0"] < anchor < res["t1"] else res["t1"] - 0.05
        cursor = end + 0.01
        windows = []
        for p in reversed(phases):
            windows.append((p, cursor - p["seconds"], cursor))
            cursor -= p["seconds"]
        windows.reverse()
        rows = [{"name": "startup (interpreter, config)", "seconds": round(max(0.0, cursor - res["t0"]), 3),
                 "t": (res["t0"], cursor)}]
        rows += [{"name": p["name"], "seconds": p["seconds"], "ok": p["ok"], "detail": p.get("detail", ""),
                  "t": (a, b)} for p, a, b in windows]
        rows.append({"name": "clean-up and report (staging removal, summary, metrics, exit)",
                     "seconds": round(max(0.0, res["t1"] - end - 0.01), 3), "t": (end + 0.01, res["t1"])})
        nested = [p for p in summary["phases"] if p["name"].startswith("open:")]
        for row in rows:
            a, b = row.pop("t")
            if self.cg:
                cpu = self.sampler.cpu_between(group, a, b)
                row["cpu_s"] = round(cpu, 3)
                row["cpu_pct"] = round(100 * cpu / max(b - a, 1e-6) / self.ncores, 1)
                row["lab_cpu_s"] = {g: round(self.sampler.cpu_between(f"lab-{g}", a, b), 3) for g in LAB_GROUPS}
                row["peak_rss_kib"] = self.sampler.peak_rss(group, a, b)
                row["read_bytes"] = self.sampler.read_between(group, a, b)
            if row["name"] == "backup:local":
                row["local_added"] = local_added
                row["data_added"] = summary.get("data_added", {}).get("local")
            if row["name"] == "copy:offsite":
                row["s3_uploaded"] = offsite_added
            if row["name"] == "preflight":
                row["includes"] = {p["name"]: p["seconds"] for p in nested}
        return rows

    def vi1_from_manifest(self, info: dict[str, Any], summary: dict[str, Any]) -> list[dict[str, Any]]:
        snap = summary.get("snapshots", {}).get("local")
        if not snap:
            return []
        path = info["dir"] / "staging" / self.date / "manifest.json"
        env = dict(self.env, RESTIC_REPOSITORY=str(info["dir"] / "repo"),
                   RESTIC_PASSWORD_FILE=str(self.secrets / "restic-local"))
        out = subprocess.run(["restic", "--cache-dir", str(info["dir"] / "state" / "cache"), "dump", snap, str(path)],
                             env=env, capture_output=True, check=False)
        if out.returncode != 0:
            return [{"error": out.stderr.decode(errors="replace")[-300:]}]
        manifest = json.loads(out.stdout)
        return [{"component": a["component"], "mode_requested": a["meta"].get("mode_requested"),
                 "mode_used": a["meta"].get("mode_used"), "freeze_seconds": a["meta"].get("freeze_seconds"),
                 "freeze_seconds_max": a["meta"].get("freeze_seconds_max"),
                 "freeze_measured_by": a["meta"].get("freeze_measured_by"),
                 "vzdump_seconds": a["meta"].get("duration_seconds"), "archive_bytes": a["size"]}
                for a in manifest["artifacts"] if a["kind"] == "proxmox"]

    # --- staging for the baselines -----------------------------------------------------------------
    def ensure_stage(self, day: str, product_row: dict[str, Any] | None) -> Path:
        stage = self.stage_root / self.date
        # the product removes its staging once the snapshot is saved: a copy the removal overtook is short
        if (product_row and product_row.get("staging_copied") and (stage / "manifest.json").exists()
                and _du(stage) == product_row.get("bytes_staged")):
            return stage
        shutil.rmtree(stage, ignore_errors=True)
        self.say(f"{day} staging with the product's pre-hooks (bench.stage)")
        self.probe(f"{day}-stage", [self.py, "-m", "bench.stage", "--config", str(self.lanes["uncapped"]["config"]),
                                    "--day-dir", str(stage)], "stage")
        return stage

    def sha_seconds(self, stage: Path) -> float:
        """What the product spends hashing artifacts (sha256 of every staged file, as ctx.artifact does)."""
        t0 = time.monotonic()
        for dirpath, _dirs, files in os.walk(stage):
            for name in files:
                digest = hashlib.sha256()
                with open(os.path.join(dirpath, name), "rb") as fh:
                    while block := fh.read(4 * 2**20):
                        digest.update(block)
        return round(time.monotonic() - t0, 3)

    def raw_tree(self, day: str, stage: Path, again: int = 0) -> tuple[Path, dict[str, Any]]:
        """The tree (b) backs up. (a)'s restic starts on files its pre-hooks wrote seconds before: their
        write-back to disk and the database servers' after-dump work run beside it. A floor measured on a
        tree written minutes earlier (`linked`, the hard links of (a)'s staging) misses that cost, which a
        raw-restic user's script pays too, since it dumps first. `fresh` (default) runs the product's own
        pre-hooks again just before (b) (bench.stage, untimed), `copy` rewrites (a)'s bytes into new files
        (the write-back without the database servers' work)."""
        how: dict[str, Any] = {"mode": self.s.raw_stage}
        if self.s.raw_stage == "linked":
            return stage, how
        tree = self.work / "raw-stage" / self.date
        shutil.rmtree(tree.parent, ignore_errors=True)
        t0 = time.monotonic()
        if self.s.raw_stage == "copy":
            shutil.copytree(stage, tree)
        else:
            self.say(f"{day} (b) staging afresh with the product's pre-hooks (bench.stage), untimed")
            tag = f"{day}-b-stage" + _again_tag(again)
            self.probe(tag, [self.py, "-m", "bench.stage", "--config", str(self.lanes["uncapped"]["config"]),
                             "--day-dir", str(tree)], "stage")
        how.update(seconds=round(time.monotonic() - t0, 1), bytes=_du(tree), bytes_of_a=_du(stage))
        return tree, how

    # --- (b) raw restic ----------------------------------------------------------------------------
    def restic_env(self, repo: str, cache: Path) -> dict[str, str]:
        env = dict(self.env, RESTIC_REPOSITORY=repo, RESTIC_PASSWORD_FILE=str(self.secrets / "restic-local"),
                   RESTIC_CACHE_DIR=str(cache))
        env.update(bs3._env(bs3.lab_env_file(self.s3info)))
        if self.s.gomaxprocs:
            env["GOMAXPROCS"] = str(self.s.gomaxprocs)
        return env

    def _raw_setup(self) -> tuple[Path, str, list[str], dict[str, str], dict[str, str], list[str]]:
        rdir = self.work / "raw"
        local, cache = str(rdir / "repo"), rdir / "cache"
        offsite = f"s3:{self.s3info['endpoint']}/bench-raw"
        rx = [*blab.PRIORITY, "restic"]  # the product's nice/ionice, see blab.PRIORITY
        return rdir, local, ["-o", "s3.bucket-lookup=path"], self.restic_env(local, cache), \
            self.restic_env(offsite, cache), rx

    def raw_init(self, day: str, again: int = 0) -> dict[str, Any]:
        """Day 1: a raw-restic user creates the repositories, as the product does in its preflight, i.e.
        before the dumps (so that neither side gets the seconds of init between its dumps and its backup)."""
        rdir, local, opts, lenv, oenv, rx = self._raw_setup()
        if (rdir / "repo").exists():
            return {}
        rep_tag = _again_tag(again)
        self.say(f"{day} (b) raw restic: init" + _again_say(again))
        rdir.mkdir(parents=True, exist_ok=True)
        steps = {"init-local": self.brief(self.probe(f"{day}-b-init-local{rep_tag}",
                                                      [*rx, "init", "--repository-version", "2"], "raw", env=lenv))}
        steps["init-offsite"] = self.brief(self.probe(
            f"{day}-b-init-offsite{rep_tag}", [*rx, *opts, "init", "--repository-version", "2",
                                               "--copy-chunker-params", "--from-repo", local,
                                               "--from-password-file", str(self.secrets / "restic-local")],
            "raw", env=oenv))
        return steps

    def raw_restic(self, day: str, stage: Path, again: int, init_steps: dict[str, Any]) -> dict[str, Any]:
        """backup, copy, forget on a repository raw_init made ready; its init steps count in the total."""
        rdir, local, opts, lenv, oenv, rx = self._raw_setup()
        rep_tag = _again_tag(again)
        steps = dict(init_steps)
        self.say(f"{day} (b) raw restic: backup, copy, forget" + _again_say(again))
        local0, (s3_0, _) = _du(rdir / "repo"), bs3.bucket_bytes(self.s3, "bench-raw")
        res = self.probe(f"{day}-b-backup{rep_tag}", [*rx, "backup", "--json", "-vv", "--host", "pve1", "--compression",
                                             "auto", "--tag", "bench", str(stage)], "raw", env=lenv)
        steps["backup"] = self.brief(res)
        added_by: dict[str, int] = {}
        new_by: dict[str, int] = {}
        for line in Path(res["stdout"]).read_text().splitlines():
            if '"summary"' in line:
                item = json.loads(line)
                steps["backup"]["data_added"] = item.get("data_added")
                steps["backup"]["restic_total_duration"] = item.get("total_duration")
            elif '"verbose_status"' in line:
                item = json.loads(line)
                rel = Path(item["item"]).relative_to(stage) if item["item"].startswith(str(stage) + "/") else None
                if rel is None or not item.get("data_size"):
                    continue
                key = _kind_key(rel)
                added_by[key] = added_by.get(key, 0) + int(item.get("data_size_in_repo") or 0)
                new_by[key] = new_by.get(key, 0) + int(item["data_size"])
        steps["backup"]["added_by_kind"] = added_by  # new blobs, as stored (compressed)
        steps["backup"]["new_by_kind"] = new_by  # new blobs, uncompressed
        steps["backup"]["size_by_kind"] = size_by_kind(stage)
        local1 = _du(rdir / "repo")
        steps["backup"]["local_added"] = local1 - local0
        res = self.probe(f"{day}-b-copy{rep_tag}", [*rx, *opts, "copy", "--from-repo", local, "--from-password-file",
                                           str(self.secrets / "restic-local")], "raw", env=oenv)
        s3_1 = bs3.bucket_bytes(self.s3, "bench-raw")[0]
        steps["copy"] = self.brief(res) | {"s3_uploaded": s3_1 - s3_0}
        for name, env in (("forget-local", lenv), ("forget-offsite", oenv)):
            res = self.probe(f"{day}-b-{name}{rep_tag}", [*rx, *opts, "forget", "--json", "--host", "pve1", "--tag",
                                                 "bench", "--group-by", "host", "--keep-within", "7d"], "raw", env=env)
            steps[name] = self.brief(res)
        total = {k: round(sum(s[k] for s in steps.values()), 3) for k in ("wall", "cpu_s")}
        total["cpu_pct"] = round(100 * total["cpu_s"] / total["wall"] / self.ncores, 1)
        total["maxrss_kib"] = max(s["maxrss_kib"] for s in steps.values())
        total["rchar"] = sum(s["rchar"] for s in steps.values())
        self.say(f"   {total['wall']:.1f} s, CPU {total['cpu_pct']} %, local +{(local1 - local0) / 2**20:.1f} MiB, "
                 f"offsite +{(s3_1 - s3_0) / 2**20:.1f} MiB")
        return {"steps": steps, **total, "local_added": local1 - local0, "offsite_added": s3_1 - s3_0}

    # --- (c) naive script --------------------------------------------------------------------------
    def naive(self, day: str, stage: Path) -> dict[str, Any]:
        bucket = "bench-naive"
        bs3.ensure_bucket(self.s3, bucket)
        self.say(f"{day} (c) naive: tar | zstd | upload")
        s3_0 = bs3.bucket_bytes(self.s3, bucket)[0]
        script = (f"set -o pipefail; tar -C {stage.parent} -cf - {stage.name} | zstd -q -3 -T0 | "
                  f"{self.py} -m bench.s3 put --endpoint {self.s3info['endpoint']} "
                  f"--env-file {bs3.lab_env_file(self.s3info)} --bucket {bucket} --prefix {day}/backup.tar.zst")
        res = self.probe(f"{day}-c-naive", ["bash", "-c", script], "naive")
        s3_1 = bs3.bucket_bytes(self.s3, bucket)[0]
        out = self.brief(res) | {"s3_uploaded": s3_1 - s3_0, "offsite_added": s3_1 - s3_0}
        bs3.empty_bucket(self.s3, bucket, prefix=f"{day}/")  # measured; free moto's memory and temp files
        self.say(f"   {res['wall']:.1f} s, CPU {out['cpu_pct']} %, uploaded {(s3_1 - s3_0) / 2**20:.1f} MiB")
        return out

    # --- (d) borg ----------------------------------------------------------------------------------
    def borg(self, day: str, stage: Path) -> dict[str, Any]:
        bdir = self.work / "borg"
        env = dict(self.env, BORG_BASE_DIR=str(bdir / "base"), BORG_REPO=str(bdir / "repo"),
                   BORG_PASSPHRASE=self._borg_pass(bdir), BORG_RELOCATED_REPO_ACCESS_IS_OK="yes")
        if not (bdir / "repo").exists():
            subprocess.run(["borg", "init", "--encryption", "repokey-blake2"], env=env, check=True, capture_output=True)
        self.say(f"{day} (d) borg create")
        before = _du(bdir / "repo")
        res = self.probe(f"{day}-d-borg", ["borg", "create", "--json", "--compression", "lz4", f"::{day}", str(stage)],
                         "borg", env=env)
        after = _du(bdir / "repo")
        out = self.brief(res) | {"local_added": after - before, "offsite_added": after - before}
        with contextlib.suppress(ValueError, KeyError):
            stats = json.loads(Path(res["stdout"]).read_text())["archive"]["stats"]
            out["deduplicated_size"] = stats["deduplicated_size"]
        self.say(f"   {res['wall']:.1f} s, CPU {out['cpu_pct']} %, repo +{(after - before) / 2**20:.1f} MiB")
        return out

    @staticmethod
    def _borg_pass(bdir: Path) -> str:
        bdir.mkdir(parents=True, exist_ok=True)
        f = bdir / "passphrase"
        if not f.exists():
            f.write_text(secrets.token_urlsafe(24))
            os.chmod(f, 0o600)
        return f.read_text()

    # --- (z) vzdump compress zstd vs 0 -------------------------------------------------------------
    def zstd_variants(self, day: str, stage: Path) -> dict[str, Any]:
        out = {}
        for variant, flags in (("zstd-rsyncable", ["--rsyncable"]), ("zstd", [])):
            if variant in self.s.skip:
                continue
            zdir = self.work / variant
            tree = zdir / "tree" / stage.name
            shutil.rmtree(zdir / "tree", ignore_errors=True)
            t0 = time.monotonic()
            cpu0 = resource_children()
            for dirpath, _dirs, files in os.walk(stage):
                target = tree / os.path.relpath(dirpath, stage)
                target.mkdir(parents=True, exist_ok=True)
                for name in files:
                    src = Path(dirpath) / name
                    if src.parent.name == "proxmox" and name.endswith(".tar"):
                        with open(target / (name + ".zst"), "wb") as fh:
                            subprocess.run(["zstd", "-q", "-c", "--threads=1", *flags, str(src)], stdout=fh, check=True)
                    else:
                        os.link(src, target / name)
            comp = {"seconds": round(time.monotonic() - t0, 2), "cpu_s": round(resource_children() - cpu0, 2)}
            repo = zdir / "repo"
            env = self.restic_env(str(repo), zdir / "cache")
            if not repo.exists():
                subprocess.run(["restic", "init", "--repository-version", "2"], env=env, check=True,
                               capture_output=True)
            before = _du(repo)
            self.say(f"{day} (z) {variant}: compress {comp['seconds']} s, restic backup")
            res = self.probe(f"{day}-z-{variant}", ["restic", "backup", "--json", "--host", "pve1", "--compression",
                                                    "auto", str(zdir / "tree" / stage.name)], "zstd", env=env)
            after = _du(repo)
            ct_bytes = sum(f.stat().st_size for f in (tree / "proxmox").glob("*.zst"))
            out[variant] = {"compress": comp, "backup": self.brief(res), "local_added": after - before,
                            "repo_bytes": after, "container_archive_bytes": ct_bytes}
            shutil.rmtree(zdir / "tree", ignore_errors=True)
        return out

    # --- (e) restic on the container root filesystems (file level, as from a ZFS snapshot) -----------
    def fs_level(self, day: str) -> dict[str, Any]:
        fdir = self.work / "fs"
        repo = fdir / "repo"
        env = self.restic_env(str(repo), fdir / "cache")
        if not repo.exists():
            fdir.mkdir(parents=True, exist_ok=True)
            subprocess.run(["restic", "init", "--repository-version", "2"], env=env, check=True, capture_output=True)
        paths = [str(p / "rootfs") for p in sorted((self.pve_root / "lxc").iterdir())]
        self.say(f"{day} (e) restic backup of the 4 root filesystems (file level)")
        before = _du(repo)
        res = self.probe(f"{day}-e-fs", ["restic", "backup", "--json", "-vv", "--host", "pve1", "--compression",
                                         "auto", *paths], "fs", env=env)
        after = _du(repo)
        out = self.brief(res) | {"local_added": after - before}
        by_change: dict[str, dict[str, int]] = {}
        touched = getattr(self, "touched", {})
        for line in Path(res["stdout"]).read_text().splitlines():
            if '"summary"' in line:
                item = json.loads(line)
                out.update({k: item.get(k) for k in ("files_new", "files_changed", "files_unmodified",
                                                     "data_added", "total_bytes_processed")})
            elif '"verbose_status"' in line and touched:
                item = json.loads(line)
                kind = next((k for k, paths in touched.items() if item["item"] in paths), "other (metadata, dirs)")
                entry = by_change.setdefault(kind, {"files": 0, "new": 0, "stored": 0})
                entry["files"] += 1 if item.get("data_size") else 0
                entry["new"] += int(item.get("data_size") or 0) + int(item.get("metadata_size") or 0)
                entry["stored"] += int(item.get("data_size_in_repo") or 0) + int(item.get("metadata_size_in_repo") or 0)
        if by_change:
            out["by_kind_of_change"] = by_change
        self.say(f"   {res['wall']:.1f} s, CPU {out['cpu_pct']} %, repo +{(after - before) / 2**20:.1f} MiB")
        return out

    # --- py-spy profile of one more (unmeasured) run ----------------------------------------------
    def profile(self) -> dict[str, Any]:
        pyspy = shutil.which("py-spy") or str(Path(self.py).parent / "py-spy")
        if not Path(pyspy).exists():
            return {"error": "py-spy not installed (pip install py-spy into the venv)"}
        info = self.lanes["uncapped"]
        exe = Path(self.py).parent / "restic-orch"
        raw = self.work / "profile.txt"
        self.say("profile: one more restic-orch backup under py-spy (--idle, 100 Hz)")
        res = self.probe("profile", [pyspy, "record", "--idle", "--nonblocking", "--rate", "100", "--format", "raw",
                                     "-o", str(raw), "--", str(exe), "--config", str(info["config"]), "--json",
                                     "backup"], "profile")
        lines = Path(res["stdout"]).read_text().splitlines()  # py-spy's own messages surround the JSON
        try:
            summary = json.loads("\n".join(lines[lines.index("{"):len(lines) - lines[::-1].index("}")]))
        except ValueError:
            summary = {"phases": [], "status": "unreadable output"}
        return {"wall": res["wall"], "status": summary.get("status"), "rate_hz": 100,
                "phases": {p["name"]: p["seconds"] for p in summary["phases"]},
                "categories": profile_categories(raw.read_text() if raw.exists() else "", 100),
                "top_stacks": top_stacks(raw.read_text() if raw.exists() else "")}

    # --- VI1: a suspend-mode probe -----------------------------------------------------------------
    def vi1_suspend_probe(self) -> dict[str, Any]:
        from restic_orch.lab.pve import write_faults

        ldir = self.work / "vi1"
        cfg = blab.lane_config(self.lab_dir, ldir, offsite_bucket=None, gomaxprocs=self.s.gomaxprocs,
                               proxmox={"mode": "suspend", "vmids": [101]})
        write_faults(self.pve_root, suspend_freeze_seconds=self.s.freeze_seconds)
        try:
            self.say(f"VI1 probe: CT 101 in suspend mode, simulated freeze {self.s.freeze_seconds} s")
            res = self.probe("vi1-suspend", [self.py, "-m", "bench.stage", "--config", str(cfg), "--day-dir",
                                             str(ldir / "day"), "--only", "proxmox"], "stage")
        finally:
            write_faults(self.pve_root)
        data = json.loads(Path(res["stdout"]).read_text())
        shutil.rmtree(ldir, ignore_errors=True)
        return {"fault_suspend_freeze_seconds": self.s.freeze_seconds, "wall": res["wall"],
                "containers": [{"component": a["component"], "mode_requested": a["meta"]["mode_requested"],
                                "mode_used": a["meta"]["mode_used"], "freeze_seconds": a["meta"]["freeze_seconds"],
                                "freeze_seconds_max": a["meta"].get("freeze_seconds_max")}
                               for a in data["artifacts"]], "failures": data["failures"]}

    # --- a day -------------------------------------------------------------------------------------
    def day(self, day: str) -> dict[str, Any]:
        result: dict[str, Any] = {"product": {}}
        marks = self.checkpoints(day) if self.s.pairs > 1 and "raw" not in self.s.skip else None
        for lane in self.lanes:
            result["product"][lane] = self.product(lane, day)
        stage = self.ensure_stage(day, result["product"].get("uncapped"))
        result["staged_bytes"] = _du(stage)
        result["sha256_seconds"] = self.sha_seconds(stage)
        if "raw" not in self.s.skip:
            result["raw"] = self.raw_pass(day, stage)
        if "naive" not in self.s.skip:
            result["naive"] = self.naive(day, stage)
        if "borg" not in self.s.skip:
            result["borg"] = self.borg(day, stage)
        result["zstd"] = self.zstd_variants(day, stage)
        if "fs" not in self.s.skip:
            result["fs"] = self.fs_level(day)
        if marks:
            result["pairs"] = self.pairs(day, stage, marks, result)
        shutil.rmtree(stage, ignore_errors=True)
        return result

    def raw_pass(self, day: str, stage: Path, again: int = 0) -> dict[str, Any]:
        init = self.raw_init(day, again)
        tree, how = self.raw_tree(day, stage, again)
        out = self.raw_restic(day, tree, again, init)
        out["stage"] = how
        if tree != stage:
            shutil.rmtree(tree.parent, ignore_errors=True)
        return out

    # --- the overhead, measured more than once -----------------------------------------------------
    def checkpoints(self, day: str) -> dict[str, Checkpoint]:
        """The uncapped lane and raw restic as they are before the day, so the day's (a) and (b) can run again."""
        lane = self.lanes["uncapped"]
        marks = {"a": Checkpoint(self.work / "checkpoints" / "a", linked=[lane["dir"] / "repo"],
                                 copied=[lane["dir"] / "state"], bucket=lane["bucket"]),
                 "b": Checkpoint(self.work / "checkpoints" / "b", linked=[self.work / "raw" / "repo"],
                                 copied=[self.work / "raw" / "cache"], bucket="bench-raw")}
        self.say(f"{day} checkpoint of the uncapped lane and of raw restic (to run the day's pair again)")
        return {who: mark.take(self.s3) for who, mark in marks.items()}

    def pairs(self, day: str, stage: Path, marks: dict[str, Checkpoint],
              result: dict[str, Any]) -> list[dict[str, Any]]:
        """The day's (a) uncapped and (b) again, s.pairs - 1 more times, each from the checkpoint and in
        alternating order ((b) first on odd repeats), so that drift of the shared host over the minutes of
        a bench lands on both sides. The first pair is the day's main one."""
        sha = result.get("sha256_seconds", 0.0)
        samples = [pair_sample("main", "ab", result["product"]["uncapped"], result["raw"], sha)]
        for again in range(1, self.s.pairs):
            order = "ba" if again % 2 else "ab"
            runs: dict[str, dict[str, Any]] = {}
            for who in order:
                marks[who].restore(self.s3)
                runs[who] = (self.product("uncapped", day, again) if who == "a"
                             else self.raw_pass(day, stage, again))
            samples.append(pair_sample(f"again {again}", order, runs["a"], runs["b"], sha))
            self.say(f"   pair {again + 1} ({order}): overhead {samples[-1]['overhead_pct']} %"
                     + ("" if samples[-1]["ok"] else " (a run failed: not counted)"))
        for mark in marks.values():
            mark.drop()
        return samples

    def run(self) -> dict[str, Any]:
        started = time.monotonic()
        self.results.update(name=self.s.name, started=datetime.now(UTC).isoformat(timespec="seconds"),
                            machine=machine_info())
        self.setup()
        self.results["days"] = {"day1": self.day("day1")}
        self.say(f"churn: {self.s.churn:.0%} of the containers' bytes, ~{self.s.churn:.0%} of the rows")
        stats, self.touched = blab.churn_containers(self.pve_root, self.s.churn, pages_into=self.s.pages_into)
        churn: dict[str, Any] = {"containers": stats}
        churn["by_kind_of_change"] = {k: sum(c[k] for c in stats.values())
                                      for k in ("replaced", "pages", "appended", "new")}
        churn.update(blab.churn_databases(self.lab_dir))
        churn.update(blab.churn_tfstate(self.lab_dir))
        churn["containers_changed_bytes"] = sum(c["changed"] for c in churn["containers"].values())
        churn["changed_bytes"] = (churn["containers_changed_bytes"] + churn["db_changed_bytes_est"]
                                  + churn["tfstate_changed_bytes"])
        self.results["churn"] = churn
        self.results["days"]["day2"] = self.day("day2")
        if "vi1" not in self.s.skip:
            self.results["vi1_suspend_probe"] = self.vi1_suspend_probe()
        self.results["storage_after_day2"] = self.storage_after()
        if self.s.profile:
            try:
                self.results["profile"] = self.profile()
            except (OSError, RuntimeError) as exc:
                self.results["profile"] = {"error": str(exc)}
        self.results["lab_peak_rss_kib"] = {g: self.sampler.peak_rss(f"lab-{g}", started, time.monotonic(), total=True)
                                            for g in LAB_GROUPS} if self.cg else {}
        self.results["wall_seconds"] = round(time.monotonic() - started, 1)
        self.results["finished"] = datetime.now(UTC).isoformat(timespec="seconds")
        return self.results

    def storage_after(self) -> dict[str, int]:
        out = {f"orch-{lane}-local": _du(info["dir"] / "repo") for lane, info in self.lanes.items()}
        out.update({f"orch-{lane}-offsite": bs3.bucket_bytes(self.s3, info["bucket"])[0]
                    for lane, info in self.lanes.items()})
        for name, path in (("raw-local", self.work / "raw" / "repo"), ("borg", self.work / "borg" / "repo"),
                           ("zstd-rsyncable", self.work / "zstd-rsyncable" / "repo"),
                           ("zstd", self.work / "zstd" / "repo")):
            if path.exists():
                out[name] = _du(path)
        out["raw-offsite"] = bs3.bucket_bytes(self.s3, "bench-raw")[0]
        return out

    def teardown(self) -> list[str]:
        problems = []
        self.sampler.stop()
        if not self.s.keep:
            try:
                stopped = blab.down(self.lab_dir)
                self.say(f"lab down: {', '.join(stopped) or 'nothing running'}")
            except Exception as exc:  # noqa: BLE001
                problems.append(f"lab down: {exc}")
        if self.cg:
            problems += self.cg.cleanup()
        if not self.s.keep and self.base.exists():
            shutil.rmtree(self.base, ignore_errors=True)
        return problems


def _again_tag(again: int) -> str:
    """Suffix of a repeat's probe files (a run measured once has none)."""
    return f"-again{again}" if again else ""


def _again_say(again: int) -> str:
    return f", again ({again})" if again else ""


def pair_sample(label: str, order: str, a: dict[str, Any], b: dict[str, Any], sha: float) -> dict[str, Any]:
    ov = report.overhead_of(a, b, sha) or {}
    # a failed or partial run is usually a shorter one: it must not pull the median down
    ok = a.get("status") == "success" and all(step.get("rc") == 0 for step in b["steps"].values())
    return {"label": label, "order": order, "ok": ok, "a_status": a.get("status"), **ov,
            "a_backup": next((p["seconds"] for p in a["phases"] if p["name"] == "backup:local"), None),
            "b_backup": b["steps"]["backup"]["wall"],
            "a_restic_own": (a.get("restic_total_duration") or {}).get("local"),
            "b_restic_own": b["steps"]["backup"].get("restic_total_duration"),
            "breakdown": report.breakdown_of(a, b, sha)}


def profile_categories(raw: str, rate: int) -> list[dict[str, Any]]:
    """Wall time of the product's main thread by what it was doing (py-spy --idle collapsed stacks; the
    background threads that only drain pipes are left out)."""
    cats: dict[str, int] = {}
    for line in raw.splitlines():
        stack, _, count = line.rpartition(" ")
        frames = stack.split(";")
        if not count.isdigit() or not frames[0].startswith("<module>"):
            continue
        leaf = frames[-1]
        if "sha256_file" in stack:
            cat = "sha256 of staged artifacts (hooks/base.py sha256_file)"
        elif leaf.startswith("ProxmoxHook.wait_task ") or leaf.startswith("wait_task "):
            cat = "sleeping between PVE task status polls (hooks/proxmox.py wait_task)"
        elif "wait_task" in stack:
            cat = "PVE task status/log API calls (wait_task)"
        elif "_find_and_load" in stack:
            cat = "Python imports"
        elif "runner.py" in stack and ("communicate" in stack or "wait (" in stack or "_wait" in stack):
            caller = next((f.split(" (")[0] for f in reversed(frames)
                           if ("restic_orch/" in f or "hooks/" in f) and "runner.py" not in f
                           and not f.startswith("Repo._run ")), "?")
            cat = f"waiting for a child command, called from {caller}()"
        else:
            name, _, where = leaf.partition(" (")
            cat = f"{name} ({where.rsplit('/', 1)[-1]}"
        cats[cat] = cats.get(cat, 0) + int(count)
    return [{"what": k, "seconds": round(v / rate, 2)} for k, v in sorted(cats.items(), key=lambda kv: -kv[1])[:15]]


def top_stacks(raw: str, n: int = 25) -> list[str]:
    rows = []
    for line in raw.splitlines():
        stack, _, count = line.rpartition(" ")
        if count.isdigit():
            frames = [f.split(" (")[0] + " (" + f.partition(" (")[2].rsplit("/", 1)[-1] for f in stack.split(";")]
            rows.append((int(count), ";".join(frames[-6:])))
    return [f"{c} {s}" for c, s in sorted(rows, reverse=True)[:n]]


def _kind_key(rel: Path) -> str:
    if rel.parts[0] == "proxmox":
        return "proxmox/" + rel.name.split("-")[2] if rel.name.startswith("vzdump-") else "proxmox/log"
    return rel.parts[0]


def size_by_kind(stage: Path) -> dict[str, int]:
    out: dict[str, int] = {}
    for dirpath, _dirs, files in os.walk(stage):
        for name in files:
            path = Path(dirpath) / name
            key = _kind_key(path.relative_to(stage))
            out[key] = out.get(key, 0) + path.stat().st_size
    return out


def commands_from_log(lines: list[str]) -> dict[str, dict[str, float]]:
    """Count and time of every child command the product ran, from its JSON-lines run log."""
    out: dict[str, dict[str, float]] = {}
    for line in lines:
        try:
            item = json.loads(line)
        except ValueError:
            continue
        if item.get("msg") != "command":
            continue
        tokens = str(item.get("argv", "")).split()
        while tokens and tokens[0] in ("ionice", "nice", "-c", "-n") or (tokens and tokens[0].isdigit()):
            tokens.pop(0)
        if not tokens:
            continue
        name = Path(tokens[0]).name
        if name == "restic":
            rest = tokens[1:]
            while rest and rest[0].startswith("-"):
                rest = rest[2:] if rest[0] in ("-o", "--cache-dir", "--limit-upload") else rest[1:]
            name = f"restic {rest[0]}" if rest else name
        entry = out.setdefault(name, {"count": 0, "seconds": 0.0})
        entry["count"] += 1
        entry["seconds"] = round(entry["seconds"] + float(item.get("seconds", 0)), 3)
    return out


def resource_children() -> float:
    import resource

    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def run(settings: Settings) -> dict[str, Any]:
    bench = Bench(settings)

    def on_signal(signum: int, _frame: object) -> None:
        raise Interrupted(signal.Signals(signum).name)

    old = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        return bench.run()
    finally:
        problems = bench.teardown()
        for sig, handler in old.items():
            signal.signal(sig, handler)
        if problems:
            print("clean-up problems: " + "; ".join(problems), file=sys.stderr)
