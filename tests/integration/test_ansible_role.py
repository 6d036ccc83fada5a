"""The Ansible role `backup`, applied for real to a confined root under tmp_path.

Every location the role writes (config, secrets, venv, state, logs, cron file, logrotate, systemd
units, local repository) is a variable; the test points them all into a temporary directory, runs the
role twice with ansible-playbook (`-c local`) and checks what a Proxmox host would get: the cron entry
and its exact command, 0600 secrets, a config that restic-orch itself accepts, `changed=0` on the
second run, and ansible-lint's production profile. restic-orch is really installed into a venv from
this checkout (once per module).
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from restic_orch import cpucap

REPO = Path(__file__).resolve().parents[2]
ROLE = REPO / "ansible" / "roles" / "backup"
BIN = Path(sys.executable).parent
ANSIBLE_PLAYBOOK = BIN / "ansible-playbook"
ANSIBLE_LINT = BIN / "ansible-lint"
ANSIBLE_VAULT = BIN / "ansible-vault"

RESTIC_PASSWORD = "restic-test-password-5b1e"  # noqa: S105 - test data
VAULT_PASSWORD = "vault-test-password-77c2"  # noqa: S105

pytestmark = [
    pytest.mark.skipif(not ANSIBLE_PLAYBOOK.exists(), reason="ansible-core is not installed in this venv"),
    pytest.mark.skipif(shutil.which("restic") is None, reason="restic is not installed (apt-get install restic)"),
    pytest.mark.timeout(300),
]

RECAP = re.compile(r"^\S+\s*:\s*ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)", re.M)


def _cli_available() -> bool:
    """Whether this checkout already has the command line (restic_orch.cli with `init`, `config validate`)."""
    if importlib.util.find_spec("restic_orch.cli") is None:
        return False
    script = BIN / "restic-orch"
    if not script.exists():
        return False
    return subprocess.run([script, "--help"], capture_output=True, timeout=60).returncode == 0


CLI = _cli_available()


def _system_python() -> str:
    # the venv is created the way the role does it on a host: from the distribution's python3
    for candidate in ("/usr/bin/python3", sys.executable):
        if Path(candidate).exists():
            return candidate
    return sys.executable


def run_playbook(root: Path, role_vars: dict, *extra: str, vars_files: tuple[Path, ...] = (),
                 expect_success: bool = True) -> tuple[subprocess.CompletedProcess, dict]:
    vars_file = root / "role-vars.json"
    vars_file.write_text(json.dumps(role_vars, indent=2))
    all_vars_files = json.dumps([str(p) for p in (*vars_files, vars_file)])
    playbook = root / "playbook.yml"
    playbook.write_text(
        "- name: Apply the backup role to a confined root\n"
        "  hosts: localhost\n"
        "  gather_facts: false\n"
        f"  vars_files: {all_vars_files}\n"
        "  roles:\n"
        f"    - role: {json.dumps(str(ROLE))}\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("ANSIBLE_")}
    env.update(
        ANSIBLE_NOCOLOR="1",
        ANSIBLE_FORCE_COLOR="0",
        ANSIBLE_STDOUT_CALLBACK="default",
        ANSIBLE_RETRY_FILES_ENABLED="0",
        ANSIBLE_LOCAL_TEMP=str(root / ".ansible-tmp"),
        ANSIBLE_REMOTE_TEMP=str(root / ".ansible-tmp"),
        PATH=f"{BIN}:{env.get('PATH', '/usr/bin:/bin')}",
    )
    proc = subprocess.run(
        [ANSIBLE_PLAYBOOK, "-i", "localhost,", "-c", "local",
         "-e", f"ansible_python_interpreter={sys.executable}", str(playbook), *extra],
        cwd=root, env=env, capture_output=True, text=True, timeout=240,
    )
    recaps = RECAP.findall(proc.stdout)
    assert recaps, f"no PLAY RECAP:\n{proc.stdout[-6000:]}\n{proc.stderr[-3000:]}"
    assert (proc.returncode == 0) == expect_success, (
        f"ansible-playbook exit {proc.returncode}:\n{proc.stdout[-6000:]}\n{proc.stderr[-3000:]}")
    ok, changed, unreachable, failed = (int(x) for x in recaps[-1])
    return proc, {"ok": ok, "changed": changed, "unreachable": unreachable, "failed": failed}


def confined_paths(root: Path) -> dict:
    return {
        "backup_venv_dir": str(root / "opt/restic-orch"),
        "backup_config_dir": str(root / "etc/restic-orch"),
        "backup_state_dir": str(root / "var/lib/restic-orch"),
        "backup_staging_dir": str(root / "var/lib/restic-orch/staging"),
        "backup_log_dir": str(root / "var/log/restic-orch"),
        "backup_drill_report_dir": str(root / "var/lib/restic-orch/drills"),
        "backup_cron_file": str(root / "etc/cron.d/restic-orch"),
        "backup_cron_lock_file": str(root / "run/lock/restic-orch.lock"),
        "backup_logrotate_dir": str(root / "etc/logrotate.d"),
        "backup_systemd_unit_dir": str(root / "etc/systemd/system"),
        "backup_local_repository": str(root / "var/backups/infra-oldevops/restic"),
        "backup_monitoring_textfile_dir": str(root / "var/lib/prometheus/node-exporter"),
        "backup_command_link": str(root / "usr/local/bin/restic-orch"),
    }


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture(scope="module")
def deployed(tmp_path_factory):
    """The role applied twice (cron scheduler) to a confined root; restic-orch installed from this checkout."""
    root = tmp_path_factory.mktemp("role-cron")
    for sub in ("run/lock", "etc/cron.d", "etc/logrotate.d", "etc/systemd/system"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    # a real Ansible Vault file for the ansible_vault source: a backup with data but no servers
    vault_dir = root / "infra/ansible/inventory/group_vars/proxmox"
    vault_dir.mkdir(parents=True)
    vault_file = vault_dir / "vault.yml"
    vault_file.write_text("vault_backup_restic_password: not-a-real-one\n")
    pw_file = root / "vault-pass"
    pw_file.write_text(VAULT_PASSWORD + "\n")
    subprocess.run([ANSIBLE_VAULT, "encrypt", "--vault-password-file", pw_file, vault_file],
                   check=True, capture_output=True, timeout=60)

    # a frozen copy of the project: the role packs whatever it is given, and a checkout being edited
    # between the two runs would rightly make the second one reinstall
    source = root / "src-snapshot"
    source.mkdir()
    for entry in ("pyproject.toml", "README.md", "LICENSE", "restic_orch", "hooks", "scripts/restore.sh",
                  "docs/runbooks/disaster-recovery.md"):
        if (REPO / entry).is_dir():
            shutil.copytree(REPO / entry, source / entry, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        elif (REPO / entry).exists():
            (source / entry).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / entry, source / entry)

    role_vars = {
        **confined_paths(root),
        "backup_package_source": str(source),
        "backup_manage_packages": False,
        "backup_python": _system_python(),
        "backup_restic_password": RESTIC_PASSWORD,
        "backup_proxmox_enabled": False,
        "backup_status_watch_enabled": True,
        "backup_ansible_vault_paths": [str(root / "infra/ansible/inventory/group_vars/*/vault.yml")],
        "backup_ansible_vault_password": VAULT_PASSWORD,
        # until the command line lands (restic_orch.cli), the role cannot ask it to validate or init
        "backup_validate_config": CLI,
        "backup_init_repositories": CLI,
    }
    first, first_recap = run_playbook(root, role_vars)
    second, second_recap = run_playbook(root, role_vars)
    return {
        "root": root,
        "vars": role_vars,
        "first": first,
        "first_recap": first_recap,
        "second": second,
        "second_recap": second_recap,
        "venv": Path(role_vars["backup_venv_dir"]),
        "config": Path(role_vars["backup_config_dir"]) / "config.yml",
        "secrets": Path(role_vars["backup_config_dir"]) / "secrets",
        "vault_file": vault_file,
    }


def test_first_run_installs_and_configures(deployed):
    assert deployed["first_recap"]["failed"] == 0
    assert deployed["first_recap"]["changed"] > 0
    assert (deployed["venv"] / "bin/restic-orch").exists()
    assert (deployed["venv"] / "src/restic-orch-src.tar.gz").exists()
    # what was installed is recorded once pip succeeded: the archive and the constraints, by sha256
    record = (deployed["venv"] / ".restic-orch-installed").read_text()
    assert re.fullmatch(r"\S+/restic-orch-src\.tar\.gz sha256:[0-9a-f]{64}, \S+/constraints\.txt sha256:[0-9a-f]{64}",
                        record), record


def _bundle(deployed) -> Path:
    return Path(deployed["vars"]["backup_state_dir"]) / "bootstrap"


def test_the_bootstrap_bundle_is_built_from_the_installed_archive(deployed):
    """After the install, the role builds the bundle on the host from the archive it installed (restore.sh and the
    runbook come out of it): every SHA256SUMS line holds, and the second run left it alone."""
    from restic_orch import bundle

    if not CLI:
        pytest.skip("restic_orch.cli is not there yet")
    out = _bundle(deployed)
    assert bundle.verify(out) == []
    check = subprocess.run(["sha256sum", "-c", "--strict", "SHA256SUMS"], cwd=out, capture_output=True, text=True)
    assert check.returncode == 0, check.stdout + check.stderr
    assert (out / "restore.sh").read_bytes() == (REPO / "scripts/restore.sh").read_bytes()
    meta = json.loads((out / "bundle.json").read_text())
    probe = "import sys; print('%d.%d' % sys.version_info[:2])"
    python = subprocess.run([deployed["venv"] / "bin/python", "-c", probe], capture_output=True, text=True,
                            timeout=60, check=True).stdout.strip()
    assert meta["python"] == python and (out / "wheels" / meta["wheel"]).is_file()
    assert "Build the bootstrap bundle from the installed source" in deployed["first"].stdout
    # built once: the second run (nothing installed) did not build again
    second = deployed["second"].stdout
    assert "skipping: [localhost]" in second.split("Build the bootstrap bundle from the installed source")[1][:300]


def _pins() -> dict[str, str]:
    from packaging.utils import canonicalize_name

    lines = (REPO / "restic_orch/constraints.txt").read_text().splitlines()
    return {canonicalize_name(name): version for name, version in
            (line.split("==") for line in lines if line and not line.startswith("#"))}


def test_the_dependencies_are_the_pinned_ones(deployed):
    """pip ran with -c constraints.txt (shipped in the package): the host has the versions the tests ran with."""
    from packaging.utils import canonicalize_name

    assert (deployed["venv"] / "src/constraints.txt").read_text() == (REPO / "restic_orch/constraints.txt").read_text()
    freeze = subprocess.run([deployed["venv"] / "bin/pip", "freeze", "--all"], capture_output=True, text=True,
                            timeout=60, check=True).stdout.splitlines()
    installed = {canonicalize_name(name): version for name, version in
                 (line.split("==", 1) for line in freeze if "==" in line)}
    assert {name: installed.get(name) for name in _pins()} == _pins()


def test_second_run_changes_nothing(deployed):
    recap = deployed["second_recap"]
    assert recap["failed"] == 0 and recap["unreachable"] == 0
    assert recap["changed"] == 0, deployed["second"].stdout[-4000:]


def test_cron_entry_runs_daily_at_three_with_flock_nice_ionice(deployed):
    v = deployed["vars"]
    cron = Path(v["backup_cron_file"])
    assert mode(cron) == 0o644
    text = cron.read_text()
    cli = f"{v['backup_venv_dir']}/bin/restic-orch -q --config {v['backup_config_dir']}/config.yml"
    wrapper = f"flock -n {v['backup_cron_lock_file']} nice -n 10 ionice -c 2 -n 7"
    lines = [line for line in text.splitlines() if line and not line.startswith("#")]
    assert 'PATH="/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"' in lines
    assert f"0 3 * * * root {wrapper} {cli} backup" in lines
    # cron turns a bare % into a newline: the percent of the read subset must be escaped
    assert f"0 5 * * 0 root {wrapper} {cli} check --read-data-subset 5\\%" in lines
    assert f"0 6 * * 0 root {wrapper} {cli} drill --scenario full" in lines
    # the hourly watch reads only: no flock, so a slow status never makes the night's backup skip
    assert f"30 * * * * root nice -n 10 ionice -c 2 -n 7 {cli} status --notify-only" in lines
    assert len([line for line in lines if "restic-orch" in line]) == 4


def test_secrets_and_config_are_private(deployed):
    v = deployed["vars"]
    assert mode(deployed["config"]) == 0o600
    assert mode(deployed["secrets"]) == 0o700
    names = sorted(p.name for p in deployed["secrets"].iterdir())
    assert names == ["ansible-vault.pass", "restic-local.pass"]
    for path in deployed["secrets"].iterdir():
        assert mode(path) == 0o600, path
    assert (deployed["secrets"] / "restic-local.pass").read_text() == RESTIC_PASSWORD + "\n"
    assert mode(Path(v["backup_staging_dir"])) == 0o700
    assert mode(Path(v["backup_local_repository"])) == 0o700
    for hook in ("pre-backup.d", "post-backup.d", "on-failure.d"):
        assert (Path(v["backup_config_dir"]) / "hooks" / hook).is_dir()
    # the configuration names secret files, never secret values; no_log keeps them out of the output
    assert RESTIC_PASSWORD not in deployed["config"].read_text()
    for run in (deployed["first"], deployed["second"]):
        assert RESTIC_PASSWORD not in run.stdout + run.stderr
        assert VAULT_PASSWORD not in run.stdout + run.stderr


def _load_with_schema(venv: Path, config: Path) -> dict:
    """Load the deployed file with the deployed package's own schema (restic_orch.config.load_config)."""
    code = (
        "import json, sys; from pathlib import Path; "
        "from restic_orch.config import load_config, redacted; "
        "print(json.dumps(redacted(load_config(Path(sys.argv[1])))))"
    )
    proc = subprocess.run([venv / "bin/python", "-c", code, config], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def test_deployed_config_passes_the_schema(deployed):
    v = deployed["vars"]
    cfg = _load_with_schema(deployed["venv"], deployed["config"])
    assert cfg["repositories"]["local"]["url"] == v["backup_local_repository"]
    assert cfg["repositories"]["local"]["retention"]["keep_within_daily"] == "7d"
    assert cfg["repositories"]["offsite"] is None
    assert cfg["sources"]["proxmox"] is None
    assert cfg["sources"]["ansible_vault"]["paths"] == v["backup_ansible_vault_paths"]
    assert cfg["staging_dir"] == v["backup_staging_dir"]
    assert cfg["limits"]["nice"] == 10
    assert cfg["limits"]["cpu_percent"] == 30  # VI2: the deployed run holds itself to 30 % of the host


@pytest.mark.skipif(not CLI, reason="restic_orch.cli is not there yet: `restic-orch config validate` cannot run")
def test_deployed_config_passes_config_validate(deployed):
    proc = subprocess.run(
        [deployed["venv"] / "bin/restic-orch", "--config", deployed["config"], "config", "validate"],
        capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.skipif(shutil.which("logrotate") is None, reason="logrotate is not installed")
def test_logrotate_policy_parses(deployed):
    v = deployed["vars"]
    policy = Path(v["backup_logrotate_dir"]) / "restic-orch"
    assert mode(policy) == 0o644
    proc = subprocess.run(
        ["logrotate", "--debug", "--state", deployed["root"] / "logrotate.state", policy],
        capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert "error" not in proc.stderr.lower(), proc.stderr


def test_systemd_scheduler_and_every_secret(deployed, tmp_path):
    """scheduler=systemd (units written, systemctl left alone: no systemd here) with every feature enabled."""
    root = tmp_path
    for sub in ("run/lock", "etc/cron.d", "etc/logrotate.d", "etc/systemd/system"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    secrets = {
        "backup_restic_password": "local-pass-0a1b2c",
        "backup_offsite_restic_password": "offsite-pass-3d4e5f",
        "backup_offsite_s3_access_key_id": "AKIATESTKEYID0001",
        "backup_offsite_s3_secret_access_key": "s3-secret-key-6a7b8c",
        "backup_proxmox_token_secret": "11111111-2222-3333-4444-555555555555",
        "backup_terraform_state_access_key_id": "AKIATFSTATE0002",
        "backup_terraform_state_secret_access_key": "tf-secret-key-9d0e1f",
        "backup_monitoring_healthchecks_url": "https://hc.example.invalid/ping/abcdef",
        "backup_monitoring_webhook_url": "https://hook.example.invalid/xyz-secret",
    }
    role_vars = {
        **confined_paths(root),
        # reuse the venv installed by the module fixture
        "backup_venv_dir": str(deployed["venv"]),
        "backup_install_package": False,
        "backup_manage_packages": False,
        "backup_validate_config": CLI,
        "backup_init_repositories": False,
        "backup_scheduler": "systemd",
        "backup_systemd_enable_timers": False,
        **secrets,
        "backup_offsite_enabled": True,
        "backup_offsite_repository": "s3:https://s3.gra.io.cloud.ovh.net/infra-oldevops-backups/restic",
        "backup_offsite_s3_region": "gra",
        "backup_postgres_sources": [
            {"name": "main", "exec": "pct:102", "user": "backup", "password": "pg-pass-2b3c4d", "databases": "all",
             "restore_user": "restore", "restore_password": "pg-restore-3c4d5e"},
        ],
        "backup_mysql_sources": [
            {"name": "apps", "host": "10.0.0.3", "port": 3306, "user": "backup", "password": "my-pass-5e6f7a",
             "databases": ["wiki", "cloud"], "users_and_grants": True},
            {"name": "nopass", "exec": "pct:104"},
        ],
        "backup_terraform_state_bucket": "infra-oldevops-tfstate",
        "backup_check_read_data_subset": "10%",
        "backup_drill_enabled": False,
        # an append-only offsite: the host never forgets there
        "backup_offsite_retention": None,
        "backup_proxmox_exclude_paths": {"all": ["/var/cache/apt/archives/*"], 102: ["/var/lib/postgresql/tmp"]},
        "backup_monitoring_notify": [
            {"name": "ops", "urls": ["ntfys://ntfy.example.invalid/ops-7c8d9e", "mailtos://u:mail-pw-8d9e0f@m.invalid"],
             "events": ["failure", "partial", "rpo_breach"]},
            {"name": "daily", "urls": ["gotify://g.example.invalid/Agotify-9e0f1a"], "events": ["success"]},
        ],
    }
    first, _ = run_playbook(root, role_vars, "-v")
    second, recap = run_playbook(root, role_vars, "-v")
    assert recap["changed"] == 0, second.stdout[-4000:]
    every_secret = [*secrets.values(), "pg-pass-2b3c4d", "pg-restore-3c4d5e", "my-pass-5e6f7a", "ops-7c8d9e",
                    "mail-pw-8d9e0f", "Agotify-9e0f1a"]
    for run in (first, second):
        leaked = [s for s in every_secret if s in run.stdout + run.stderr]
        assert not leaked, f"secrets in the ansible output: {leaked}"

    secret_dir = root / "etc/restic-orch/secrets"
    assert mode(secret_dir) == 0o700
    assert sorted(p.name for p in secret_dir.iterdir()) == sorted([
        "restic-local.pass", "restic-offsite.pass", "offsite-s3.env", "pve-token", "terraform-state.env",
        "healthchecks.url", "webhook.url", "postgres-main.pass", "postgres_restore-main.pass", "mysql-apps.pass",
        "notify-ops.urls", "notify-daily.urls",
    ])
    assert (secret_dir / "notify-ops.urls").read_text() == (
        "ntfys://ntfy.example.invalid/ops-7c8d9e\nmailtos://u:mail-pw-8d9e0f@m.invalid\n")
    assert (secret_dir / "postgres_restore-main.pass").read_text() == "pg-restore-3c4d5e\n"
    for path in secret_dir.iterdir():
        assert mode(path) == 0o600, path
    env_lines = (secret_dir / "offsite-s3.env").read_text().splitlines()
    assert "AWS_ACCESS_KEY_ID=AKIATESTKEYID0001" in env_lines
    assert "AWS_SECRET_ACCESS_KEY=s3-secret-key-6a7b8c" in env_lines
    assert "AWS_DEFAULT_REGION=gra" in env_lines

    config = root / "etc/restic-orch/config.yml"
    assert mode(config) == 0o600
    text = config.read_text()
    assert not [s for s in every_secret if s in text]
    cfg = _load_with_schema(deployed["venv"], config)
    assert cfg["repositories"]["offsite"]["env_file"] == str(secret_dir / "offsite-s3.env")
    assert cfg["repositories"]["offsite"]["retention"] is None
    assert cfg["repositories"]["local"]["retention"]["keep_within_daily"] == "7d"
    assert cfg["sources"]["proxmox"]["token_file"] == str(secret_dir / "pve-token")
    assert cfg["sources"]["postgres"][0]["password_file"] == str(secret_dir / "postgres-main.pass")
    assert cfg["sources"]["postgres"][0]["restore_user"] == "restore"
    assert cfg["sources"]["postgres"][0]["restore_password_file"] == str(secret_dir / "postgres_restore-main.pass")
    assert cfg["sources"]["proxmox"]["exclude_paths"] == {"all": ["/var/cache/apt/archives/*"],
                                                          "102": ["/var/lib/postgresql/tmp"]}
    assert cfg["sources"]["mysql"][0]["databases"] == ["wiki", "cloud"]
    assert cfg["sources"]["mysql"][1]["password_file"] is None
    assert cfg["sources"]["terraform_state"]["env_file"] == str(secret_dir / "terraform-state.env")
    assert cfg["monitoring"]["webhook_url_file"] == str(secret_dir / "webhook.url")
    assert cfg["monitoring"]["notify"] == [
        {"urls_file": str(secret_dir / "notify-ops.urls"), "events": ["failure", "partial", "rpo_breach"]},
        {"urls_file": str(secret_dir / "notify-daily.urls"), "events": ["success"]}]

    units = root / "etc/systemd/system"
    assert not (root / "etc/cron.d/restic-orch").exists()
    assert sorted(p.name for p in units.iterdir()) == [
        "restic-orch-backup.service", "restic-orch-backup.timer",
        "restic-orch-check.service", "restic-orch-check.timer",
        "restic-orch-failure@.service",
        # a route lists rpo_breach: an hourly silent status tells it when the RPO is breached
        "restic-orch-status-watch.service", "restic-orch-status-watch.timer",
    ]
    service = (units / "restic-orch-backup.service").read_text().splitlines()
    cli = f"{deployed['venv']}/bin/restic-orch -q --config {config}"
    assert f"ExecStart={cli} backup" in service
    # facts are not gathered in this play: the role counts the host's CPUs itself, 30 % of the host each
    assert f"CPUQuota={30 * os.sysconf('SC_NPROCESSORS_ONLN')}%" in service
    # a failed run is reported by a unit of its own, with the failed unit as its instance
    assert "OnFailure=restic-orch-failure@%n.service" in service
    failure = (units / "restic-orch-failure@.service").read_text().splitlines()
    reporter = deployed["venv"] / "bin/restic-orch-on-failure"
    # standard library only, fed the paths and URL files it needs: it works when the package is broken
    start = next(line for line in failure if line.startswith("ExecStart="))
    assert start.startswith(f"ExecStart={deployed['venv']}/bin/python {reporter} --unit %i --state-dir ")
    assert "--healthchecks-url-file" in start and start.endswith("/webhook.url")
    assert "Type=oneshot" in failure
    assert mode(reporter) == 0o755
    if shutil.which("systemd-analyze"):
        # systemd's own parser (no running systemd needed): every unit, with what OnFailure= and Unit= name
        verify = subprocess.run(["systemd-analyze", "verify", "--man=no", *sorted(units.iterdir())],
                                env={**os.environ, "SYSTEMD_UNIT_PATH": f"{units}:"},
                                capture_output=True, text=True, timeout=60)
        assert verify.returncode == 0, verify.stderr
        assert not [line for line in verify.stderr.splitlines() if str(units) in line], verify.stderr
    assert "Nice=10" in service
    assert "IOSchedulingClass=best-effort" in service
    assert "IOSchedulingPriority=7" in service
    assert "Type=oneshot" in service
    # systemd expands % specifiers: a literal percent is %%
    assert f"ExecStart={cli} check --read-data-subset 10%%" in (units / "restic-orch-check.service").read_text()
    timer = (units / "restic-orch-backup.timer").read_text().splitlines()
    assert "OnCalendar=*-*-* 03:00:00" in timer
    assert "Persistent=true" in timer
    assert "OnCalendar=Sun *-*-* 05:00:00" in (units / "restic-orch-check.timer").read_text().splitlines()
    assert f"ExecStart={cli} status --notify-only" in (units / "restic-orch-status-watch.service").read_text()
    assert "OnCalendar=*-*-* *:30:00" in (units / "restic-orch-status-watch.timer").read_text().splitlines()


def test_example_group_vars_give_a_valid_config(deployed, tmp_path):
    """The documented inventory example (vars.yml + the vault example) renders a config the schema accepts."""
    group_vars = REPO / "ansible/inventory/group_vars/proxmox"
    vault = tmp_path / "vault.yml"
    shutil.copy(group_vars / "vault.yml.example", vault)
    root = tmp_path / "root"
    for sub in ("run/lock", "etc/cron.d", "etc/logrotate.d", "etc/systemd/system"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    role_vars = {
        **confined_paths(root),
        "backup_venv_dir": str(deployed["venv"]),
        "backup_install_package": False,
        "backup_manage_packages": False,
        "backup_validate_config": CLI,
        "backup_init_repositories": False,
    }
    _, recap = run_playbook(root, role_vars, vars_files=(group_vars / "vars.yml", vault))
    assert recap["failed"] == 0
    cfg = _load_with_schema(deployed["venv"], root / "etc/restic-orch/config.yml")
    assert cfg["repositories"]["offsite"]["url"].startswith("s3:https://s3.gra.io.cloud.ovh.net/")
    assert cfg["sources"]["proxmox"]["user"] == "backup@pve"
    assert [s["name"] for s in cfg["sources"]["postgres"]] == ["main"]
    assert cfg["sources"]["terraform_state"]["bucket"] == "infra-oldevops-tfstate"
    assert "0 3 * * * root flock -n" in (root / "etc/cron.d/restic-orch").read_text()


def _fake_lab(lab_dir: Path) -> dict:
    """A lab state (lab.json) with every service, and the lab's own secret files; nothing needs to run."""
    secrets = lab_dir / "secrets"
    secrets.mkdir(parents=True, mode=0o700)
    for name in ("pve-token", "pg-password", "pg-restore-password", "mysql-password", "mysql-restore-password",
                 "vault-pass", "restic-local", "restic-offsite"):
        (secrets / name).write_text(f"{name}-value-{len(name)}\n")
        os.chmod(secrets / name, 0o600)
    db = {"host": "127.0.0.1", "user": "backup", "restore_user": "restore"}
    return {"dir": str(lab_dir), "services": {
        "s3": {"endpoint": "http://127.0.0.1:39001", "region": "us-east-1", "access_key": "AKIALAB",
               "secret_key": "lab-s3-secret-1d2e", "buckets": {"tfstate": "tfstate", "offsite": "offsite"},
               # one key per policy of docs/s3-policies (restic_orch/lab/s3.py)
               "iam": {"tfstate": {"access_key": "AKIATFRO", "secret_key": "tf-ro-secret-3f4a"},
                       "tfstate_writer": {"access_key": "AKIATFRW", "secret_key": "tf-rw-secret-5b6c"}}},
        "s3proxy": {"endpoint": "http://127.0.0.1:39002"},
        "postgres": {**db, "port": 39003, "password_file": str(secrets / "pg-password"),
                     "restore_password_file": str(secrets / "pg-restore-password")},
        "mariadb": {**db, "port": 39004, "password_file": str(secrets / "mysql-password"),
                    "restore_password_file": str(secrets / "mysql-restore-password")},
        "pve": {"host": "127.0.0.1", "port": 39005, "node": "pve1", "token_file": str(secrets / "pve-token")}},
        "vault": {"root": str(lab_dir / "infra"), "globs": ["ansible/**/vault.yml"],
                  "password_file": str(secrets / "vault-pass")}}


def test_the_lab_configuration_is_what_the_role_deploys(tmp_path):
    """`restic-orch lab up` renders the role's template itself (restic_orch.lab.manager.write_config, with
    restic_orch/lab/role-vars.yml); the role run by Ansible with the same variables writes the same bytes and the
    same secret files."""
    from restic_orch.lab import manager

    lab_dir = tmp_path / "lab"
    state = _fake_lab(lab_dir)
    config = manager.write_config(lab_dir, state)
    assert mode(config) == 0o600
    ours = config.read_text()
    deployed_secrets = lab_dir / "etc/restic-orch/secrets"
    our_secrets = {p.name: p.read_text() for p in deployed_secrets.iterdir()}
    assert all(mode(p) == 0o600 for p in deployed_secrets.iterdir())
    shutil.rmtree(lab_dir / "etc")
    config.unlink()

    lab_vars = tmp_path / "lab.json"
    lab_vars.write_text(json.dumps({"lab_dir": str(lab_dir), "lab": state}))
    role_vars = {
        "backup_venv_dir": str(BIN.parent),  # `restic-orch config validate` from this checkout
        "backup_manage_packages": False,
        "backup_validate_config": CLI,
        "backup_init_repositories": False,
        "backup_logrotate_enabled": False,
    }
    run_playbook(tmp_path, role_vars, "--tags", "config", vars_files=(manager.ROLE_VARS, lab_vars))
    header, _, body = ours.partition("\n# role's templates/config.yml.j2 rendered with restic_orch/lab/role-vars.yml\n")
    assert body and header.startswith("# restic-orch configuration for the simulated homelab")
    assert config.read_text() == body
    assert {p.name: p.read_text() for p in deployed_secrets.iterdir()} == our_secrets
    assert sorted(our_secrets) == [
        "ansible-vault.pass", "mysql-mariadb.pass", "mysql_restore-mariadb.pass", "offsite-s3.env", "postgres-pg.pass",
        "postgres_restore-pg.pass", "pve-token", "restic-local.pass", "restic-offsite.pass",
        "terraform-state.env"]
    assert our_secrets["postgres_restore-pg.pass"] == (lab_dir / "secrets/pg-restore-password").read_text()
    assert "AWS_ACCESS_KEY_ID=AKIATFRO" in our_secrets["terraform-state.env"]
    # Terraform's own write key stays off the host, as in the example inventory
    assert "restore_env_file" not in body
    assert "AWS_ACCESS_KEY_ID=AKIALAB" in our_secrets["offsite-s3.env"]
    assert "    retention: null\n" in body  # the host's offsite key cannot delete: retention is the trusted host's


def test_missing_secret_is_named_never_shown(tmp_path):
    """An enabled feature without its vault variable stops the role before it touches the host."""
    role_vars = {
        **confined_paths(tmp_path),
        "backup_manage_packages": False,
        "backup_restic_password": "a-password-that-must-not-show-9f8e",
        "backup_proxmox_enabled": True,
        "backup_proxmox_token_secret": "",
        "backup_offsite_enabled": True,
        "backup_offsite_repository": "s3:https://s3.gra.io.cloud.ovh.net/b/restic",
        "backup_offsite_s3_access_key_id": "AKIA-NOT-SHOWN-1234",
    }
    proc, recap = run_playbook(tmp_path, role_vars, "-v", expect_success=False)
    assert recap["failed"] == 1 and recap["changed"] == 0
    assert "backup_offsite_s3_secret_access_key, backup_proxmox_token_secret" in proc.stdout
    assert "a-password-that-must-not-show-9f8e" not in proc.stdout + proc.stderr
    assert "AKIA-NOT-SHOWN-1234" not in proc.stdout + proc.stderr
    assert not (tmp_path / "etc/restic-orch").exists()


def test_ansible_lint_production_profile_passes():
    if not ANSIBLE_LINT.exists():
        pytest.skip("ansible-lint is not installed in this venv")
    proc = subprocess.run(
        [ANSIBLE_LINT, "--offline", "--nocolor", "ansible/"], cwd=REPO, capture_output=True, text=True, timeout=240,
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-6000:]
    assert "Profile 'production' was required, and it passed" in output


def _backup_command_available(venv: Path) -> bool:
    return subprocess.run([venv / "bin/restic-orch", "backup", "--help"], capture_output=True,
                          timeout=60).returncode == 0 if (venv / "bin/restic-orch").exists() else False


def test_cron_command_line_backs_up(deployed):
    """The exact command line of the cron entry, run as cron would (its PATH, sh -c), makes a snapshot."""
    venv = deployed["venv"]
    if not CLI or not _backup_command_available(venv):
        pytest.skip("`restic-orch backup` is not implemented yet (restic-orch backup --help fails)")
    v = deployed["vars"]
    text = Path(v["backup_cron_file"]).read_text()
    path_env = re.search(r"^PATH=(.*)$", text, re.M).group(1).strip('"')
    entry = re.search(r"^0 3 \* \* \* root (.*)$", text, re.M).group(1)
    assert entry.startswith("flock -n ")
    proc = subprocess.run(
        ["/bin/sh", "-c", entry],
        env={"PATH": path_env, "HOME": str(deployed["root"]), "SHELL": "/bin/sh", "LANG": "C.UTF-8"},
        capture_output=True, text=True, timeout=240,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    repo = v["backup_local_repository"]
    password_file = deployed["secrets"] / "restic-local.pass"
    snaps = subprocess.run(["restic", "-r", repo, "--password-file", password_file, "snapshots", "--json"],
                           capture_output=True, text=True, timeout=60, check=True)
    snapshots = json.loads(snaps.stdout)
    assert snapshots, "the cron command made no snapshot"
    listing = subprocess.run(["restic", "-r", repo, "--password-file", password_file, "ls", "latest"],
                             capture_output=True, text=True, timeout=60, check=True)
    assert "vault.yml" in listing.stdout
    # the cron line has no cgroup of its own: the run held itself to the role's 30 % of the host
    cap = json.loads((Path(v["backup_state_dir"]) / "last-run.json").read_text())["extra"]["cpu_cap"]
    if os.geteuid() == 0 and (cpucap._v1_dir() is not None or cpucap._v2_has_cpu()):
        assert cap["method"] in ("cgroup1", "cgroup2") and cap["percent_of_host"] == 30.0, cap
    else:
        assert cap["method"] in ("unavailable", "inherited"), cap


# Last in this file: it upgrades the module's deployment (the source changes under it).
def test_a_failed_upgrade_is_retried_by_the_next_run(deployed):
    """pip failing half-way through an upgrade (here: no package index) leaves the record of the last good install
    as it was, so the next run installs again instead of reporting nothing to do."""
    v, venv, root = deployed["vars"], deployed["venv"], deployed["root"]
    record = venv / ".restic-orch-installed"
    before = record.read_text()
    bundle_before = (_bundle(deployed) / "SHA256SUMS").read_text()
    probe = Path(v["backup_package_source"]) / "restic_orch" / "_upgrade_probe.py"
    probe.write_text("RELEASE = 2\n")
    # (from the venv's directory: in the checkout, `python -c` would import the checkout's restic_orch)
    has_probe = [venv / "bin/python", "-c", "import restic_orch._upgrade_probe"]
    try:
        failed, recap = run_playbook(root, {**v, "backup_pip_extra_args": "--no-index"}, expect_success=False)
        assert recap["failed"] == 1
        assert "Install restic-orch from the project source" in failed.stdout
        assert record.read_text() == before
        assert subprocess.run(has_probe, cwd=venv, capture_output=True, timeout=60).returncode != 0

        retried, recap = run_playbook(root, v)
        assert recap["changed"] > 0 and recap["failed"] == 0
        assert subprocess.run(has_probe, cwd=venv, capture_output=True, timeout=60).returncode == 0
        assert record.read_text() != before
        # a new install, a new bundle: its restic-orch wheel holds the upgrade
        if CLI:
            assert (_bundle(deployed) / "SHA256SUMS").read_text() != bundle_before

        _, recap = run_playbook(root, v)
        assert recap["changed"] == 0
    finally:
        probe.unlink()
