"""Put a lane's repositories back as they were, so the same day's backup can be measured again.

restic never rewrites a file it stored (local backend: a new file is renamed into place) or an object it
uploaded (S3 keys are content hashes or random ids). So the local repository is kept as hard links (no
bytes copied; a file `forget` removes comes back from its link), the bucket as the set of its keys
(objects added later are deleted on restore), and the small state directory (restic cache, known
repositories, which the product rewrites in place) as a real copy. An object deleted from the bucket
(forget or prune, which the bench's keep_within retention never does) cannot be brought back: restore
refuses rather than leave a repository whose index names packs that are gone.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .s3 import bucket_keys, delete_keys


@dataclass
class Checkpoint:
    """One lane's state: `linked` trees (write-once files: hard links), `copied` trees, a bucket's keys."""

    where: Path
    linked: list[Path] = field(default_factory=list)
    copied: list[Path] = field(default_factory=list)
    bucket: str | None = None
    keys: set[str] = field(default_factory=set)

    def _saved(self, path: Path) -> Path:
        return self.where / str(path).lstrip("/").replace("/", "__")

    def _trees(self) -> list[tuple[Path, Any]]:
        """Each saved tree with the way its files are saved and brought back."""
        return [(p, _link) for p in self.linked] + [(p, shutil.copy2) for p in self.copied]

    def take(self, s3: Any) -> Checkpoint:
        shutil.rmtree(self.where, ignore_errors=True)
        self.where.mkdir(parents=True)
        for path, copy in self._trees():
            if path.exists():
                shutil.copytree(path, self._saved(path), symlinks=True, copy_function=copy)
        if self.bucket:
            self.keys = bucket_keys(s3, self.bucket)
        return self

    def restore(self, s3: Any) -> None:
        for path, copy in self._trees():
            shutil.rmtree(path, ignore_errors=True)
            saved = self._saved(path)
            if saved.exists():
                shutil.copytree(saved, path, symlinks=True, copy_function=copy)
        if self.bucket:
            now = bucket_keys(s3, self.bucket)
            if self.keys - now:
                raise RuntimeError(f"bucket {self.bucket}: {len(self.keys - now)} objects of the checkpoint were "
                                   "deleted since (forget or prune ran); it cannot be restored")
            delete_keys(s3, self.bucket, now - self.keys)

    def drop(self) -> None:
        shutil.rmtree(self.where, ignore_errors=True)


def _link(src: str, dst: str) -> None:
    Path(dst).hardlink_to(src)
