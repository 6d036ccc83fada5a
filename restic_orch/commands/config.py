"""`config validate` and `config show`."""

from __future__ import annotations

import click

from ..config import ConfigError, load_config, redacted
from ..report import EXIT_USAGE
from .common import Ctx


@click.group("config")
def config_group() -> None:
    """Check or print the configuration."""


@config_group.command("validate")
@click.pass_obj
def config_validate(obj: Ctx) -> None:
    """Exit 0 when the configuration is valid; else list every problem as FILE:LINE: field: message."""
    try:
        load_config(obj.path)
    except ConfigError as exc:
        obj.emit({"valid": False, "problems": [vars(p) | {"file": str(p.file)} for p in exc.problems]}, "")
        if not obj.as_json:
            for problem in exc.problems:
                click.echo(str(problem), err=True)
        raise SystemExit(EXIT_USAGE) from None
    obj.emit({"valid": True, "file": str(obj.path)}, f"{obj.path}: valid")


@config_group.command("show")
@click.pass_obj
def config_show(obj: Ctx) -> None:
    """Print the resolved configuration (secrets appear only as the paths of their files)."""
    import yaml

    data = redacted(obj.config())
    obj.emit(data, yaml.safe_dump(data, sort_keys=False, allow_unicode=True).rstrip())
