"""Disaster day without the lost host's configuration: rebuild it from the copy stored in the snapshot."""

from __future__ import annotations

from pathlib import Path, PurePosixPath
from typing import Any

import yaml

from restic_orch.hooks import registry

from .config import Config
from .restic import Repo
from .staging import Manifest


class OverrideError(ValueError):
    pass


def apply_override(data: dict[str, Any], assignment: str) -> None:
    """`sources.proxmox.host=10.0.0.5` or `sources.postgres[0].port=5433` (values parsed as YAML scalars)."""
    key, sep, raw = assignment.partition("=")
    if not sep or not key:
        raise OverrideError(f"--set {assignment!r}: expected KEY=VALUE, e.g. sources.proxmox.host=10.0.0.5")
    value = yaml.safe_load(raw) if raw else ""
    node: Any = data
    parts = _parts(key)
    for part in parts[:-1]:
        if isinstance(part, int):
            if not isinstance(node, list) or part >= len(node):
                raise OverrideError(f"--set {key}: index {part} does not exist")
            node = node[part]
        else:
            if not isinstance(node, dict):
                raise OverrideError(f"--set {key}: {part} is not a section")
            node = node.setdefault(part, {})
    last = parts[-1]
    if isinstance(last, int):
        if not isinstance(node, list) or last >= len(node):
            raise OverrideError(f"--set {key}: index {last} does not exist")
        node[last] = value
    else:
        if not isinstance(node, dict):
            raise OverrideError(f"--set {key}: cannot set a field on a non-section")
        node[last] = value


def escrowed_secrets(stored: Config, secrets_dir: Path) -> list[str]:
    """`location=path` for each secret of the stored configuration whose file the escrow sheet names is in
    secrets_dir (the optional restore keys the host does not hold included), so one flag replaces a --set per
    secret. The repositories' own secrets come from --password-file and --s3-env-file."""
    from .escrow import collect_secrets, optional_secrets

    if not secrets_dir.is_dir():
        raise OverrideError(f"--secrets-dir {secrets_dir}: not a directory")
    found = []
    for entry in collect_secrets(stored) + optional_secrets(stored):
        if entry.location.startswith("repositories.") or not entry.new_host:
            continue
        candidate = secrets_dir / PurePosixPath(entry.new_host).name
        if candidate.is_file():
            found.append(f"{entry.location}={candidate}")
    return found


def _parts(key: str) -> list[str | int]:
    parts: list[str | int] = []
    for chunk in key.split("."):
        name, _, rest = chunk.partition("[")
        if name:
            parts.append(name)
        while rest:
            index, _, rest = rest.partition("]")
            parts.append(int(index))
            rest = rest.lstrip("[")
    return parts


def config_from_manifest(manifest: Manifest, repo: Repo, overrides: list[str],
                         secrets_dir: Path | None = None) -> Config:
    """The stored configuration, pointed at the repository given on the command line, its secret files found in
    secrets_dir (the escrow sheet's names), plus --set overrides (which win)."""
    data = dict(manifest.config)
    if not data:
        raise OverrideError("this snapshot holds no configuration (made by an older restic-orch?)")
    escrowed = escrowed_secrets(Config.model_validate(data), secrets_dir) if secrets_dir else []
    stored = (data.get("repositories") or {}).get(repo.name) or {}
    entry: dict[str, Any] = {"url": repo.url, "password_file": str(repo.password_file),
                             "retention": stored.get("retention") or {"keep_within_daily": "30d"},
                             "options": repo.options}
    if repo.env_file:
        entry["env_file"] = str(repo.env_file)
    data["repositories"] = {repo.name: {k: v for k, v in entry.items() if v is not None}}
    for assignment in [*escrowed, *overrides]:
        apply_override(data, assignment)
    return Config.model_validate(data)


def summary_lines(config: Config) -> list[str]:
    """What the stored configuration says, so the operator sees what differs on the new host."""
    lines = [f"host: {config.host}"]
    for cls in registry.hook_classes():
        lines += cls.bootstrap_lines(config)
    return lines
