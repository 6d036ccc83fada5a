"""The typed configuration: loaded from YAML, every problem reported as FILE:LINE: field.path: message."""

from __future__ import annotations

import os
import socket
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from fnmatch import fnmatchcase
from pathlib import Path, PurePosixPath
from typing import Annotated, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from .config_values import (
    AbsoluteGlobs,
    AbsPath,
    Bucket,
    Duration,
    Endpoint,
    Host,
    Location,
    PveStorage,
    ResticOptions,
    VmId,
    host_problem,
)
from .yamlmap import Loc, YamlSyntaxError, line_for, load_with_lines

DEFAULT_CONFIG = Path("/etc/restic-orch/config.yml")
SECRET = {"secret": True}


def default_config_path() -> Path:
    return Path(os.environ.get("RESTIC_ORCH_CONFIG") or DEFAULT_CONFIG)


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=False)


class Retention(Strict):
    """restic forget --keep-* options; durations as restic writes them: 7d, 6m, 1y."""

    keep_last: int | None = Field(None, ge=1)
    keep_hourly: int | None = Field(None, ge=1)
    keep_daily: int | None = Field(None, ge=1)
    keep_weekly: int | None = Field(None, ge=1)
    keep_monthly: int | None = Field(None, ge=1)
    keep_yearly: int | None = Field(None, ge=1)
    keep_within: Duration | None = None
    keep_within_daily: Duration | None = None
    keep_within_weekly: Duration | None = None
    keep_within_monthly: Duration | None = None

    @model_validator(mode="after")
    def _not_empty(self) -> Retention:
        if not any(v is not None for v in self.model_dump().values()):
            raise ValueError("a retention policy needs at least one keep_* option")
        return self

    def restic_args(self) -> list[str]:
        args: list[str] = []
        for name, value in self.model_dump().items():
            if value is not None:
                args += ["--" + name.replace("_", "-"), str(value)]
        return args


class Repository(Strict):
    url: Location
    password_file: AbsPath = Field(json_schema_extra=SECRET)
    env_file: AbsPath | None = Field(None, json_schema_extra=SECRET)
    options: ResticOptions = Field(default_factory=dict)
    # null: never forget here (an append-only offsite key cannot delete; prune from a trusted host instead)
    retention: Retention | None
    prune_every_days: int = Field(0, ge=0)
    compression: Literal["auto", "off", "max"] = "auto"
    upload_limit_kib: int | None = Field(None, ge=1)

    @property
    def is_s3(self) -> bool:
        return self.url.startswith("s3:")


class Repositories(Strict):
    local: Repository | None = None
    offsite: Repository | None = None

    @model_validator(mode="after")
    def _one_at_least(self) -> Repositories:
        if self.local is None and self.offsite is None:
            raise ValueError("at least one repository (local or offsite) is required")
        return self

    def items(self) -> Iterator[tuple[str, Repository]]:
        for name in ("local", "offsite"):
            repo = getattr(self, name)
            if repo is not None:
                yield name, repo


class ProxmoxSource(Strict):
    enabled: bool = True
    host: Host
    port: int = Field(8006, ge=1, le=65535)
    user: str = Field(pattern=r"^[^@!\s]+@[^@!\s]+$")
    token_name: str = Field(pattern=r"^[A-Za-z][A-Za-z0-9._-]+$")
    token_file: AbsPath = Field(json_schema_extra=SECRET)
    verify_ssl: bool = True
    ca_file: AbsPath | None = None
    node: str | None = Field(None, pattern=r"^[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?$")
    # which guest types `vmids: all` covers; an explicit VMID goes to the hook of its type (containers, VMs)
    guests: Literal["lxc", "qemu", "all"] = "all"
    vmids: list[VmId] | Literal["all"] = "all"
    exclude: list[VmId] = Field(default_factory=list)
    # vzdump's exclude-path patterns, containers only (a VM's vzdump copies whole disks): 'all' applies to
    # every container, a VMID key adds to it for that one
    exclude_paths: dict[Literal["all"] | int, list[str]] = Field(default_factory=dict)
    mode: Literal["snapshot", "suspend", "stop"] = "snapshot"
    require_snapshot: bool = False
    compress: Literal["0", "gzip", "lzo", "zstd"] = "0"
    storage: PveStorage = "local"
    dump_dir: AbsPath | None = None
    delete_after: bool = True
    lockwait_minutes: int = Field(10, ge=0)
    timeout_seconds: int = Field(3600, ge=1)
    restore_storage: PveStorage = "local-zfs"
    # a drill restores next to production on restore_storage: it refuses a guest whose archive would leave less
    # than this share of the storage free (0: never refuse)
    drill_min_free_percent: float = Field(10, ge=0, le=100)

    @field_validator("compress", mode="before")
    @classmethod
    def _compress_str(cls, value: Any) -> Any:
        return str(value) if isinstance(value, int) else value

    @field_validator("exclude_paths", mode="before")
    @classmethod
    def _exclude_paths_shape(cls, value: Any) -> Any:
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise ValueError("must map 'all' or a container VMID to a list of paths, e.g."
                             " {all: [/var/cache/apt], 102: [/var/lib/postgresql]}")
        out: dict[str | int, list[str]] = {}
        problems: list[str] = []
        for key, paths in value.items():
            vmid = cls._exclude_key(key)
            if vmid is None:
                problems.append(f"key {key!r}: use 'all' or a container VMID")
                continue
            if not isinstance(paths, list):
                problems.append(f"{key}: must be a list of paths")
                continue
            problems += [f"{key}[{i}] {p!r}: {why}" for i, p in enumerate(paths) if (why := cls._exclude_problem(p))]
            out[vmid] = paths
        if problems:
            raise ValueError("; ".join(problems))
        return out

    @field_validator("exclude_paths")
    @classmethod
    def _exclude_paths_vmids(cls, value: dict[str | int, list[str]], info: Any) -> dict[str | int, list[str]]:
        # a key for a container that is never backed up is a typo that would silently exclude nothing
        vmids, skipped = info.data.get("vmids"), set(info.data.get("exclude") or ())
        for key in value:
            if key in skipped:
                raise ValueError(f"{key}: CT {key} is in exclude, so it is not backed up")
            if isinstance(key, int) and isinstance(vmids, list) and key not in vmids:
                raise ValueError(f"{key}: CT {key} is not in vmids {vmids}")
        return value

    @staticmethod
    def _exclude_key(key: Any) -> str | int | None:
        if key == "all":
            return "all"
        if isinstance(key, str) and key.isdigit():
            key = int(key)
        if isinstance(key, int) and not isinstance(key, bool) and 100 <= key <= 999_999_999:
            return key
        return None

    @staticmethod
    def _exclude_problem(pattern: Any) -> str | None:
        """Why vzdump would mishandle this exclude-path pattern, or None when it is fine."""
        if not isinstance(pattern, str) or not pattern.strip():
            return "must be a non-empty path"
        if any(ord(c) < 32 for c in pattern):
            return "contains a control character (the API passes the list NUL-separated)"
        if pattern.endswith("/"):
            return ("ends with '/', which tar never matches in snapshot or stop mode (vzdump only warns): write"
                    f" {pattern.rstrip('/')!r} to leave the directory out, or {pattern + '*'!r} to keep it empty")
        # GNU tar as vzdump runs it: '/x' is anchored at the CT root ('./x'), other patterns match any
        # trailing part of the name, and a match on a directory covers what is below it
        tar_pattern = "." + pattern if pattern.startswith("/") else pattern
        for name in ("./etc/vzdump/pct.conf", "./etc/vzdump/pct.fw"):
            parts = name.split("/")
            starts = [0] if pattern.startswith("/") else range(len(parts))
            spans = ("/".join(parts[s:e]) for s in starts for e in range(s + 1, len(parts) + 1))
            if any(fnmatchcase(span, tar_pattern) for span in spans):
                return (f"would also leave out {name}, vzdump's copy of the container configuration:"
                        " the archive could not be restored")
        return None

    def exclude_paths_for(self, vmid: int) -> list[str]:
        """The patterns for one container: the 'all' ones, then its own, without repeats."""
        return list(dict.fromkeys([*self.exclude_paths.get("all", []), *self.exclude_paths.get(vmid, [])]))


DatabaseName = Annotated[str, Field(min_length=1)]


class DatabaseSource(Strict):
    # a client that can also reach the server through a Unix socket directory (libpq's host=/run/...)
    socket_dir_host: ClassVar[bool] = False

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    host: str = "127.0.0.1"
    port: int | None = Field(None, ge=1, le=65535)
    user: str = Field("root", min_length=1)
    password_file: AbsPath | None = Field(None, json_schema_extra=SECRET)
    # [] is legitimate: the server-wide objects only (roles, users and grants), no database
    databases: list[DatabaseName] | Literal["all"] = "all"
    exclude: list[DatabaseName] = Field(default_factory=list)
    exec: str | None = Field(None, pattern=r"^pct:\d+$")
    exec_prefix: Annotated[list[str], Field(min_length=1)] | None = None
    bin_dir: AbsPath | None = None
    timeout_seconds: int = Field(3600, ge=1)
    # the backup account is best read-only; restoring needs one that may create databases and users
    restore_user: str | None = Field(None, min_length=1)
    restore_password_file: AbsPath | None = Field(None, json_schema_extra=SECRET)

    @field_validator("host")
    @classmethod
    def _reachable_host(cls, value: str) -> str:
        if cls.socket_dir_host and value.startswith("/"):
            return value
        problem = host_problem(value)
        if problem:
            raise ValueError(problem + (" (or the absolute path of the server's socket directory)"
                                        if cls.socket_dir_host else ""))
        return value

    @field_validator("exec_prefix")
    @classmethod
    def _program_first(cls, value: list[str] | None) -> list[str] | None:
        if value is not None and not value[0].strip():
            raise ValueError("the first element is the program to run: it must not be empty")
        return value

    def for_restore(self) -> DatabaseSource:
        if not self.restore_user:
            return self
        return self.model_copy(update={"user": self.restore_user,
                                       "password_file": self.restore_password_file or self.password_file})

    def command_prefix(self) -> list[str]:
        """argv prefix that runs a client inside a container (`pct exec`), or nothing for local clients."""
        if self.exec_prefix is not None:
            return list(self.exec_prefix)
        if self.exec:
            return ["pct", "exec", self.exec.split(":", 1)[1], "--"]
        return []


class PostgresSource(DatabaseSource):
    socket_dir_host: ClassVar[bool] = True

    user: str = Field("postgres", min_length=1)
    globals: bool = True
    # pg_dump -Z: 0 leaves compression to restic, so a changed row renews a chunk, not the rest of the table
    dump_compression: int = Field(0, ge=0, le=9)


class MysqlSource(DatabaseSource):
    users_and_grants: bool = True


class TerraformStateSource(Strict):
    enabled: bool = True
    endpoint: Endpoint | None = None  # None: AWS
    region: str = Field("us-east-1", pattern=r"^[a-z0-9][a-z0-9-]*$")
    bucket: Bucket
    prefix: str = ""
    env_file: AbsPath | None = Field(None, json_schema_extra=SECRET)
    # the backup's key is read-only (docs/s3-policies/tfstate-readonly.json): pushing a state back into the
    # bucket needs a key that may write, e.g. Terraform's own; unset, restores use env_file
    restore_env_file: AbsPath | None = Field(None, json_schema_extra=SECRET)
    verify_ssl: bool = True

    @field_validator("prefix")
    @classmethod
    def _key_prefix(cls, value: str) -> str:
        # S3 keys have no leading slash: '/infra' would list nothing and back up nothing
        if value.startswith("/"):
            raise ValueError(f"{value!r}: an S3 key prefix does not start with '/' (write {value.lstrip('/')!r})")
        return value


class AnsibleVaultSource(Strict):
    enabled: bool = True
    paths: Annotated[AbsoluteGlobs, Field(min_length=1)]
    password_file: AbsPath | None = Field(None, json_schema_extra=SECRET)
    include_password_file: bool = False


class FilesSource(Strict):
    """The host's own files (hooks/host_files.py): absolute paths or globs, and/or a documented preset."""

    enabled: bool = True
    paths: AbsoluteGlobs = Field(default_factory=list)
    exclude: list[Annotated[str, Field(min_length=1)]] = Field(default_factory=list)
    preset: Literal["pve-host"] | None = None
    # where a restore puts them unless --target-dir or --force; unset: <state_dir>/review
    review_dir: AbsPath | None = None

    @model_validator(mode="after")
    def _something_to_keep(self) -> FilesSource:
        if not self.paths and self.preset is None:
            raise ValueError("set paths, preset (pve-host), or both")
        return self


class Sources(Strict):
    proxmox: ProxmoxSource | None = None
    postgres: list[PostgresSource] = Field(default_factory=list)
    mysql: list[MysqlSource] = Field(default_factory=list)
    terraform_state: TerraformStateSource | None = None
    ansible_vault: AnsibleVaultSource | None = None
    files: FilesSource | None = None

    @model_validator(mode="after")
    def _unique_names(self) -> Sources:
        # names are shared by both kinds because restore selects databases as db:<source>/<database>
        names = [s.name for s in self.postgres] + [s.name for s in self.mysql]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"database source names must be unique across postgres and mysql: {', '.join(dupes)}")
        return self


class Limits(Strict):
    nice: int = Field(10, ge=-20, le=19)
    ionice_class: Literal["none", "realtime", "best-effort", "idle"] = "best-effort"
    ionice_level: int = Field(7, ge=0, le=7)
    gomaxprocs: int | None = Field(1, ge=1)
    upload_kib: int | None = Field(None, ge=1)
    lock_wait_seconds: int = Field(300, ge=0)
    min_free_bytes: int = Field(512 * 1024 * 1024, ge=0)
    # VI2: the share of the whole host (all cores) the run and its children may use; null = no cap
    cpu_percent: float | None = Field(30, gt=0, le=100)


# what a notification route may subscribe to (docs/notifications.md says when each is sent)
NotifyEvent = Literal["failure", "partial", "success", "rpo_breach", "drill", "check"]


class NotifyRoute(Strict):
    """Apprise URLs, one a line in a 0600 file (they embed tokens and passwords), and the events sent to them."""

    urls_file: AbsPath = Field(json_schema_extra=SECRET)
    events: Annotated[list[NotifyEvent], Field(min_length=1)]


class Monitoring(Strict):
    textfile_dir: AbsPath | None = None
    healthchecks_url_file: AbsPath | None = Field(None, json_schema_extra=SECRET)
    webhook_url_file: AbsPath | None = Field(None, json_schema_extra=SECRET)
    notify: list[NotifyRoute] = Field(default_factory=list)
    # each ping's timeout; and one event's Apprise notifications all end by then (a hung receiver is abandoned)
    timeout_seconds: int = Field(10, ge=1)


class Targets(Strict):
    rto_minutes: int = Field(30, ge=1)
    rpo_hours: int = Field(24, ge=1)


# one command as argv: a program, then its arguments (no shell)
Command = Annotated[list[str], Field(min_length=1)]


class RestoreSettings(Strict):
    redeploy: list[Command] = Field(default_factory=list)
    redeploy_timeout_seconds: int = Field(3600, ge=1)


class DrillSettings(Strict):
    vmid_range: tuple[int, int] = (9900, 9999)
    report_dir: AbsPath = Path("/var/lib/restic-orch/drills")

    @field_validator("vmid_range")
    @classmethod
    def _ordered(cls, value: tuple[int, int]) -> tuple[int, int]:
        if value[0] > value[1] or value[0] < 100 or value[1] > 999_999_999:
            raise ValueError("vmid_range must be [low, high] with 100 <= low <= high <= 999999999 (PVE's VMIDs)")
        return value


class CheckSettings(Strict):
    """`restic-orch check`: which part of the data each run reads back, and how old a full read may get."""

    # N > 0: each run reads the next of N parts (restic --read-data-subset n/N), so N runs read every pack;
    # 0: only what --read-data-subset asks
    rotation_parts: int = Field(0, ge=0, le=10_000)
    # with a rotation: status and the metrics flag a repository whose oldest part was last read longer ago
    verified_within_days: int = Field(90, ge=1)


class Config(Strict):
    version: Literal[1] = 1
    host: str = Field(default_factory=socket.gethostname, pattern=r"^[A-Za-z0-9_.-]+$")
    staging_dir: AbsPath = Path("/var/lib/restic-orch/staging")
    state_dir: AbsPath = Path("/var/lib/restic-orch")
    log_dir: AbsPath = Path("/var/log/restic-orch")
    hooks_dir: AbsPath | None = None
    auto_init: bool = False
    repositories: Repositories
    sources: Sources = Field(default_factory=Sources)
    limits: Limits = Field(default_factory=Limits)
    monitoring: Monitoring = Field(default_factory=Monitoring)
    targets: Targets = Field(default_factory=Targets)
    restore: RestoreSettings = Field(default_factory=RestoreSettings)
    drill: DrillSettings = Field(default_factory=DrillSettings)
    check: CheckSettings = Field(default_factory=CheckSettings)
    # run summaries kept in state_dir/runs: the oldest beyond this many are removed after each run
    keep_runs: int = Field(400, ge=1)

    @field_validator("staging_dir")
    @classmethod
    def _deep_enough(cls, value: Path) -> Path:
        # every run empties it (staging.prepare refuses one this close to /)
        if len(PurePosixPath(os.path.normpath(value)).parts) < 3:
            raise ValueError(f"{str(value)!r} is emptied after every run: it must be at least two levels below /,"
                             " e.g. /var/lib/restic-orch/staging")
        return value


def _given(data: Any, loc: Loc) -> bool:
    for part in loc:
        if not isinstance(data, dict) or part not in data:
            return False
        data = data[part]
    return True


def _layout_problems(config: Config, data: dict[str, Any]) -> list[tuple[Loc, str]]:
    """Directories that must stay out of staging_dir: preflight refuses a staging directory holding files it
    did not stage, and every run empties it. Each problem sits on the field the file sets (else staging_dir)."""
    staging = PurePosixPath(os.path.normpath(config.staging_dir))
    local = config.repositories.local
    places: dict[Loc, Path | None] = {
        ("state_dir",): config.state_dir, ("log_dir",): config.log_dir, ("hooks_dir",): config.hooks_dir,
        ("drill", "report_dir"): config.drill.report_dir,
        ("monitoring", "textfile_dir"): config.monitoring.textfile_dir,
        ("repositories", "local", "url"): Path(local.url.removeprefix("local:")) if local else None,
    }
    problems = []
    for loc, path in places.items():
        if path is None or not path.is_absolute() or not PurePosixPath(os.path.normpath(path)).is_relative_to(staging):
            continue
        where = loc if _given(data, loc) else ("staging_dir",)
        what = f"{str(path)!r}" if where == loc else f"{_dotted(loc)} {str(path)!r}"
        problems.append((where, f"{what} is inside staging_dir {str(staging)!r}, which every run empties:"
                                " keep them apart"))
    return problems


@dataclass(frozen=True)
class Problem:
    file: Path
    line: int
    field: str
    message: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.field}: {self.message}"


class ConfigError(Exception):
    """Every problem found in a configuration file, each naming the file, line and field."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))


def _dotted(loc: Loc) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


def _secret_fields(model: BaseModel, loc: Loc = ()) -> Iterator[tuple[Loc, Path | None]]:
    """(location, path or None) for every secret file field of the configured parts of the model."""
    for name, info in type(model).model_fields.items():
        value = getattr(model, name)
        extra = info.json_schema_extra
        if isinstance(extra, dict) and extra.get("secret"):
            yield (*loc, name), value
        elif isinstance(value, BaseModel):
            yield from _secret_fields(value, (*loc, name))
        elif isinstance(value, list):
            for index, item in enumerate(value):
                if isinstance(item, BaseModel):
                    yield from _secret_fields(item, (*loc, name, index))


def iter_secret_fields(model: BaseModel, loc: Loc = ()) -> Iterator[tuple[Loc, Path]]:
    """Yield (location, path) for every secret file reference set in the model."""
    return ((where, path) for where, path in _secret_fields(model, loc) if path is not None)


def iter_unset_secret_fields(model: BaseModel, loc: Loc = ()) -> Iterator[Loc]:
    """Yield the location of every secret file field left unset in the configured parts of the model."""
    return (where for where, path in _secret_fields(model, loc) if path is None)


def check_secret_file(path: Path) -> str | None:
    """Why a secret file cannot be used, or None when it is fine."""
    try:
        st = path.stat()
    except FileNotFoundError:
        return f"secret file {path} does not exist"
    except PermissionError:
        return f"secret file {path} cannot be read (permission denied)"
    if not stat.S_ISREG(st.st_mode):
        return f"secret file {path} is not a regular file"
    if st.st_mode & 0o077:
        return (f"secret file {path} is readable by group or others (mode {stat.S_IMODE(st.st_mode):04o});"
                f" run: chmod 600 {path}")
    if not os.access(path, os.R_OK):
        return f"secret file {path} cannot be read"
    return None


def _validation_problems(exc: ValidationError, path: Path, data: dict[str, Any],
                         lines: dict[Loc, int]) -> list[Problem]:
    """pydantic's errors as Problems on the lines the file wrote them, most precise first, in line order."""
    problems = []
    for err in exc.errors():
        loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and p.startswith("function-")))
        # pydantic puts the union/literal branch in the location: drop what is not a real key
        clean: list[str | int] = []
        node: Any = data
        for part in loc:
            if isinstance(node, dict) and part in node:
                clean.append(part)
                node = node[part]
            elif isinstance(node, list) and isinstance(part, int) and part < len(node):
                clean.append(part)
                node = node[part]
            elif err["type"] in ("missing", "extra_forbidden") and part == loc[-1]:
                clean.append(part)
        message = err["msg"]
        if err["type"] == "extra_forbidden":
            message = "unknown key"
        elif err["type"] == "missing":
            message = "required field is missing"
        elif message.startswith("Value error, "):
            message = message[len("Value error, "):]
        key = tuple(clean)
        problems.append(Problem(path, line_for(lines, key), _dotted(key), message))
    unique = list(dict.fromkeys(problems))
    # a union (e.g. a list or "all") reports one error per branch: keep the deepest, most precise one
    fields = {p.field for p in unique}
    unique = [p for p in unique if not any(f.startswith(p.field + "[") or f.startswith(p.field + ".")
                                            for f in fields if f != p.field)]
    return sorted(unique, key=lambda p: p.line)


def load_config(path: Path, *, check_files: bool = True) -> Config:
    """Load and validate; raise ConfigError listing every problem found."""
    path = Path(path)
    if not path.exists():
        raise ConfigError([Problem(path, 1, "(file)", "configuration file not found")])
    try:
        data, lines = load_with_lines(path)
    except YamlSyntaxError as exc:
        raise ConfigError([Problem(path, exc.line, "(syntax)", exc.message)]) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError([Problem(path, 1, "(file)", f"cannot read: {exc}")]) from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError([Problem(path, 1, "(top level)", "must be a mapping of settings")])
    try:
        config = Config.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_validation_problems(exc, path, data, lines)) from None
    layout = [Problem(path, line_for(lines, loc), _dotted(loc), why) for loc, why in _layout_problems(config, data)]
    if layout:
        raise ConfigError(layout)
    if check_files:
        problems = []
        for loc, secret_path in iter_secret_fields(config):
            why = check_secret_file(secret_path)
            if why:
                problems.append(Problem(path, line_for(lines, loc), _dotted(loc), why))
        if problems:
            raise ConfigError(problems)
    return config


def redacted(config: Config) -> dict[str, Any]:
    """The resolved configuration as plain data; secret file paths are shown, never their contents."""
    return config.model_dump(mode="json")
