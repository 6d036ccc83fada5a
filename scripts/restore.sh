#!/usr/bin/env bash
# restore.sh — the disaster-day entry point of restic-orch.
#
# WHAT IT DOES
#   Brings the infrastructure back from the restic repositories, in the story's order:
#     1. containers from their vzdump archives (Proxmox API restore),
#     2. redeploy with the configured Terraform / Ansible commands,
#     3. data: PostgreSQL and MariaDB databases, Terraform state, Ansible Vault files.
#   Every step is verified against the snapshot's manifest (sha256, row counts, state serial) and timed.
#   On a blank host, --bootstrap first installs restic-orch from the bootstrap bundle that every backup keeps
#   beside the offsite repository (no PyPI, no git): see BOOTSTRAP below.
#
# WHAT IT NEEDS
#   - restic (0.14 or newer), python3 and the restic-orch package. On a freshly installed host it installs
#     what is missing when allowed (--install, or answer yes on a terminal): restic from Debian, restic-orch
#     into /opt/restic-orch from this checkout (or, with --bootstrap, from the bundle).
#   - restic comes from Debian (apt-get install restic). A fresh Proxmox VE 8 has the enterprise repository
#     enabled, whose `apt-get update` fails with 401 Unauthorized without a subscription: comment out
#     /etc/apt/sources.list.d/pve-enterprise.list and add
#     `deb http://download.proxmox.com/debian/pve bookworm pve-no-subscription` (restic itself is in Debian's
#     main repository).
#   - Either the host's configuration (--config, default /etc/restic-orch/config.yml), or — when the host
#     and its configuration are lost — the repository address, its password file and the S3 keys:
#     --repo URL --password-file FILE [--s3-env-file FILE]. The configuration stored in the snapshot is
#     then used; change what differs on the new host with --set KEY=VALUE.
#   - With --bootstrap, the escrow items: the bundle's URL and sha256 (BUNDLE_URL, BUNDLE_SHA256 of
#     /root/escrow.env, from the escrow sheet), the offsite S3 keys (an env file with AWS_ACCESS_KEY_ID and
#     AWS_SECRET_ACCESS_KEY), curl 7.75+ (--aws-sigv4; older: python3's standard library does the fetch),
#     python3 of the bundle's version (3.11 on PVE 8) and its venv module (apt-get install python3-venv).
#
# SCENARIOS (see docs/runbooks/disaster-recovery.md)
#   Everything from the newest snapshot, asking before each step (on a terminal):
#       scripts/restore.sh
#   Host lost, nothing but the offsite repository:
#       scripts/restore.sh --repo s3:https://s3.gra.io.cloud.ovh.net/infra-oldevops-backups/restic \
#           --password-file /root/restic-password --s3-env-file /root/s3.env \
#           --set sources.proxmox.token_file=/root/pve-token --yes
#   Host lost, restic-orch not installed either: install it from the bootstrap bundle (runbook 1, step 6):
#       bash restore.sh --bootstrap "$BUNDLE_URL" --sha256 "$BUNDLE_SHA256" --region "$S3_REGION" \
#           --s3-env-file /root/s3.env
#     then restore with the installed copy, /opt/restic-orch/share/restic-orch/restore.sh (or add the restore
#     options, e.g. --repo ... --password-file ... --dry-run, to the line above to go straight on).
#   One container, from offsite, without questions:
#       scripts/restore.sh --from offsite --only ct:102 --yes --force
#   One database under another name:
#       scripts/restore.sh --only db:pg/appdb --target-db appdb_restored --yes
#   Look first, change nothing:
#       scripts/restore.sh --dry-run
#
# BOOTSTRAP
#   --bootstrap checks the escrow items, fetches the bundle's SHA256SUMS over S3 (signed with the key of the
#   --s3-env-file; the secret never appears on a command line), checks its sha256 against --sha256, fetches
#   every file it lists into a temporary directory and checks them all, then installs into PREFIX:
#   `python3 -m venv PREFIX` and `pip install --no-index` from the bundle's wheels and constraints, and puts
#   restore.sh, the runbook, SHA256SUMS and bundle.json into PREFIX/share/restic-orch/. Nothing is installed
#   when any check fails; an existing PREFIX is replaced only when it is an earlier restic-orch install.
#
# OPTIONS
#   --config FILE        restic-orch configuration (default: $RESTIC_ORCH_CONFIG or /etc/restic-orch/config.yml)
#   --install            install missing restic / restic-orch without asking
#   --yes                non-interactive: do what the flags say, never prompt (automation)
#   --bootstrap URL      install restic-orch from the bundle at URL (https://ENDPOINT/BUCKET/bootstrap,
#                        path-style), then restore if restore options follow
#   --sha256 SUM         with --bootstrap: the bundle's sha256 (of its SHA256SUMS) from the escrow sheet
#   --region REGION      with --bootstrap: the S3 region that signs the requests (default: AWS_DEFAULT_REGION
#                        of the env file, else us-east-1)
#   --s3-env-file FILE   the offsite S3 keys: used by --bootstrap, and passed on to the restore
#   --prefix DIR         with --bootstrap: where to install (default /opt/restic-orch)
#   -h, --help           this text
#   anything else        passed to `restic-orch restore` (--snapshot, --from, --only, --target-dir, --target-db,
#                        --as-vmid, --force, --dry-run, --skip-redeploy, --repo, --password-file,
#                        --secrets-dir, --set)
#
# EXIT CODES: 0 restored and verified (or, --bootstrap alone, installed), 1 failed (the bundle does not match
# its sums or the sheet, S3 refused or failed), 2 bad usage, configuration or missing escrow item or package,
# 3 partly restored.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
project="$(dirname "$here")"
config="${RESTIC_ORCH_CONFIG:-/etc/restic-orch/config.yml}"
install=0
yes=0
args=()
bootstrap=0 bs_url="" bs_sha="" bs_region="" s3_env="" prefix=/opt/restic-orch

# where the runbook (docs/runbooks/disaster-recovery.md) covers each escrow item and step
RB_KEYS="escrow sheet 'Secrets'; runbook 1, step 4"
RB_BUNDLE="in /root/escrow.env, from the escrow sheet's bootstrap bundle; runbook 1, step 6"
RB_SUMS="runbook 1, step 6 ('bundle sums') and docs/escrow.md"
RB_PACKAGES="runbook 1, steps 1 and 3"
RB_KEY_LOST="runbook scenario 7 (restic password or S3 keys lost)"
EMPTY_SHA256=e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855

say() { printf 'restore.sh: %s\n' "$*" >&2; }
usage_error() { say "$*"; exit 2; }
needs_value() {  # OPTION [VALUE...]: a usage error when the option has no value
  [ $# -ge 2 ] || usage_error "$1 needs a value (restore.sh --help)"
}

while [ $# -gt 0 ]; do
  case "$1" in
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed -e 's/^# \{0,1\}//' -e '/^set -euo/d'; exit 0 ;;
    --config) needs_value "$@"; config="$2"; shift 2 ;;
    --config=*) config="${1#--config=}"; shift ;;
    --install) install=1; shift ;;
    --yes) yes=1; args+=("--yes"); shift ;;
    --bootstrap) needs_value "$@"; bootstrap=1 bs_url="$2"; shift 2 ;;
    --bootstrap=*) bootstrap=1; bs_url="${1#*=}"; shift ;;
    --sha256) needs_value "$@"; bs_sha="$2"; shift 2 ;;
    --sha256=*) bs_sha="${1#*=}"; shift ;;
    --region) needs_value "$@"; bs_region="$2"; shift 2 ;;
    --region=*) bs_region="${1#*=}"; shift ;;
    --prefix) needs_value "$@"; prefix="$2"; shift 2 ;;
    --prefix=*) prefix="${1#*=}"; shift ;;
    --s3-env-file) needs_value "$@"; s3_env="$2"; args+=("$1" "$2"); shift 2 ;;
    --s3-env-file=*) s3_env="${1#*=}"; args+=("$1"); shift ;;
    *) args+=("$1"); shift ;;
  esac
done

restic_hint() {
  say "restic is required: apt-get install restic (0.14 or newer, from Debian's main repository)."
  say "  If apt-get update fails with 401 Unauthorized, the Proxmox enterprise repository is enabled without a"
  say "  subscription: comment out /etc/apt/sources.list.d/pve-enterprise.list, add"
  say "  'deb http://download.proxmox.com/debian/pve bookworm pve-no-subscription' to"
  say "  /etc/apt/sources.list.d/pve-no-subscription.list, then apt-get update ($RB_PACKAGES)."
}

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
  local own=""
  # the copy a bootstrap installed as PREFIX/share/restic-orch/restore.sh uses PREFIX's restic-orch
  [[ "$here" == */share/restic-orch ]] && own="${here%/share/restic-orch}/bin/restic-orch"
  for candidate in "${RESTIC_ORCH_BIN:-}" "$own" "$project/.venv/bin/restic-orch" /opt/restic-orch/bin/restic-orch \
                   "$(command -v restic-orch 2>/dev/null || true)"; do
    if [ -n "$candidate" ] && [ -x "$candidate" ]; then echo "$candidate"; return 0; fi
  done
  return 1
}

# ---------------------------------------------------------------- bootstrap: the escrow items
s3_key_id="" s3_secret="" s3_env_region=""

load_s3_keys() {  # the env file's KEY=VALUE lines (as restic-orch reads them); never sourced, never echoed
  local line key value
  while IFS= read -r line || [ -n "$line" ]; do
    line="${line%$'\r'}"
    line="${line#"${line%%[![:space:]]*}"}"
    [[ -z "$line" || "$line" == \#* || "$line" != *=* ]] && continue
    [[ "$line" == "export "* ]] && line="${line#export }"
    key="${line%%=*}" value="${line#*=}"
    key="${key//[[:space:]]/}"
    value="${value#"${value%%[![:space:]]*}"}" value="${value%"${value##*[![:space:]]}"}"
    value="${value#[\"\']}" value="${value%[\"\']}"
    case "$key" in
      AWS_ACCESS_KEY_ID) s3_key_id="$value" ;;
      AWS_SECRET_ACCESS_KEY) s3_secret="$value" ;;
      AWS_DEFAULT_REGION|AWS_REGION) s3_env_region="$value" ;;
    esac
  done < "$s3_env"
}

check_keys_file() {  # prints a problem and returns 1 when the S3 keys cannot be used
  local what="the offsite S3 keys, $RB_KEYS" mode
  if [ -z "$s3_env" ]; then
    say "escrow item missing: --s3-env-file FILE, e.g. /root/s3.env ($what)"; return 1
  elif [ ! -e "$s3_env" ]; then
    say "escrow item missing: $s3_env ($what)"; return 1
  elif [ ! -f "$s3_env" ] || [ ! -r "$s3_env" ]; then
    say "escrow item unreadable: $s3_env is not a readable file ($what)"; return 1
  fi
  mode="$(stat -c %a "$s3_env")"
  if [ "$mode" != 600 ] && [ "$mode" != 400 ]; then
    say "warning: $s3_env is mode $mode and holds a secret: chmod 600 $s3_env"
  fi
  load_s3_keys
  local missing=()
  [ -n "$s3_key_id" ] || missing+=(AWS_ACCESS_KEY_ID)
  [ -n "$s3_secret" ] || missing+=(AWS_SECRET_ACCESS_KEY)
  if [ ${#missing[@]} -gt 0 ]; then
    say "escrow item incomplete: $s3_env has no ${missing[*]} ($what)"; return 1
  fi
}

check_escrow() {  # every missing item is named, then exit 2
  local bad=0
  check_keys_file || bad=1
  if [ -z "$bs_sha" ]; then
    say "escrow item missing: --sha256 SUM, the bundle's sha256 (BUNDLE_SHA256 $RB_BUNDLE)"; bad=1
  elif ! [[ "$bs_sha" =~ ^[0-9a-fA-F]{64}$ ]]; then
    say "escrow item wrong: --sha256 '$bs_sha' is not 64 hex digits, the bundle's sha256" \
        "(BUNDLE_SHA256 $RB_BUNDLE)"; bad=1
  fi
  bs_sha="${bs_sha,,}"
  if [ -z "$bs_url" ]; then
    say "escrow item missing: --bootstrap URL, the bundle's address (BUNDLE_URL $RB_BUNDLE)"; bad=1
  elif ! [[ "$bs_url" =~ ^https?://[^/?#]+/[^?#]+$ ]]; then
    say "escrow item wrong: --bootstrap '$bs_url' is not https://ENDPOINT/BUCKET/PREFIX, the bundle's" \
        "address (BUNDLE_URL $RB_BUNDLE)"; bad=1
  fi
  bs_url="${bs_url%/}"
  [ "$bad" = 0 ] || exit 2
  bs_region="${bs_region:-${s3_env_region:-us-east-1}}"
}

check_host() {  # python3 that can make a virtualenv, and a PREFIX we may (re)place
  command -v python3 >/dev/null || usage_error "python3 is required: apt-get install python3 python3-venv" \
    "($RB_PACKAGES)"
  python3 -c 'import venv, ensurepip' 2>/dev/null || usage_error "python3 cannot make a virtualenv" \
    "(no ensurepip): apt-get install python3-venv ($RB_PACKAGES)"
  if [ -e "$prefix" ] && ! earlier_install && [ -n "$(ls -A "$prefix" 2>/dev/null || echo x)" ]; then
    usage_error "$prefix exists and is not an earlier restic-orch install: not touching it. Move it away," \
      "or install elsewhere with --prefix DIR"
  fi
}

earlier_install() {  # a virtualenv this script (or the Ansible role) made
  [ -f "$prefix/pyvenv.cfg" ] && { [ -e "$prefix/bin/restic-orch" ] || [ -d "$prefix/share/restic-orch" ]; }
}

# ---------------------------------------------------------------- bootstrap: fetching over S3
curl_signs() {  # curl 7.75 brought --aws-sigv4
  command -v curl >/dev/null || return 1
  local version
  version="$(curl --version 2>/dev/null | awk 'NR==1 {print $2}')"
  [ -n "$version" ] && [ "$(printf '%s\n' 7.75.0 "$version" | sort -V | head -n1)" = 7.75.0 ]
}

curl_get() {  # URL OUT: prints the HTTP status (000: no answer); the keys reach curl on stdin, never argv
  local id="${s3_key_id//\\/\\\\}" secret="${s3_secret//\\/\\\\}"
  id="${id//\"/\\\"}" secret="${secret//\"/\\\"}"
  # printf is a builtin; curl 7.88 signs x-amz-content-sha256 only when given, and S3 requires it
  printf 'user = "%s:%s"\n' "$id" "$secret" | curl -sS -K - --aws-sigv4 "aws:amz:$bs_region:s3" \
    -H "x-amz-content-sha256: $EMPTY_SHA256" --proto =http,https --connect-timeout 20 --retry 2 \
    -o "$2" -w '%{http_code}' "$1" 2>"$work/fetch.err" || true
}

python_get() {  # URL OUT: the same with python3's standard library (SigV4 by hand); the secret is read from the file
  python3 - "$1" "$2" "$s3_env" "$bs_region" 2>"$work/fetch.err" <<'PY' || true
import datetime, hashlib, hmac, shutil, sys, urllib.error, urllib.parse, urllib.request

url, out, env_file, region = sys.argv[1:5]
keys = {}
for raw in open(env_file, encoding="utf-8"):
    line = raw.strip()
    if line.startswith("export "):
        line = line[len("export "):].strip()
    key, sep, value = line.partition("=")
    if sep and not line.startswith("#"):
        keys[key.strip()] = value.strip().strip('"').strip("'")
key_id, secret = keys["AWS_ACCESS_KEY_ID"], keys["AWS_SECRET_ACCESS_KEY"]
parts = urllib.parse.urlsplit(url)
now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
payload = hashlib.sha256(b"").hexdigest()
headers = {"host": parts.netloc, "x-amz-content-sha256": payload, "x-amz-date": now}
signed = ";".join(sorted(headers))
canonical = "\n".join(["GET", parts.path or "/", "", *(f"{k}:{headers[k]}" for k in sorted(headers)), "",
                       signed, payload])
scope = f"{now[:8]}/{region}/s3/aws4_request"
to_sign = "\n".join(["AWS4-HMAC-SHA256", now, scope, hashlib.sha256(canonical.encode()).hexdigest()])
signing = ("AWS4" + secret).encode()
for part in (now[:8], region, "s3", "aws4_request"):
    signing = hmac.new(signing, part.encode(), hashlib.sha256).digest()
signature = hmac.new(signing, to_sign.encode(), hashlib.sha256).hexdigest()
headers["authorization"] = (f"AWS4-HMAC-SHA256 Credential={key_id}/{scope}, SignedHeaders={signed}, "
                            f"Signature={signature}")
del headers["host"]
try:
    answer = urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=60)
except urllib.error.HTTPError as error:
    answer = error
except (urllib.error.URLError, OSError) as error:
    print(getattr(error, "reason", error), file=sys.stderr)
    print("000", end="")
    sys.exit(0)
with answer, open(out, "wb") as fh:
    shutil.copyfileobj(answer, fh)
print(answer.status, end="")
PY
}

fetch() {  # URL OUT FIRST: fetch or explain why not and exit 1 (FIRST=1: the bundle's first file)
  local url="$1" out="$2" code s3code endpoint
  rm -f "$out"
  if [ "$fetcher" = curl ]; then code="$(curl_get "$url" "$out")"; else code="$(python_get "$url" "$out")"; fi
  [ "$code" = 200 ] && return 0
  s3code="$( { grep -o '<Code>[^<]*</Code>' "$out" 2>/dev/null || true; } | head -n1 | sed 's:</\{0,1\}Code>::g')"
  case "$s3code" in
    InvalidAccessKeyId|SignatureDoesNotMatch|AccessDenied|ExpiredToken|TokenRefreshRequired|InvalidToken)
      say "S3 refused the offsite key in $s3_env ($s3code) fetching $url: the key is wrong, disabled or expired;" \
          "$RB_KEY_LOST"
      [ "$s3code" != AccessDenied ] || say "  (AccessDenied also means that the key's policy does not let it read" \
        "${bs_url##*/}/: docs/s3-policies/offsite-host.json)"
      exit 1 ;;
    NoSuchKey|NoSuchBucket)
      if [ "$3" = 1 ]; then
        say "no bootstrap bundle at ${url%/*} (was it published? \`restic-orch bundle publish\` on the old host;" \
            "otherwise runbook 1, way B)"
      else
        say "the bundle at $bs_url is incomplete: ${url#"$bs_url"/} is listed in SHA256SUMS but S3 has no such" \
            "object ($s3code). Stop; nothing was installed; runbook 1, way B"
      fi
      exit 1 ;;
  esac
  if [ "$code" = 000 ] || [ -z "$code" ]; then
    endpoint="$(printf '%s' "$url" | sed -E 's#^(https?://[^/]+).*#\1#')"
    say "cannot reach the S3 endpoint $endpoint fetching $url: $(paste -sd' ' "$work/fetch.err")"
    say "  check the network (DNS, route, firewall) and the endpoint in BUNDLE_URL ($RB_BUNDLE)"
    exit 1
  fi
  say "S3 answered HTTP $code${s3code:+ ($s3code)} fetching $url; nothing was installed"
  exit 1
}

# ---------------------------------------------------------------- bootstrap: checking and installing
bundle_paths() {  # the paths SHA256SUMS lists, one a line; a line that is not `<sha256>  <path>` stops here
  local line number=0 path
  while IFS= read -r line || [ -n "$line" ]; do
    number=$((number + 1))
    [ -n "$line" ] || continue
    if ! [[ "$line" =~ ^[0-9a-f]{64}\ [\ *]([A-Za-z0-9._+-]+(/[A-Za-z0-9._+-]+)*)$ ]]; then
      say "the bundle's SHA256SUMS line $number is not '<sha256>  <relative path>'; $RB_SUMS"; exit 1
    fi
    path="${BASH_REMATCH[1]}"
    [[ "/$path/" == */../* || "/$path/" == */./* ]] && { say "SHA256SUMS names $path: refused"; exit 1; }
    printf '%s\n' "$path"
  done < "$work/SHA256SUMS"
}

fetch_bundle() {  # every file into $work, checked against the sheet's sum and SHA256SUMS
  local actual path failed
  fetch "$bs_url/SHA256SUMS" "$work/SHA256SUMS" 1
  actual="$(sha256sum "$work/SHA256SUMS" | awk '{print $1}')"
  if [ "$actual" != "$bs_sha" ]; then
    say "the bundle's SHA256SUMS has sha256 $actual but the escrow sheet says $bs_sha: the bundle changed since" \
        "the sheet was printed, or it is not yours. Stop; $RB_SUMS"
    exit 1
  fi
  bundle_paths > "$work/paths"
  for path in bundle.json constraints.txt restore.sh; do
    grep -qxF "$path" "$work/paths" || { say "the bundle's SHA256SUMS does not list $path; $RB_SUMS"; exit 1; }
  done
  say "fetching $(wc -l < "$work/paths") files of the bundle at $bs_url"
  while IFS= read -r path; do
    mkdir -p "$work/files/$(dirname "$path")"
    fetch "$bs_url/$(urlencode_path "$path")" "$work/files/$path" 0
  done < "$work/paths"
  cp "$work/SHA256SUMS" "$work/files/SHA256SUMS"
  failed="$(cd "$work/files" && sha256sum -c --quiet SHA256SUMS 2>/dev/null | sed -n 's/: FAILED.*$//p' || true)"
  if [ -n "$failed" ]; then
    say "the bundle's $(printf '%s' "$failed" | paste -sd, -) does not match SHA256SUMS: damaged or changed after" \
        "the bundle was made. Stop; nothing was installed; $RB_SUMS"
    exit 1
  fi
}

urlencode_path() {  # each byte but / and unreserved ones as %XX (S3 reads a bare + in a path as a space)
  local path="$1" out="" char i
  for ((i = 0; i < ${#path}; i++)); do
    char="${path:i:1}"
    case "$char" in [A-Za-z0-9._~/-]) out+="$char" ;; *) out+="$(printf '%%%02X' "'$char")" ;; esac
  done
  printf '%s' "$out"
}

bundle_field() {  # KEY: a field of the fetched bundle.json
  python3 -c 'import json, sys; print(json.load(open(sys.argv[1])).get(sys.argv[2], ""))' "$work/files/bundle.json" "$1"
}

install_bundle() {
  local wanted have wheel venv_opts=() version
  wanted="$(bundle_field python)" wheel="$(bundle_field wheel)"
  have="$(python3 -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
  if [ "$have" != "$wanted" ]; then
    usage_error "the bundle's wheels are for Python $wanted but python3 here is $have: pip --no-index cannot" \
      "install them. Use a host with Python $wanted (Proxmox VE 8: 3.11), or runbook 1, way B"
  fi
  [[ "$wheel" =~ ^[A-Za-z0-9._+-]+\.whl$ ]] && [ -f "$work/files/wheels/$wheel" ] || {
    say "bundle.json names the wheel '$wheel', which the bundle does not hold; $RB_SUMS"; exit 1; }
  earlier_install && venv_opts=(--clear) && say "replacing the earlier restic-orch install in $prefix"
  python3 -m venv "${venv_opts[@]}" "$prefix" || usage_error "python3 -m venv $prefix failed:" \
    "apt-get install python3-venv ($RB_PACKAGES)"
  mkdir -p "$prefix/share/restic-orch"  # marks PREFIX as ours even if pip fails below
  local pip=("$prefix/bin/pip" install --disable-pip-version-check --no-index --find-links "$work/files/wheels"
             -c "$work/files/constraints.txt" "$work/files/wheels/$wheel")
  say "installing: ${pip[*]}"
  "${pip[@]}" -q >&2 || { say "pip could not install the bundle into $prefix (above)"; exit 1; }
  for file in restore.sh disaster-recovery.md SHA256SUMS bundle.json; do
    if [ -f "$work/files/$file" ]; then install -m 0644 "$work/files/$file" "$prefix/share/restic-orch/$file"; fi
  done
  chmod 0755 "$prefix/share/restic-orch/restore.sh"
  version="$("$prefix/bin/restic-orch" --version)"
  echo "installed restic-orch ${version##* } into $prefix (bundle $bs_sha from $bs_url, made $(bundle_field made))"
}

print_next() {
  echo "next, look first (nothing changes), runbook 1, step 7:"
  echo "  $prefix/share/restic-orch/restore.sh --repo \"\$RESTIC_REPOSITORY\" --password-file /root/restic-password \\"
  echo "      --s3-env-file $s3_env --secrets-dir /root --dry-run"
  command -v restic >/dev/null || restic_hint
}

wants_restore() {  # restore options besides the S3 keys and --yes
  local skip=0 a
  for a in "${args[@]+"${args[@]}"}"; do
    if [ "$skip" = 1 ]; then skip=0; continue; fi
    case "$a" in --s3-env-file) skip=1 ;; --s3-env-file=*|--yes) ;; *) return 0 ;; esac
  done
  return 1
}

run_bootstrap() {
  check_escrow
  check_host
  work="$(mktemp -d "${TMPDIR:-/tmp}/restic-orch-bootstrap.XXXXXX")"
  trap 'rm -rf "$work"' EXIT
  if curl_signs; then fetcher=curl; else
    fetcher=python; say "curl is missing or older than 7.75 (no --aws-sigv4): fetching with python3"; fi
  fetch_bundle
  install_bundle
  rm -rf "$work"; trap - EXIT
}

if [ "$bootstrap" = 0 ] && { [ -n "$bs_sha" ] || [ -n "$bs_region" ] || [ "$prefix" != /opt/restic-orch ]; }; then
  usage_error "--sha256, --region and --prefix go with --bootstrap URL (restore.sh --help)"
fi
if [ "$bootstrap" = 1 ]; then
  run_bootstrap
  if ! wants_restore; then print_next; exit 0; fi
  cli="$prefix/bin/restic-orch"
fi

# ---------------------------------------------------------------- the restore
if ! command -v python3 >/dev/null; then
  if allowed python3; then apt-get update -qq && apt-get install -y -qq python3 python3-venv; else
    say "python3 is required (apt-get install python3 python3-venv)"; exit 2; fi
fi
if ! command -v restic >/dev/null; then
  if allowed restic; then apt-get update -qq && apt-get install -y -qq restic || { restic_hint; exit 2; }; else
    restic_hint; exit 2; fi
fi
if [ -z "${cli:-}" ] && ! cli="$(find_cli)"; then
  if allowed restic-orch && [ -f "$project/pyproject.toml" ]; then
    # the dependency versions the role installs and the tests ran with
    python3 -m venv /opt/restic-orch && \
      /opt/restic-orch/bin/pip install -q -c "$project/restic_orch/constraints.txt" "$project"
    cli=/opt/restic-orch/bin/restic-orch
  else
    say "restic-orch is not installed (run with --install, or: python3 -m venv /opt/restic-orch &&"
    say "  /opt/restic-orch/bin/pip install -c $project/restic_orch/constraints.txt $project;"
    say "  on a blank host: restore.sh --bootstrap, runbook 1, step 6)"; exit 2
  fi
fi

no_config=0
for a in "${args[@]+"${args[@]}"}"; do [ "$a" = "--repo" ] || [[ "$a" == --repo=* ]] && no_config=1; done
if [ "$no_config" = 0 ] && [ ! -r "$config" ]; then
  say "no configuration at $config: give --config FILE, or restore without it:"
  say "  $0 --repo URL --password-file FILE [--s3-env-file FILE]"
  exit 2
fi

if [ "$no_config" = 1 ]; then
  exec "$cli" restore "${args[@]}"
fi
exec "$cli" --config "$config" restore "${args[@]+"${args[@]}"}"
