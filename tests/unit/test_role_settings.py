"""Every key of the configuration model can be set from the Ansible role, or the role's README says why not.

The role's templates/config.yml.j2 is rendered (with the renderer the lab uses, restic_orch.lab.manager) from
a vars file that sets every role variable away from its default; the result must validate, and every field
of restic_orch.config.Config, walked recursively through its pydantic models, must be written explicitly with
a value other than the model's default, unless the README's "Configuration keys the role does not set"
lists it. argument_specs must document and accept every variable and every database-source key.
"""

from __future__ import annotations

import re
import types
import typing
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import BaseModel

from restic_orch.config import Config, DatabaseSource, MysqlSource, PostgresSource
from restic_orch.lab import manager

pytest.importorskip("jinja2")

ROLE = Path(__file__).resolve().parents[2] / "ansible" / "roles" / "backup"

# every variable away from its default, every optional feature on
EVERYTHING: dict[str, Any] = {
    "backup_secrets_dir": "/srv/ro/secrets",
    "backup_hooks_dir": "/srv/ro/hooks",
    "backup_state_dir": "/srv/ro/state",
    "backup_staging_dir": "/srv/ro/staging",
    "backup_log_dir": "/srv/ro/log",
    "backup_drill_report_dir": "/srv/ro/drills",
    "backup_host_name": "pve9",
    "backup_auto_init": True,
    "backup_restic_password": "local-pw",
    "backup_local_repository": "/srv/ro/repo",
    "backup_local_options": {"local.connections": "4"},
    "backup_local_retention": {"keep_last": 2, "keep_hourly": 3, "keep_daily": 4, "keep_weekly": 5,
                               "keep_monthly": 6, "keep_yearly": 7, "keep_within": "1d",
                               "keep_within_daily": "8d", "keep_within_weekly": "9d",
                               "keep_within_monthly": "1y"},
    "backup_local_prune_every_days": 3,
    "backup_local_compression": "max",
    "backup_offsite_enabled": True,
    "backup_offsite_repository": "s3:https://s3.example.invalid/bucket/restic",
    "backup_offsite_restic_password": "offsite-pw",
    "backup_offsite_s3_access_key_id": "AKIA1",
    "backup_offsite_s3_secret_access_key": "sk1",
    "backup_offsite_options": {"s3.bucket-lookup": "path"},
    "backup_offsite_retention": {"keep_last": 12, "keep_hourly": 13, "keep_daily": 14, "keep_weekly": 15,
                                 "keep_monthly": 16, "keep_yearly": 17, "keep_within": "11d",
                                 "keep_within_daily": "60d", "keep_within_weekly": "12d",
                                 "keep_within_monthly": "2y"},
    "backup_offsite_prune_every_days": 14,
    "backup_offsite_compression": "off",
    "backup_offsite_upload_limit_kib": 2048,
    "backup_proxmox_host": "pve9.example.invalid",
    "backup_proxmox_port": 8007,
    "backup_proxmox_user": "robot@pve",
    "backup_proxmox_token_name": "nightly",
    "backup_proxmox_token_secret": "token-secret-9f1",
    "backup_proxmox_verify_ssl": True,
    "backup_proxmox_ca_file": "/srv/ro/ca.pem",
    "backup_proxmox_node": "pve9",
    "backup_proxmox_vmids": [101, 102],
    "backup_proxmox_guests": "lxc",
    "backup_proxmox_exclude": [103],
    "backup_proxmox_exclude_paths": {"all": ["/var/cache/apt/archives/*"], 102: ["/srv/tmp"]},
    "backup_proxmox_mode": "suspend",
    "backup_proxmox_require_snapshot": True,
    "backup_proxmox_compress": "zstd",
    "backup_proxmox_storage": "backups",
    "backup_proxmox_dump_dir": "/srv/ro/dump",
    "backup_proxmox_delete_after": False,
    "backup_proxmox_lockwait_minutes": 5,
    "backup_proxmox_timeout_seconds": 60,
    "backup_proxmox_restore_storage": "fast",
    "backup_proxmox_drill_min_free_percent": 25,
    "backup_postgres_sources": [
        {"name": "main", "host": "10.0.0.2", "port": 5433, "user": "backup", "password": "pg-pw",
         "restore_user": "restore", "restore_password": "pg-restore-pw", "databases": ["app"], "exclude": ["tmp"],
         "exec": "pct:102", "exec_prefix": ["lxc-attach", "-n", "102", "--"], "bin_dir": "/usr/lib/postgresql/15/bin",
         "timeout_seconds": 60, "globals": False, "dump_compression": 3},
    ],
    "backup_mysql_sources": [
        {"name": "apps", "host": "10.0.0.3", "port": 3307, "user": "backup", "password": "my-pw",
         "restore_user": "restore", "restore_password": "my-restore-pw", "databases": ["wiki"], "exclude": ["x"],
         "exec": "pct:103", "exec_prefix": ["lxc-attach", "-n", "103", "--"], "bin_dir": "/usr/bin",
         "timeout_seconds": 60, "users_and_grants": False},
    ],
    "backup_terraform_state_bucket": "tfstate",
    "backup_terraform_state_prefix": "envs/",
    "backup_terraform_state_endpoint": "https://s3.example.invalid",
    "backup_terraform_state_region": "gra",
    "backup_terraform_state_verify_ssl": False,
    "backup_terraform_state_access_key_id": "AKIA2",
    "backup_terraform_state_secret_access_key": "sk2",
    "backup_terraform_state_restore_access_key_id": "AKIA3",
    "backup_terraform_state_restore_secret_access_key": "sk3-restore",
    "backup_ansible_vault_paths": ["/srv/infra/**/vault.yml"],
    "backup_ansible_vault_password": "vault-pw",
    "backup_ansible_vault_include_password_file": True,
    "backup_files_preset": "pve-host",
    "backup_files_paths": ["/srv/ro/host/extra.conf"],
    "backup_files_exclude": ["*.dpkg-old"],
    "backup_files_review_dir": "/srv/ro/review",
    "backup_limits_nice": 5,
    "backup_limits_ionice_class": "idle",
    "backup_limits_ionice_level": 3,
    "backup_limits_gomaxprocs": 2,
    "backup_limits_upload_kib": 4096,
    "backup_limits_lock_wait_seconds": 60,
    "backup_limits_min_free_bytes": 1024,
    "backup_limits_cpu_percent": 50,
    "backup_monitoring_textfile_dir": "/srv/ro/metrics",
    "backup_monitoring_healthchecks_url": "https://hc.example.invalid/ping/x",
    "backup_monitoring_webhook_url": "https://hook.example.invalid/y",
    "backup_monitoring_timeout_seconds": 3,
    "backup_monitoring_notify": [{"name": "ops", "urls": ["ntfys://ntfy.example.invalid/ops-topic-z"],
                                  "events": ["failure", "rpo_breach"]}],
    "backup_rto_minutes": 45,
    "backup_rpo_hours": 12,
    "backup_restore_redeploy": [["ansible-playbook", "-i", "inventory", "site.yml"]],
    "backup_restore_redeploy_timeout_seconds": 600,
    "backup_drill_vmid_range": [9000, 9099],
    "backup_check_rotation_parts": 12,
    "backup_check_verified_within_days": 100,
    "backup_keep_runs": 50,
}


def render(tmp_path: Path, variables: dict[str, Any]) -> tuple[dict[str, Any], dict[str, str]]:
    vars_file = tmp_path / "vars.yml"
    vars_file.write_text(yaml.safe_dump(variables))
    text, _, secrets = manager.render_role_config(tmp_path, {}, lab_vars=vars_file)
    return yaml.safe_load(text), secrets


def _models(annotation: Any) -> tuple[type[BaseModel] | None, bool]:
    """The pydantic model inside an annotation (Optional, list of), and whether it is a list of them."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation, False
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        for arg in typing.get_args(annotation):
            model, many = _models(arg)
            if model:
                return model, many
    if origin is list:
        model, _ = _models(typing.get_args(annotation)[0])
        return model, model is not None
    return None, False


def model_fields(model: type[BaseModel], prefix: str = "") -> list[str]:
    """Dotted paths of every leaf field, `[]` marking a list of models."""
    out: list[str] = []
    for name, info in model.model_fields.items():
        sub, many = _models(info.annotation)
        path = f"{prefix}{name}"
        if sub is None:
            out.append(path)
        else:
            out += model_fields(sub, path + ("[]." if many else "."))
    return out


def not_settable() -> set[str]:
    text = (ROLE / "README.md").read_text()
    section = text.split("### Configuration keys the role does not set", 1)[1].split("\n#", 1)[0]
    return {key for line in section.splitlines() if line.startswith("- ")
            for key in re.findall(r"`([a-z_.\[\]]+)`", line.split(" — ", 1)[0])}


def explicit_values(obj: BaseModel, path: str) -> list[tuple[BaseModel, str]]:
    """(model instance, field name) pairs for a dotted path (every item of a list)."""
    head, _, rest = path.partition(".")
    if not rest:
        return [(obj, head)]
    many = head.endswith("[]")
    value = getattr(obj, head.removesuffix("[]"))
    items = value if many else [value]
    return [pair for item in items if item is not None for pair in explicit_values(item, rest)]


# settings that exclude each other: the CA file is only written when the certificate is verified
VARIANTS = [EVERYTHING, {**EVERYTHING, "backup_proxmox_verify_ssl": False}]


def _set_away_from_default(obj: BaseModel, name: str) -> bool:
    info = type(obj).model_fields[name]
    return name in obj.model_fields_set and (
        info.is_required() or getattr(obj, name) != info.get_default(call_default_factory=True))


def test_every_configuration_key_can_be_set_from_the_role_or_is_listed_as_not(tmp_path):
    configs = []
    for index, variables in enumerate(VARIANTS):
        (tmp_path / str(index)).mkdir()
        configs.append(Config.model_validate(render(tmp_path / str(index), variables)[0]))
    exempt = not_settable()
    fields = model_fields(Config)
    assert exempt <= set(fields), f"the README lists keys the model does not have: {exempt - set(fields)}"
    problems = []
    for path in fields:
        pairs = [pair for config in configs for pair in explicit_values(config, path)]
        if path in exempt:
            # a fixed value (version: 1) may be written; a variable behind it means the README is stale
            if any(_set_away_from_default(obj, name) for obj, name in pairs):
                problems.append(f"{path}: listed in the README as not set by the role, but a variable sets it")
        elif not any(name in obj.model_fields_set for obj, name in pairs):
            problems.append(f"{path}: the role never writes it (add a variable, or list it in the README)")
        elif not any(_set_away_from_default(obj, name) for obj, name in pairs):
            problems.append(f"{path}: written, but only with the model's default: set it away from the default in"
                            " EVERYTHING, so the test can tell a variable sets it")
    assert not problems, "\n".join(problems)


def test_secrets_are_files_never_values(tmp_path):
    data, secrets = render(tmp_path, EVERYTHING)
    text = yaml.safe_dump(data)
    for value in ("local-pw", "offsite-pw", "sk1", "pg-pw", "pg-restore-pw", "my-pw", "my-restore-pw", "sk2",
                  "sk3-restore", "token-secret-9f1", "vault-pw", "ping/x", "example.invalid/y",
                  "ops-topic-z"):
        assert value not in text
    assert secrets["postgres-main.pass"] == "pg-pw\n"
    assert secrets["postgres_restore-main.pass"] == "pg-restore-pw\n"
    assert secrets["mysql_restore-apps.pass"] == "my-restore-pw\n"
    [pg] = data["sources"]["postgres"]
    assert (pg["password_file"], pg["restore_password_file"]) == (
        "/srv/ro/secrets/postgres-main.pass", "/srv/ro/secrets/postgres_restore-main.pass")


def test_an_append_only_offsite_has_no_retention(tmp_path):
    data, _ = render(tmp_path, {**EVERYTHING, "backup_offsite_retention": None})
    config = Config.model_validate(data)
    assert config.repositories.offsite.retention is None
    assert config.repositories.local.retention is not None


def test_argument_specs_document_every_variable_and_database_key():
    specs = yaml.safe_load((ROLE / "meta/argument_specs.yml").read_text())["argument_specs"]["main"]["options"]
    defaults = yaml.safe_load((ROLE / "defaults/main.yml").read_text())
    assert set(specs) == set(defaults), (set(specs) ^ set(defaults))
    assert set(EVERYTHING) <= set(defaults)
    # an item key argument_specs does not list is refused when the role runs: each model field must be there
    as_vault = {"password_file": "password", "restore_password_file": "restore_password"}
    for variable, model in (("backup_postgres_sources", PostgresSource), ("backup_mysql_sources", MysqlSource)):
        keys = set(specs[variable]["options"])
        wanted = {as_vault.get(name, name) for name in model.model_fields}
        assert keys == wanted, f"{variable}: {keys ^ wanted}"
    assert set(DatabaseSource.model_fields) < set(PostgresSource.model_fields)
