"""Everything a restore settles before it touches anything: the configuration, the snapshot, the steps.

Two ways in. With the host's configuration: the repository named by --from (or local, falling back to
offsite). Without it, on disaster day: the repository given by address and secrets files, and the
configuration stored in the snapshot's manifest, adjusted by --set KEY=VALUE. On a terminal a Chooser asks
for the snapshot and the components left open; without one, destructive steps need --yes.

Errors are typed for the command line: UsageError (exit 2), and browse.SelectionError (exit 2) and
restic.ResticError (exit 1) from the layers below.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from pydantic import ValidationError

from restic_orch.hooks import registry
from restic_orch.hooks.base import RestoreOptions

from . import bootstrap, restic, tags
from .browse import Located, check_spec, locate
from .config import Config
from .restore import Step, plan_steps


class UsageError(Exception):
    """The flags ask for something impossible or unconfirmed (exit 2); the message says what to change."""


class NeedsConfirmation(UsageError):
    """Destructive steps without a terminal to confirm them on, and without --yes."""


class Chooser(Protocol):
    """The questions a restore asks on a terminal (restic_orch.interactive.Prompts)."""

    def choose_snapshot(self, snapshots: list[restic.Snapshot]) -> str: ...

    def choose_components(self, located: Located) -> list[str]: ...


@dataclass(frozen=True)
class Bootstrap:
    """No configuration survives: the repository by address and secrets files, --set overrides."""

    repo_url: str
    password_file: Path | None = None
    s3_env_file: Path | None = None
    secrets_dir: Path | None = None


@dataclass
class RestoreRequest:
    """What the flags ask for; `params` holds the kinds' own options (registry.restore_options())."""

    snapshot: str | None = None
    from_repo: str | None = None
    selectors: list[str] = field(default_factory=list)
    force: bool = False
    target_dir: Path | None = None
    params: dict[str, Any] = field(default_factory=dict)
    skip_redeploy: bool = False
    yes: bool = False
    dry_run: bool = False
    bootstrap: Bootstrap | None = None
    overrides: list[str] = field(default_factory=list)

    def options(self) -> RestoreOptions:
        target = self.target_dir.resolve() if self.target_dir else None
        return RestoreOptions(force=self.force, target_dir=target,
                              params={k: v for k, v in self.params.items() if v is not None})


@dataclass
class Prepared:
    config: Config
    located: Located
    steps: list[Step]
    options: RestoreOptions


Announce = Callable[[list[str]], None]


def prepare(request: RestoreRequest, load_config: Callable[[], Config], chooser: Chooser | None = None,
            announce: Announce | None = None) -> Prepared:
    """The configuration, the located snapshot and the planned steps, or a typed error (nothing touched).

    `load_config` is called only when the host's configuration is used; `announce` receives what a
    configuration stored in the snapshot says, before any question is asked about the components.
    """
    options = request.options()
    # a typo in a flag costs nothing: refused before a repository is read (or a restic cache created)
    check_spec(request.snapshot)
    for text in request.selectors:
        registry.parse(text)
    try:
        if request.bootstrap is not None:
            config, located = _from_snapshot(request, request.bootstrap, chooser, announce)
        else:
            config, located = _from_configuration(request, load_config, chooser)
        selectors = request.selectors
        if chooser is not None and not selectors:
            selectors = chooser.choose_components(located)
        steps = plan_steps(located, selectors, options, config, skip_redeploy=request.skip_redeploy)
    except bootstrap.OverrideError as exc:
        raise UsageError(str(exc)) from None
    except ValidationError as exc:
        raise UsageError(f"configuration after --set is invalid: {exc}") from None
    if not request.dry_run:
        refuse_unconfirmed(steps, confirmed=request.yes or chooser is not None)
    return Prepared(config, located, steps, options)


def refuse_unconfirmed(steps: list[Step], *, confirmed: bool) -> None:
    """Destructive steps run only after --yes or with a terminal to confirm each on."""
    destructive = [s for s in steps if s.destructive]
    if destructive and not confirmed:
        raise NeedsConfirmation("refusing to change production without a terminal to confirm on; run again with"
                                " --yes to do:\n  " + "\n  ".join(s.description for s in destructive))


def _pick(repo: restic.Repo, request: RestoreRequest, chooser: Chooser | None) -> Located:
    snapshot = request.snapshot
    if chooser is not None and snapshot is None:
        snapshot = chooser.choose_snapshot(repo.snapshots(tags=[tags.TAG]))
    return locate(repo, snapshot or "latest", selectors=request.selectors)


def _from_snapshot(request: RestoreRequest, given: Bootstrap, chooser: Chooser | None,
                   announce: Announce | None) -> tuple[Config, Located]:
    from .repos import ad_hoc

    if given.password_file is None:
        raise UsageError("--repo needs --password-file (and --s3-env-file for an S3 repository)")
    # the rebuilt configuration wants absolute paths; on disaster day the secrets are often named from where they are
    env_file, secrets_dir = (p.absolute() if p else None for p in (given.s3_env_file, given.secrets_dir))
    repo = ad_hoc(given.repo_url, given.password_file.absolute(), env_file)
    located = _pick(repo, request, chooser)
    config = bootstrap.config_from_manifest(located.manifest, repo, list(request.overrides), secrets_dir)
    if announce is not None:
        announce(bootstrap.summary_lines(config))
    return config, located


def _from_configuration(request: RestoreRequest, load_config: Callable[[], Config],
                        chooser: Chooser | None) -> tuple[Config, Located]:
    from .repos import open_all
    from .restore import open_repository

    if request.overrides:
        raise UsageError("--set goes with --repo (restore without the lost host's configuration)")
    config = load_config()
    repo = open_repository(open_all(config), request.from_repo)
    return config, _pick(repo, request, chooser)
