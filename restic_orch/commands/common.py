"""What every command shares: the context object (lazy configuration, --json output), errors as exit codes,
and the options that name a repository."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import click

from .. import restic
from ..browse import SelectionError
from ..config import Config, ConfigError, default_config_path, load_config
from ..lock import Busy
from ..report import EXIT_FAILURE, EXIT_USAGE
from ..restore_setup import UsageError

F = TypeVar("F", bound=Callable[..., Any])

REPO_NAMES = click.Choice(["local", "offsite"])


class Ctx:
    """The group's options; the configuration is loaded on first use, with no other effect on the process."""

    def __init__(self, config_path: Path | None, as_json: bool, verbosity: int) -> None:
        self.config_path = config_path
        self.as_json = as_json
        self.verbosity = verbosity
        self._config: Config | None = None

    @property
    def path(self) -> Path:
        return self.config_path or default_config_path()

    def config(self, *, check_files: bool = True) -> Config:
        """The configuration; when invalid, every problem on stderr and exit 2.

        check_files=False skips the secret-file checks, for a command whose job is to report missing ones.
        """
        if self._config is not None and check_files:
            return self._config
        try:
            loaded = load_config(self.path, check_files=check_files)
        except ConfigError as exc:
            for problem in exc.problems:
                click.echo(str(problem), err=True)
            raise SystemExit(EXIT_USAGE) from None
        if check_files:
            self._config = loaded
        return loaded

    def emit(self, data: Any, human: str) -> None:
        if self.as_json:
            click.echo(json.dumps(data, indent=2, default=str, ensure_ascii=False))
        elif human:
            click.echo(human)


def fail(message: str, code: int = EXIT_FAILURE) -> NoReturn:
    click.echo(f"error: {message}", err=True)
    raise SystemExit(code)


@contextmanager
def exit_codes() -> Iterator[None]:
    """The library's errors as the documented exit codes: a wrong selection or flag 2, restic or the lock 1."""
    try:
        yield
    except (SelectionError, UsageError) as exc:
        fail(str(exc), EXIT_USAGE)
    except (restic.ResticError, Busy) as exc:
        fail(str(exc))


def comma_list(text: str | None) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()] if text else []


def repo_for(obj: Ctx, repo_name: str | None) -> tuple[Config, restic.Repo]:
    """The configuration and the repository named (default: local, or offsite when local is unusable)."""
    from ..repos import open_all
    from ..restore import open_repository

    config = obj.config()
    with exit_codes():
        repo = open_repository(open_all(config), repo_name)
    return config, repo


def configured_repos(config: Config, repo_name: str | None) -> dict[str, restic.Repo]:
    """Every configured repository, or only the one named (exit 2 when it is not configured)."""
    from ..repos import open_all

    repos = open_all(config)
    if repo_name is None:
        return repos
    if repo_name not in repos:
        fail(f"repository {repo_name} is not configured", EXIT_USAGE)
    return {repo_name: repos[repo_name]}


def browse_options(func: F) -> F:
    """--repo local|offsite from the configuration, or --repo-url with its secrets when there is none."""
    func = click.option("--s3-env-file", type=click.Path(path_type=Path), default=None,
                        help="With --repo-url: the S3 keys (AWS_ACCESS_KEY_ID=...).")(func)
    func = click.option("--password-file", type=click.Path(path_type=Path), default=None,
                        help="With --repo-url: the repository password file.")(func)
    func = click.option("--repo-url", default=None, help="A repository address, when no configuration survives.")(func)
    return click.option("--repo", "repo_name", type=REPO_NAMES, default=None)(func)


def browse_repo(obj: Ctx, repo_name: str | None, url: str | None, password_file: Path | None,
                env_file: Path | None) -> restic.Repo:
    """The repository of browse_options."""
    from ..repos import ad_hoc

    if url:
        if password_file is None:
            fail("--repo-url needs --password-file (and --s3-env-file for S3)", EXIT_USAGE)
        return ad_hoc(url, password_file, env_file)
    return repo_for(obj, repo_name)[1]
