"""Run one command and measure its whole process tree: `python -m bench.probe --out F [--cgroup DIR]... -- CMD...`

The probe joins the given cgroups first, so the command and every descendant inherit them (the CPU cap
and the cpuacct accounting). After the command is reaped, getrusage(RUSAGE_CHILDREN) gives the CPU time
and the largest single-process peak RSS of the tree, and /proc/self/io the bytes read and written by the
tree (Linux adds a reaped child's I/O counters to its parent's).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import signal
import subprocess
import sys
import time


def _io() -> dict[str, int]:
    out = {}
    with open("/proc/self/io") as fh:
        for line in fh:
            key, _, value = line.partition(":")
            out[key.strip()] = int(value)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.probe")
    parser.add_argument("--out", required=True)
    parser.add_argument("--cgroup", action="append", default=[])
    parser.add_argument("--stdout", default=None)
    parser.add_argument("--stderr", default=None)
    parser.add_argument("--cwd", default=None)
    parser.add_argument("cmd", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    cmd = args.cmd[1:] if args.cmd and args.cmd[0] == "--" else args.cmd
    if not cmd:
        parser.error("no command")
    for group in args.cgroup:
        with open(os.path.join(group, "cgroup.procs"), "w") as fh:
            fh.write(str(os.getpid()))
    io0 = _io()
    out = open(args.stdout, "wb") if args.stdout else None  # noqa: SIM115
    err = open(args.stderr, "wb") if args.stderr else None  # noqa: SIM115
    t0 = time.monotonic()
    wall0 = time.time()
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=err, cwd=args.cwd)

    def forward(signum: int, _frame: object) -> None:
        try:
            proc.send_signal(signum)
        except ProcessLookupError:
            pass

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    rc = proc.wait()
    wall = time.monotonic() - t0
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    io1 = _io()
    result = {
        "argv": cmd, "rc": rc, "started": wall0, "wall": round(wall, 3),
        "user": round(ru.ru_utime, 3), "sys": round(ru.ru_stime, 3),
        "maxrss_kib": ru.ru_maxrss,
        **{key: io1.get(key, 0) - io0.get(key, 0) for key in ("rchar", "wchar", "read_bytes", "write_bytes")},
    }
    with open(args.out, "w") as fh:
        json.dump(result, fh)
    return 0


if __name__ == "__main__":
    sys.exit(main())
