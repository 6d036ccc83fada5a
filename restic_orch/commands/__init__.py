"""One module per command (restic's cmd_<name>.go, borgmatic's actions/): each parses its flags, calls the
library and renders the result; common.py holds what they share. cli.py puts them under one group."""

from __future__ import annotations

import click

from . import backup, bundle, check, config, drill, env, escrow, forget, init, lab, ls, restore, show, snapshots, status
from .report import report_cmd

COMMANDS: list[click.Command] = [
    config.config_group, init.init_cmd, backup.backup_cmd, snapshots.snapshots_cmd, check.check_cmd,
    forget.forget_cmd, env.env_cmd, show.show_cmd, ls.ls_cmd, restore.restore_cmd, drill.drill_cmd,
    status.status_cmd, escrow.escrow_cmd, bundle.bundle_group, lab.lab_group, report_cmd,
]
