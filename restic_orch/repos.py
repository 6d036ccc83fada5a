"""Build restic.Repo objects from the configuration (secrets read from their files, registered for masking)."""

from __future__ import annotations

from pathlib import Path

from . import runner
from .config import Config, Repository
from .restic import Repo


def open_repo(name: str, repo: Repository, config: Config | None = None) -> Repo:
    runner.read_secret(repo.password_file)
    env = runner.read_env_file(repo.env_file) if repo.env_file else {}
    limits = config.limits if config else None
    return Repo(
        name, repo.url, repo.password_file, env=env, options=repo.options,
        gomaxprocs=limits.gomaxprocs if limits else None,
        upload_kib=repo.upload_limit_kib or (limits.upload_kib if limits and repo.is_s3 else None),
        compression=repo.compression,
        lock_wait_seconds=limits.lock_wait_seconds if limits else 0,
        cache_dir=(config.state_dir / "cache") if config else None, env_file=repo.env_file,
    )


def open_all(config: Config) -> dict[str, Repo]:
    return {name: open_repo(name, repo, config) for name, repo in config.repositories.items()}


def ad_hoc(url: str, password_file: Path, env_file: Path | None = None) -> Repo:
    """A repository given on the command line (disaster day: no configuration file survives)."""
    runner.read_secret(password_file)
    env = runner.read_env_file(env_file) if env_file else {}
    options = {"s3.bucket-lookup": "path"} if url.startswith("s3:") else {}
    return Repo("offsite" if url.startswith("s3:") else "local", url, password_file, env=env, options=options,
                env_file=env_file)
