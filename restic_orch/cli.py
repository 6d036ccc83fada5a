"""Thin command line: the `restic-orch` group and its global options; each command lives in commands/."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from . import __version__, logs, progress
from .commands import COMMANDS
from .commands.common import Ctx


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--config", "config_path", type=click.Path(path_type=Path), default=None,
              help="Configuration file (default: $RESTIC_ORCH_CONFIG or /etc/restic-orch/config.yml).")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option("-v", "--verbose", count=True, help="More output (-vv for debug).")
@click.option("-q", "--quiet", is_flag=True, help="Errors only.")
@click.option("--no-progress", is_flag=True, envvar="RESTIC_ORCH_NO_PROGRESS",
              help="No live progress bars on a terminal (never shown off a terminal or with --json).")
@click.version_option(__version__, prog_name="restic-orch")
@click.pass_context
def main(ctx: click.Context, config_path: Path | None, as_json: bool, verbose: int, quiet: bool,
         no_progress: bool) -> None:
    """Backup and disaster recovery for a Proxmox VE homelab, on restic."""
    verbosity = -1 if quiet else verbose
    logs.setup_console(verbosity)
    progress.configure(progress.should_show(sys.stderr, as_json=as_json, quiet=quiet, disabled=no_progress))
    ctx.obj = Ctx(config_path, as_json, verbosity)


for _command in COMMANDS:
    main.add_command(_command)


if __name__ == "__main__":  # `python -m restic_orch.cli`, as the tests and the bench run it
    main()
