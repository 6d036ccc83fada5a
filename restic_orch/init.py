"""Create the repositories that do not exist yet, with one rule for their chunker parameters.

`restic copy` deduplicates between two repositories only when they chunk alike. So a repository being created
takes the chunker parameters of the other one whenever that one exists, whether it was already there (a new
local disk beside the surviving offsite) or was created a moment before (a new host: local first, offsite
from it). `restic-orch init` and the backup's auto_init both follow `chunker_source`.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping

from .config import Config
from .restic import Repo


def chunker_source(name: str, repos: Mapping[str, Repo], present: Collection[str]) -> Repo | None:
    """The repository whose chunker parameters `name` is created with: another one known to exist, or None."""
    return next((repo for other, repo in repos.items() if other != name and other in present), None)


def init_repositories(config: Config) -> dict[str, str]:
    """For each configured repository: "exists", or "created" and whose chunker parameters it took.

    Raises restic.ResticError when a repository cannot be probed or created.
    """
    from .repos import open_all

    repos = open_all(config)
    present = {name for name, repo in repos.items() if repo.exists()}
    result: dict[str, str] = {}
    for name, repo in repos.items():
        if name in present:
            result[name] = "exists"
            continue
        source = chunker_source(name, repos, present)
        repo.init(copy_chunker_from=source)
        present.add(name)
        result[name] = "created" + (f" (chunker parameters of {source.name})" if source else "")
    return result
