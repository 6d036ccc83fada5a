"""vzdump container archives: write them like `tar cpf - ... | zstd`, read them back.

Archives are real tar streams (PAX, numeric owners, modes, symlinks, hard links) so
restore tests can compare bytes, and GNU tar / zstd can list and unpack them.
"""

from __future__ import annotations

import fnmatch
import functools
import io
import os
import re
import shutil
import stat
import subprocess
import tarfile
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

# vzdump --compress value -> archive extension suffix after ".tar"
EXTENSIONS = {"0": "", "1": ".lzo", "lzo": ".lzo", "gzip": ".gz", "zstd": ".zst"}
_DECOMPRESS = {".zst": ["zstd", "-q", "-d", "-c"], ".gz": ["gzip", "-d", "-c"], ".lzo": ["lzop", "-d", "-c"]}
ARCHIVE_RE = re.compile(r"^vzdump-(lxc|qemu|openvz)-([1-9][0-9]{2,8})-(\d{4})_(\d{2})_(\d{2})-(\d{2})_(\d{2})_(\d{2})"
                        r"\.(tgz|tar(\.(zst|gz|lzo|bz2|xz))?|vma(\.(zst|gz|lzo))?)$")
CONF_RE = re.compile(r"^(\./etc/vzdump/(pct|vps)\.conf)$")


class ArchiveError(Exception):
    """A failed tar/compressor pipeline; `lines` is what the tools printed on stderr."""

    def __init__(self, message: str, lines: list[str] | None = None) -> None:
        super().__init__(message)
        self.lines = lines or []


class _Counter(io.RawIOBase):
    """Counts the tar stream bytes (tar --totals reports those, not the compressed size)."""

    def __init__(self, inner: IO[bytes], reading: bool) -> None:
        self.inner = inner
        self.count = 0
        self._reading = reading

    def readable(self) -> bool:
        return self._reading

    def writable(self) -> bool:
        return not self._reading

    def write(self, data: Any) -> int:
        n = self.inner.write(data)
        self.count += len(data)
        return n if n is not None else len(data)

    def read(self, size: int = -1) -> bytes:
        data = self.inner.read(size)
        self.count += len(data)
        return data


def compressor(ext: str, opts: Mapping[str, Any] | None = None) -> list[str]:
    """PVE::VZDump::compressor_info: the compressor vzdump pipes tar into, from the job's options.

    PVE 8 runs zstd without --rsyncable (gzip and pigz keep it); zstd=0 and pigz=1 mean half the CPUs.
    """
    opts = opts or {}
    half = ((os.cpu_count() or 1) + 1) // 2
    if ext == ".zst":
        return ["zstd", f"--threads={int(opts.get('zstd', 1)) or half}"]
    if ext == ".gz":
        pigz = int(opts.get("pigz", 0))
        return ["pigz", "-p", str(half if pigz == 1 else pigz), "--rsyncable"] if pigz > 0 else ["gzip", "--rsyncable"]
    return ["lzop"] if ext == ".lzo" else []


def tool_available(ext: str, opts: Mapping[str, Any] | None = None) -> bool:
    return not ext or shutil.which(compressor(ext, opts)[0]) is not None


@functools.cache
def _leading_dir_regex(pattern: str) -> re.Pattern[str]:
    # fnmatch with FNM_LEADING_DIR: a match may stop at a '/' ('./var/cache' covers './var/cache/x')
    return re.compile(fnmatch.translate(pattern).removesuffix(r"\Z") + r"(?:/.*)?\Z", re.DOTALL)


@dataclass(frozen=True)
class Excludes:
    """vzdump's exclusions as GNU tar applies them (wildcards match '/', FNM_LEADING_DIR).

    anchored: '--anchored --exclude=./x' patterns, matched from the start of the member name.
    unanchored: '--no-anchored' patterns, matched from any component of the name on.
    dirs_only: patterns with a trailing '/' that rsync (suspend mode's copy) applies to directories.
    """

    anchored: tuple[str, ...] = ()
    unanchored: tuple[str, ...] = ()
    dirs_only: tuple[str, ...] = ()

    def match(self, name: str, is_dir: bool = False) -> bool:
        """Whether tar (or, for dirs_only, rsync) leaves out the member `name` ('./var/cache')."""
        starts = [0] + [i + 1 for i, c in enumerate(name) if c == "/" and name[i + 1:i + 2] != "/"]
        if any(_leading_dir_regex(p).match(name) for p in self.anchored):
            return True
        if any(_leading_dir_regex(p).match(name, s) for p in self.unanchored for s in starts):
            return True
        # rsync: '/x' from the CT root, 'x' as the last components of the path
        return is_dir and any(fnmatch.fnmatchcase(name, "." + p if p.startswith("/") else "*/" + p)
                              for p in self.dirs_only)


def tar_human(n: float) -> str:
    """Sizes the way GNU tar --totals prints them: 539MiB, 1.2MiB, 20KiB."""
    units = ["B", "KiB", "MiB", "GiB", "TiB"]
    v, i = float(n), 0
    while v >= 1024 and i < len(units) - 1:
        v /= 1024
        i += 1
    if i == 0:
        return f"{int(n)}B"
    return f"{v:.1f}{units[i]}" if v < 10 else f"{round(v)}{units[i]}"


def totals_line(verb: str, count: int, elapsed: float) -> str:
    rate = count / max(elapsed, 1e-3)
    return f"Total bytes {verb}: {count} ({tar_human(count)}, {tar_human(rate)}/s)"


def _walk(rootfs: Path, excludes: Excludes, mounts: Mapping[str, Path] | None = None,
          one_file_system: bool = True) -> Iterator[tuple[str, str]]:
    """(filesystem path, arcname) in sorted depth-first order, skipping excluded subtrees.

    mounts: arcname of a mount point ('./srv/data') -> the volume's tree mounted there.
    one_file_system: vzdump's tar over the mounted snapshot (snapshot and stop mode, PVE::VZDump::LXC
    archive) gets './' plus '.<mp>' per volume with --one-file-system: a mount point is stored as the
    mounted volume's root directory without its content, which follows as a source of its own. False:
    suspend mode, where rsync already copied the volumes into one tree and tar archives '.'.
    """
    mounts = dict(mounts or {})
    sources = [(str(rootfs), ".")]
    if one_file_system:
        sources += [(str(path), arc) for arc, path in mounts.items()]
    for top, top_arc in sources:
        if top_arc != "." and excludes.match(top_arc, True):
            continue
        yield top, top_arc
        stack = [(top, top_arc)]
        while stack:
            path, arc = stack.pop()
            with os.scandir(path) as it:
                entries = sorted(it, key=lambda e: e.name)
            subdirs = []
            for entry in entries:
                rel = f"{arc}/{entry.name}"
                is_dir = entry.is_dir(follow_symlinks=False)
                if excludes.match(rel, is_dir):
                    continue
                fs_path = str(mounts[rel]) if is_dir and rel in mounts else entry.path
                yield fs_path, rel
                if is_dir and not (one_file_system and rel in mounts):
                    subdirs.append((fs_path, rel))
            stack.extend(reversed(subdirs))


def tree_bytes(rootfs: Path, excludes: Excludes, mounts: Mapping[str, Path] | None = None) -> int:
    """Bytes of the regular files the archive would hold (what suspend mode's rsync copies)."""
    total = 0
    for path, _arcname in _walk(rootfs, excludes, mounts, one_file_system=False):
        try:
            st = os.lstat(path)
        except OSError:
            continue
        total += st.st_size if stat.S_ISREG(st.st_mode) else 0
    return total


def write_archive(out: Path, compress: list[str], head: list[tuple[str, bytes, int, int]], rootfs: Path,
                  excludes: Excludes, map_id: Callable[[int], int], fail: str | None = None,
                  mounts: Mapping[str, Path] | None = None, one_file_system: bool = True) -> int:
    """Write head members then the rootfs into `out` through `compress` (argv, [] for none); return the
    tar byte count. tar's excludes apply to the head members too, as they do in vzdump's tar.

    fail: simulate the compressor hitting a write error (e.g. 'No space left on device').
    mounts, one_file_system: the mount point volumes backed up with the rootfs (see _walk).
    """
    with out.open("wb") as fh:
        proc = subprocess.Popen(compress, stdin=subprocess.PIPE, stdout=fh) if compress else None
        counter = _Counter(proc.stdin if proc else fh, reading=False)  # type: ignore[arg-type]
        tar = tarfile.open(fileobj=counter, mode="w|", format=tarfile.PAX_FORMAT)  # noqa: SIM115
        try:
            now = int(time.time())
            for name, data, uid, gid in head:
                if excludes.match(name):
                    continue
                info = tarfile.TarInfo(name)
                info.size, info.mode, info.mtime, info.uid, info.gid = len(data), 0o644, now, uid, gid
                tar.addfile(info, io.BytesIO(data))
            for index, (path, arcname) in enumerate(_walk(rootfs, excludes, mounts, one_file_system)):
                if fail and index >= 20:
                    raise ArchiveError(f"tar: -: Cannot write: {fail}",
                                       [f"tar: -: Cannot write: {fail}", "tar: Error is not recoverable: exiting now"])
                info = tar.gettarinfo(path, arcname)
                if info is None:  # sockets and the like: GNU tar skips them too
                    continue
                info.uname = info.gname = ""  # --numeric-owner
                info.uid, info.gid = map_id(info.uid), map_id(info.gid)
                info.mtime = int(info.mtime)
                if info.isreg():
                    with open(path, "rb") as src:
                        tar.addfile(info, src)
                else:
                    tar.addfile(info)
            tar.close()
        finally:
            if proc:
                assert proc.stdin is not None
                proc.stdin.close()
                if proc.wait() != 0 and not fail:
                    raise ArchiveError(f"compressor '{compress[0]}' failed: exit code {proc.returncode}")
    return counter.count


def archive_ext(path: Path) -> str:
    name = path.name
    for ext in (".zst", ".gz", ".lzo"):
        if name.endswith(".tar" + ext):
            return ext
    if name.endswith(".tgz"):
        return ".gz"
    if name.endswith(".tar"):
        return ""
    raise ArchiveError(f"file does not look like a template archive: {path}")


class Reader:
    """Decompressed tar stream of an archive; finish() returns the tools' complaints."""

    def __init__(self, path: Path) -> None:
        ext = archive_ext(path)
        if ext and shutil.which(_DECOMPRESS[ext][0]) is None:
            raise ArchiveError(f"unable to find command '{_DECOMPRESS[ext][0]}'")
        self._src = path.open("rb")
        self._proc: subprocess.Popen[bytes] | None = None
        if ext:
            # Fed via stdin like PVE's restore, so errors read '/*stdin*\ : ...'.
            self._proc = subprocess.Popen(_DECOMPRESS[ext], stdin=self._src, stdout=subprocess.PIPE,
                                          stderr=subprocess.PIPE)
            assert self._proc.stdout is not None
            self.stream = _Counter(self._proc.stdout, reading=True)
        else:
            self.stream = _Counter(self._src, reading=True)

    def finish(self) -> list[str]:
        self._src.close()
        if not self._proc:
            return []
        assert self._proc.stdout is not None and self._proc.stderr is not None
        self._proc.stdout.close()
        err = self._proc.stderr.read().decode(errors="replace")
        self._proc.stderr.close()
        if self._proc.wait() == 0:
            return []
        return [line.strip() for line in err.splitlines() if line.strip()] or [
            f"{_DECOMPRESS[archive_ext(Path(self._src.name))][0]}: exit code {self._proc.returncode}"]


def read_config(path: Path) -> tuple[str, str]:
    """PVE::Storage::extract_vzdump_config_tar: find ./etc/vzdump/pct.conf and return it."""
    if not path.is_file():
        raise ArchiveError(f"ERROR: file '{path}' does not exist")
    reader = Reader(path)
    try:
        with tarfile.open(fileobj=reader.stream, mode="r|") as tar:
            for member in tar:
                if CONF_RE.match(member.name) and member.isreg():
                    fh = tar.extractfile(member)
                    assert fh is not None
                    return fh.read().decode(), member.name
    except (tarfile.TarError, EOFError, OSError):
        pass
    finally:
        reader.finish()  # stopping early makes the decompressor fail; that is fine here
    raise ArchiveError("ERROR: archive contains no configuration file")


def extract(path: Path, dest: Path, member_filter: Callable[[tarfile.TarInfo], tarfile.TarInfo | None]) -> int:
    """Unpack the whole archive into dest like `tar xpf - --numeric-owner`; return bytes read."""
    real_dest = os.path.realpath(dest)

    def _filter(member: tarfile.TarInfo, _path: str) -> tarfile.TarInfo | None:
        name = member.name
        parts = [p for p in name.split("/") if p not in ("", ".")]
        if name.startswith("/") or ".." in parts:
            return None
        parent = os.path.realpath(os.path.join(dest, *parts[:-1])) if parts else real_dest
        if parent != real_dest and not parent.startswith(real_dest + os.sep):
            return None  # would write through a symlink out of the rootfs
        return member_filter(member)

    reader = Reader(path)
    tar_lines: list[str] = []
    try:
        with tarfile.open(fileobj=reader.stream, mode="r|") as tar:
            tar.extractall(dest, numeric_owner=True, filter=_filter)  # noqa: S202 - _filter confines paths
        # tarfile stops at the end-of-archive marker; the record padding after it must be read too (as tar
        # does), or a decompressor still writing it dies of a broken pipe and a good archive looks broken
        while reader.stream.read(1 << 16):
            pass
    except (tarfile.TarError, EOFError, OSError):
        tar_lines = ["tar: Unexpected EOF in archive", "tar: Error is not recoverable: exiting now"]
    finally:
        tool_lines = reader.finish()
    if tool_lines or tar_lines:
        raise ArchiveError("extraction failed", tool_lines + tar_lines)
    return reader.stream.count
