"""One offsite repository address across the docs, scripts and the role's example inventory, and IAM
policies whose resources match its bucket and prefix (a policy on another prefix locks restic out)."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
FILES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md")), *sorted((ROOT / "docs").glob("*.yml")),
         *sorted((ROOT / "scripts").glob("*.sh")), *sorted((ROOT / "ansible" / "inventory").rglob("*.yml")),
         ROOT / "ansible" / "roles" / "backup" / "README.md",
         ROOT / "ansible" / "roles" / "backup" / "defaults" / "main.yml"]
URL_RE = re.compile(r"s3:https?://[^\s'\"`)\\]+")
ARN_RE = re.compile(r"arn:aws:s3:::([a-z0-9.\-]+)(/[^\"'\s]*)?")
TFSTATE_BUCKET = "infra-oldevops-tfstate"


def _texts() -> dict[Path, str]:
    return {f: f.read_text(encoding="utf-8") for f in FILES if f.is_file() and "restore-tests" not in f.parts}


def test_every_offsite_address_is_the_same():
    found = {}
    for path, text in _texts().items():
        for url in URL_RE.findall(text):
            if re.search(r"[A-Z]{4,}", url):  # a marked placeholder such as s3:https://ENDPOINT/BUCKET/PATH
                continue
            found.setdefault(url, []).append(str(path.relative_to(ROOT)))
    assert len(found) == 1, found
    assert next(iter(found)) == "s3:https://s3.gra.io.cloud.ovh.net/infra-oldevops-backups/restic"


def test_policies_name_the_repository_bucket_and_prefix():
    bucket, prefix = "infra-oldevops-backups", "restic"
    seen = 0
    for path, text in _texts().items():
        for name, rest in ARN_RE.findall(text):
            if name == TFSTATE_BUCKET:
                continue
            seen += 1
            assert name == bucket, (path, name)
            # the repository's prefix, or bootstrap/ beside it (the bundle, restic_orch/bundle.py)
            assert rest == "" or rest.startswith((f"/{prefix}/", "/bootstrap/")), (path, rest)
    assert seen >= 3
