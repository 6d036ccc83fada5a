"""The CPU budget is held by the kernel: a capped process tree cannot use more than its share."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from restic_orch import cpucap

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or (cpucap._v1_dir() is None and not cpucap._v2_has_cpu()),
    reason="needs root and a cgroup CPU controller")

# a child that applies the cap, then burns CPU in two processes for a fixed wall time and reports
PROBE = textwrap.dedent("""
    import json, os, resource, sys, time
    from restic_orch import cpucap
    percent = None if sys.argv[1] == "none" else float(sys.argv[1])
    cap = cpucap.apply(percent)
    seconds = float(sys.argv[2])
    start = time.monotonic()
    kids = []
    for _ in range(2):
        pid = os.fork()
        if pid == 0:
            while time.monotonic() - start < seconds:
                pass
            os._exit(0)
        kids.append(pid)
    for pid in kids:
        os.waitpid(pid, 0)
    wall = time.monotonic() - start
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    print(json.dumps({"cap": cap.to_json(), "wall": wall, "cpu": usage.ru_utime + usage.ru_stime,
                      "quota": cpucap.effective_quota()}))
""")


def _probe(percent: str, seconds: float = 3.0, cgroup: Path | None = None) -> dict:
    argv = [sys.executable, "-c", PROBE, percent, str(seconds)]
    if cgroup is not None:
        # start the probe inside a cgroup that is already capped (what a systemd unit's CPUQuota= gives)
        argv = ["sh", "-c", f'echo $$ > {cgroup}/cgroup.procs && exec "$0" "$@"'] + argv
    out = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=True,
                         cwd=Path(__file__).resolve().parents[2])
    return json.loads(out.stdout.strip().splitlines()[-1])


def _leftovers() -> list[Path]:
    parents = [p for p in (cpucap._v1_dir(), cpucap.CGROUP_ROOT / "restic-orch") if p is not None and p.exists()]
    return [child for parent in parents for child in parent.glob(cpucap.PREFIX + "*")]


def test_capped_tree_stays_within_its_share_and_cleans_up():
    before = set(_leftovers())
    capped = _probe("25")  # 25 % of the host
    cores = cpucap.host_cores()
    assert capped["cap"]["method"] in ("cgroup1", "cgroup2")
    assert capped["cap"]["cores"] == pytest.approx(0.25 * cores)
    assert capped["quota"] == pytest.approx(0.25 * cores, rel=0.01)
    # two busy children for 3 s would use 2 cores' worth uncapped; the quota holds them to 25 % of the host
    assert capped["cpu"] <= 0.25 * cores * capped["wall"] * 1.15 + 0.1, capped
    uncapped = _probe("none")
    assert uncapped["cap"]["method"] == "off" and uncapped["quota"] is None
    # the cap, not the machine, held it (the other test worker shares the cores: a margin, not 2x)
    assert uncapped["cpu"] > capped["cpu"] * 1.2, (uncapped, capped)
    assert set(_leftovers()) == before, "the run's cgroup must be removed when it exits"


def test_stricter_quota_already_in_force_is_kept(tmp_path):
    base = cpucap._v1_dir() or cpucap.CGROUP_ROOT
    outer = base / f"{cpucap.PREFIX}test-outer-{os.getpid()}"
    outer.mkdir()
    try:
        if (outer / "cpu.max").exists():
            (outer / "cpu.max").write_text("20000 100000\n")
        else:
            (outer / "cpu.cfs_period_us").write_text("100000\n")
            (outer / "cpu.cfs_quota_us").write_text("20000\n")
        result = _probe("30", seconds=1.0, cgroup=outer)
        assert result["cap"]["method"] == "inherited"
        assert result["cap"]["cores"] == pytest.approx(0.2)
        assert result["cpu"] <= 0.2 * result["wall"] * 1.2 + 0.1
    finally:
        outer.rmdir()


def test_killed_run_leaves_no_cgroup_behind():
    """A run killed with SIGKILL cannot clean up; the next run sweeps its empty cgroup away."""
    proc = subprocess.Popen([sys.executable, "-c", "from restic_orch import cpucap; import time;"
                             " print(cpucap.apply(30).cgroup, flush=True); time.sleep(60)"],
                            stdout=subprocess.PIPE, text=True, cwd=Path(__file__).resolve().parents[2])
    path = Path(proc.stdout.readline().strip())
    assert path.is_dir()
    proc.kill()
    proc.wait()
    assert path.is_dir()  # nobody removed it
    _probe("30", seconds=0.2)
    assert not path.exists()
