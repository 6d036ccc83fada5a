"""The bootstrap bundle: what installs restic-orch on a new host with `pip --no-index`, kept beside the offsite
repository (docs/escrow.md, "The bootstrap bundle").

build() makes it in a directory: restic-orch's wheel and every pinned dependency's (wheels/), restore.sh, the
runbook, constraints.txt, bundle.json and SHA256SUMS, whose sha256 is the bundle's identity. publish() puts it
under bootstrap/ of the offsite bucket, where scripts/restore.sh --bootstrap fetches it, and records what it
published in <state_dir>/bundle.json for the escrow sheet.

The format (file names, SHA256SUMS lines, bundle.json's keys) is a contract with scripts/restore.sh.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import sys
import tarfile
import tempfile
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import Any

from . import runner
from .config import Config
from .escrow import parse_s3_url, restore_from
from .masking import mask, read_env_file

log = logging.getLogger("restic_orch.bundle")

FORMAT = 1
SUMS = "SHA256SUMS"
META = "bundle.json"
WHEELS = "wheels"
PREFIX = "bootstrap"          # at the offsite bucket's root, beside the repository's prefix
RECORD = "bundle.json"        # in state_dir: what publish() last put there
# what the bundle takes from the source, by its name in the bundle
FROM_SOURCE = {"restore.sh": "scripts/restore.sh", "disaster-recovery.md": "docs/runbooks/disaster-recovery.md",
               "constraints.txt": "restic_orch/constraints.txt"}
PIP_TIMEOUT = 900
_SUM_LINE = re.compile(r"([0-9a-f]{64})  (\S.*)")
_PROBE = ("import sys, sysconfig; print('%d.%d' % sys.version_info[:2]); print(sysconfig.get_platform())")


class BundleError(Exception):
    """The bundle could not be built, verified or published (exit 1)."""


class BundleInputError(BundleError):
    """Bad input, named in the message: no source, no bundle built yet, no S3 offsite repository (exit 2)."""


@dataclass(frozen=True)
class BundleInfo:
    digest: str   # sha256 of SHA256SUMS: the bundle's identity
    files: int    # files SHA256SUMS lists
    version: str  # restic-orch's, from its wheel
    python: str   # major.minor the wheels are for

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


# ---------------------------------------------------------------- the source
def default_source() -> Path | None:
    """The project checkout this package runs from (development, the lab), or None for an installed package."""
    checkout = Path(__file__).resolve().parents[1]
    return checkout if (checkout / "pyproject.toml").is_file() else None


def default_dir(config: Config) -> Path:
    return config.state_dir / PREFIX


def _is_archive(source: Path) -> bool:
    return source.is_file() and source.name.endswith((".tar.gz", ".tgz"))


def _check_source(source: Path) -> None:
    if source.is_dir():
        if not (source / "pyproject.toml").is_file():
            raise BundleInputError(f"--source {source}: no pyproject.toml: not a restic-orch source directory")
    elif not _is_archive(source):
        raise BundleInputError(f"--source {source}: neither a restic-orch source directory nor its .tar.gz"
                               " (the Ansible role's <venv>/src/restic-orch-src.tar.gz)")


def _archive_members(tar: tarfile.TarFile) -> dict[str, tarfile.TarInfo]:
    """Regular files by their path inside the project (past the archive's top directory, when it has one)."""
    found = {}
    for member in tar.getmembers():
        if member.isfile():
            parts = PurePosixPath(member.name).parts
            found[member.name] = member
            if len(parts) > 1:
                found.setdefault("/".join(parts[1:]), member)
    return found


def _copy_from_source(source: Path, work: Path) -> None:
    """restore.sh, the runbook and constraints.txt, from the source directory or out of its archive."""
    if source.is_dir():
        for name, rel in FROM_SOURCE.items():
            if not (source / rel).is_file():
                raise BundleInputError(f"--source {source}: {rel} is missing (the bundle carries it as {name})")
            shutil.copyfile(source / rel, work / name)
        return
    try:
        with tarfile.open(source, "r:gz") as tar:
            members = _archive_members(tar)
            for name, rel in FROM_SOURCE.items():
                if rel not in members:
                    raise BundleInputError(f"--source {source}: {rel} is not in the archive (the bundle carries it"
                                           f" as {name}; the role's backup_package_paths must list it)")
                handle = tar.extractfile(members[rel])
                assert handle is not None  # a regular file
                (work / name).write_bytes(handle.read())
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise BundleInputError(f"--source {source}: cannot read the archive: {exc}") from exc


# ---------------------------------------------------------------- build
def _pip(python: str, *args: str | Path) -> None:
    try:
        runner.run([python, "-m", "pip", *args], timeout=PIP_TIMEOUT)
    except runner.CommandError as exc:
        raise BundleError(f"pip {args[0]} failed: {exc}") from exc


def _wheels(work: Path, source: Path, python: str) -> str:
    """restic-orch's wheel, then every dependency constraints.txt pins; returns the wheel's file name."""
    wheels = work / WHEELS
    wheels.mkdir()
    _pip(python, "wheel", "--no-deps", "--disable-pip-version-check", "-w", wheels, source)
    built = sorted(p.name for p in wheels.glob("restic_orch-*.whl"))
    if len(built) != 1:
        raise BundleError(f"pip wheel left {built or 'no wheel'} in {wheels}, expected one restic_orch-*.whl")
    _pip(python, "download", "--only-binary=:all:", "--disable-pip-version-check", "-c",
         work / "constraints.txt", "-d", wheels, wheels / built[0])
    return built[0]


def _interpreter(python: str) -> tuple[str, str]:
    """(major.minor, platform) of the Python the wheels were fetched for."""
    try:
        lines = runner.run([python, "-c", _PROBE], timeout=60).stdout.split()
    except runner.CommandError as exc:
        raise BundleError(f"cannot run {python}: {exc}") from exc
    if len(lines) != 2:
        raise BundleError(f"{python} did not say its version and platform: {lines}")
    return lines[0], lines[1]


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _listed(work: Path) -> Iterator[str]:
    """Every file of the bundle but SHA256SUMS, as the relative POSIX paths SHA256SUMS names."""
    for path in work.rglob("*"):
        rel = path.relative_to(work).as_posix()
        if path.is_file() and rel != SUMS:
            yield rel


def sums_text(work: Path) -> str:
    """`sha256sum` lines for every other file of the bundle, sorted by path."""
    return "".join(f"{file_sha256(work / rel)}  {rel}\n" for rel in sorted(_listed(work)))


def _fill(work: Path, source: Path, python: str) -> None:
    _copy_from_source(source, work)
    (work / "restore.sh").chmod(0o755)
    wheel = _wheels(work, source, python)
    version, platform = _interpreter(python)
    meta = {"format": FORMAT, "restic_orch_version": wheel.split("-")[1], "python": version, "platform": platform,
            "made": datetime.now(UTC).isoformat(timespec="seconds"), "wheel": wheel}
    (work / META).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    (work / SUMS).write_text(sums_text(work), encoding="utf-8")


def _swap(work: Path, out_dir: Path) -> None:
    """Put the new bundle in place of the old one; the old one comes back if the rename fails."""
    old = None
    if out_dir.exists():
        old = out_dir.with_name(f".{out_dir.name}.old-{os.getpid()}")
        shutil.rmtree(old, ignore_errors=True)
        os.rename(out_dir, old)
    try:
        os.rename(work, out_dir)
    except OSError:
        if old is not None:
            os.rename(old, out_dir)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def build(out_dir: Path, source: Path, *, python: str = sys.executable) -> BundleInfo:
    """Build the bundle from a source directory or the role's source archive into out_dir.

    It is made in a temporary directory beside out_dir and renamed into place once it verifies: a failed build
    leaves neither half a bundle nor a damaged previous one. pip needs its package index (or a warm cache).
    """
    out_dir, source = Path(out_dir).absolute(), Path(source).absolute()
    if not source.exists():
        raise BundleInputError(f"--source {source}: does not exist")
    _check_source(source)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.new-", dir=out_dir.parent))
    try:
        work.chmod(0o755)
        _fill(work, source, python)
        problems = verify(work)
        if problems:
            raise BundleError("the new bundle does not verify: " + "; ".join(problems))
        _swap(work, out_dir)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    info = read_bundle(out_dir)
    assert info is not None  # just verified
    log.info("bootstrap bundle built", extra={"dir": str(out_dir), "digest": info.digest, "count": info.files,
                                              "version": info.version, "python": info.python})
    return info


# ---------------------------------------------------------------- read and verify
def read_bundle(bundle_dir: Path) -> BundleInfo | None:
    """What a built bundle is (None when there is none); unchecked: verify() says whether it holds."""
    sums, meta = Path(bundle_dir) / SUMS, Path(bundle_dir) / META
    if not sums.is_file():
        return None
    try:
        data = json.loads(meta.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        data = {}
    data = data if isinstance(data, dict) else {}
    lines = [line for line in sums.read_text(encoding="utf-8", errors="replace").splitlines() if line.strip()]
    return BundleInfo(file_sha256(sums), len(lines), str(data.get("restic_orch_version", "")),
                      str(data.get("python", "")))


def _parse_sums(text: str) -> tuple[dict[str, str], list[str]]:
    """{path: sha256} of SHA256SUMS, and what is wrong with its lines."""
    listed: dict[str, str] = {}
    problems = []
    for number, line in enumerate(text.splitlines(), 1):
        match = _SUM_LINE.fullmatch(line)
        if match is None:
            problems.append(f"{SUMS} line {number}: not '<sha256>  <path>'")
            continue
        digest, rel = match.groups()
        parts = PurePosixPath(rel).parts
        if rel.startswith("/") or ".." in parts or rel == SUMS or rel in listed:
            problems.append(f"{SUMS} line {number}: {rel}: not a file of the bundle, or listed twice")
            continue
        listed[rel] = digest
    if list(listed) != sorted(listed):
        problems.append(f"{SUMS}: lines are not sorted by path")
    return listed, problems


def _meta_problems(bundle_dir: Path, listed: dict[str, str]) -> list[str]:
    if META not in listed:
        return [f"{META} is not listed in {SUMS}"]
    try:
        meta = json.loads((bundle_dir / META).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        return [f"{META}: cannot be read: {exc}"]
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        return [f"{META}: format is not {FORMAT}"]
    wheel = f"{WHEELS}/{meta.get('wheel')}"
    return [] if wheel in listed else [f"{META}: its wheel {wheel} is not listed in {SUMS}"]


def verify(bundle_dir: Path) -> list[str]:
    """What is wrong with a built bundle ([] when every SHA256SUMS line holds and nothing else is there)."""
    bundle_dir = Path(bundle_dir)
    sums = bundle_dir / SUMS
    if not sums.is_file():
        return [f"{sums}: missing: no bundle built (restic-orch bundle build)"]
    listed, problems = _parse_sums(sums.read_text(encoding="utf-8", errors="replace"))
    for rel, digest in listed.items():
        path = bundle_dir / rel
        if not path.is_file():
            problems.append(f"{rel}: listed in {SUMS} but missing")
        elif file_sha256(path) != digest:
            problems.append(f"{rel}: its sha256 differs from {SUMS}")
    problems += [f"{rel}: not listed in {SUMS}" for rel in sorted(set(_listed(bundle_dir)) - set(listed))]
    return problems + _meta_problems(bundle_dir, listed)


# ---------------------------------------------------------------- publish
@dataclass(frozen=True)
class Target:
    """Where the bundle goes: the bucket of the repository the host-lost runbook restores from."""

    repository: str
    endpoint: str
    bucket: str
    region: str
    path_style: bool
    env: dict[str, str] = field(repr=False)

    @property
    def url(self) -> str:
        """The path-style https URL restore.sh fetches from (curl --aws-sigv4)."""
        return f"{self.endpoint}/{self.bucket}/{PREFIX}"


def has_s3_target(config: Config) -> bool:
    """Whether the repository the host-lost runbook restores from is on S3, where the bundle goes beside it."""
    repo = dict(config.repositories.items())[restore_from(config)]
    try:
        return parse_s3_url(repo.url) is not None
    except ValueError:
        return False


def target(config: Config) -> Target:
    """The offsite bucket and the host's key for it; BundleInputError naming the field when there is none."""
    name = restore_from(config)
    repo = dict(config.repositories.items())[name]
    field_name = f"repositories.{name}"
    address = parse_s3_url(repo.url)
    if address is None:
        raise BundleInputError(f"{field_name}.url: {repo.url} is not an S3 repository: the bootstrap bundle is"
                               " published beside an S3 offsite repository")
    if repo.env_file is None:
        raise BundleInputError(f"{field_name}.env_file: not set: publishing needs that repository's S3 keys")
    try:
        env = read_env_file(repo.env_file)
    except (OSError, ValueError) as exc:
        raise BundleInputError(f"{field_name}.env_file: {mask(str(exc))}") from exc
    missing = [k for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY") if not env.get(k)]
    if missing:
        raise BundleInputError(f"{field_name}.env_file: {repo.env_file} does not set {', '.join(missing)}")
    # restic's own choice: the option, else the keys file, else us-east-1 (what restic signs with by default)
    region = repo.options.get("s3.region") or env.get("AWS_DEFAULT_REGION") or env.get("AWS_REGION") or "us-east-1"
    return Target(name, address.endpoint, address.bucket, region,
                  repo.options.get("s3.bucket-lookup") == "path", env)


def s3_client(where: Target, *, timeout: float = 60, attempts: int = 3) -> Any:
    import boto3  # a second or two to import: only when publishing
    from botocore.config import Config as BotoConfig

    return boto3.client("s3", endpoint_url=where.endpoint, region_name=where.region,
                        aws_access_key_id=where.env["AWS_ACCESS_KEY_ID"],
                        aws_secret_access_key=where.env["AWS_SECRET_ACCESS_KEY"],
                        config=BotoConfig(s3={"addressing_style": "path" if where.path_style else "auto"},
                                          signature_version="s3v4", retries={"max_attempts": attempts},
                                          connect_timeout=timeout, read_timeout=timeout))


@dataclass(frozen=True)
class PublishResult:
    digest: str
    url: str
    region: str
    version: str
    uploaded: list[str]  # object keys, SHA256SUMS last; [] when the bucket already held this bundle
    published: str

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "skipped": not self.uploaded}

    def human(self) -> str:
        what = (f"uploaded {len(self.uploaded)} files" if self.uploaded
                else "already there (SHA256SUMS unchanged), nothing uploaded")
        return (f"bootstrap bundle {self.digest} (restic-orch {self.version}) at {self.url}: {what}\n"
                f"region {self.region}; recorded for the escrow sheet: run `restic-orch escrow` if this bundle"
                " is not on the sheet yet")


def _remote_sums(client: Any, where: Target) -> bytes | None:
    from botocore.exceptions import ClientError

    try:
        return client.get_object(Bucket=where.bucket, Key=f"{PREFIX}/{SUMS}")["Body"].read()
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404", "NotFound"):
            return None
        raise


def _upload(client: Any, where: Target, bundle_dir: Path) -> list[str]:
    """Every file SHA256SUMS lists, then SHA256SUMS itself: a half-finished upload never looks complete."""
    local = (bundle_dir / SUMS).read_bytes()
    if _remote_sums(client, where) == local:
        return []
    listed, _ = _parse_sums(local.decode("utf-8"))
    keys = []
    for rel in [*listed, SUMS]:
        key = f"{PREFIX}/{rel}"
        with open(bundle_dir / rel, "rb") as body:
            client.put_object(Bucket=where.bucket, Key=key, Body=body)
        keys.append(key)
    return keys


def publish(config: Config, bundle_dir: Path) -> PublishResult:
    """Upload a verified bundle under bootstrap/ of the offsite bucket (skipped when the bucket already holds it)
    and record it in <state_dir>/bundle.json. Never publishes a bundle that does not verify."""
    from botocore.exceptions import BotoCoreError, ClientError

    bundle_dir = Path(bundle_dir)
    info = read_bundle(bundle_dir)
    if info is None:
        raise BundleInputError(f"{bundle_dir}: no bundle built yet: run `restic-orch bundle build` first")
    problems = verify(bundle_dir)
    if problems:
        raise BundleError(f"{bundle_dir}: the bundle does not verify, not published (build it again): "
                          + "; ".join(problems[:5]))
    where = target(config)
    try:
        uploaded = _upload(s3_client(where), where, bundle_dir)
    except (BotoCoreError, ClientError, OSError) as exc:
        raise BundleError(mask(f"publishing to {where.url} with the {where.repository} repository's S3 keys:"
                               f" {exc}")) from exc
    result = PublishResult(info.digest, where.url, where.region, info.version, uploaded,
                           datetime.now(UTC).isoformat(timespec="seconds"))
    record = {"digest": result.digest, "url": result.url, "region": result.region,
              "published": result.published, "version": result.version}
    _write_record(config.state_dir / RECORD, record)
    log.info("bootstrap bundle published", extra={"url": where.url, "digest": info.digest,
                                                  "uploaded": len(uploaded)})
    return result


def _write_record(path: Path, record: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o750)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    tmp.chmod(0o640)
    os.replace(tmp, path)


def load_published(state_dir: Path) -> dict[str, Any] | None:
    """What publish() last recorded ({digest, url, region, published, version}), or None."""
    try:
        data = json.loads((Path(state_dir) / RECORD).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and data.get("digest") and data.get("url") else None
