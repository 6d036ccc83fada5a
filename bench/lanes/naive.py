"""(c) the naive script: tar | zstd | upload to the same S3."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .. import s3 as bs3
from ..context import Context, brief

BUCKET = "bench-naive"


def measure(ctx: Context, day: str, stage: Path) -> dict[str, Any]:
    bs3.ensure_bucket(ctx.s3, BUCKET)
    ctx.say(f"{day} (c) naive: tar | zstd | upload")
    s3_0 = bs3.bucket_bytes(ctx.s3, BUCKET)[0]
    script = (f"set -o pipefail; tar -C {stage.parent} -cf - {stage.name} | zstd -q -3 -T0 | "
              f"{ctx.py} -m bench.s3 put --endpoint {ctx.s3info['endpoint']} "
              f"--env-file {bs3.lab_env_file(ctx.s3info)} --bucket {BUCKET} --prefix {day}/backup.tar.zst")
    res = ctx.probe(f"{day}-c-naive", ["bash", "-c", script], "naive")
    s3_1 = bs3.bucket_bytes(ctx.s3, BUCKET)[0]
    out = brief(res) | {"s3_uploaded": s3_1 - s3_0, "offsite_added": s3_1 - s3_0}
    bs3.empty_bucket(ctx.s3, BUCKET, prefix=f"{day}/")  # measured; free moto's memory and temp files
    ctx.say(f"   {res['wall']:.1f} s, CPU {out['cpu_pct']} %, uploaded {(s3_1 - s3_0) / 2**20:.1f} MiB")
    return out
