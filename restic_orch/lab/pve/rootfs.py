"""Deterministic container root filesystems: entry model, budget scaling, and the writer.

What goes into a tree lives in rootfs_profiles.py; this module only materialises it.
Random payloads come from seeded random.Random.randbytes in 4 MiB blocks, which keeps
GiB-sized trees fast, and a seed shared between containers yields byte-identical files
(the "base system"), which a dedup benchmark relies on.
"""

from __future__ import annotations

import os
import random
from dataclasses import dataclass, field
from pathlib import Path

from . import layout

CHUNK = 4 * 1024 * 1024


def volume_dir(root: Path, vmid: int, key: str) -> Path:
    """The tree of one container volume: the rootfs in lxc/<vmid>/rootfs, a mount point volume mpN in
    lxc/<vmid>/mpN (what the running container sees below the mount path; the rootfs only holds the empty
    mount point directory, like a subvol that is not mounted)."""
    return layout.rootfs_dir(root, vmid) if key == "rootfs" else layout.ct_dir(root, vmid) / key


@dataclass
class Entry:
    path: str
    kind: str  # file | dir | symlink | hardlink
    data: bytes | None = None  # literal content for small files
    weight: float = 0.0  # share of the budget for generated payload files
    size: int = 0
    seed: str = ""
    zero_frac: float = 0.0  # trailing zeros, like padding in real binaries
    prefix: bytes = b""
    mode: int = 0o644
    uid: int = 0
    gid: int = 0
    target: str = ""
    mtime: int = 1_700_000_000


@dataclass
class Tree:
    entries: list[Entry] = field(default_factory=list)

    def add(self, entry: Entry) -> Entry:
        self.entries.append(entry)
        return entry

    def dir(self, path: str, mode: int = 0o755, **kw: int) -> None:
        self.add(Entry(path, "dir", mode=mode, **kw))

    def text(self, path: str, text: str | bytes, mode: int = 0o644, **kw: int) -> None:
        data = text.encode() if isinstance(text, str) else text
        self.add(Entry(path, "file", data=data, mode=mode, **kw))

    def blob(self, path: str, weight: float, seed: str, mode: int = 0o644, zero_frac: float = 0.0,
             prefix: bytes = b"", **kw: int) -> None:
        self.add(Entry(path, "file", weight=weight, seed=seed, mode=mode, zero_frac=zero_frac,
                       prefix=prefix, **kw))

    def symlink(self, path: str, target: str, **kw: int) -> None:
        self.add(Entry(path, "symlink", target=target, mode=0o777, **kw))

    def hardlink(self, path: str, source: str) -> None:
        self.add(Entry(path, "hardlink", target=source))

    def fixed_bytes(self) -> int:
        return sum(len(e.data) for e in self.entries if e.data is not None)

    def scale_to(self, budget: int) -> None:
        """Size the weighted payload files so the whole tree is close to `budget` bytes."""
        blobs = [e for e in self.entries if e.kind == "file" and e.data is None]
        total_weight = sum(e.weight for e in blobs) or 1.0
        left = max(budget - self.fixed_bytes(), 0)
        for e in blobs:
            e.size = max(len(e.prefix) + 64, int(left * e.weight / total_weight))


def _write_payload(path: Path, e: Entry) -> None:
    rng = random.Random(e.seed)
    zeros = int(e.size * e.zero_frac)
    rand_len = max(e.size - zeros - len(e.prefix), 0)
    with path.open("wb") as fh:
        fh.write(e.prefix)
        while rand_len > 0:
            n = min(CHUNK, rand_len)
            fh.write(rng.randbytes(n))
            rand_len -= n
        while zeros > 0:
            n = min(CHUNK, zeros)
            fh.write(bytes(n))
            zeros -= n


def write_tree(dest: Path, tree: Tree, uid_shift: int | None) -> None:
    """Create the entries below dest. Owners are only applied when uid_shift is not None."""
    dest.mkdir(parents=True, exist_ok=True)
    dirs: list[tuple[Path, Entry]] = []
    for e in tree.entries:
        path = dest / e.path
        path.parent.mkdir(parents=True, exist_ok=True)
        if e.kind == "dir":
            path.mkdir(exist_ok=True)
            dirs.append((path, e))
            continue
        if e.kind == "symlink":
            os.symlink(e.target, path)
        elif e.kind == "hardlink":
            os.link(dest / e.target, path)
            continue
        elif e.data is not None:
            path.write_bytes(e.data)
        else:
            _write_payload(path, e)
        if uid_shift is not None:
            os.lchown(path, e.uid + uid_shift, e.gid + uid_shift)
        if e.kind == "file":
            os.chmod(path, e.mode)
        os.utime(path, (e.mtime, e.mtime), follow_symlinks=False)
    # Directory times last: creating children bumps them. Deepest first for the same reason.
    for path, e in sorted(dirs, key=lambda d: -len(d[0].parts)):
        if uid_shift is not None:
            os.lchown(path, e.uid + uid_shift, e.gid + uid_shift)
        os.chmod(path, e.mode)
        os.utime(path, (e.mtime, e.mtime))
    # Parent dirs nobody declared: container-root owned, 0755, fixed time (reproducible trees).
    declared = {path for path, _ in dirs}
    for dirpath, _dirnames, _files in os.walk(dest):
        if Path(dirpath) not in declared:
            if uid_shift is not None:
                os.lchown(dirpath, uid_shift, uid_shift)
            os.chmod(dirpath, 0o755)  # noqa: S103 - normal directory mode inside a container
            os.utime(dirpath, (1_700_000_000, 1_700_000_000))
