"""How many bytes a repository's storage holds: the sum of its objects' sizes, measured from the outside.

Local: a walk of the repository directory. S3: a ListObjectsV2 sum under the repository's prefix, with the same
boto3 client the bootstrap bundle's publish uses. No restic call: each one costs a key derivation. A size that
cannot be measured is None (an unknown figure in the run summary), never an error of the run.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from .escrow import parse_s3_url
from .masking import mask
from .restic import Repo

log = logging.getLogger("restic_orch.repo_size")

# restic's other backends (sftp:, rest:, b2:, azure:, gs:, swift:, rclone:) are not measured
_OTHER_BACKENDS = ("sftp:", "rest:", "b2:", "azure:", "gs:", "swift:", "rclone:", "opendal:")


def stored_bytes(repo: Repo) -> int | None:
    """The bytes the repository's storage holds now, None when they cannot be measured."""
    try:
        address = parse_s3_url(repo.url)
        if address is not None:
            return _s3_bytes(repo, address.endpoint, address.bucket, address.prefix)
        path = local_path(repo.url)
        return tree_bytes(path) if path is not None else None
    except Exception as exc:  # a figure for the report: never worth failing a run over
        log.warning("could not measure the repository's size", extra={"repo": repo.name, "error": mask(str(exc))})
        return None


def local_path(url: str) -> Path | None:
    """The directory of a local repository address (/path or local:/path); None for any other backend."""
    if url.startswith(_OTHER_BACKENDS):
        return None
    path = Path(url.removeprefix("local:"))
    return path if path.is_absolute() else None


def tree_bytes(root: Path) -> int | None:
    """The sum of the sizes of the files under root (links not followed); None when root is no directory."""
    if not root.is_dir():
        return None
    total = 0

    def fail(error: OSError) -> None:
        raise error

    for folder, _dirs, files in os.walk(root, onerror=fail):
        for name in files:
            total += os.lstat(os.path.join(folder, name)).st_size
    return total


def _s3_bytes(repo: Repo, endpoint: str, bucket: str, prefix: str) -> int | None:
    from .bundle import Target, s3_client

    env = repo.extra_env
    if not env.get("AWS_ACCESS_KEY_ID") or not env.get("AWS_SECRET_ACCESS_KEY"):
        log.warning("no S3 keys for the repository: its size is not measured", extra={"repo": repo.name})
        return None
    # the region and addressing restic uses (bundle.target reads them the same way)
    region = repo.options.get("s3.region") or env.get("AWS_DEFAULT_REGION") or env.get("AWS_REGION") or "us-east-1"
    where = Target(repo.name, endpoint, bucket, region, repo.options.get("s3.bucket-lookup") == "path", dict(env))
    # a figure for the report: an S3 that does not answer must not hold the night up for minutes
    client: Any = s3_client(where, timeout=10, attempts=1)
    total = 0
    kwargs = {"Bucket": bucket, **({"Prefix": prefix.rstrip("/") + "/"} if prefix else {})}
    for page in client.get_paginator("list_objects_v2").paginate(**kwargs):
        total += sum(int(item.get("Size") or 0) for item in page.get("Contents") or [])
    return total
