"""Terraform remote state kept in an S3 bucket: dump every state object, restore one state object.

Speaks S3 with boto3 only (no subprocess). Credentials come from the configured env file (a restore into
the bucket uses `restore_env_file` when set: the backup's key is best read-only) and are handed to boto3
explicitly; the session is built so that nothing is read from the process
environment or ~/.aws (a stray AWS_PROFILE or AWS_ENDPOINT_URL must not redirect a backup).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
import urllib.parse
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from restic_orch.config import Config, TerraformStateSource
from restic_orch.masking import mask, read_env_file

from ._files import keep_aside, open_private, replacing
from .base import DumpOutcome, Failure, Hook, Notice, RestoreOutcome, sha256_file
from .registry import SourceKind

if TYPE_CHECKING:
    from .base import Artifact, DumpContext, Fetch, RestoreOptions

KIND = "terraform"
SOURCE = "terraform_state"
BACKUP_SUFFIX = ".restic-orch-backup-"
_PLAIN_MD5 = re.compile(r"^[0-9a-f]{32}$")
# bytes allowed verbatim in a staged file name; everything else is percent-encoded so the mapping
# from key to path stays reversible and no key can produce "..", "" or an absolute path
_SAFE = "-_.~+=,@"


class S3Error(Exception):
    """An S3 call failed; the message names bucket and endpoint and never holds a secret."""


class StateError(ValueError):
    """An object that is not a usable Terraform state."""


def key_to_relpath(key: str) -> Path:
    """A safe relative path for an S3 key: `env:/prod/x.tfstate` -> `env%3A/prod/x.tfstate`."""
    parts = []
    for segment in key.split("/"):
        quoted = urllib.parse.quote(segment, safe=_SAFE)
        # "." and ".." would walk the tree and "" would collapse; "%" is always quoted in a real
        # segment, so these markers cannot collide with another key
        quoted = {"": "%", ".": "%2E", "..": "%2E%2E"}.get(quoted, quoted)
        parts.append(quoted)
    return Path(*parts)


def parse_state(data: bytes) -> dict[str, Any]:
    """The header of a Terraform state (version, serial, lineage, ...) or StateError saying why not."""
    try:
        state = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise StateError(f"not JSON ({exc})") from None
    if not isinstance(state, dict):
        raise StateError("not a JSON object")
    problems = []
    for field, kind in (("version", int), ("serial", int), ("lineage", str), ("terraform_version", str),
                        ("resources", list)):
        value = state.get(field)
        if value is None:
            problems.append(f"'{field}' is missing")
        elif not isinstance(value, kind) or isinstance(value, bool):
            problems.append(f"'{field}' is not a {kind.__name__}")
    if problems:
        raise StateError("not a Terraform state: " + ", ".join(problems))
    if not state["lineage"]:
        raise StateError("not a Terraform state: 'lineage' is empty")
    return {"version": state["version"], "serial": state["serial"], "lineage": state["lineage"],
            "terraform_version": state["terraform_version"], "resources": len(state["resources"])}


def _isolated_session():  # noqa: ANN202 - boto3 Session
    """A boto3 session that reads no environment variable and no ~/.aws file."""
    import boto3
    import botocore.session
    from botocore.configprovider import BOTOCORE_DEFAUT_SESSION_VARIABLES

    variables = {name: (config_name, None, default, convert)
                 for name, (config_name, _env, default, convert) in BOTOCORE_DEFAUT_SESSION_VARIABLES.items()}
    variables["config_file"] = (None, None, os.devnull, None)
    variables["credentials_file"] = (None, None, os.devnull, None)
    variables["ignore_configured_endpoint_urls"] = (None, None, True, None)
    return boto3.session.Session(botocore_session=botocore.session.Session(session_vars=variables))


class TerraformStateHook(Hook):
    kind = KIND
    spec = SourceKind(KIND, "tfstate", order=3, examples="tfstate, tfstate:<key>", drill_scenario="tfstate")
    detail_keys = ("serial", "lineage")

    @classmethod
    def bootstrap_lines(cls, config: Config) -> list[str]:
        tf = config.sources.terraform_state
        if not tf:
            return []
        # a restore writes the state back with restore_env_file (else env_file): a new host may lack either
        missing = [f" (MISSING key file: --set sources.terraform_state.{field}=...)"
                   for field in ("env_file", "restore_env_file")
                   if getattr(tf, field) is not None and not Path(getattr(tf, field)).exists()]
        return [f"terraform state: {tf.endpoint or 'AWS'} bucket {tf.bucket}" + "".join(missing)]

    def __init__(self, source: TerraformStateSource) -> None:
        self.source = source
        self.name = SOURCE

    @classmethod
    def from_config(cls, config: Config) -> list[Hook]:
        return cls.one_if_enabled(config.sources.terraform_state)

    # --- S3 plumbing -------------------------------------------------------------------

    def where(self, bucket: str | None = None) -> str:
        return f"s3://{bucket or self.source.bucket} at {self.source.endpoint or 'AWS S3'}"

    def _key_field(self, for_restore: bool) -> str:
        return "restore_env_file" if for_restore and self.source.restore_env_file is not None else "env_file"

    def client(self, for_restore: bool = False):  # noqa: ANN201 - boto3 S3 client
        """A client with the backup's key, or for a restore into the bucket with restore_env_file's if set."""
        from botocore.config import Config as BotoConfig

        field = self._key_field(for_restore)
        path = getattr(self.source, field)
        env: dict[str, str] = {}
        if path is not None:
            try:
                env = read_env_file(path)
            except (OSError, ValueError) as exc:
                raise S3Error(f"{self.where()}: cannot read {field} {path}: {exc}") from None
        access, secret = env.get("AWS_ACCESS_KEY_ID"), env.get("AWS_SECRET_ACCESS_KEY")
        if not access or not secret:
            raise S3Error(f"{self.where()}: {field} {path or '(not configured)'} must set"
                          " AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY")
        # an explicitly configured region wins over the env file's
        region = self.source.region
        if "region" not in self.source.model_fields_set and env.get("AWS_DEFAULT_REGION"):
            region = env["AWS_DEFAULT_REGION"]
        config = BotoConfig(s3={"addressing_style": "path"}, retries={"max_attempts": 3, "mode": "standard"},
                            connect_timeout=10, read_timeout=60)
        return _isolated_session().client(
            "s3", endpoint_url=self.source.endpoint, region_name=region, aws_access_key_id=access,
            aws_secret_access_key=secret, aws_session_token=env.get("AWS_SESSION_TOKEN") or None,
            config=config, verify=self.source.verify_ssl)

    def _explain(self, exc: Exception, what: str, bucket: str | None = None, *, writing: bool = False) -> S3Error:
        from botocore.exceptions import ClientError, EndpointConnectionError

        if isinstance(exc, S3Error):
            return exc
        if isinstance(exc, ClientError):
            error = exc.response.get("Error", {})
            code = error.get("Code") or exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            hints = {"AccessDenied": "the key has no permission for this", "NoSuchBucket": "no such bucket",
                     "InvalidAccessKeyId": "unknown access key (check env_file)",
                     "SignatureDoesNotMatch": "wrong secret key (check env_file)", "403": "access denied"}
            detail = hints.get(str(code), error.get("Message") or "")
            if writing and str(code) in ("AccessDenied", "403"):
                detail = self._write_denied_hint()
            text = f"{self.where(bucket)}: {what} failed: {code}" + (f" ({detail})" if detail else "")
        elif isinstance(exc, EndpointConnectionError):
            text = f"{self.where(bucket)}: {what} failed: endpoint unreachable ({exc})"
        else:
            text = f"{self.where(bucket)}: {what} failed: {type(exc).__name__}: {exc}"
        return S3Error(mask(text))

    def _write_denied_hint(self) -> str:
        if self.source.restore_env_file is not None:
            return f"the key of restore_env_file {self.source.restore_env_file} may not write to this bucket"
        return ("the backup's key may not write (it is best read-only): set sources.terraform_state.restore_env_file"
                " to a key that may, e.g. Terraform's own (`--set sources.terraform_state.restore_env_file=FILE`),"
                " or restore with --target-dir and push with `terraform state push`")

    def _get(self, s3: Any, bucket: str, key: str) -> tuple[bytes, dict[str, Any]] | None:
        """The object's bytes and response, or None when there is no such key."""
        from botocore.exceptions import ClientError

        try:
            response = s3.get_object(Bucket=bucket, Key=key)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
                return None
            raise
        return response["Body"].read(), response

    # --- dump --------------------------------------------------------------------------

    def dump(self, ctx: DumpContext) -> DumpOutcome:
        import boto3

        outcome = DumpOutcome(tools={"boto3": boto3.__version__})
        prefix = self.source.prefix
        try:
            s3 = self.client()
            keys: list[dict[str, Any]] = []
            pages = s3.get_paginator("list_objects_v2").paginate(Bucket=self.source.bucket, Prefix=prefix)
            for page in pages:
                keys.extend(page.get("Contents", []))
        except Exception as exc:  # every S3/network problem is reported, not raised
            message = str(self._explain(exc, "list"))
            outcome.failures.append(Failure(KIND, SOURCE, f"tfstate:{prefix}*", message))
            return outcome
        if not keys:
            outcome.notices.append(Notice(KIND, SOURCE, f"{self.where()}: no object under prefix '{prefix}'"))
        out_dir = ctx.out_dir(KIND)
        for entry in keys:
            key = entry["Key"]
            if key.endswith("/"):
                continue  # a "folder" marker, not a state
            if key.endswith(".tflock"):
                # terraform's S3-native lock: somebody was running terraform during the backup
                outcome.notices.append(Notice(KIND, SOURCE, f"{self.where()}: {key} exists, the state was"
                                              " locked (terraform running?) during the backup"))
                continue
            try:
                outcome.artifacts.append(self._dump_one(ctx, s3, key, out_dir))
            except (S3Error, StateError, OSError) as exc:
                outcome.failures.append(Failure(KIND, SOURCE, f"tfstate:{key}", f"{key}: {exc}"))
            except Exception as exc:
                outcome.failures.append(Failure(KIND, SOURCE, f"tfstate:{key}",
                                                str(self._explain(exc, f"download of {key}"))))
        return outcome

    def _dump_one(self, ctx: DumpContext, s3: Any, key: str, out_dir: Path) -> Artifact:
        dest = out_dir / key_to_relpath(key)
        if not dest.resolve().is_relative_to(out_dir.resolve()):
            raise StateError(f"key maps outside the staging directory ({dest})")
        response = s3.get_object(Bucket=self.source.bucket, Key=key)
        dest.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        md5 = hashlib.md5(usedforsecurity=False)
        with replacing(dest) as partial:
            with open_private(partial) as handle:  # a state holds secrets
                for chunk in response["Body"].iter_chunks(1024 * 1024):
                    md5.update(chunk)
                    handle.write(chunk)
            size = partial.stat().st_size
            if response.get("ContentLength") is not None and size != response["ContentLength"]:
                raise StateError(f"short download: {size} of {response['ContentLength']} bytes")
            etag = str(response.get("ETag", "")).strip('"')
            # a multipart ETag ("<md5>-<parts>") or an SSE-KMS one is not the MD5 of the bytes
            if _PLAIN_MD5.match(etag) and response.get("ServerSideEncryption") != "aws:kms" \
                    and md5.hexdigest() != etag:
                raise StateError(f"download corrupted: MD5 {md5.hexdigest()} != ETag {etag}")
            header = parse_state(partial.read_bytes())
        modified = response.get("LastModified")
        stamp = modified.isoformat() if isinstance(modified, datetime) else str(modified or "")
        meta = {"bucket": self.source.bucket, "key": key, **header, "etag": etag, "last_modified": stamp}
        return ctx.artifact(dest, component=f"tfstate:{key}", kind=KIND, source=SOURCE, meta=meta)

    # --- restore -----------------------------------------------------------------------

    def restore(self, artifact: Artifact, fetch: Fetch, options: RestoreOptions) -> RestoreOutcome:
        key = str(artifact.meta.get("key") or "")
        bucket = str(artifact.meta.get("bucket") or self.source.bucket)
        outcome = RestoreOutcome(component=artifact.component, ok=False, message="")
        if not key:
            outcome.message = "artifact has no S3 key in its metadata"
            return outcome
        with tempfile.TemporaryDirectory(prefix="restic-orch-tfstate-") as tmp_dir:
            fetched = fetch(Path(tmp_dir) / "state")
            data = fetched.read_bytes()
            outcome.checks["fetched_sha256"] = hashlib.sha256(data).hexdigest() == artifact.sha256
            if not outcome.checks["fetched_sha256"]:
                outcome.message = f"{key}: the bytes read from the snapshot do not match the recorded sha256"
                return outcome
            try:
                ours = parse_state(data)
            except StateError as exc:
                outcome.message = f"{key}: {exc}"
                return outcome
            if options.target_dir is not None:
                return self._restore_to_dir(artifact, data, ours, Path(options.target_dir), outcome)
        try:
            return self._restore_to_bucket(bucket, key, data, ours, options, outcome)
        except Exception as exc:  # reported in the outcome
            outcome.ok = False
            outcome.message = str(self._explain(exc, f"restore of {key}", bucket, writing=True))
            return outcome

    def _restore_to_dir(self, artifact: Artifact, data: bytes, ours: dict[str, Any], target_dir: Path,
                        outcome: RestoreOutcome) -> RestoreOutcome:
        dest = target_dir / key_to_relpath(str(artifact.meta["key"]))
        dest.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        kept = ""
        if dest.exists():
            if sha256_file(dest) == artifact.sha256:
                outcome.ok, outcome.restored_to = True, str(dest)
                _compare(outcome, data, data, ours)
                outcome.message = f"{dest} already holds this state, nothing to do"
                return outcome
            kept = str(keep_aside(dest))
        with replacing(dest) as partial, open_private(partial) as handle:  # a state holds secrets
            handle.write(data)
        _compare(outcome, dest.read_bytes(), data, ours)
        outcome.ok = all(outcome.checks[name] for name in ("sha256", "serial", "lineage"))
        outcome.restored_to = str(dest)
        outcome.message = f"state serial {ours['serial']} written to {dest}" + \
            (f" (previous file kept as {kept})" if kept else "")
        return outcome

    def _restore_to_bucket(self, bucket: str, key: str, data: bytes, ours: dict[str, Any],
                           options: RestoreOptions, outcome: RestoreOutcome) -> RestoreOutcome:
        s3 = self.client(for_restore=True)
        location = f"s3://{bucket}/{key}"
        outcome.restored_to = location
        current = self._get(s3, bucket, key)
        notes: list[str] = []
        if current is not None:
            existing = current[0]
            if existing == data:
                outcome.ok = True
                _compare(outcome, existing, data, ours)
                outcome.message = f"{location} already holds this state, nothing to do"
                return outcome
            refusal = _refusal(existing, ours)
            if refusal and not options.force:
                outcome.message = f"refusing to overwrite {location}: {refusal}; use --force to replace it"
                return outcome
            if refusal:
                notes.append(f"forced over: {refusal}")
            stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
            backup_key = f"{key}{BACKUP_SUFFIX}{stamp}"
            s3.put_object(Bucket=bucket, Key=backup_key, Body=existing, ContentType="application/json")
            # keep nothing to chance: the old state must really be there before it is replaced
            saved = self._get(s3, bucket, backup_key)
            if saved is None or saved[0] != existing:
                outcome.message = f"could not save the current state to s3://{bucket}/{backup_key}," \
                    " nothing restored"
                return outcome
            outcome.checks["previous_saved_to"] = f"s3://{bucket}/{backup_key}"
            notes.append(f"previous object saved to s3://{bucket}/{backup_key}")
        s3.put_object(Bucket=bucket, Key=key, Body=data, ContentType="application/json")
        again = self._get(s3, bucket, key)
        if again is None:
            outcome.message = f"{location} is missing right after the upload"
            return outcome
        _compare(outcome, again[0], data, ours)
        outcome.ok = all(outcome.checks[name] for name in ("sha256", "serial", "lineage"))
        verdict = "restored" if outcome.ok else "uploaded but the read-back does not match"
        outcome.message = f"state serial {ours['serial']} ({ours['lineage']}) {verdict} to {location}" + \
            ("; " + "; ".join(notes) if notes else "")
        return outcome


def _compare(outcome: RestoreOutcome, found: bytes, data: bytes, ours: dict[str, Any]) -> None:
    """Record in the checks whether what is now in place is, byte for byte, the state we restored."""
    try:
        back = parse_state(found)
    except StateError:
        back = {"serial": None, "lineage": None}
    outcome.checks.update(sha256=hashlib.sha256(found).hexdigest() == hashlib.sha256(data).hexdigest(),
                          serial=back["serial"] == ours["serial"], lineage=back["lineage"] == ours["lineage"],
                          restored_serial=back["serial"], restored_lineage=back["lineage"])


def _refusal(existing: bytes, ours: dict[str, Any]) -> str:
    """Why replacing the bucket's state by ours would lose work, or '' when it is safe."""
    try:
        theirs = parse_state(existing)
    except StateError as exc:
        return f"the current object is {exc}"
    if theirs["lineage"] != ours["lineage"]:
        return f"it holds another lineage ({theirs['lineage']}, restoring {ours['lineage']})"
    if theirs["serial"] > ours["serial"]:
        return f"it holds a newer state (serial {theirs['serial']} > {ours['serial']})"
    if theirs["serial"] == ours["serial"]:
        # same lineage and serial but other bytes: the histories diverged, terraform itself refuses this
        return f"it holds a different state with the same serial {ours['serial']}"
    return ""


HOOK = TerraformStateHook
