"""Find snapshots (latest, an id, a day) and read what is inside: the manifest, files, files inside archives."""

from __future__ import annotations

import json
import logging
import re
import tarfile
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import date
from pathlib import Path, PurePosixPath
from typing import IO, Any

from restic_orch.hooks import registry
from restic_orch.hooks.base import Artifact
from restic_orch.hooks.registry import SelectionError

from . import restic, runner, tags
from .staging import MANIFEST, Manifest

__all__ = ["Fallback", "Located", "SelectionError", "list_inside", "locate"]

log = logging.getLogger("restic_orch.browse")

DAY = re.compile(r"^\d{4}-\d{2}-\d{2}$")
HEX = re.compile(r"^[0-9a-f]{4,64}$")


@dataclass(frozen=True)
class Fallback:
    """Why the snapshot located is not the newest: what was asked for failed to dump on a later night."""

    passed_over: str            # short id of the newer snapshot that lacks it
    day: str                    # that snapshot's day
    selectors: tuple[str, ...]  # what it lacks
    message: str                # the whole explanation, as the plan and the log show it


@dataclass
class Located:
    repo: restic.Repo
    snapshot: restic.Snapshot
    root: str                   # the day directory inside the snapshot, e.g. /var/lib/restic-orch/staging/2026-11-25
    manifest: Manifest
    fallback: Fallback | None = None

    @property
    def day(self) -> str:
        return day_of(self.snapshot)

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


def check_spec(spec: str | None) -> None:
    """A SelectionError when `spec` can name no snapshot at all: checked before any repository is read."""
    if spec in (None, "", "latest") or HEX.match(spec):
        return
    if DAY.match(spec):
        try:
            date.fromisoformat(spec)
            return
        except ValueError:
            raise SelectionError(f"--snapshot {spec}: no such day") from None
    raise SelectionError(f"no snapshot {spec!r}: use latest, a snapshot id or YYYY-MM-DD")


def _snapshots(repo: restic.Repo, host: str | None) -> list[restic.Snapshot]:
    snaps = repo.snapshots(tags=[tags.TAG], host=host) if host else repo.snapshots(tags=[tags.TAG])
    if not snaps:
        where = f" for host {host}" if host else ""
        raise SelectionError(f"no restic-orch snapshot in repository {repo.name}{where}")
    return snaps


def resolve_snapshot(repo: restic.Repo, spec: str, host: str | None = None,
                     selectors: list[str] | None = None) -> restic.Snapshot:
    """latest = the newest snapshot holding what is asked for (an `--only` backup is passed over otherwise)."""
    return _resolve(repo, _snapshots(repo, host), spec, selectors)


def _resolve(repo: restic.Repo, snaps: list[restic.Snapshot], spec: str,
             selectors: list[str] | None) -> restic.Snapshot:
    if is_latest(spec):
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


def is_latest(spec: str | None) -> bool:
    return spec in (None, "", "latest")


def day_of(snapshot: restic.Snapshot) -> str:
    """The day a snapshot holds: its staged day directory, else the day restic recorded."""
    return _staged_day(snapshot) or snapshot.time.date().isoformat()


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


def _read(repo: restic.Repo, snapshot: restic.Snapshot) -> Located:
    root, manifest = read_manifest(repo, snapshot)
    return Located(repo, snapshot, root, manifest)


def locate(repo: restic.Repo, spec: str, host: str | None = None, selectors: list[str] | None = None) -> Located:
    """The snapshot `spec` names and its manifest.

    When the selectors ask for what that snapshot lacks because its dump failed that night (its manifest
    records the failure), `latest` moves to the newest snapshot with a good copy and says so in `fallback`;
    an explicit id or day is refused with a SelectionError naming that snapshot instead.
    """
    snaps = _snapshots(repo, host)
    located = _read(repo, _resolve(repo, snaps, spec, selectors))
    wanted = [registry.parse(text) for text in selectors or []]
    missed = failed_dumps(located.manifest, wanted)
    if not missed:
        if wanted and is_latest(spec):
            located.fallback = _passed_over(repo, snaps, located, wanted)
        return located
    good = _newest_good_copy(repo, snaps, wanted, selectors or [], skip=located.snapshot.id)
    lacking = _lacking(located, missed)
    if good is None:
        raise SelectionError(f"{lacking}; no snapshot in repository {repo.name} holds a good copy")
    suggestion = f"the newest snapshot with a good copy is {good.snapshot.short_id} of {good.day}"
    if not is_latest(spec):
        raise SelectionError(f"{lacking}; {suggestion} (--snapshot {good.snapshot.short_id})")
    good.fallback = Fallback(located.snapshot.short_id, located.day, tuple(s for s, _ in missed),
                             f"the latest {lacking}; {suggestion}: restoring from it")
    log.warning(good.fallback.message)
    return good


# ---------------------------------------------------------------- a dump that failed that night
def _covers(failure: dict[str, Any], selector: registry.Selector) -> bool:
    """Whether a failure in a manifest is why nothing matches the selector: its component failed, its whole
    source did (`<prefix>:<source>/*`), or its hook crashed (`<kind>:*`)."""
    component = str(failure.get("component") or "")
    if selector.matches(component):
        return True
    stem, star, _ = component.partition("*")
    if not star or not stem:
        return False
    if registry.prefix_of(stem) == selector.prefix:
        text = selector.text
        return text.startswith(stem) or stem.startswith((text + ":", text + registry.GROUP_SEPARATOR))
    kind, kinds = stem.removesuffix(":"), registry.kinds_of(selector.prefix)
    if kind not in kinds:
        return False
    # a kind that shares its prefix (several database servers) lost only its own source's components
    source = registry.Selector(selector.prefix, str(failure.get("source") or ""))
    return kinds == {kind} or not selector.name or source.matches(selector.text)


def failed_dumps(manifest: Manifest, wanted: list[registry.Selector]) -> list[tuple[str, dict[str, Any]]]:
    """(selector, failure) for each selector that matches no artifact of the manifest because its dump failed."""
    missed = []
    for selector in wanted:
        if any(selector.matches(a.component) for a in manifest.artifacts):
            continue
        failure = next((f for f in manifest.failures if _covers(f, selector)), None)
        if failure is not None:
            missed.append((selector.text, failure))
    return missed


def _lacking(located: Located, missed: list[tuple[str, dict[str, Any]]]) -> str:
    def why(failure: dict[str, Any]) -> str:
        message = str(failure.get("message") or "no message").strip().splitlines()[0]
        return message if len(message) <= 200 else message[:199] + "…"

    return (f"snapshot {located.snapshot.short_id} of {located.day} lacks {', '.join(s for s, _ in missed)}: "
            + "; ".join(f"the dump of {s} failed that night ({why(f)})" for s, f in missed))


def _holds_all(located: Located, wanted: list[registry.Selector]) -> bool:
    return all(any(sel.matches(a.component) for a in located.artifacts) for sel in wanted)


def _newest_good_copy(repo: restic.Repo, snaps: list[restic.Snapshot], wanted: list[registry.Selector],
                      selectors: list[str], skip: str) -> Located | None:
    """The newest snapshot whose manifest holds every selector (its tags first say whether it may)."""
    for snapshot in reversed(snaps):
        if snapshot.id != skip and _holds(snapshot, selectors):
            candidate = _read(repo, snapshot)
            if _holds_all(candidate, wanted):
                return candidate
    return None


def _passed_over(repo: restic.Repo, snaps: list[restic.Snapshot], located: Located,
                 wanted: list[registry.Selector]) -> Fallback | None:
    """`latest` already passed over newer nights whose tags lack a kind asked for: say so if its dump failed
    the newest of them (a whole source down, say), rather than restore an older copy without a word."""
    newer = [s for s in snaps if s.time > located.snapshot.time and not tags.scoped(s)]
    if not newer:
        return None
    night = _read(repo, newer[-1])
    missed = failed_dumps(night.manifest, wanted)
    if not missed:
        return None
    fallback = Fallback(night.snapshot.short_id, night.day, tuple(s for s, _ in missed),
                        f"the latest {_lacking(night, missed)}; the newest snapshot with a good copy is"
                        f" {located.snapshot.short_id} of {located.day}: restoring from it")
    log.warning(fallback.message)
    return fallback


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
