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


def _keys(s3: Any, bucket: str) -> set[str]:
    try:
        pages = list(s3.get_paginator("list_objects_v2").paginate(Bucket=bucket))
    except s3.exceptions.NoSuchBucket:
        return set()
    return {o["Key"] for page in pages for o in page.get("Contents", [])}


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

    def take(self, s3: Any) -> Checkpoint:
        shutil.rmtree(self.where, ignore_errors=True)
        self.where.mkdir(parents=True)
        for path, copy in [(p, False) for p in self.linked] + [(p, True) for p in self.copied]:
            if path.exists():
                shutil.copytree(path, self._saved(path), symlinks=True,
                                copy_function=shutil.copy2 if copy else _link)
        if self.bucket:
            self.keys = _keys(s3, self.bucket)
        return self

    def restore(self, s3: Any) -> None:
        for path, copy in [(p, False) for p in self.linked] + [(p, True) for p in self.copied]:
            shutil.rmtree(path, ignore_errors=True)
            saved = self._saved(path)
            if saved.exists():
                shutil.copytree(saved, path, symlinks=True, copy_function=shutil.copy2 if copy else _link)
        if self.bucket:
            now = _keys(s3, self.bucket)
            if self.keys - now:
                raise RuntimeError(f"bucket {self.bucket}: {len(self.keys - now)} objects of the checkpoint were "
                                   "deleted since (forget or prune ran); it cannot be restored")
            added = sorted(now - self.keys)
            for i in range(0, len(added), 1000):
                s3.delete_objects(Bucket=self.bucket, Delete={"Objects": [{"Key": k} for k in added[i:i + 1000]]})

    def drop(self) -> None:
        shutil.rmtree(self.where, ignore_errors=True)


def _link(src: str, dst: str) -> None:
    Path(dst).hardlink_to(src)
