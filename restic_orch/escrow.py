"""The escrow sheet: what a person keeps offline to restore everything from nothing (docs/escrow.md).

make_sheet() reads the configuration, asks each repository for its ID and reads what `bundle publish` recorded;
write_sheet() renders the sheet (escrow_render.py: Markdown and a printable HTML page), writes escrow.env (the
shell assignments the runbook's first commands source on a new host) and records what the sheet was made from in
<state_dir>/escrow.json: the addresses, the IDs, the bootstrap bundle's digest and a sha256 of each secret file,
never a value. stale_warnings() compares that record with today's configuration, for `check`.

Secret values reach the sheet only when asked (with_secrets), and then only its 0600 files: never the record,
the log or the command's output.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import posixpath
import shlex
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from . import __version__, restic
from .config import Config, Repository, check_secret_file, iter_secret_fields, iter_unset_secret_fields
from .escrow_render import blocks_of, render_html, render_markdown
from .masking import mask
from .report import EXIT_OK, EXIT_PARTIAL

log = logging.getLogger("restic_orch.escrow")

RECORD = "escrow.json"
# where the host-lost runbook (section 1, step 4) has the operator put the secrets on a new host
NEW_HOST_DIR = "/root"
RUNBOOK_PASSWORD = f"{NEW_HOST_DIR}/restic-password"
RUNBOOK_S3_ENV = f"{NEW_HOST_DIR}/s3.env"
# written beside the sheets, copied by a person to the new host: no secret in it
ESCROW_ENV = "escrow.env"
RUNBOOK_ESCROW_ENV = f"{NEW_HOST_DIR}/{ESCROW_ENV}"
# where `restore.sh --bootstrap` installs restic-orch and keeps its own copy of the script
INSTALLED_RESTORE_SH = "/opt/restic-orch/share/restic-orch/restore.sh"
BUNDLE_MISSING = "bootstrap bundle not published: restic-orch bundle build && restic-orch bundle publish"
REGION_KEYS = ("AWS_DEFAULT_REGION", "AWS_REGION")
# what a secret field holds, by its name in the configuration (the section it sits in says whose it is)
FIELD_WHAT = {
    "password_file": "password",
    "restore_password_file": "password of the restore account",
    "token_file": "API token (a new host gets a new one: runbook 1, step 2)",
    "env_file": "S3 keys",
    "restore_env_file": "S3 keys that restores write with",
    "healthchecks_url_file": "healthchecks ping URL",
    "webhook_url_file": "webhook URL",
    "urls_file": "Apprise notification URLs",
}
FILE_MODE_PLAIN, FILE_MODE_SECRET = 0o640, 0o600
KEPT_BY_HAND = "kept by hand"


# ---------------------------------------------------------------- addresses
@dataclass(frozen=True)
class S3Address:
    endpoint: str  # scheme://host[:port]
    bucket: str
    prefix: str    # "" at the bucket's root


def parse_s3_url(url: str) -> S3Address | None:
    """An s3: repository address read as restic reads it (internal/backend/s3/config.go); None for other backends.

    s3:https://host[:port]/bucket[/prefix] and s3:http://…; s3:host/bucket[/prefix] and s3://host/bucket[/prefix]
    mean https. ValueError when the bucket is missing.
    """
    if not url.startswith("s3:"):
        return None
    rest = url[3:]
    if rest.startswith(("http://", "https://")):
        scheme, _, rest = rest.partition("://")
    else:
        scheme, rest = "https", rest.removeprefix("//")
    host, _, path = rest.partition("/")
    bucket, _, prefix = path.partition("/")
    if not host or not bucket:
        raise ValueError(f"{url}: restic needs s3:<endpoint>/<bucket>[/<prefix>]")
    prefix = posixpath.normpath(prefix).strip("/") if prefix.strip("/") else ""
    return S3Address(f"{scheme}://{host}", bucket, prefix)


def env_keys(path: Path | None) -> list[str]:
    """The variable names an env file sets, never their values ([] when it cannot be read)."""
    if path is None:
        return []
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError):
        return []
    keys = []
    for raw in lines:
        line = raw.strip().removeprefix("export ").strip()
        key, sep, _ = line.partition("=")
        if sep and key and not line.startswith("#"):
            keys.append(key.strip())
    return keys


def region_of(repo: Repository) -> str:
    """What the sheet says about an S3 repository's region: the option, or where the keys file sets it."""
    if not repo.is_s3:
        return ""
    if "s3.region" in repo.options:
        return repo.options["s3.region"]
    # the region sits in a secret file: its value is on the sheet only with the file's content
    key = next((k for k in REGION_KEYS if k in env_keys(repo.env_file)), None)
    if key:
        return f"{key} in the S3 keys file {repo.env_file}"
    return "not set (restic asks the endpoint)"


def key_rights(repo: Repository) -> str:
    """Whether the repository's S3 key may delete (docs/security.md: the host's offsite key is append-only)."""
    if repo.env_file is None:
        return ""
    if repo.retention is None:
        return ("append-only: this key may not delete (docs/security.md); retention runs on the trusted machine"
                " with the admin key, which is never on this host")
    return "may delete: forget and prune run on this host with this key"


# ---------------------------------------------------------------- what the sheet holds
@dataclass
class RepoEntry:
    name: str
    url: str
    s3: S3Address | None
    region: str
    rights: str
    id: str | None = None
    version: int | None = None
    error: str | None = None  # why the ID could not be read

    def to_json(self) -> dict[str, Any]:
        return {"url": self.url, "endpoint": self.s3.endpoint if self.s3 else None,
                "bucket": self.s3.bucket if self.s3 else None, "prefix": self.s3.prefix if self.s3 else None,
                "region": self.region, "key": self.rights, "id": self.id, "repository_version": self.version,
                "id_error": self.error}


@dataclass
class SecretEntry:
    location: str         # the configuration field, e.g. repositories.offsite.env_file
    path: str             # where it lives on the host today
    what: str
    needed_for: str
    new_host: str         # where the runbook's first commands expect it ("" when no restore needs it)
    status: str = "ok"    # ok, MISSING, or why it cannot be used
    sha256: str | None = None
    keys: list[str] = field(default_factory=list)      # an env file's variable names
    value: str | None = field(default=None, repr=False)  # only with --with-secrets; never recorded

    def to_json(self) -> dict[str, Any]:
        return {"location": self.location, "path": self.path, "what": self.what, "status": self.status,
                "sha256": self.sha256, "new_host": self.new_host}


@dataclass
class Sheet:
    made: datetime
    host: str
    config_path: str
    restic_version: str
    repositories: list[RepoEntry]
    secrets: list[SecretEntry]
    commands: str
    with_secrets: bool
    problems: list[str]  # what makes it incomplete (exit 3)
    bundle: dict[str, Any] | None = None  # what `bundle publish` recorded: digest, url, region, published, version
    escrow_env: str = ""                  # the text of escrow.env

    @property
    def exit_code(self) -> int:
        return EXIT_PARTIAL if self.problems else EXIT_OK

    def record(self, files: list[Path], escrow_env: Path | None = None) -> dict[str, Any]:
        """What the sheet was made from: addresses, IDs, the bundle and hashes of the secret files, never a value."""
        return {"made": self.made.isoformat(timespec="seconds"), "host": self.host, "config": self.config_path,
                "restic_orch_version": __version__, "restic_version": self.restic_version,
                "with_secrets": self.with_secrets, "sheets": [str(p) for p in files],
                "escrow_env": str(escrow_env) if escrow_env else None, "bootstrap_bundle": self.bundle,
                "repositories": {r.name: r.to_json() for r in self.repositories},
                "secrets": [s.to_json() for s in self.secrets], "problems": self.problems}


# ---------------------------------------------------------------- collecting
def dotted(loc: Iterable[str | int]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def restore_from(config: Config) -> str:
    """The repository the host-lost runbook restores from: offsite, the one that survives the host."""
    names = [name for name, _ in config.repositories.items()]
    return "offsite" if "offsite" in names else names[0]


def _owner(config: Config, loc: tuple[str | int, ...]) -> Any:
    node: Any = config
    for part in loc[:-1]:
        node = node[part] if isinstance(part, int) else getattr(node, part)
    return node


def _describe(config: Config, loc: tuple[str | int, ...]) -> tuple[str, str]:
    """(what the secret is, what needs it), from where it sits in the configuration."""
    owner, name = _owner(config, loc), str(loc[-1])
    if loc[0] == "repositories":
        if name == "password_file":
            return f"restic password of the {loc[1]} repository", "any restore from it"
        return f"S3 keys of the {loc[1]} repository; {key_rights(owner)}", "any restore from it"
    what = FIELD_WHAT.get(name, name.removesuffix("_file").replace("_", " "))
    if loc[0] == "sources":
        label = " ".join(str(p) for p in (loc[1], getattr(owner, "name", "")) if p)
        return f"{label}: {what}", "restoring this source (before the Ansible Vault is back)"
    return f"{loc[0]}: {what}", "not needed to restore"


def _new_host_path(config: Config, loc: tuple[str | int, ...], path: Path, taken: set[str]) -> str:
    """Where the runbook's commands on a new host expect this secret ("" when no restore needs it)."""
    if loc[0] == "repositories" and loc[1] == restore_from(config):
        return RUNBOOK_PASSWORD if loc[-1] == "password_file" else RUNBOOK_S3_ENV
    if loc[0] not in ("repositories", "sources"):
        return ""
    name = path.name
    if name in taken:
        name = dotted(loc).replace("[", "-").replace("]", "").replace(".", "-")
    taken.add(name)
    return f"{NEW_HOST_DIR}/{name}"


def collect_secrets(config: Config, with_values: bool = False) -> list[SecretEntry]:
    """Every secret file the configuration names, with its state on this host (and its value when asked)."""
    taken = {posixpath.basename(RUNBOOK_PASSWORD), posixpath.basename(RUNBOOK_S3_ENV)}
    entries = []
    for loc, path in iter_secret_fields(config):
        what, needed_for = _describe(config, loc)
        entry = SecretEntry(dotted(loc), str(path), what, needed_for, _new_host_path(config, loc, path, taken))
        why = check_secret_file(Path(path))
        entry.status = "MISSING" if why and "does not exist" in why else (why or "ok")
        entry.sha256 = secret_digest(Path(path))
        if str(loc[-1]).endswith("env_file"):
            entry.keys = env_keys(Path(path))
        if with_values and entry.sha256 is not None:
            entry.value = Path(path).read_bytes().decode("utf-8", "replace").rstrip("\n")
        entries.append(entry)
    return entries


def optional_secrets(config: Config) -> list[SecretEntry]:
    """The write keys a restore into production takes and the host does not hold by design (a source's
    `restore_*` secret left unset, e.g. Terraform's state key): kept with the sheet, put on the new host only
    when that restore needs it, and picked up there by `restore --secrets-dir` under the name given here."""
    entries = []
    for loc in iter_unset_secret_fields(config.sources, ("sources",)):
        if not str(loc[-1]).startswith("restore_"):
            continue
        what, _needed = _describe(config, loc)
        flat = dotted(loc).replace("[", "-").replace("]", "").replace(".", "-")
        entries.append(SecretEntry(dotted(loc), "(not on the host, by design)", what,
                                   "restoring into production when it lost data (runbook 1, step 4)",
                                   f"{NEW_HOST_DIR}/{flat}", status=KEPT_BY_HAND))
    return entries


def secret_digest(path: Path) -> str | None:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return None


def _repository(name: str, repo: Repository, config: Config) -> RepoEntry:
    from .repos import open_repo

    try:
        address = parse_s3_url(repo.url)
    except ValueError:
        address = None
    entry = RepoEntry(name, repo.url, address, region_of(repo), key_rights(repo))
    try:
        info = open_repo(name, repo, config).repo_config()
        entry.id, entry.version = info.id, info.version
    except (restic.ResticError, OSError, ValueError) as exc:
        entry.error = mask(str(exc)) or type(exc).__name__
    return entry


def first_commands(config: Config, secrets: list[SecretEntry]) -> str:
    """The host-lost runbook's first commands (section 1), filled from the configuration: fetch and check the
    bootstrap bundle with what a fresh PVE has (curl --aws-sigv4, sha256sum), install from it, then restore."""
    name = restore_from(config)
    repo = dict(config.repositories.items())[name]
    new_host = {s.location: s.new_host for s in secrets}
    flags = [f"--password-file {shlex.quote(new_host.get(f'repositories.{name}.password_file', RUNBOOK_PASSWORD))}"]
    if repo.env_file:
        flags[0] += f" --s3-env-file {shlex.quote(new_host.get(f'repositories.{name}.env_file', RUNBOOK_S3_ENV))}"
    # each secret of a source is found by its file name there (restic-orch restore --secrets-dir)
    flags.append(f"--secrets-dir {NEW_HOST_DIR}")
    wanted = sorted({s.new_host for s in secrets if s.new_host})
    # S3 wants x-amz-content-sha256 signed; curl 7.88 (Debian 12) signs it only when it is given
    fetch = ("(set -a; . /root/s3.env; set +a; for f in SHA256SUMS restore.sh; do"
             " printf 'user = \"%s:%s\"\\n' \"$AWS_ACCESS_KEY_ID\" \"$AWS_SECRET_ACCESS_KEY\" |"
             " curl -fsS -K - --aws-sigv4 \"aws:amz:$S3_REGION:s3\" -H \"x-amz-content-sha256: UNSIGNED-PAYLOAD\""
             " -o \"$f\" \"$BUNDLE_URL/$f\"; done)")
    lines = [
        f". {RUNBOOK_ESCROW_ENV}",
        f"cd {NEW_HOST_DIR}",
        fetch,
        'echo "$BUNDLE_SHA256  SHA256SUMS" | sha256sum -c -',
        "sha256sum -c --ignore-missing SHA256SUMS",
        'bash restore.sh --bootstrap "$BUNDLE_URL" --sha256 "$BUNDLE_SHA256" --region "$S3_REGION"'
        f" --s3-env-file {RUNBOOK_S3_ENV}",
        f"chmod 600 {' '.join(shlex.quote(p) for p in wanted)}",
    ]
    for last in ("--dry-run", "--yes"):
        lines.append(" \\\n    ".join([f"{INSTALLED_RESTORE_SH} --repo {shlex.quote(repo.url)}", *flags, last]))
    return "\n".join(lines)


def escrow_env(config: Config, bundle: dict[str, Any] | None) -> str:
    """escrow.env: what the runbook's first commands source on a new host (shell-quoted; no secret in it)."""
    repo = dict(config.repositories.items())[restore_from(config)]
    region = (bundle or {}).get("region") or repo.options.get("s3.region", "")
    values = {"HOST": config.host, "RESTIC_REPOSITORY": repo.url, "BUNDLE_URL": (bundle or {}).get("url", ""),
              "BUNDLE_SHA256": (bundle or {}).get("digest", ""), "S3_REGION": region}
    return "".join(f"{key}={shlex.quote(str(value))}\n" for key, value in values.items())


def _restic_version() -> tuple[str, str | None]:
    try:
        return str(restic.version()), None
    except restic.ResticError as exc:
        return f"could not be read: {exc}", f"restic version: could not be read: {exc}"


def make_sheet(config: Config, config_path: Path, with_secrets: bool = False) -> Sheet:
    """Everything the sheet says, read from the configuration, the secret files and the repositories."""
    version, version_problem = _restic_version()
    repositories = [_repository(name, repo, config) for name, repo in config.repositories.items()]
    secrets = collect_secrets(config, with_values=with_secrets) + optional_secrets(config)
    problems = [version_problem] if version_problem else []
    problems += [f"repository {r.name}: ID could not be read: {r.error}" for r in repositories if r.error]
    problems += [f"secret {s.location}: {s.status} ({s.path})" for s in secrets
                 if s.status not in ("ok", KEPT_BY_HAND)]
    bundle = load_published(config.state_dir)
    if bundle is None:
        problems.append(BUNDLE_MISSING)
    return Sheet(datetime.now(UTC), config.host, str(Path(config_path).absolute()), version, repositories, secrets,
                 first_commands(config, secrets), with_secrets, problems, bundle, escrow_env(config, bundle))


# ---------------------------------------------------------------- files and the record
def write_file(path: Path, text: str, mode: int) -> None:
    """Created with its mode (O_CREAT|O_EXCL under a temporary name), then renamed: an older file's mode never
    carries over to content it should not have."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_sheet(sheet: Sheet, out_dir: Path, state_dir: Path) -> dict[str, Any]:
    """The Markdown and HTML sheets and escrow.env in out_dir, the record in state_dir; returns the record."""
    out_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    stem = f"escrow-{sheet.made:%Y-%m-%d}" + ("-with-secrets" if sheet.with_secrets else "")
    mode = FILE_MODE_SECRET if sheet.with_secrets else FILE_MODE_PLAIN
    blocks = blocks_of(sheet)
    files = [out_dir / f"{stem}.md", out_dir / f"{stem}.html"]
    write_file(files[0], render_markdown(blocks), mode)
    write_file(files[1], render_html(blocks), mode)
    env_path = out_dir / ESCROW_ENV
    write_file(env_path, sheet.escrow_env, FILE_MODE_PLAIN)
    record = sheet.record(files, env_path)
    state_dir.mkdir(parents=True, exist_ok=True, mode=0o750)
    write_file(state_dir / RECORD, json.dumps(record, indent=2, ensure_ascii=False) + "\n", FILE_MODE_SECRET)
    log.info("escrow sheet written", extra={"sheets": [str(f) for f in files], "with_secrets": sheet.with_secrets})
    for problem in sheet.problems:
        log.info(f"escrow sheet incomplete: {problem}")
    return record


# ---------------------------------------------------------------- is the sheet on record still right?
def load_published(state_dir: Path) -> dict[str, Any] | None:
    """The bootstrap bundle `restic-orch bundle publish` last recorded, or None."""
    from .bundle import load_published as published  # bundle reads addresses through this module

    return published(state_dir)


def load_record(state_dir: Path) -> dict[str, Any] | None:
    try:
        data = json.loads((state_dir / RECORD).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, json.JSONDecodeError) as exc:
        return {"unreadable": str(exc)}
    return data if isinstance(data, dict) else {"unreadable": "not a JSON object"}


def repository_ids(config: Config, only: str | None = None) -> dict[str, str]:
    """The IDs of the repositories that answer (the others are check's to report, not the sheet's)."""
    from .repos import open_all

    ids = {}
    for name, repo in open_all(config).items():
        if only and name != only:
            continue
        try:
            ids[name] = repo.repo_config().id
        except restic.ResticError:
            continue
    return ids


def _stale_reasons(config: Config, record: dict[str, Any], ids: Mapping[str, str]) -> list[str]:
    reasons = []
    known = record.get("repositories") or {}
    for name, repo in config.repositories.items():
        old = known.get(name)
        if old is None:
            reasons.append(f"repository {name} is not on it")
            continue
        if old.get("url") != repo.url:
            reasons.append(f"repository {name} moved to {repo.url} (the sheet has {old.get('url')})")
        if name in ids and ids[name] != old.get("id"):
            reasons.append(f"repository {name} has ID {ids[name][:8]}, the sheet {(old.get('id') or 'none')[:8]}")
    recorded = {s.get("location"): s for s in record.get("secrets") or []}
    for loc, path in iter_secret_fields(config):
        where, old = dotted(loc), recorded.get(dotted(loc))
        if old is None:
            reasons.append(f"secret {where} ({path}) is not on it")
        elif old.get("path") != str(path) or old.get("sha256") != secret_digest(Path(path)):
            reasons.append(f"secret {where} ({path}) changed")
    return reasons + _bundle_reasons(config, record)


def _bundle_reasons(config: Config, record: dict[str, Any]) -> list[str]:
    """A bundle published since the sheet was made: the sheet names an older one, or none."""
    published = load_published(config.state_dir)
    on_sheet = record.get("bootstrap_bundle")
    on_sheet = on_sheet.get("digest") if isinstance(on_sheet, dict) else None
    if published is None or published["digest"] == on_sheet:
        return []
    return [f"it names bootstrap bundle {(on_sheet or 'none')[:12]}, {published['digest'][:12]} is published"
            f" ({published.get('url')})"]


def stale_warnings(config: Config, ids: Mapping[str, str]) -> list[str]:
    """Why the sheet on record no longer holds (no sheet, a new repository ID or address, a changed secret)."""
    record = load_record(config.state_dir)
    if record is None:
        return ["no escrow sheet on record: run `restic-orch escrow` and keep the sheet offline (docs/escrow.md)"]
    if "unreadable" in record:
        return [f"the escrow record {config.state_dir / RECORD} cannot be read ({record['unreadable']}):"
                " run `restic-orch escrow` again"]
    made = str(record.get("made", "?"))[:10]
    return [f"escrow sheet of {made} is out of date: {reason}; run `restic-orch escrow` and replace the offline copy"
            for reason in _stale_reasons(config, record, ids)]
