"""The documented example configuration must stay valid against the real model."""

from pathlib import Path

from restic_orch.config import load_config

EXAMPLE = Path(__file__).resolve().parents[2] / "docs" / "config.example.yml"


def test_example_config_is_valid_apart_from_missing_secret_files():
    config = load_config(EXAMPLE, check_files=False)
    assert config.repositories.local.url == "/var/backups/infra-oldevops/restic"
    assert config.repositories.offsite.retention is None  # append-only: the trusted machine runs forget
    assert config.sources.proxmox.compress == "0"
