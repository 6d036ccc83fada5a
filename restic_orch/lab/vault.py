"""An infrastructure repository with Ansible Vault files, for the secrets-backup job.

The vault files are really encrypted by ``ansible-vault`` (password from a 0600 file,
never argv), and one ``vault.yml`` is deliberately left in plaintext: the product must
notice and warn about a vault file that was never encrypted.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

from restic_orch.lab import procs
from restic_orch.lab.secrets import new_password, secrets_dir, write_secret

VAULT_HEADER = "$ANSIBLE_VAULT;"

# Relative to base_dir. Plaintext content is returned so tests can compare a decryption.
_ENCRYPTED = {
    "infra/ansible/group_vars/all/vault.yml": (
        "---\nvault_pve_api_token_secret: \"{a}\"\nvault_smtp_password: \"{b}\"\n"
        "vault_admin_motd: \"Accès réservé — 関係者以外立入禁止 🔒\"\n"
    ),
    "infra/ansible/host_vars/pve1/vault.yml": (
        "---\nvault_root_password: \"{a}\"\nvault_ipmi_password: \"{b}\"\n"
    ),
    "infra/ansible/roles/x/vars/vault.yml": (
        "---\nvault_x_db_password: \"{a}\"\nvault_x_api_keys:\n  - \"{b}\"\n"
    ),
}
_PLAINTEXT = {
    # Forgotten `ansible-vault encrypt`: a secret sitting in clear in the repository.
    "infra/ansible/host_vars/pbs1/vault.yml": "---\nvault_pbs_password: \"{a}\"\n",
}
_OTHER = {
    "infra/ansible/group_vars/all/main.yml": (
        "---\npve_api_token_secret: \"{{ vault_pve_api_token_secret }}\"\ntimezone: Europe/Paris\n"
    ),
    "infra/ansible/site.yml": "---\n- hosts: all\n  roles:\n    - x\n",
    "infra/ansible/inventory.ini": "[pve]\npve1 ansible_host=192.168.10.2\n\n[pbs]\npbs1\n",
}


def _ansible_vault() -> str:
    # Prefer the one installed next to the running interpreter (the project venv).
    local = Path(sys.executable).parent / "ansible-vault"
    return str(local) if local.exists() else (shutil.which("ansible-vault") or "ansible-vault")


def _env(base_dir: Path) -> dict[str, str]:
    # Keep ansible's scratch files inside the lab; drop settings of the caller's shell
    # that would override our password file.
    env = {k: v for k, v in os.environ.items()
           if k not in ("ANSIBLE_CONFIG", "ANSIBLE_VAULT_PASSWORD_FILE", "ANSIBLE_VAULT_IDENTITY_LIST")}
    env.update({"ANSIBLE_HOME": str(base_dir / ".ansible"),
                "ANSIBLE_LOCAL_TEMP": str(base_dir / ".ansible" / "tmp"), "LANG": "C.UTF-8"})
    return env


def ansible_vault(base_dir: Path, *args: str, password_file: Path | None = None) -> str:
    """Run ``ansible-vault <args>`` with the lab's vault password file; return stdout."""
    base_dir = Path(base_dir).resolve()
    password_file = password_file or (base_dir / "secrets" / "vault-pass")
    return procs.run([_ansible_vault(), *args, f"--vault-password-file={password_file}"],
                     env=_env(base_dir), timeout=120, what="ansible-vault")


def make_vault_tree(base_dir: Path) -> dict:
    """Create ``base_dir/infra/ansible/...`` with encrypted vault files; return paths and globs.

    Returns {"root", "ansible_dir", "password_file", "encrypted": [abs paths],
    "plaintext": [abs paths of unencrypted vault files], "files": [all abs paths],
    "globs": [globs relative to root], "contents": {abs path: plaintext}}.
    """
    base_dir = Path(base_dir).resolve()
    password_file = write_secret(secrets_dir(base_dir) / "vault-pass", new_password() + "\n")
    contents: dict[str, str] = {}
    for rel, template in {**_ENCRYPTED, **_PLAINTEXT, **_OTHER}.items():
        path = base_dir / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        text = template.replace("{a}", new_password()).replace("{b}", new_password())
        path.write_text(text, encoding="utf-8")
        contents[str(path)] = text
    encrypted = [str(base_dir / rel) for rel in _ENCRYPTED]
    # One call for all files: ansible-vault takes ~1 s to start.
    ansible_vault(base_dir, "encrypt", *encrypted, password_file=password_file)
    for path in encrypted:
        if not Path(path).read_text().startswith(VAULT_HEADER):
            raise procs.LabError(f"ansible-vault did not encrypt {path}")
    return {
        "root": str(base_dir / "infra"),
        "ansible_dir": str(base_dir / "infra" / "ansible"),
        "password_file": str(password_file),
        "encrypted": encrypted,
        "plaintext": [str(base_dir / rel) for rel in _PLAINTEXT],
        "files": sorted(contents),
        "globs": ["ansible/**/vault.yml", "ansible/**/vault.yaml"],
        "contents": contents,
    }
