"""The file helpers the hooks share: keep_aside never loses or clobbers a file, replacing is all or nothing."""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

import pytest

from restic_orch.hooks import _files
from restic_orch.hooks._files import keep_aside, open_private, replacing


def _file(path: Path, data: bytes, mode: int = 0o640) -> Path:
    path.write_bytes(data)
    os.chmod(path, mode)
    os.utime(path, (1_700_000_000, 1_700_000_000))
    return path


@pytest.fixture(params=["hard link", "copy"])
def links(request, monkeypatch):
    """Both ways keep_aside works: a hard link, and the copy a filesystem without hard links gets."""
    if request.param == "copy":
        def no_link(src, dst):
            raise OSError(errno.EPERM, "Operation not permitted", str(src))
        monkeypatch.setattr(_files.os, "link", no_link)
    return request.param


def test_the_original_is_kept_as_it_was(tmp_path: Path, links: str):
    original = _file(tmp_path / "vault.yml", b"$ANSIBLE_VAULT;1.1;AES256\nabc\n")
    before = original.stat()
    kept = keep_aside(original)
    assert kept == tmp_path / "vault.yml.bak"
    assert not original.exists()
    assert kept.read_bytes() == b"$ANSIBLE_VAULT;1.1;AES256\nabc\n"
    after = kept.stat()
    assert stat.S_IMODE(after.st_mode) == 0o640 and after.st_mtime == before.st_mtime
    assert (after.st_ino == before.st_ino) == (links == "hard link")


def test_a_second_keep_aside_picks_a_new_name(tmp_path: Path, links: str):
    first = keep_aside(_file(tmp_path / "state.tfstate", b"first"))
    second = keep_aside(_file(tmp_path / "state.tfstate", b"second"))
    third = keep_aside(_file(tmp_path / "state.tfstate", b"third"))
    assert (first.name, second.name, third.name) == ("state.tfstate.bak", "state.tfstate.bak.1", "state.tfstate.bak.2")
    assert [p.read_bytes() for p in (first, second, third)] == [b"first", b"second", b"third"]


def test_replacing_puts_the_file_in_place_whole(tmp_path: Path):
    path = _file(tmp_path / "app.dump", b"yesterday")
    with replacing(path) as partial:
        assert partial == tmp_path / "app.dump.partial"
        with open_private(partial) as handle:
            handle.write(b"today")
        assert path.read_bytes() == b"yesterday"  # nothing is in place before the block succeeded
    assert path.read_bytes() == b"today" and not partial.exists()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


@pytest.mark.parametrize("error", [OSError("disk full"), KeyboardInterrupt()])
def test_replacing_removes_the_partial_file_on_any_error(tmp_path: Path, error: BaseException):
    path = _file(tmp_path / "app.dump", b"yesterday")
    with pytest.raises(type(error)), replacing(path) as partial:
        partial.write_bytes(b"half")
        raise error
    assert path.read_bytes() == b"yesterday" and not partial.exists()
