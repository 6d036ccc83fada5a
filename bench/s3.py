"""S3 helpers: bucket sizes (bytes uploaded = size after - size before), and the naive script's uploader.

`python -m bench.s3 put --endpoint E --env-file F --bucket B --prefix P` reads stdin and stores it as
64 MiB objects P.00000, P.00001, ... (like `split -b 64M` + `aws s3 cp`): moto assembles a multipart
upload in memory, which a multi-GiB stream would not survive; the bytes sent are the same.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from pathlib import Path
from typing import Any

PART = 64 * 2**20


def _env(env_file: Path) -> dict[str, str]:
    out = {}
    for line in Path(env_file).read_text().splitlines():
        if "=" in line and not line.startswith("#"):
            k, v = line.split("=", 1)
            out[k.strip()] = v.strip()
    return out


def lab_env_file(s3info: dict[str, Any]) -> Path:
    """The key the bench uses on its own buckets (bench-orch-*, bench-raw, bench-naive): the lab's owner key.

    The lab's S3 enforces the docs' policies: its `env_file` is the host's offsite key, which reaches the lab's
    `offsite` bucket only (restic/ and bootstrap/ in it) and deletes nothing but restic's lock files.
    """
    return Path(s3info.get("root_env_file") or s3info["env_file"])


def client(endpoint: str, env_file: Path) -> Any:
    import boto3
    from botocore.config import Config

    env = _env(env_file)
    return boto3.client("s3", endpoint_url=endpoint, region_name=env.get("AWS_DEFAULT_REGION", "us-east-1"),
                        aws_access_key_id=env["AWS_ACCESS_KEY_ID"], aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
                        config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 3}))


def bucket_bytes(s3: Any, bucket: str, prefix: str = "") -> tuple[int, int]:
    """(total bytes, object count); (0, 0) when the bucket does not exist."""
    total = count = 0
    try:
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            for obj in page.get("Contents", []):
                total += obj["Size"]
                count += 1
    except s3.exceptions.NoSuchBucket:
        return 0, 0
    return total, count


def ensure_bucket(s3: Any, bucket: str) -> None:
    try:
        s3.head_bucket(Bucket=bucket)
    except Exception:  # noqa: BLE001 - 404 or 403: create it
        s3.create_bucket(Bucket=bucket)


def bucket_keys(s3: Any, bucket: str, prefix: str = "") -> set[str]:
    """Every key in the bucket (under prefix); empty when the bucket does not exist."""
    try:
        pages = list(s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix))
    except s3.exceptions.NoSuchBucket:
        return set()
    return {o["Key"] for page in pages for o in page.get("Contents", [])}


def delete_keys(s3: Any, bucket: str, keys: set[str]) -> None:
    ordered = sorted(keys)
    for i in range(0, len(ordered), 1000):  # DeleteObjects takes at most 1000 keys
        s3.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": k} for k in ordered[i:i + 1000]]})


def empty_bucket(s3: Any, bucket: str, prefix: str = "", delete: bool = False) -> None:
    """Delete the objects (moto keeps them in memory or temp files); optionally the bucket too."""
    delete_keys(s3, bucket, bucket_keys(s3, bucket, prefix))
    if delete:
        with contextlib.suppress(s3.exceptions.NoSuchBucket):
            s3.delete_bucket(Bucket=bucket)


def put_stream(endpoint: str, env_file: Path, bucket: str, prefix: str) -> int:
    s3 = client(endpoint, env_file)
    stdin = sys.stdin.buffer
    index = sent = 0
    while True:
        buf = bytearray()
        while len(buf) < PART:
            chunk = stdin.read(min(4 * 2**20, PART - len(buf)))
            if not chunk:
                break
            buf += chunk
        if not buf and index:
            break
        s3.put_object(Bucket=bucket, Key=f"{prefix}.{index:05}", Body=bytes(buf))
        sent += len(buf)
        index += 1
        if len(buf) < PART:
            break
    return sent


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.s3")
    sub = parser.add_subparsers(dest="cmd", required=True)
    put = sub.add_parser("put")
    put.add_argument("--endpoint", required=True)
    put.add_argument("--env-file", required=True, type=Path)
    put.add_argument("--bucket", required=True)
    put.add_argument("--prefix", required=True)
    args = parser.parse_args(argv)
    sent = put_stream(args.endpoint, args.env_file, args.bucket, args.prefix)
    print(sent)
    return 0


if __name__ == "__main__":
    sys.exit(main())
