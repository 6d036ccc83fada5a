"""Find snapshots (latest, an id, a day) and read what is inside: the manifest, files, files inside archives."""

from __future__ import annotations

import json
import re
import tarfile
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO, Any

from restic_orch.hooks import registry
from restic_orch.hooks.base import Artifact
from restic_orch.hooks.registry import SelectionError

from . import restic, runner, tags
from .staging import MANIFEST, Manifest

__all__ = ["Located", "SelectionError", "list_inside", "locate"]

DAY = re.compile(r"^\d{4}-\d{2}-\d{2}$")
HEX = re.compile(r"^[0-9a-f]{4,64}$")


@dataclass
class Located:
    repo: restic.Repo
    snapshot: restic.Snapshot
    root: str                   # the day directory inside the snapshot, e.g. /var/lib/restic-orch/staging/2026-11-25
    manifest: Manifest

    @property
    def artifacts(self) -> list[Artifact]:
        return list(self.manifest.artifacts)

    def path_of(self, artifact: Artifact) -> str:
        return f"{self.root}/{artifact.path}"

    def staged_path(self, path: str | None) -> str | None:
        """A path relative to the staged day as restic names it in the snapshot (None: the whole snapshot)."""
        return f"{self.root}/{path.strip('/')}" if path else None


def _holds(snapshot: restic.Snapshot, selectors: list[str]) -> bool:
    if not selectors:
        return not tags.scoped(snapshot)
    return registry.has_kinds(set(tags.kinds(snapshot)), selectors)


def resolve_snapshot(repo: restic.Repo, spec: str, host: str | None = None,
                     selectors: list[str] | None = None) -> restic.Snapshot:
    """latest = the newest snapshot holding what is asked for (an `--only` backup is passed over otherwise)."""
    snaps = repo.snapshots(tags=[tags.TAG], host=host) if host else repo.snapshots(tags=[tags.TAG])
    if not snaps:
        where = f" for host {host}" if host else ""
        raise SelectionError(f"no restic-orch snapshot in repository {repo.name}{where}")
    if spec in ("latest", ""):
        fitting = [s for s in snaps if _holds(s, selectors or [])]
        return (fitting or snaps)[-1]
    if DAY.match(spec):
        same_day = [s for s in snaps if s.time.date().isoformat() == spec or _staged_day(s) == spec]
        if not same_day:
            days = sorted({_staged_day(s) or s.time.date().isoformat() for s in snaps})
            raise SelectionError(f"no snapshot of {spec}; days available: {', '.join(days[-10:])}")
        return same_day[-1]
    if HEX.match(spec):
        found = [s for s in snaps if s.id.startswith(spec)]
        if len(found) == 1:
            return found[0]
        if len(found) > 1:
            raise SelectionError(f"snapshot id {spec} is ambiguous: {', '.join(s.short_id for s in found)}")
    raise SelectionError(f"no snapshot {spec!r} in repository {repo.name} (use latest, an id or YYYY-MM-DD)")


def _staged_day(snapshot: restic.Snapshot) -> str | None:
    if snapshot.paths:
        name = PurePosixPath(snapshot.paths[0]).name
        if DAY.match(name):
            return name
    return None


def read_manifest(repo: restic.Repo, snapshot: restic.Snapshot) -> tuple[str, Manifest]:
    if not snapshot.paths:
        raise SelectionError(f"snapshot {snapshot.short_id} has no path")
    root = snapshot.paths[0]
    with tempfile.TemporaryDirectory(prefix="restic-orch-") as tmp:
        target = Path(tmp) / MANIFEST
        repo.dump_to_file(snapshot.id, f"{root}/{MANIFEST}", target, timeout=600)
        return root, Manifest.from_json(json.loads(target.read_text(encoding="utf-8")))


def locate(repo: restic.Repo, spec: str, host: str | None = None, selectors: list[str] | None = None) -> Located:
    snapshot = resolve_snapshot(repo, spec, host, selectors)
    root, manifest = read_manifest(repo, snapshot)
    return Located(repo, snapshot, root, manifest)


def list_inside(located: Located, path: str) -> list[dict[str, Any]] | None:
    """The entries under a path inside an archive artifact (`ct:102:/etc`), or None for a plain path."""
    prefix, _, rest = path.partition(":")
    if not registry.has_inner_paths(prefix):
        return None
    name, _, inner = rest.partition(":")
    selector = registry.parse(f"{prefix}:{name}:{inner or '/'}")
    matches = [a for a in located.artifacts if a.component == selector.text]
    if not matches or selector.inner is None:
        raise SelectionError(f"no {selector.text} in snapshot {located.snapshot.short_id}")
    return list_in_archive(located, matches[0], selector.inner)


# ---------------------------------------------------------------- reading inside archives
_DECOMPRESS = {".zst": ["zstd", "-dcq"], ".gz": ["gzip", "-dc"], ".lzo": ["lzop", "-dc"]}


@contextmanager
def archive_stream(located: Located, artifact: Artifact) -> Iterator[IO[bytes]]:
    """The uncompressed tar bytes of a vzdump archive, streamed out of restic (no temporary copy)."""
    dump = located.repo.dump_stream(located.snapshot.id, located.path_of(artifact))
    suffix = PurePosixPath(artifact.path).suffix
    decompress = _DECOMPRESS.get(suffix)
    try:
        if decompress is None:
            yield dump.stdout
            dump.wait(timeout=3600)
        else:
            with runner.Stream(decompress, stdin=dump.stdout) as unpack:
                dump.stdout.close()  # the decompressor owns the pipe now; restic sees SIGPIPE if it stops early
                yield unpack.stdout
                unpack.wait(timeout=3600)
            dump.wait(timeout=3600)
    finally:
        dump.__exit__(None, None, None)


def _member_name(path: str) -> str:
    return "./" + path.strip("/")


def list_in_archive(located: Located, artifact: Artifact, prefix: str) -> list[dict[str, Any]]:
    wanted = _member_name(prefix).rstrip("/")
    rows = []
    with archive_stream(located, artifact) as stream, tarfile.open(fileobj=stream, mode="r|") as tar:
        for member in tar:
            name = member.name if member.name.startswith("./") else "./" + member.name
            if name == wanted or name.startswith(wanted + "/") or wanted == ".":
                rows.append({"path": name[1:] or "/", "type": _type(member), "size": member.size,
                             "mode": f"{member.mode:04o}", "uid": member.uid, "gid": member.gid})
    return rows


def extract_from_archive(located: Located, artifact: Artifact, path: str, target_dir: Path) -> Path:
    """Extract one regular file (or a directory tree) of a container archive under target_dir."""
    wanted = _member_name(path).rstrip("/")
    written: Path | None = None
    with archive_stream(located, artifact) as stream, tarfile.open(fileobj=stream, mode="r|") as tar:
        for member in tar:
            name = member.name if member.name.startswith("./") else "./" + member.name
            if not (name == wanted or name.startswith(wanted + "/")):
                continue
            dest = target_dir / name[2:]
            if member.isdir():
                dest.mkdir(parents=True, exist_ok=True)
            elif member.isfile():
                dest.parent.mkdir(parents=True, exist_ok=True)
                if dest.exists():
                    raise FileExistsError(f"{dest} exists already; choose an empty --target-dir")
                source = tar.extractfile(member)
                assert source is not None
                with open(dest, "wb") as out:
                    while block := source.read(1 << 20):
                        out.write(block)
                dest.chmod(member.mode & 0o7777)
            elif member.issym():
                dest.parent.mkdir(parents=True, exist_ok=True)
                dest.symlink_to(member.linkname)
            written = written or dest
    if written is None:
        raise SelectionError(f"{path} is not in {artifact.path}")
    return target_dir / wanted[2:]


def _type(member: tarfile.TarInfo) -> str:
    if member.isdir():
        return "dir"
    if member.issym():
        return "symlink"
    if member.islnk():
        return "hardlink"
    return "file" if member.isfile() else "special"
