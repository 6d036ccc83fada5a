"""The configuration's value types, each as strict as what consumes it: restic, boto3, the PVE API, a timer's cwd.

Each `*_problem` function says why a value would only fail later, at run time, or returns None; the annotated
types make pydantic refuse such a value when the file is read, so the loader reports it as FILE:LINE: field.
"""

from __future__ import annotations

import ipaddress
import re
import urllib.parse
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

from pydantic import AfterValidator, BeforeValidator, Field


def _refusing(problem: Callable[[Any], str | None]) -> AfterValidator:
    def check(value: Any) -> Any:
        why = problem(value)
        if why:
            raise ValueError(why)
        return value

    return AfterValidator(check)


# ---------------------------------------------------------------- paths: cron and systemd do not run in your directory
def path_problem(value: Path) -> str | None:
    return None if value.is_absolute() else f"{str(value)!r} must be an absolute path (the timer does not run here)"


def globs_problem(value: list[str]) -> str | None:
    relative = [p for p in value if not p.startswith("/")]
    return f"must be absolute paths or globs: {', '.join(map(repr, relative))}" if relative else None


AbsPath = Annotated[Path, _refusing(path_problem)]
AbsoluteGlobs = Annotated[list[str], _refusing(globs_problem)]


# ---------------------------------------------------------------- restic: durations, -o options, locations
_DURATION = re.compile(r"^(\d+[ymdh])+$")


def duration_problem(value: str) -> str | None:
    """restic forget --keep-within*: y years, m months, d days, h hours (restic refuses M and w)."""
    if _DURATION.match(value):
        return None
    return f"{value!r} is not a restic duration: numbers with y (years), m (months), d (days), h (hours), e.g. 7d, 1y6m"


_OPTION = re.compile(r"^[a-z0-9]+\.[a-z0-9.-]+$")


def _option_text(value: Any) -> Any:
    # YAML writes `local.connections: 4`; restic's -o wants the text
    if not isinstance(value, dict):
        return value
    return {k: (str(v).lower() if isinstance(v, bool) else str(v)) if isinstance(v, int | float) else v
            for k, v in value.items()}


def options_problem(value: dict[str, str]) -> str | None:
    """restic's extended options are BACKEND.OPTION (`restic options` lists them), each value one line."""
    wrong = [key for key in value if not _OPTION.match(key)]
    if wrong:
        return (f"{', '.join(map(repr, wrong))}: restic's -o options are BACKEND.OPTION,"
                " e.g. s3.bucket-lookup or local.connections")
    if any("\n" in v or "\r" in v for v in value.values()):
        return "an option's value is one line"
    return None


# restic's repository location syntax (restic's internal/location): a path, or one of these backends
_BACKENDS = ("local", "sftp", "rest", "s3", "b2", "azure", "gs", "swift", "rclone")
_S3 = re.compile(r"^s3:(?:https?://)?(?P<host>[^/\s]+)/(?P<bucket>[^/\s]+)(?:/\S*)?$")


def location_problem(url: str) -> str | None:
    """Why `url` is not a restic repository location restic-orch can use, or None."""
    scheme, sep, rest = url.partition(":")
    if url.startswith("/"):
        return None
    if not sep or scheme not in _BACKENDS:
        return (f"{url!r} is not a restic repository location: use an absolute path or"
                f" {', '.join(b + ':' for b in _BACKENDS if b != 'local')} (see restic's docs)")
    if scheme == "local" and not rest.startswith("/"):
        return f"{url!r}: a local repository needs an absolute path (cron does not run in your directory)"
    if scheme == "s3":
        return _s3_location_problem(url)
    if not rest.strip("/"):
        return f"{url!r}: the {scheme}: location is empty"
    return None


def _s3_location_problem(url: str) -> str | None:
    match = _S3.match(url)
    if not match:
        return f"{url!r}: an S3 location needs an endpoint and a bucket: s3:https://ENDPOINT/BUCKET[/PREFIX]"
    parts = urllib.parse.urlsplit(url[3:] if "://" in url else "https://" + url[3:])
    problem = endpoint_problem(f"{parts.scheme}://{parts.netloc}")
    if problem and "@" in parts.netloc:
        return f"an S3 location: {problem}"  # the address is not echoed: it holds a key
    if problem:
        return f"{url!r}: the endpoint {match['host']!r} is not usable: {problem.split(': ', 1)[-1]}"
    problem = bucket_problem(match["bucket"])
    return f"{url!r}: {problem}" if problem else None


Duration = Annotated[str, _refusing(duration_problem)]
ResticOptions = Annotated[dict[str, str], BeforeValidator(_option_text), _refusing(options_problem)]
Location = Annotated[str, Field(min_length=1), _refusing(location_problem)]


# ---------------------------------------------------------------- network: hosts, S3 endpoints and buckets, PVE IDs
_HOSTNAME = re.compile(r"^(?!-)[A-Za-z0-9_-]{1,63}(?<!-)(\.(?!-)[A-Za-z0-9_-]{1,63}(?<!-))*\.?$")


def host_problem(value: str) -> str | None:
    """Why `value` is not a host name or IP address a client can connect to, or None."""
    if "://" in value:
        netloc = urllib.parse.urlsplit(value).hostname or "HOST"
        return f"{value!r} is a URL: write only the host ({netloc}); the port has its own field"
    if not value or any(c.isspace() for c in value):
        return f"{value!r}: a host name or address has no spaces and is not empty"
    if "/" in value:
        return f"{value!r}: a host name or address has no path"
    try:
        ipaddress.ip_address(value.strip("[]"))
        return None
    except ValueError:
        pass
    if ":" in value:
        return f"{value!r}: write the host alone; the port has its own field"
    return None if _HOSTNAME.match(value) else f"{value!r} is not a valid host name"


def endpoint_problem(url: str) -> str | None:
    """Why `url` is not an S3 endpoint boto3 can use (http(s)://HOST[:PORT]), or None."""
    parts = urllib.parse.urlsplit(url)
    if "@" in parts.netloc:
        # not echoed: what precedes @ is a key
        return "keys never go in an endpoint (they belong in env_file): write http(s)://HOST[:PORT]"
    if parts.scheme not in ("http", "https") or not parts.netloc:
        return f"{url!r} is not an S3 endpoint: write http(s)://HOST[:PORT], e.g. https://s3.gra.io.cloud.ovh.net"
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        return f"{url!r}: an S3 endpoint has no path (the bucket has its own field)"
    try:
        port = parts.port
    except ValueError:
        port = 0
    if port == 0:
        return f"{url!r}: the port must be a number from 1 to 65535"
    return host_problem(parts.hostname or "")


_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")


def bucket_problem(name: str) -> str | None:
    """Why `name` breaks S3's bucket naming rules (AWS's, which S3-compatible services follow), or None."""
    if not _BUCKET.match(name):
        return (f"{name!r} is not an S3 bucket name: 3 to 63 lower-case letters, digits, dots and hyphens,"
                " starting and ending with a letter or digit")
    if ".." in name or ".-" in name or "-." in name:
        return f"{name!r} is not an S3 bucket name: no '..', '.-' or '-.'"
    try:
        ipaddress.ip_address(name)
        return f"{name!r} is not an S3 bucket name: it must not look like an IP address"
    except ValueError:
        return None


Host = Annotated[str, _refusing(host_problem)]
Endpoint = Annotated[str, _refusing(endpoint_problem)]
Bucket = Annotated[str, _refusing(bucket_problem)]
# Proxmox VE's formats (PVE::JSONSchema): pve-vmid, pve-storage-id
VmId = Annotated[int, Field(ge=100, le=999_999_999)]
PveStorage = Annotated[str, Field(pattern=r"^[A-Za-z][A-Za-z0-9._-]*[A-Za-z0-9]$")]
