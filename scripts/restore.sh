#!/usr/bin/env bash
# restore.sh — the disaster-day entry point of restic-orch.
#
# WHAT IT DOES
#   Brings the infrastructure back from the restic repositories, in the story's order:
#     1. containers from their vzdump archives (Proxmox API restore),
#     2. redeploy with the configured Terraform / Ansible commands,
#     3. data: PostgreSQL and MariaDB databases, Terraform state, Ansible Vault files.
#   Every step is verified against the snapshot's manifest (sha256, row counts, state serial) and timed.
#
# WHAT IT NEEDS
#   - restic (0.14 or newer), python3 and the restic-orch package. On a freshly installed host it installs
#     what is missing when allowed (--install, or answer yes on a terminal): restic from Debian, restic-orch
#     into /opt/restic-orch from this checkout.
#   - Either the host's configuration (--config, default /etc/restic-orch/config.yml), or — when the host
#     and its configuration are lost — the repository address, its password file and the S3 keys:
#     --repo URL --password-file FILE [--s3-env-file FILE]. The configuration stored in the snapshot is
#     then used; change what differs on the new host with --set KEY=VALUE.
#
# SCENARIOS (see docs/runbooks/disaster-recovery.md)
#   Everything from the newest snapshot, asking before each step (on a terminal):
#       scripts/restore.sh
#   Host lost, nothing but the offsite repository:
#       scripts/restore.sh --repo s3:https://s3.gra.io.cloud.ovh.net/infra-oldevops-backups/restic \
#           --password-file /root/restic-password --s3-env-file /root/s3.env \
#           --set sources.proxmox.token_file=/root/pve-token --yes
#   One container, from offsite, without questions:
#       scripts/restore.sh --from offsite --only ct:102 --yes --force
#   One database under another name:
#       scripts/restore.sh --only db:pg/appdb --target-db appdb_restored --yes
#   Look first, change nothing:
#       scripts/restore.sh --dry-run
#
# OPTIONS
#   --config FILE        restic-orch configuration (default: $RESTIC_ORCH_CONFIG or /etc/restic-orch/config.yml)
#   --install            install missing restic / restic-orch without asking
#   --yes                non-interactive: do what the flags say, never prompt (automation)
#   -h, --help           this text
#   anything else        passed to `restic-orch restore` (--snapshot, --from, --only, --target-dir, --target-db,
#                        --as-vmid, --force, --dry-run, --skip-redeploy, --repo, --password-file,
#                        --s3-env-file, --set)
#
# EXIT CODES: 0 restored and verified, 1 failed, 2 bad usage or configuration, 3 partly restored.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
project="$(dirname "$here")"
config="${RESTIC_ORCH_CONFIG:-/etc/restic-orch/config.yml}"
install=0
yes=0
args=()

while [ $# -gt 0 ]; do
  case "$1" in
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed -e 's/^# \{0,1\}//' -e '/^set -euo/d'; exit 0 ;;
    --config) config="$2"; shift 2 ;;
    --config=*) config="${1#--config=}"; shift ;;
    --install) install=1; shift ;;
    --yes) yes=1; args+=("--yes"); shift ;;
    *) args+=("$1"); shift ;;
  esac
done

say() { printf 'restore.sh: %s\n' "$*" >&2; }

allowed() {  # may we install something? --install, or a yes on a terminal
  [ "$install" = 1 ] && return 0
  if [ -t 0 ] && [ "$yes" = 0 ]; then
    read -r -p "restore.sh: $1 is missing; install it now? [y/N] " answer
    [ "${answer,,}" = "y" ] || [ "${answer,,}" = "yes" ]
    return
  fi
  return 1
}

find_cli() {
  for candidate in "${RESTIC_ORCH_BIN:-}" "$project/.venv/bin/restic-orch" /opt/restic-orch/bin/restic-orch \
                   "$(command -v restic-orch 2>/dev/null || true)"; do
    if [ -n "$candidate" ] && [ -x "$candidate" ]; then echo "$candidate"; return 0; fi
  done
  return 1
}

if ! command -v python3 >/dev/null; then
  if allowed python3; then apt-get update -qq && apt-get install -y -qq python3 python3-venv; else
    say "python3 is required (apt-get install python3 python3-venv)"; exit 2; fi
fi
if ! command -v restic >/dev/null; then
  if allowed restic; then apt-get update -qq && apt-get install -y -qq restic; else
    say "restic is required (apt-get install restic; 0.14 or newer)"; exit 2; fi
fi
if ! cli="$(find_cli)"; then
  if allowed restic-orch && [ -f "$project/pyproject.toml" ]; then
    # the dependency versions the role installs and the tests ran with
    python3 -m venv /opt/restic-orch && \
      /opt/restic-orch/bin/pip install -q -c "$project/restic_orch/constraints.txt" "$project"
    cli=/opt/restic-orch/bin/restic-orch
  else
    say "restic-orch is not installed (run with --install, or: python3 -m venv /opt/restic-orch &&"
    say "  /opt/restic-orch/bin/pip install -c $project/restic_orch/constraints.txt $project)"; exit 2
  fi
fi

bootstrap=0
for a in "${args[@]+"${args[@]}"}"; do [ "$a" = "--repo" ] || [[ "$a" == --repo=* ]] && bootstrap=1; done
if [ "$bootstrap" = 0 ] && [ ! -r "$config" ]; then
  say "no configuration at $config: give --config FILE, or restore without it:"
  say "  $0 --repo URL --password-file FILE [--s3-env-file FILE]"
  exit 2
fi

if [ "$bootstrap" = 1 ]; then
  exec "$cli" restore "${args[@]}"
fi
exec "$cli" --config "$config" restore "${args[@]+"${args[@]}"}"
