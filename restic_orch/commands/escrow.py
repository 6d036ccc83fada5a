"""`escrow`: the sheet to keep offline for disaster day (docs/escrow.md)."""

from __future__ import annotations

from pathlib import Path

import click

from ..runlog import opened_log
from .common import Ctx, fail


@click.command("escrow")
@click.option("--out", "out_dir", type=click.Path(path_type=Path, file_okay=False), default=None,
              help="Directory for the sheet (default: <state_dir>/escrow).")
@click.option("--with-secrets", is_flag=True,
              help="Also print the secret files' values on the sheet (its files are then created 0600).")
@click.pass_obj
def escrow_cmd(obj: Ctx, out_dir: Path | None, with_secrets: bool) -> None:
    """Write the sheet to keep offline: repository addresses and IDs, the secrets to keep beside it and where
    they live, the host-lost runbook's first commands (Markdown and printable HTML). Exit 3 when something could
    not be read (it is marked on the sheet)."""
    from ..escrow import make_sheet, write_sheet
    from ..escrow_render import human

    # a missing secret file is what the sheet must show, not a reason to refuse
    config = obj.config(check_files=False)
    with opened_log(config):
        sheet = make_sheet(config, obj.path, with_secrets)
        try:
            record = write_sheet(sheet, out_dir or config.state_dir / "escrow", config.state_dir)
        except OSError as exc:
            fail(f"cannot write the escrow sheet: {exc}")
    obj.emit(record, human(record))
    raise SystemExit(sheet.exit_code)

