"""`bundle build` and `bundle publish`: the bootstrap bundle kept beside the offsite repository (docs/escrow.md)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import click

from ..report import EXIT_USAGE
from ..runlog import opened_log
from .common import Ctx, fail

OUT_HELP = "The bundle's directory (default: <state_dir>/bootstrap)."


@contextmanager
def _bundle_errors() -> Iterator[None]:
    """Bad input (no source, no bundle, no S3 offsite) exits 2; pip or S3 failing exits 1."""
    from ..bundle import BundleError, BundleInputError

    try:
        yield
    except BundleInputError as exc:
        fail(str(exc), EXIT_USAGE)
    except BundleError as exc:
        fail(str(exc))


def _source(given: Path | None) -> Path:
    from ..bundle import default_source

    source = given or default_source()
    if source is None:
        fail("--source: this restic-orch is not run from a checkout: name the source directory or the archive the"
             " Ansible role copied (<venv>/src/restic-orch-src.tar.gz)", EXIT_USAGE)
    return source


@click.group("bundle")
def bundle_group() -> None:
    """The bootstrap bundle: restic-orch's wheel and its pinned dependencies, restore.sh and the runbook, kept
    under bootstrap/ of the offsite bucket so a new host installs with `pip --no-index` (no PyPI, no git)."""


@bundle_group.command("build")
@click.option("--source", type=click.Path(path_type=Path), default=None,
              help="A restic-orch source directory or its .tar.gz (default: the checkout this command runs from).")
@click.option("--out", "out_dir", type=click.Path(path_type=Path, file_okay=False), default=None, help=OUT_HELP)
@click.pass_obj
def build_cmd(obj: Ctx, source: Path | None, out_dir: Path | None) -> None:
    """Build the bundle with this Python (pip needs its package index). It replaces the previous one only once
    it is complete and verifies."""
    from ..bundle import build, default_dir

    config = obj.config(check_files=False)  # only state_dir is needed: secrets are publish's business
    with opened_log(config), _bundle_errors():
        info = build(out_dir or default_dir(config), _source(source))
    where = out_dir or default_dir(config)
    obj.emit({**info.to_json(), "dir": str(where)},
             f"bootstrap bundle built in {where}: {info.files} files, restic-orch {info.version} for Python"
             f" {info.python}\nsha256 of SHA256SUMS: {info.digest}\nnext: restic-orch bundle publish")


@bundle_group.command("publish")
@click.option("--dir", "bundle_dir", type=click.Path(path_type=Path, file_okay=False), default=None, help=OUT_HELP)
@click.pass_obj
def publish_cmd(obj: Ctx, bundle_dir: Path | None) -> None:
    """Upload the bundle under bootstrap/ of the offsite bucket with the host's offsite key (nothing is uploaded
    when the bucket already holds it) and record it for the escrow sheet. Each backup does this too."""
    from ..bundle import default_dir, publish

    config = obj.config()
    with opened_log(config), _bundle_errors():
        result = publish(config, bundle_dir or default_dir(config))
    obj.emit(result.to_json(), result.human())
