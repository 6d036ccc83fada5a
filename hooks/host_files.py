"""The host's own files: /etc/pve, its network configuration, restic-orch's own; or any paths and globs.

Each file is one artifact, staged as files/<absolute path> with its mode, owner and mtime in the manifest. A
symlink is kept as a link (its target is what is staged) and never followed, so a link pointing outside
the selection brings nothing from there.

A restore puts the files into a review directory by default, because a new host must not blindly take an
old /etc/pve; --target-dir puts them there instead, and only --force puts them back in place, the current
file kept aside as .bak.

/etc/pve is pmxcfs, a FUSE view of the cluster database: files are copied with plain read() calls, and
nothing here relies on inodes, hard links or sendfile to read it.
"""

from __future__ import annotations

import glob
import os
import re
import shutil
import stat
from collections.abc import Callable
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from pathlib import Path
from typing import TYPE_CHECKING, Any

from restic_orch.config import Config, FilesSource

from ._files import fetched_beside, keep_aside, open_private, replacing
from .base import DumpOutcome, Failure, Hook, Notice, RestoreOutcome, sha256_file
from .registry import SourceKind

if TYPE_CHECKING:
    from .base import Artifact, DumpContext, Fetch, RestoreOptions

KIND = "files"
SOURCE = "files"
PREFIX = "files"

# One entry per line of the documented list (docs/host-files.md); an entry of several patterns is met when
# any of them matches (the schedule is a cron file or systemd units, never both).
PRESETS: dict[str, tuple[tuple[str, ...], ...]] = {
    "pve-host": (
        ("/etc/pve",),                      # storage.cfg, user.cfg, datacenter.cfg, firewall/, guest configs
        ("/etc/network/interfaces",),
        ("/etc/network/interfaces.d",),
        ("/etc/hosts",),
        ("/etc/hostname",),
        ("/etc/resolv.conf",),
        ("/etc/vzdump.conf",),
        ("/etc/restic-orch/config.yml",),
        ("/etc/cron.d/restic-orch", "/etc/systemd/system/restic-orch-*"),
    ),
}
# pmxcfs's dot files (.members, .vmlist, .rrd, .clusterlog, ...) are live status, not configuration
PRESET_EXCLUDES: dict[str, tuple[str, ...]] = {"pve-host": ("/etc/pve/.*",)}

_MAGIC = re.compile(r"[*?[]")


# ---------------------------------------------------------------- what the configuration selects
def _parts(path: str) -> list[str]:
    return [part for part in path.split("/") if part]


def _match_parts(parts: list[str], pattern: list[str]) -> bool:
    if not pattern:
        return not parts
    if pattern[0] == "**":
        return any(_match_parts(parts[i:], pattern[1:]) for i in range(len(parts) + 1))
    return bool(parts) and fnmatchcase(parts[0], pattern[0]) and _match_parts(parts[1:], pattern[1:])


def excluded(path: str, patterns: list[str] | tuple[str, ...]) -> bool:
    """Whether an exclude pattern names the path or a directory above it.

    `*` and `?` stay within one path component, `**` spans any number of them; a pattern without a slash
    names a file or directory of that name anywhere (`*.dpkg-old`).
    """
    parts = _parts(path)
    for pattern in patterns:
        wanted = _parts(pattern) if "/" in pattern else ["**", pattern]
        if any(_match_parts(parts[:end], wanted) for end in range(1, len(parts) + 1)):
            return True
    return False


def _through_link(hit: str, fixed: str) -> bool:
    """Whether glob reached `hit` through a symlinked directory below the pattern's fixed part."""
    below = _parts(hit)[len(_parts(fixed)):-1]
    current = fixed.rstrip("/")
    for part in below:
        current = f"{current}/{part}"
        if os.path.islink(current):
            return True
    return False


def expand(pattern: str) -> list[str]:
    """The paths a pattern names, without following a symlinked directory below its fixed part."""
    if not _MAGIC.search(pattern):
        return [os.path.normpath(pattern)] if os.path.lexists(pattern) else []
    parts = _parts(pattern)
    fixed = "/" + "/".join(parts[:next(i for i, p in enumerate(parts) if _MAGIC.search(p))])
    hits = (os.path.normpath(hit) for hit in glob.glob(pattern, recursive=True))
    return sorted({hit for hit in hits if not _through_link(hit, fixed)})


@dataclass
class Selection:
    """The files to keep, what each is, and what the configuration named that matched nothing."""

    found: dict[str, str] = field(default_factory=dict)        # path -> "file" | "symlink" | "other"
    empty: list[tuple[str, bool]] = field(default_factory=list)  # (patterns, from the preset)
    unreadable: list[tuple[str, str]] = field(default_factory=list)  # (directory, why) not listed

    def add(self, path: str, excludes: tuple[str, ...]) -> None:
        if excluded(path, excludes):
            return
        if os.path.islink(path):
            self.found[path] = "symlink"
        elif os.path.isdir(path):
            self._walk(path, excludes)
        else:
            self.found[path] = "file" if os.path.isfile(path) else "other"

    def _walk(self, top: str, excludes: tuple[str, ...]) -> None:
        def failed(exc: OSError) -> None:
            self.unreadable.append((str(exc.filename), str(exc.strerror or exc)))

        for root, dirs, files in os.walk(top, onerror=failed):  # followlinks=False: links are kept as links
            for name in list(dirs):
                path = os.path.join(root, name)
                if excluded(path, excludes) or os.path.islink(path):
                    dirs.remove(name)
                    if not excluded(path, excludes):
                        self.found[path] = "symlink"
            for name in files:
                self.add(os.path.join(root, name), excludes)


def select(source: FilesSource) -> Selection:
    """Every file the configured paths and the preset name, minus the excludes."""
    preset = PRESETS.get(source.preset or "", ())
    excludes = (*source.exclude, *PRESET_EXCLUDES.get(source.preset or "", ()))
    entries = [((p,), False) for p in source.paths] + [
        (patterns, True) for patterns in preset if not set(patterns) & set(source.paths)]
    selection = Selection()
    for patterns, from_preset in entries:
        hits = [hit for pattern in patterns for hit in expand(pattern)]
        if not hits:
            selection.empty.append((" or ".join(patterns), from_preset))
        for hit in hits:
            selection.add(hit, excludes)
    return selection


# ---------------------------------------------------------------- restoring one file
def under(root: Path, original: str) -> Path:
    return Path(root) / os.path.normpath(original).lstrip("/")


def _keep_link_aside(path: Path) -> Path:
    """keep_aside for a symlink: hard-link the link itself (never its target) to a free .bak name."""
    for n in range(10000):
        candidate = path.with_name(path.name + (f".bak.{n}" if n else ".bak"))
        try:
            os.link(path, candidate, follow_symlinks=False)
        except FileExistsError:
            continue
        path.unlink()
        return candidate
    raise OSError(f"no free .bak name next to {path}")


def _set_aside(dest: Path) -> Path | None:
    if dest.is_symlink():
        return _keep_link_aside(dest)
    if not dest.exists():
        return None
    if dest.is_dir():
        raise IsADirectoryError(f"{dest} is a directory, not restoring over it")
    return keep_aside(dest)


def _apply_attributes(path: Path, meta: dict[str, Any], *, link: bool) -> list[str]:
    """Mode, owner (only root can give a file away) and mtime; what the filesystem refused, as text."""
    refused = []
    steps: list[tuple[str, Callable[[], None]]] = []
    if not link:
        steps.append(("mode", lambda: os.chmod(path, int(str(meta.get("mode") or "600"), 8))))
    if os.geteuid() == 0 and meta.get("uid") is not None:
        steps.append(("owner", lambda: os.chown(path, int(meta["uid"]), int(meta.get("gid", -1)),
                                                follow_symlinks=False)))
    if meta.get("mtime_ns") is not None:
        mtime = int(meta["mtime_ns"])
        steps.append(("mtime", lambda: os.utime(path, ns=(mtime, mtime), follow_symlinks=not link)))
    for what, apply in steps:
        try:
            apply()
        except OSError as exc:  # pmxcfs takes only the modes and owners it enforces itself
            refused.append(f"{what}: {exc.strerror or exc}")
    return refused


def _checks(dest: Path, artifact: Artifact, target: str | None) -> dict[str, Any]:
    meta, st = artifact.meta, os.lstat(dest)
    checks: dict[str, Any] = {}
    if target is not None:
        checks["target"] = os.readlink(dest)
        checks["target_ok"] = checks["target"] == target
    else:
        checks["sha256"] = sha256_file(dest) == artifact.sha256
        checks["mode"] = f"{stat.S_IMODE(st.st_mode):04o}"
        checks["mode_ok"] = checks["mode"] == f"{int(str(meta.get('mode') or '600'), 8):04o}"
    if os.geteuid() == 0 and meta.get("uid") is not None:
        checks["owner"] = f"{st.st_uid}:{st.st_gid}"
        checks["owner_ok"] = (st.st_uid, st.st_gid) == (int(meta["uid"]), int(meta.get("gid", st.st_gid)))
    return checks


# ---------------------------------------------------------------- the hook
class HostFilesHook(Hook):
    kind = KIND
    spec = SourceKind(KIND, PREFIX, order=5, examples="files, files:/etc/network/interfaces")

    def __init__(self, source: FilesSource, review_dir: Path) -> None:
        self.source = source
        self.name = SOURCE
        self.review_dir = review_dir

    @classmethod
    def from_config(cls, config: Config) -> list[Hook]:
        source = config.sources.files
        if source is None or not source.enabled:
            return []
        return [cls(source, review_dir_of(config))]

    @classmethod
    def details(cls, meta: dict[str, Any]) -> list[str]:
        if meta.get("type") == "symlink":
            return [f"-> {meta.get('target')}"]
        owner = f"owner={meta['uid']}:{meta['gid']}" if "uid" in meta else ""
        return [item for item in (f"mode={meta['mode']}" if "mode" in meta else "", owner) if item]

    @classmethod
    def bootstrap_lines(cls, config: Config) -> list[str]:
        source = config.sources.files
        if source is None or not source.enabled:
            return []
        preset = f" + preset {source.preset}" if source.preset else ""
        return [f"files: {len(source.paths)} path(s){preset}; restored into {review_dir_of(config)} for review"
                " (--target-dir elsewhere, --force in place)"]

    @classmethod
    def describe_restore(cls, artifact: Artifact, options: RestoreOptions) -> tuple[str, bool]:
        original = artifact.meta.get("original_path", artifact.component.partition(":")[2])
        if options.target_dir is not None:
            return f"put {original} under {options.target_dir}", False
        if options.force:
            return f"put {original} back in place (the current file kept as .bak)", True
        return f"put {original} into the review directory (sources.files.review_dir; --force: in place)", False

    # ------------------------------------------------------------ dump
    def dump(self, ctx: DumpContext) -> DumpOutcome:
        outcome = DumpOutcome()
        selection = select(self.source)
        for patterns, from_preset in selection.empty:
            if from_preset:
                outcome.notices.append(Notice(KIND, SOURCE, f"preset {self.source.preset}: {patterns} matched"
                                              " nothing on this host"))
            else:
                outcome.failures.append(Failure(KIND, SOURCE, f"{PREFIX}:{patterns}",
                                                f"{patterns} matches no file"))
        for directory, why in selection.unreadable:
            outcome.failures.append(Failure(KIND, SOURCE, f"{PREFIX}:{directory}", f"cannot list {directory}: {why}"))
        out_dir = ctx.out_dir(KIND)
        for path, what in sorted(selection.found.items()):
            if what == "other":
                outcome.notices.append(Notice(KIND, SOURCE, f"{path} is not a regular file or a symlink: skipped"))
            else:
                self._stage(ctx, outcome, out_dir, path)
        return outcome

    def _stage(self, ctx: DumpContext, outcome: DumpOutcome, out_dir: Path, original: str) -> None:
        dest = under(out_dir, original)
        try:
            st = os.lstat(original)
            meta: dict[str, Any] = {"original_path": original, "mode": f"{stat.S_IMODE(st.st_mode):04o}",
                                    "uid": st.st_uid, "gid": st.st_gid, "mtime_ns": st.st_mtime_ns}
            dest.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            with replacing(dest) as partial, open_private(partial) as out:
                if stat.S_ISLNK(st.st_mode):
                    meta.update(type="symlink", target=os.readlink(original))
                    out.write(os.fsencode(meta["target"]))
                else:
                    meta["type"] = "file"
                    with open(original, "rb") as src:  # read(): pmxcfs serves files, not inodes
                        shutil.copyfileobj(src, out, 1024 * 1024)
        except OSError as exc:
            outcome.failures.append(Failure(KIND, SOURCE, f"{PREFIX}:{original}",
                                            f"cannot read {original}: {exc.strerror or exc}"))
            return
        outcome.artifacts.append(ctx.artifact(dest, component=f"{PREFIX}:{original}", kind=KIND, source=SOURCE,
                                              meta=meta))

    # ------------------------------------------------------------ restore
    def destination(self, original: str, options: RestoreOptions) -> Path:
        """--target-dir, else in place with --force, else the review directory."""
        if options.target_dir is not None:
            return under(options.target_dir, original)
        if options.force:
            return Path(original)
        self.review_dir.mkdir(parents=True, exist_ok=True, mode=0o700)  # it will hold /etc/pve/priv's keys
        return under(self.review_dir, original)

    def restore(self, artifact: Artifact, fetch: Fetch, options: RestoreOptions) -> RestoreOutcome:
        outcome = RestoreOutcome(component=artifact.component, ok=False, message="")
        original = str(artifact.meta.get("original_path") or "")
        if not os.path.isabs(original):
            outcome.message = f"artifact has no absolute original_path in its metadata ({original!r})"
            return outcome
        dest = self.destination(original, options)
        outcome.restored_to = str(dest)
        dest.parent.mkdir(parents=True, exist_ok=True)
        try:
            with fetched_beside(dest, fetch, artifact.sha256) as tmp:
                if tmp is None:
                    outcome.checks["sha256"] = False
                    outcome.message = f"{original}: the bytes read from the snapshot do not match the recorded sha256"
                    return outcome
                return self._put(artifact, tmp, dest, outcome)
        except OSError as exc:
            outcome.message = f"{exc.filename or dest}: {exc.strerror}" if exc.strerror else str(exc)
            return outcome

    def _put(self, artifact: Artifact, tmp: Path, dest: Path, outcome: RestoreOutcome) -> RestoreOutcome:
        link = artifact.meta.get("type") == "symlink"
        target = os.fsdecode(tmp.read_bytes()) if link else None
        if self._unchanged(dest, artifact, target):
            refused = _apply_attributes(dest, artifact.meta, link=link)
            outcome.message = f"{dest} is already identical, nothing to do"
        else:
            kept = _set_aside(dest)
            new = tmp
            if link:
                new = tmp.with_name(tmp.name + ".link")
                os.symlink(str(target), new)
            try:
                refused = _apply_attributes(new, artifact.meta, link=link)
                os.replace(new, dest)
            finally:
                if new != tmp:
                    new.unlink(missing_ok=True)
            outcome.message = f"restored {dest}" + (f" (previous one kept as {kept})" if kept else "")
            if kept is not None:
                outcome.checks["kept_previous"] = str(kept)
        outcome.checks.update(_checks(dest, artifact, target))
        if refused:
            outcome.checks["refused"] = refused
        failed = [key.removesuffix("_ok") for key in ("sha256", "mode_ok", "owner_ok", "target_ok")
                  if outcome.checks.get(key) is False]
        outcome.ok = not failed
        if failed:
            outcome.message += f"; differs from the backup in {', '.join(failed)}" + (
                f" (the filesystem refused {'; '.join(refused)})" if refused else "")
        return outcome

    @staticmethod
    def _unchanged(dest: Path, artifact: Artifact, target: str | None) -> bool:
        if target is not None:
            return dest.is_symlink() and os.readlink(dest) == target
        return dest.is_file() and not dest.is_symlink() and sha256_file(dest) == artifact.sha256


def review_dir_of(config: Config) -> Path:
    source = config.sources.files
    return (source.review_dir if source and source.review_dir else None) or config.state_dir / "review"


HOOK = HostFilesHook
