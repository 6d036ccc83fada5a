"""The benchmark's checkpoint: a day's backup is undone so that the same day can be measured again.

Real restic, a local repository and a bucket on the lab's S3 server: after restore, both repositories hold
exactly the snapshots they held at the checkpoint, pass `restic check`, and take the day's backup again.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

import pytest

from bench.checkpoint import Checkpoint
from restic_orch import masking, restic
from restic_orch.config import load_config
from restic_orch.escrow import parse_s3_url
from restic_orch.lab.s3 import s3_client


def _repos(lab, tmp_path: Path, bucket: str) -> tuple[restic.Repo, restic.Repo]:
    config = load_config(lab["config"])
    offsite_cfg = config.repositories.offsite
    endpoint = parse_s3_url(offsite_cfg.url).endpoint  # the lab's repository sits under restic/ of its bucket
    pw = tmp_path / "pw"
    pw.write_text(secrets.token_hex(16))
    os.chmod(pw, 0o600)
    cache = tmp_path / "state" / "cache"
    local = restic.Repo("local", str(tmp_path / "repo"), pw, cache_dir=cache)
    offsite = restic.Repo("offsite", f"s3:{endpoint}/{bucket}", pw, cache_dir=cache,
                          # its own ckpt-* buckets: the lab's owner key (the host's reaches only the offsite bucket)
                          env=masking.read_env_file(Path(lab["state"]["services"]["s3"]["root_env_file"])),
                          options={"s3.bucket-lookup": "path"})
    return local, offsite


def test_restore_undoes_a_day_in_both_repositories_and_the_state(lab, tmp_path: Path):
    bucket = f"ckpt-{secrets.token_hex(4)}"
    s3 = s3_client(lab["state"]["services"]["s3"])
    s3.create_bucket(Bucket=bucket)
    local, offsite = _repos(lab, tmp_path, bucket)
    day = tmp_path / "staging" / "2026-11-26"
    day.mkdir(parents=True)
    (day / "a.bin").write_bytes(os.urandom(2 * 2**20))
    local.init()
    offsite.init(copy_chunker_from=local)
    local.backup([day], tags=["day1"], host="pve1")
    offsite.copy_from(local)
    state_file = tmp_path / "state" / "known.json"
    state_file.parent.mkdir(exist_ok=True)
    state_file.write_text("day 1")

    mark = Checkpoint(tmp_path / "ckpt", linked=[tmp_path / "repo"], copied=[tmp_path / "state"],
                      bucket=bucket).take(s3)
    (day / "b.bin").write_bytes(os.urandom(2 * 2**20))
    local.backup([day], tags=["day2"], host="pve1")
    offsite.copy_from(local)
    state_file.write_text("day 2")  # in place: the checkpoint's copy must not follow
    assert len(local.snapshots()) == len(offsite.snapshots()) == 2

    mark.restore(s3)
    for repo in (local, offsite):
        assert [s.tags for s in repo.snapshots()] == [["day1"]]
        assert repo.check(read_data_subset="100%").ok
    assert state_file.read_text() == "day 1"

    # the day runs again on the restored repositories, and the checkpoint still restores after that
    local.backup([day], tags=["day2"], host="pve1")
    offsite.copy_from(local)
    assert [s.tags for s in offsite.snapshots()] == [["day1"], ["day2"]]
    mark.restore(s3)
    assert [s.tags for s in local.snapshots()] == [["day1"]] and offsite.check().ok
    mark.drop()
    assert not (tmp_path / "ckpt").exists()


def test_a_checkpoint_of_nothing_restores_to_nothing(lab, tmp_path: Path):
    """Day 1's raw restic: no repository and no bucket before the day (restic init creates the bucket), so
    restore removes what the day created."""
    bucket = f"ckpt-{secrets.token_hex(4)}"
    s3 = s3_client(lab["state"]["services"]["s3"])
    mark = Checkpoint(tmp_path / "ckpt", linked=[tmp_path / "repo"], bucket=bucket).take(s3)
    local, offsite = _repos(lab, tmp_path, bucket)
    local.init()
    offsite.init(copy_chunker_from=local)
    mark.restore(s3)
    assert not (tmp_path / "repo").exists()
    assert s3.list_objects_v2(Bucket=bucket).get("KeyCount", 0) == 0
    local.init()  # and the day's init succeeds again
    offsite.init(copy_chunker_from=local)


def test_objects_deleted_since_the_checkpoint_make_restore_refuse(lab, tmp_path: Path):
    """forget removes snapshot objects, which a bucket checkpoint cannot bring back: restore must say so
    rather than leave a repository that lost part of what the checkpoint held."""
    bucket = f"ckpt-{secrets.token_hex(4)}"
    s3 = s3_client(lab["state"]["services"]["s3"])
    local, offsite = _repos(lab, tmp_path, bucket)
    day = tmp_path / "staging" / "2026-11-26"
    day.mkdir(parents=True)
    (day / "a.bin").write_bytes(os.urandom(2**20))
    local.init()
    offsite.init(copy_chunker_from=local)
    for tag in ("day1", "day2"):
        local.backup([day], tags=[tag], host="pve1")
    offsite.copy_from(local)
    mark = Checkpoint(tmp_path / "ckpt", linked=[tmp_path / "repo"], bucket=bucket).take(s3)
    offsite.forget(["--keep-last", "1"], host="pve1", tags=[])
    assert len(offsite.snapshots()) == 1
    with pytest.raises(RuntimeError, match="deleted since"):
        mark.restore(s3)
