"""The soak's own reads of a repository: restic with --no-lock, so that a dead run's exclusive lock (a forget
killed halfway) cannot stop the soak from looking at what is stored."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

from restic_orch.restic import Repo, Snapshot
from restic_orch.tags import TAG


def restic(repo: Repo, *args: str, stdout: Path | None = None, timeout: float = 600) -> str:
    options = [a for k, v in sorted(repo.options.items()) for a in ("-o", f"{k}={v}")]
    argv = ["restic", "--no-lock", "--no-cache", *options, *args]
    env = {**os.environ, **repo.env()}
    if stdout is None:
        return subprocess.run(argv, env=env, capture_output=True, text=True, check=True, timeout=timeout).stdout
    with open(stdout, "wb") as handle:
        subprocess.run(argv, env=env, stdout=handle, stderr=subprocess.PIPE, check=True, timeout=timeout)
    return ""


def snapshots(repo: Repo, host: str) -> dict[str, Snapshot]:
    data = json.loads(restic(repo, "snapshots", "--json", "--tag", TAG, "--host", host) or "[]") or []
    return {s.id: s for s in (Snapshot.from_json(item) for item in data)}


def dump(repo: Repo, snap: Snapshot, inner: str, target: Path) -> None:
    restic(repo, "dump", snap.id, f"{snap.paths[0]}/{inner}", stdout=target)
