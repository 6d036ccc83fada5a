"""Snapshot tags: written byte-identical to what repositories already hold, and read back from a Snapshot."""

from __future__ import annotations

from restic_orch import tags
from restic_orch.restic import Snapshot


def _snapshot(tag_list: list[str]) -> Snapshot:
    return Snapshot.from_json({"id": "a" * 64, "time": "2026-11-26T03:00:00.123456789Z", "hostname": "pve1",
                               "paths": ["/var/lib/restic-orch/staging/2026-11-26"], "tags": tag_list})


def test_the_tags_of_a_backup_are_the_strings_repositories_hold():
    assert tags.backup_tags("20261126T030000Z-ab12", "complete", 1234, ["a", "b"]) == [
        "restic-orch", "run:20261126T030000Z-ab12", "status:complete", "bytes:1234", "kind:a", "kind:b"]
    assert tags.backup_tags("r", "partial", 0, [], scoped=True) == [
        "restic-orch", "run:r", "status:partial", "bytes:0", "scope:only"]
    assert tags.TAG == "restic-orch" and tags.run_tag("r1") == "run:r1"


def test_a_snapshot_reads_back_what_was_written():
    snap = _snapshot(tags.backup_tags("r1", "partial", 4096, ["b", "a"], scoped=True))
    assert tags.kinds(snap) == ["b", "a"]
    assert tags.status(snap) == "partial"
    assert tags.size(snap) == 4096
    assert tags.scoped(snap)


def test_a_snapshot_without_our_tags_has_defaults():
    snap = _snapshot(["other", "bytes:notanumber"])
    assert tags.kinds(snap) == [] and tags.status(snap) == "" and tags.size(snap) == 0
    assert not tags.scoped(snap)
    assert tags.size(_snapshot([])) == 0
