"""The fake PVE's archive reader reads a compressed tar to its very end, as tar does."""

from __future__ import annotations

import io
import subprocess
import tarfile
from pathlib import Path

from restic_orch.lab.pve import archive


def test_padding_after_the_end_marker_does_not_break_a_good_archive(tmp_path: Path):
    """tarfile stops at the end-of-archive marker: if the rest of the stream were left unread, zstd would
    still be writing it and die of a broken pipe, and the restore would call a good archive broken."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tar:
        data = b"hello\n"
        info = tarfile.TarInfo("./etc/hostname")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    # zero records after the marker, more than a pipe holds (GNU tar pads to its blocking factor)
    stream = raw.getvalue() + bytes(1 << 20)
    path = tmp_path / "vzdump-lxc-101-2026_01_01-00_00_00.tar.zst"
    path.write_bytes(subprocess.run(["zstd", "-q", "-c"], input=stream, capture_output=True, check=True).stdout)
    out = tmp_path / "out"
    out.mkdir()
    count = archive.extract(path, out, lambda member: member)
    assert (out / "etc/hostname").read_bytes() == b"hello\n"
    assert count == len(stream)
