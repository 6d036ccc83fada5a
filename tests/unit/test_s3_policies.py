"""The S3 policies: one JSON file each in docs/s3-policies/, quoted verbatim by the docs and attached by the lab.

What each key may do is proven against moto in tests/e2e/test_offsite_append_only.py and
tests/integration/test_hook_terraform.py; here: the docs show exactly the files, the lab uses exactly the
files (only the bucket names and the repository prefix replaced), and the files keep their promises.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

from restic_orch.config import Config
from restic_orch.lab import s3

ROOT = Path(__file__).resolve().parents[2]
POLICIES = ROOT / "docs" / "s3-policies"
GUIDE = ROOT / "docs" / "getting-started.md"
SECURITY = ROOT / "docs" / "security.md"
RUNBOOK = ROOT / "docs" / "runbooks" / "disaster-recovery.md"
BUCKET, PREFIX, TFSTATE = "infra-oldevops-backups", "restic", "infra-oldevops-tfstate"


def _blocks(text: str, language: str) -> list[str]:
    return re.findall(rf"^```{language}\n(.*?)^```$", text, re.S | re.M)


def _guide_section_1() -> str:
    text = GUIDE.read_text()
    return text[text.index("## 1. OVH Object Storage"):text.index("## 2. ")]


def _statements(name: str) -> list[dict]:
    return json.loads((POLICIES / name).read_text())["Statement"]


def _grants(name: str, action: str) -> list[str]:
    """The resources a policy file allows `action` on (no policy here uses wildcards in actions)."""
    return [r for st in _statements(name) if st["Effect"] == "Allow" and action in st["Action"]
            for r in st["Resource"]]


@pytest.mark.parametrize(("doc", "names"), [
    ("getting-started section 1", ["offsite-host.json", "offsite-admin.json", "tfstate-readonly.json"]),
    ("security.md", ["offsite-host.json", "tfstate-terraform.json"]),
    ("disaster-recovery runbook", ["offsite-host.json"]),
])
def test_the_docs_quote_the_files_verbatim(doc, names):
    text = {"getting-started section 1": _guide_section_1, "security.md": SECURITY.read_text,
            "disaster-recovery runbook": RUNBOOK.read_text}[doc]()
    blocks = _blocks(text, "json")
    for name in names:
        assert (POLICIES / name).read_text() in blocks, f"{doc} does not quote docs/s3-policies/{name} verbatim"
    # and no other policy: every JSON block with a Statement is one of the files
    files = {p.read_text() for p in POLICIES.glob("*.json")}
    assert all(block in files for block in blocks if '"Statement"' in block), doc


def test_the_lab_attaches_every_file_and_only_these():
    used = {policy for _user, policy, _env in s3.KEYS.values() if policy}
    assert used == {p.name for p in POLICIES.glob("*.json")}
    assert s3.POLICY_DIR == POLICIES


def test_the_host_key_deletes_nothing_but_restic_lock_files():
    name = "offsite-host.json"
    assert _grants(name, "s3:DeleteObject") == [f"arn:aws:s3:::{BUCKET}/{PREFIX}/locks/*"]
    # the repository, and the bootstrap bundle beside it (restic_orch/bundle.py)
    both = [f"arn:aws:s3:::{BUCKET}/{PREFIX}/*", f"arn:aws:s3:::{BUCKET}/bootstrap/*"]
    assert _grants(name, "s3:PutObject") == both
    assert _grants(name, "s3:GetObject") == both
    assert _grants(name, "s3:ListBucket") == [f"arn:aws:s3:::{BUCKET}"]
    actions = {a for st in _statements(name) for a in st["Action"]}
    for forbidden in ("s3:DeleteObjectVersion", "s3:GetObjectVersion", "s3:ListBucketVersions",
                      "s3:PutBucketVersioning", "s3:PutLifecycleConfiguration", "s3:PutBucketPolicy",
                      "s3:DeleteBucket", "s3:PutBucketObjectLockConfiguration", "s3:BypassGovernanceRetention"):
        assert forbidden not in actions
    assert all("*" not in a for a in actions) and all(st["Effect"] == "Allow" for st in _statements(name))


def test_the_admin_key_may_forget_and_prune_but_not_destroy_versions():
    name = "offsite-admin.json"
    both = [f"arn:aws:s3:::{BUCKET}/{PREFIX}/*", f"arn:aws:s3:::{BUCKET}/bootstrap/*"]
    assert _grants(name, "s3:DeleteObject") == both
    assert _grants(name, "s3:GetObjectVersion") == both
    actions = {a for st in _statements(name) for a in st["Action"]}
    assert "s3:DeleteObjectVersion" not in actions and "s3:PutBucketVersioning" not in actions
    assert all("*" not in a for a in actions)


def test_the_tfstate_key_only_reads():
    actions = {a for st in _statements("tfstate-readonly.json") for a in st["Action"]}
    assert actions == {"s3:ListBucket", "s3:GetBucketLocation", "s3:GetObject"}
    # Terraform's own key writes states and removes only its lock files
    assert _grants("tfstate-terraform.json", "s3:DeleteObject") == [f"arn:aws:s3:::{TFSTATE}/*.tflock"]


def test_no_policy_grants_delete_on_a_bucket_itself():
    """moto authorizes a batch DeleteObjects as s3:DeleteObject on the bucket ARN (then deletes any key): a
    policy must never grant that (AWS would check each key; either way it says what it means)."""
    for path in POLICIES.glob("*.json"):
        for resource in _grants(path.name, "s3:DeleteObject"):
            assert "/" in resource.removeprefix("arn:aws:s3:::"), (path.name, resource)


def test_lab_policy_replaces_only_buckets_and_prefix():
    doc = json.loads((POLICIES / "offsite-host.json").read_text())
    lab = s3.lab_policy("offsite-host.json", {"offsite": "lab-off", "tfstate": "lab-tf"}, prefix="")
    assert [st["Sid"] for st in lab["Statement"]] == [st["Sid"] for st in doc["Statement"]]
    # bootstrap/ (beside the repository) keeps its key in the lab's bucket
    assert [r for st in lab["Statement"] for r in st["Resource"]] == [
        "arn:aws:s3:::lab-off", "arn:aws:s3:::lab-off/*", "arn:aws:s3:::lab-off/locks/*",
        "arn:aws:s3:::lab-off/bootstrap/*"]
    for ours, theirs in zip(lab["Statement"], doc["Statement"], strict=True):
        # moto's name for HEAD on a bucket sits next to s3:ListBucket, nothing else is added
        extra = ["s3:HeadBucket"] if "s3:ListBucket" in theirs["Action"] else []
        assert ours["Action"] == theirs["Action"] + extra and ours["Effect"] == theirs["Effect"]
    prefixed = s3.lab_policy("offsite-admin.json", {"offsite": "o", "tfstate": "t"}, prefix="repo/x")
    assert prefixed["Statement"][1]["Resource"] == ["arn:aws:s3:::o/repo/x/*", "arn:aws:s3:::o/bootstrap/*"]
    assert s3.lab_policy("tfstate-readonly.json", {"offsite": "o", "tfstate": "t"})["Statement"][1]["Resource"] \
        == ["arn:aws:s3:::t/*"]


def test_lab_policy_refuses_a_resource_it_cannot_map(tmp_path, monkeypatch):
    monkeypatch.setattr(s3, "POLICY_DIR", tmp_path)
    for resource in ("arn:aws:s3:::someone-else/*", f"arn:aws:s3:::{BUCKET}/elsewhere/*"):
        (tmp_path / "p.json").write_text(json.dumps(
            {"Statement": [{"Effect": "Allow", "Action": ["s3:GetObject"], "Resource": [resource]}]}))
        with pytest.raises(ValueError, match=re.escape(resource)):
            s3.lab_policy("p.json")


def test_the_trusted_machines_example_configuration_is_valid():
    blocks = [b for b in re.findall(r"^   ```yaml\n(.*?)^   ```$", SECURITY.read_text(), re.S | re.M)
              if "repositories:" in b]
    assert len(blocks) == 1
    data = yaml.safe_load(re.sub(r"^ {3}", "", blocks[0], flags=re.M))
    config = Config.model_validate(data)
    assert config.repositories.local is None
    assert config.repositories.offsite.url == f"s3:https://s3.gra.io.cloud.ovh.net/{BUCKET}/{PREFIX}"
    assert config.repositories.offsite.retention.restic_args() == ["--keep-within-daily", "30d"]
