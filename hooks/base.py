"""What every pre-hook is: it dumps its kind of source into staging and restores it from there.

The pipeline only knows this interface; it never names a source.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

from restic_orch.config import Config

if TYPE_CHECKING:
    from .registry import SourceKind


def sha256_file(path: Path, chunk: int = 4 * 1024 * 1024) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


@dataclass
class Artifact:
    """One file in the day's staging tree, with what a restore needs to verify it."""

    component: str          # what --only selects: ct:101, db:main/appdb, db:main/@globals, tfstate:<key>, vault:<path>
    kind: str               # the hook kind, also the staging sub-directory
    source: str             # which configured source produced it
    path: str               # relative to the day directory, e.g. proxmox/vzdump-lxc-101-....tar
    size: int
    sha256: str
    meta: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Artifact:
        return cls(**{k: data[k] for k in ("component", "kind", "source", "path", "size", "sha256")},
                   meta=dict(data.get("meta") or {}))


@dataclass
class Failure:
    kind: str
    source: str
    component: str
    message: str

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Notice:
    """A warning that does not fail the run but must be seen (suspend fallback, plaintext vault file)."""

    kind: str
    source: str
    message: str

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class DumpOutcome:
    artifacts: list[Artifact] = field(default_factory=list)
    failures: list[Failure] = field(default_factory=list)
    notices: list[Notice] = field(default_factory=list)
    tools: dict[str, str] = field(default_factory=dict)


def _no_progress(label: str, fraction: float | None) -> None:
    """The default progress sink: nobody is watching."""


@dataclass
class DumpContext:
    config: Config
    day_dir: Path
    run_id: str
    log: logging.Logger
    # progress(label, fraction): a dump under way, fraction 0..1 when the tool reports one, else None
    progress: Callable[[str, float | None], None] = field(default=_no_progress, repr=False)
    # hash in a worker thread, so the next dump runs while this one is read back (hashlib drops the GIL)
    background_hashing: bool = False
    _hashing: list[tuple[Artifact, Future[str]]] = field(default_factory=list, repr=False)
    _pool: ThreadPoolExecutor | None = field(default=None, repr=False)

    @property
    def shows_progress(self) -> bool:
        """Whether anyone reads ctx.progress: a hook does no extra work (API reads) for a display that is not there."""
        return self.progress is not _no_progress

    def out_dir(self, kind: str) -> Path:
        path = self.day_dir / kind
        path.mkdir(parents=True, exist_ok=True, mode=0o700)
        return path

    def artifact(self, file: Path, *, component: str, kind: str, source: str,
                 meta: dict[str, Any] | None = None) -> Artifact:
        item = Artifact(component=component, kind=kind, source=source,
                        path=str(file.relative_to(self.day_dir)), size=file.stat().st_size,
                        sha256="", meta=dict(meta or {}))
        if not self.background_hashing:
            item.sha256 = sha256_file(file)
            return item
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sha256")
        self._hashing.append((item, self._pool.submit(sha256_file, file)))
        return item

    def finish_hashing(self) -> list[tuple[Artifact, str]]:
        """Wait for the background hashes; return the artifacts whose file could not be read, with why."""
        failed: list[tuple[Artifact, str]] = []
        for item, future in self._hashing:
            try:
                item.sha256 = future.result()
            except OSError as exc:
                failed.append((item, f"could not read the staged file back to hash it: {exc}"))
        self._hashing.clear()
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
        return failed


@dataclass
class RestoreOptions:
    """What every restore understands, plus `params`: the options a kind declares for itself
    (SourceKind.options, e.g. as_vmid for containers, target_db for databases)."""

    force: bool = False
    target_dir: Path | None = None
    drill: bool = False
    suffix: str = ""
    params: dict[str, Any] = field(default_factory=dict)

    def param(self, name: str) -> Any:
        return self.params.get(name)


class Sandbox(Protocol):
    """Where a drill restores: what a kind may ask of it to keep its restore away from production."""

    day: str

    def spare_id(self) -> int:
        """An ID unused at the source and inside drill.vmid_range (RuntimeError when none is left)."""
        ...


@dataclass
class RestoreOutcome:
    component: str
    ok: bool
    message: str
    checks: dict[str, Any] = field(default_factory=dict)
    restored_to: str = ""
    # what this restore created (e.g. {"vmid": 9901, "upid": ...}): a drill removes that and nothing else
    created: dict[str, Any] = field(default_factory=dict)


Fetch = Callable[[Path], Path]


@dataclass(frozen=True)
class MissingRight:
    """A right a source's account lacks, found before anything was changed."""

    kind: str
    source: str
    right: str      # e.g. "VM.Backup on /vms/101"
    why: str        # the operation that would fail
    fix: str        # the exact command that grants it

    def message(self) -> str:
        return f"missing {self.right} (needed to {self.why}); grant it with: {self.fix}"

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


class Hook:
    """Base class: subclasses set `kind` and implement from_config, dump and restore."""

    kind: ClassVar[str] = ""
    spec: ClassVar[SourceKind]
    detail_keys: ClassVar[tuple[str, ...]] = ()
    name: str = ""

    @classmethod
    def from_config(cls, config: Config) -> list[Hook]:
        raise NotImplementedError

    @classmethod
    def one_if_enabled(cls, source: Any) -> list[Hook]:
        """For kinds configured once (not a list): one hook when the section is there and enabled."""
        if source is None or not getattr(source, "enabled", True):
            return []
        return [cls(source)]  # type: ignore[call-arg]

    def dump(self, ctx: DumpContext) -> DumpOutcome:
        raise NotImplementedError

    def restore(self, artifact: Artifact, fetch: Fetch, options: RestoreOptions) -> RestoreOutcome:
        """Bring one artifact back; fetch(dest) writes the artifact's bytes from the snapshot to dest."""
        raise NotImplementedError

    def taken_ids(self) -> set[int]:
        """Sandbox IDs already in use at the source (a drill must pick others); none by default."""
        return set()

    def missing_rights(self, operation: str) -> list[MissingRight]:
        """The rights the account lacks for `operation` (backup, restore or all), asked of the source itself."""
        return []

    def discard(self, artifact: Artifact, outcome: RestoreOutcome, options: RestoreOptions) -> str:
        """Remove what a drill restored into its sandbox (a spare container, a drill_ database).

        Files under the drill's temporary directory are removed by the drill itself; returns what was done.
        """
        return "nothing to clean up"

    # ------------------------------------------------------------ what the rest of the product asks of a kind
    @classmethod
    def describe_restore(cls, artifact: Artifact, options: RestoreOptions) -> tuple[str, bool]:
        """The plan's line for restoring this artifact, and whether it changes production.

        By default a file put back in its place (changes production) or under --target-dir (does not).
        """
        where = options.target_dir or "its original place"
        return f"restore {artifact.component} to {where}", options.target_dir is None

    @classmethod
    def sandbox_options(cls, artifact: Artifact, options: RestoreOptions, sandbox: Sandbox) -> None:
        """Point a drill's restore of this artifact away from production (files already go to target_dir)."""

    @classmethod
    def details(cls, meta: dict[str, Any]) -> list[str]:
        """What `show` prints about an artifact beside its size and hash: by default the meta keys the
        kind lists in `detail_keys`, as key=value."""
        return [f"{key}={meta[key]}" for key in cls.detail_keys if key in meta]

    @classmethod
    def bootstrap_lines(cls, config: Config) -> list[str]:
        """What a stored configuration says about this kind's sources, with the files a new host lacks."""
        return []

