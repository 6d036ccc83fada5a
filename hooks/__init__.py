"""Pre-hooks: one module per kind of source, each able to dump and to restore its kind."""

from __future__ import annotations

import importlib

from restic_orch.config import Config

from .base import Hook

# module names only: the pipeline iterates over whatever is registered here and names no source itself
MODULES = ("proxmox", "qemu", "postgres", "mysql", "terraform_state", "ansible_vault", "host_files")


def hook_classes() -> list[type[Hook]]:
    classes = []
    for name in MODULES:
        module = importlib.import_module(f"{__name__}.{name}")
        classes.append(module.HOOK)
    return classes


def build_hooks(config: Config, only: set[str] | None = None) -> list[Hook]:
    """Every configured hook, optionally restricted to some kinds (`--only postgres,mysql`)."""
    hooks: list[Hook] = []
    for cls in hook_classes():
        if only and cls.kind not in only:
            continue
        hooks.extend(cls.from_config(config))
    return hooks

