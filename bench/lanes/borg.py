"""(d) borg create of the same staged tree (Debian's borgbackup, repokey-blake2, lz4)."""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import subprocess
from pathlib import Path
from typing import Any

from ..context import Context, brief, du


def measure(ctx: Context, day: str, stage: Path) -> dict[str, Any]:
    bdir = ctx.work / "borg"
    env = dict(ctx.env, BORG_BASE_DIR=str(bdir / "base"), BORG_REPO=str(bdir / "repo"),
               BORG_PASSPHRASE=_passphrase(bdir), BORG_RELOCATED_REPO_ACCESS_IS_OK="yes")
    if not (bdir / "repo").exists():
        subprocess.run(["borg", "init", "--encryption", "repokey-blake2"], env=env, check=True, capture_output=True)
    ctx.say(f"{day} (d) borg create")
    before = du(bdir / "repo")
    res = ctx.probe(f"{day}-d-borg", ["borg", "create", "--json", "--compression", "lz4", f"::{day}", str(stage)],
                    "borg", env=env)
    after = du(bdir / "repo")
    out = brief(res) | {"local_added": after - before, "offsite_added": after - before}
    with contextlib.suppress(ValueError, KeyError):
        stats = json.loads(Path(res["stdout"]).read_text())["archive"]["stats"]
        out["deduplicated_size"] = stats["deduplicated_size"]
    ctx.say(f"   {res['wall']:.1f} s, CPU {out['cpu_pct']} %, repo +{(after - before) / 2**20:.1f} MiB")
    return out


def _passphrase(bdir: Path) -> str:
    bdir.mkdir(parents=True, exist_ok=True)
    f = bdir / "passphrase"
    if not f.exists():
        f.write_text(secrets.token_urlsafe(24))
        os.chmod(f, 0o600)
    return f.read_text()
