"""restic's output parsers against stored output of restic 0.14, 0.16, 0.18 and 0.19.

The samples live in tests/fixtures/restic/<version>/; their README says which were printed by a real binary
(make_samples.sh) and which were transcribed from restic's source. A command that printed nothing has no
file: exit_codes.txt records that it ran.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from restic_orch import restic

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "restic"


def sample(version: str, name: str) -> str:
    path = FIXTURES / version / name
    if path.exists():
        return path.read_text(encoding="utf-8")
    ran = {line.split()[0] for line in (FIXTURES / version / "exit_codes.txt").read_text().splitlines()}
    assert name.split(".")[0] in ran, f"no sample {version}/{name}"
    return ""


# --- version ------------------------------------------------------------------------------------------
VERSIONS = [
    # version dir, parsed version, has --retry-lock
    ("0.14", (0, 14, 0), False),
    ("0.16", (0, 16, 4), True),
    ("0.18", (0, 18, 0), True),
    ("0.19", (0, 19, 1), True),
]


@pytest.mark.parametrize(("version", "expected", "retry_lock"), VERSIONS)
def test_parse_version(version: str, expected: tuple[int, int, int], retry_lock: bool) -> None:
    found = restic.parse_version(sample(version, "version.txt"))
    assert (found.major, found.minor, found.patch) == expected
    assert str(found) == ".".join(map(str, expected))
    assert found.has_retry_lock is retry_lock


def test_parse_version_refuses_text_that_is_no_version() -> None:
    with pytest.raises(restic.ResticError, match="cannot read the restic version"):
        restic.parse_version(sample("0.14", "wrong_password.stderr.txt"))


# --- classify: stderr of a failed command -> error class ----------------------------------------------
CLASSIFY = [
    # version dir, stderr sample, error class, words of the message restic-orch shows
    ("0.14", "wrong_password.stderr.txt", restic.WrongPassword, "wrong password"),
    ("0.14", "no_repo.stderr.txt", restic.RepoNotFound, "no repository at this location"),
    ("0.14", "locked.stderr.txt", restic.RepoLocked, "locked by another restic"),
    ("0.14", "s3_refused.stderr.txt", restic.RepoUnreachable, "connection refused"),
    ("0.14", "s3_no_bucket.stderr.txt", restic.RepoNotFound, "the bucket does not exist"),
    ("0.16", "wrong_password.stderr.txt", restic.WrongPassword, "wrong password"),
    ("0.16", "no_repo.stderr.txt", restic.RepoNotFound, "no repository at this location"),
    ("0.16", "locked.stderr.txt", restic.RepoLocked, "locked by another restic"),
    ("0.18", "wrong_password.stderr.txt", restic.WrongPassword, "wrong password"),
    ("0.18", "no_repo.stderr.txt", restic.RepoNotFound, "no repository at this location"),
    ("0.18", "locked.stderr.txt", restic.RepoLocked, "locked by another restic"),
    ("0.18", "s3_refused.stderr.txt", restic.RepoUnreachable, "connection refused"),
    ("0.18", "s3_no_bucket.stderr.txt", restic.RepoNotFound, "the bucket does not exist"),
    ("0.19", "wrong_password.stderr.txt", restic.WrongPassword, "wrong password"),
    ("0.19", "no_repo.stderr.txt", restic.RepoNotFound, "no repository at this location"),
    ("0.19", "locked.stderr.txt", restic.RepoLocked, "locked by another restic"),
    ("0.19", "s3_refused.stderr.txt", restic.RepoUnreachable, "connection refused"),
    ("0.19", "s3_no_bucket.stderr.txt", restic.RepoNotFound, "the bucket does not exist"),
]


@pytest.mark.parametrize(("version", "name", "kind", "words"), CLASSIFY)
def test_classify(version: str, name: str, kind: type[restic.ResticError], words: str) -> None:
    stderr = sample(version, name)
    error = restic.classify(stderr, "local")
    assert type(error) is kind
    assert str(error).startswith("local: ") and words in str(error)
    assert error.repo == "local" and error.stderr == stderr


def test_classify_keeps_the_last_lines_of_an_unknown_error() -> None:
    # stderr that names no known failure (here a partial backup's warning): restic's own last words are shown
    stderr = sample("0.14", "backup_partial.stderr.txt")
    error = restic.classify(stderr, "local")
    assert type(error) is restic.ResticError
    assert str(error).endswith("Warning: at least one source file could not be read")


# --- copy: which source snapshot became which copy ----------------------------------------------------
COPY_014 = [("f3c79933", "408eff37", False), ("1ac75c3b", "905b395f", False), ("43f5e65a", "09e17ded", False)]
COPY = [
    # version dir, stdout sample, (source, target, skipped) for each snapshot restic named
    ("0.14", "copy_new.txt", COPY_014),
    ("0.14", "copy_again.txt", [(s, t, True) for s, t, _ in COPY_014]),
    ("0.14", "copy_none.txt", []),
    ("0.16", "copy_new.txt", COPY_014),
    ("0.16", "copy_again.txt", []),  # from 0.15 on, skipped snapshots are printed with -v only
    ("0.18", "copy_new.txt",
     [("a932d59c", "13a5048c", False), ("e27dc340", "7c198fd0", False), ("c7e7b8c9", "87c29488", False)]),
    ("0.18", "copy_again.txt", []),
    ("0.18", "copy_none.txt", []),
    # 0.19 copies in batches and names each copy's source after all the announcements
    ("0.19", "copy_new.txt",
     [("ded7477b", "cde73ce2", False), ("9c39abb9", "133b710e", False), ("4494a10e", "3c0a0ceb", False)]),
    ("0.19", "copy_again.txt", []),
    ("0.19", "copy_none.txt", []),
]


@pytest.mark.parametrize(("version", "name", "expected"), COPY)
def test_parse_copy_output(version: str, name: str, expected: list[tuple[str, str, bool]]) -> None:
    copied = restic.parse_copy_output(sample(version, name))
    assert [(c.source, c.target, c.skipped) for c in copied] == expected


@pytest.mark.parametrize("version", ["0.14", "0.18", "0.19"])
def test_copy_pairs_agree_with_the_copies_restic_recorded(version: str) -> None:
    # each copy keeps its source's id as `original`: the pairs read from the text must say the same
    offsite = json.loads(sample(version, "snapshots_offsite.json"))
    original = {s["short_id"]: s["original"][:8] for s in offsite}
    copied = restic.parse_copy_output(sample(version, "copy_new.txt"))
    assert {c.target: c.source for c in copied} == original


# --- forget --json ------------------------------------------------------------------------------------
FORGET_014 = [("pve1", [], ["1ac75c3b"], ["43f5e65a", "f3c79933"])]
FORGET_018 = [("pve1", [], ["e27dc340"], ["a932d59c", "c7e7b8c9"])]
FORGET_019 = [("pve1", [], ["4494a10e"], ["ded7477b", "9c39abb9"])]
FORGET = [
    # version dir, stdout sample, (host, group tags, kept short ids, removed short ids) per group
    ("0.14", "forget.json", FORGET_014),
    ("0.14", "forget_dry_run.json", FORGET_014),
    ("0.14", "forget_none.json", []),  # nothing matched: 0.14 prints nothing at all
    ("0.16", "forget.json", FORGET_014),
    ("0.18", "forget.json", FORGET_018),
    ("0.18", "forget_dry_run.json", FORGET_018),
    ("0.18", "forget_none.json", []),
    ("0.19", "forget.json", FORGET_019),
    ("0.19", "forget_dry_run.json", FORGET_019),
    ("0.19", "forget_none.json", []),
]


@pytest.mark.parametrize(("version", "name", "expected"), FORGET)
def test_parse_forget_output(version: str, name: str, expected: list[tuple[str, list[str], list[str], list[str]]]
                             ) -> None:
    groups = restic.parse_forget_output(sample(version, name))
    assert [(g.host, g.tags, [s.short_id for s in g.keep], [s.short_id for s in g.remove]) for g in groups] == expected
    for snap in [s for g in groups for s in g.keep + g.remove]:
        assert snap.hostname == "pve1" and snap.tags == ["restic-orch"]
        assert snap.paths == ["/tmp/restic-samples/data/2026-11-20"]
        assert datetime(2026, 11, 18, 3, tzinfo=UTC) <= snap.time <= datetime(2026, 11, 20, 3, tzinfo=UTC)
        assert snap.id.startswith(snap.short_id) and len(snap.id) == 64


# --- backup --json ------------------------------------------------------------------------------------
PARTIAL_ERROR_014 = "/tmp/restic-samples/nobody/src/secret: "  # 0.14's error JSON has Op/Path/Err, no message
PARTIAL_ERROR_017 = ("/tmp/restic-samples/nobody/src/secret: open /tmp/restic-samples/nobody/src/secret:"
                     " permission denied")
BACKUP = [
    # version dir, case (<case>.json stdout, <case>.stderr.txt), partial, snapshot id, files_new, data_added,
    # errors
    ("0.14", "backup", False, "f3c79933", 2, 202508, []),
    ("0.14", "backup_partial", True, "c4194d46", 1, 1818,
     [PARTIAL_ERROR_014, "Warning: at least one source file could not be read"]),
    ("0.16", "backup", False, "f3c7993357a897a59a388dd960f91fc49e2551b5b4281e3ef403c6d293e82ecf", 2, 202508, []),
    ("0.18", "backup", False, "c7e7b8c9c8f9905422c2313abef0732193b6a98514125dfebc8735e272231168", 2, 202508, []),
    ("0.18", "backup_partial", True, "54c2aedc2bfba4574fde6310e6cd142c3811e3e66d9742e3022b97c747bf1d66", 1, 1818,
     [PARTIAL_ERROR_017]),
    ("0.19", "backup", False, "9c39abb998515941af6dad87967d3e0cee1ba5a83011ef039e836ca19e0eaeb5", 2, 202502, []),
    ("0.19", "backup_partial", True, "183f3d0ad159a3b24e12751915685b74754cac79e73ad0516fc0f53940db8c71", 1, 1806,
     [PARTIAL_ERROR_017]),
]


@pytest.mark.parametrize(("version", "case", "partial", "snapshot_id", "files_new", "data_added", "errors"), BACKUP)
def test_parse_backup_output(version: str, case: str, partial: bool, snapshot_id: str, files_new: int,
                             data_added: int, errors: list[str]) -> None:
    stderr = sample(version, f"{case}.stderr.txt") if (FIXTURES / version / f"{case}.stderr.txt").exists() else ""
    summary = restic.parse_backup_output(sample(version, f"{case}.json"), stderr, partial=partial)
    assert summary.snapshot_id == snapshot_id
    assert (summary.files_new, summary.data_added, summary.partial) == (files_new, data_added, partial)
    assert summary.total_files_processed == files_new and summary.total_duration > 0
    assert summary.errors == errors


def test_backup_without_summary_is_an_error_naming_restics_words() -> None:
    with pytest.raises(restic.ResticError, match="printed no summary: Fatal: wrong password"):
        restic.parse_backup_output("", sample("0.18", "wrong_password.stderr.txt"))
