"""The fake PVE's VMA writer and reader (restic_orch.lab.pve.vma) against pve-qemu's vma_spec.txt."""

from __future__ import annotations

import hashlib
import io
import random
import struct
from pathlib import Path

import pytest

from restic_orch.lab.pve import vma

CONF = b"boot: order=scsi0\nmemory: 512\nname: t\nscsi0: local-zfs:vm-200-disk-0,size=1M\n"


def _image(path: Path, size: int, seed: int) -> bytes:
    """Random clusters, whole zero clusters, clusters with some zero 4 KiB blocks, and a tail."""
    rng = random.Random(seed)
    data = bytearray(rng.randbytes(size))
    for start in range(0, size, vma.CLUSTER_SIZE):
        kind = (start // vma.CLUSTER_SIZE) % 4
        if kind == 1:
            data[start:start + vma.CLUSTER_SIZE] = bytes(len(data[start:start + vma.CLUSTER_SIZE]))
        elif kind == 2:
            for block in range(start, min(start + vma.CLUSTER_SIZE, size), 2 * vma.BLOCK_SIZE):
                data[block:block + vma.BLOCK_SIZE] = bytes(len(data[block:block + vma.BLOCK_SIZE]))
    path.write_bytes(bytes(data))
    return bytes(data)


def _archive(tmp_path: Path) -> tuple[bytes, dict[str, bytes]]:
    sizes = {"drive-scsi0": 10 * vma.CLUSTER_SIZE + 3 * vma.BLOCK_SIZE + 512, "drive-efidisk0": 128 * 1024}
    images = {}
    for i, (name, size) in enumerate(sizes.items()):
        images[name] = _image(tmp_path / f"{name}.img", size, seed=i)
    out = io.BytesIO()
    vma.write_vma(out, [("/tmp/x/qemu-server.conf", CONF), ("qemu-server.fw", b"[OPTIONS]\n")],
                  [(name, tmp_path / f"{name}.img") for name in sizes], archive_uuid=bytes(range(16)), ctime=1700000000)
    return out.getvalue(), images


def test_roundtrip_is_bit_identical(tmp_path: Path):
    data, images = _archive(tmp_path)
    header = vma.read_vma(io.BytesIO(data), tmp_path / "out")
    assert header.configs == {"qemu-server.conf": CONF, "qemu-server.fw": b"[OPTIONS]\n"}
    assert header.ctime == 1700000000 and header.uuid == bytes(range(16))
    assert [(d.dev_id, d.devname, d.size) for d in header.devices.values()] == [
        (1, "drive-scsi0", len(images["drive-scsi0"])), (2, "drive-efidisk0", 128 * 1024)]
    for name, content in images.items():
        restored = (tmp_path / "out" / f"disk-{name}.raw").read_bytes()
        assert hashlib.sha256(restored).digest() == hashlib.sha256(content).digest()
    assert (tmp_path / "out/qemu-server.conf").read_bytes() == CONF


def test_layout_follows_the_spec(tmp_path: Path):
    data, images = _archive(tmp_path)
    assert data[:4] == b"VMA\0" and struct.unpack_from(">I", data, 4)[0] == 1
    header_size = struct.unpack_from(">I", data, 56)[0]
    assert header_size % 512 == 0 and struct.unpack_from(">I", data, 48)[0] == 12288
    assert data[header_size:header_size + 4] == b"VMAE"
    # zero 4 KiB blocks are left out: the archive is smaller than the images
    stored = 0
    pos = header_size
    while pos < len(data):
        block_count = struct.unpack_from(">H", data, pos + 6)[0]
        infos = struct.unpack_from(">59Q", data, pos + 40)
        assert sum(1 for i in infos if i) <= 58
        assert block_count == sum(bin(i >> 48).count("1") for i in infos)
        stored += block_count
        pos += 512 + block_count * vma.BLOCK_SIZE
    assert pos == len(data)
    nonzero = sum(1 for content in images.values() for b in range(0, len(content), vma.BLOCK_SIZE)
                  if content[b:b + vma.BLOCK_SIZE].strip(b"\0"))
    assert stored == nonzero < sum(-(-len(c) // vma.BLOCK_SIZE) for c in images.values())


@pytest.mark.parametrize(("where", "message"), [
    (0, "not a vma file - wrong magic number"),
    (40, "wrong vma header chechsum"),
    ("extent", "wrong vma extent header chechsum"),
])
def test_corruption_is_refused(tmp_path: Path, where, message):
    data, _ = bytearray(_archive(tmp_path)[0]), None
    pos = struct.unpack_from(">I", data, 56)[0] + 30 if where == "extent" else where
    data[pos] ^= 0xFF
    with pytest.raises(vma.VmaError, match=f"^{message}$"):
        vma.read_vma(io.BytesIO(bytes(data)), tmp_path / "bad")


def test_truncated_archive_is_refused(tmp_path: Path):
    data, _ = _archive(tmp_path)
    with pytest.raises(vma.VmaError, match=r"^short vma extent|^detected missing cluster"):
        vma.read_vma(io.BytesIO(data[:-5000]), tmp_path / "short")
