"""Pack the restic-orch project source into a reproducible .tar.gz (an sdist pip can install).

Run on the controller by the role: the same source gives the same bytes (sorted members, fixed
owner, mode and mtime, no gzip timestamp), so the copy to the host changes only when the source does.

usage: pack_source.py SOURCE_DIR OUTPUT.tar.gz ENTRY [ENTRY ...]
"""

from __future__ import annotations

import gzip
import io
import os
import sys
import tarfile

# 2024-01-01: fixed, and after 1980 so the wheel built from it can be a zip
MTIME = 1704067200
SKIP_DIRS = {"__pycache__", ".git", ".mypy_cache", ".pytest_cache", ".ruff_cache", "build", "dist"}


def members(source: str, entries: list[str]) -> list[str]:
    found: list[str] = []
    for entry in entries:
        path = os.path.join(source, entry)
        if os.path.isfile(path):
            found.append(entry)
        elif os.path.isdir(path):
            for top, dirs, files in os.walk(path):
                dirs[:] = [d for d in dirs if d not in SKIP_DIRS and not d.endswith(".egg-info")]
                for name in files:
                    if not name.endswith((".pyc", ".pyo")):
                        found.append(os.path.relpath(os.path.join(top, name), source))
    return sorted(found)


def main(argv: list[str]) -> int:
    if len(argv) < 4:
        print(__doc__, file=sys.stderr)
        return 2
    source, output, entries = argv[1], argv[2], argv[3:]
    names = members(source, entries)
    if "pyproject.toml" not in names:
        print(f"{source}: no pyproject.toml among {entries}", file=sys.stderr)
        return 1
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for name in names:
            path = os.path.join(source, name)
            info = tarfile.TarInfo("restic-orch/" + name.replace(os.sep, "/"))
            info.size = os.path.getsize(path)
            info.mtime = MTIME
            info.mode = 0o755 if os.access(path, os.X_OK) else 0o644
            info.uid = info.gid = 0
            info.uname = info.gname = "root"
            with open(path, "rb") as handle:
                tar.addfile(info, handle)
    with open(output, "wb") as raw, gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) as gz:
        gz.write(buffer.getvalue())
    print(f"{len(names)} files")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
