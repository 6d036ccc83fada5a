"""VMA (Virtual Machine Archive), the format of `vzdump-qemu-*.vma` backups: writer and reader.

Follows pve-qemu's vma_spec.txt and the code it documents (debian/patches/pve/
0026-PVE-Backup-add-vma-backup-format-code.patch: vma.h, vma-writer.c, vma-reader.c):

- header (12288 bytes + blob buffer, a multiple of 512): 'VMA\\0', version 1, uuid, ctime, md5 over the
  whole header with the md5 field zeroed, blob buffer offset/size, header size, 256 config name/data
  pointers, 256 device infos (dev_id 1..254: devname pointer, size in bytes). Numbers are big endian,
  except each blob's 2-byte length, which vma-writer.c allocate_header_blob stores little endian; blob
  offsets are relative to the buffer and start at 1 (vma_writer_create: header_blob_table_pos = 1).
- extents: a 512-byte header ('VMAE', block count, uuid, md5 of the header with the md5 field zeroed,
  59 blockinfo words: 16-bit mask of non-zero 4 KiB blocks, dev_id, 32-bit cluster number) followed by the
  non-zero 4 KiB blocks only. Every 64 KiB cluster of every device appears exactly once (mask 0 for a zero
  cluster). vma_writer_get_buffer flushes once 58 clusters are queued, so extents hold at most 58.

Both sides stream: one extent (< 4 MiB) in memory at a time.
"""

from __future__ import annotations

import hashlib
import os
import struct
import time
import uuid as uuidlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

BLOCK_SIZE = 4096
CLUSTER_SIZE = 65536
BLOCKS_PER_CLUSTER = CLUSTER_SIZE // BLOCK_SIZE
EXTENT_HEADER_SIZE = 512
BLOCKS_PER_EXTENT = 59
CLUSTERS_PER_FLUSH = BLOCKS_PER_EXTENT - 1  # vma_writer_get_buffer: flush while outbuf_count >= 58
MAX_CONFIGS = 256
HEADER_STRUCT_SIZE = 4096 + 8192  # sizeof(VmaHeader)
MAGIC = b"VMA\0"
EXTENT_MAGIC = b"VMAE"
_ZERO_BLOCK = bytes(BLOCK_SIZE)
# VmaHeader field offsets (vma.h; vma_writer_create asserts the same)
_OFF_MD5 = 32
_OFF_CONFIG_NAMES = 2044
_OFF_CONFIG_DATA = 3068
_OFF_DEV_INFO = 4096
_EXT_OFF_MD5 = 24


class VmaError(Exception):
    """A broken or unexpected archive; the text is vma-reader.c's error_setg message."""


@dataclass
class StreamInfo:
    """vma.h VmaStreamInfo: what the writer knows about one device stream."""

    devname: str
    size: int
    transferred: int = 0
    zero_bytes: int = 0
    finished: bool = False

    @property
    def cluster_count(self) -> int:
        return -(-self.size // CLUSTER_SIZE)


def _blob(data: bytes) -> bytes:
    if len(data) > 65535:
        raise VmaError("blob too large (max 65535 bytes)")
    return struct.pack("<H", len(data)) + data


class VmaWriter:
    """vma-writer.c for one archive written to `out` (any binary file object, written sequentially)."""

    def __init__(self, out: BinaryIO, archive_uuid: bytes | None = None, ctime: int | None = None) -> None:
        self.out = out
        self.uuid = archive_uuid or uuidlib.uuid4().bytes
        self.ctime = int(time.time()) if ctime is None else ctime
        self.streams: dict[int, StreamInfo] = {}
        self._blobs = bytearray(b"\0")  # position 0 is never used: a 0 pointer means 'none'
        self._configs: list[tuple[int, int]] = []
        self._header_written = False
        self._queue: list[tuple[int, int, int]] = []  # (mask, dev_id, cluster_num)
        self._data = bytearray()

    def _alloc_blob(self, data: bytes) -> int:
        pos = len(self._blobs)
        self._blobs += _blob(data)
        return pos

    def add_config(self, name: str, data: bytes) -> None:
        """vma_writer_add_config: the name is stored as its basename, NUL-terminated."""
        if self._header_written or len(self._configs) >= MAX_CONFIGS:
            raise VmaError("vma_writer_add_config: header already written or too many configs")
        name_ptr = self._alloc_blob(os.path.basename(name).encode() + b"\0")
        self._configs.append((name_ptr, self._alloc_blob(data)))

    def register_stream(self, devname: str, size: int) -> int:
        """vma_writer_register_stream: dev_ids 1..254 in registration order."""
        if self._header_written:
            raise VmaError("vma_writer_register_stream: header already written")
        dev_id = len(self.streams) + 1
        if dev_id > 254:
            raise VmaError("vma_writer_register_stream: too many drives")
        if size <= 0:
            raise VmaError(f"vma_writer_register_stream: got strange size {size}")
        self.streams[dev_id] = StreamInfo(devname, size)
        return dev_id

    def header_bytes(self) -> bytes:
        """vma_write_header: the devnames go into the blob buffer after the configs."""
        dev_ptrs = {dev_id: self._alloc_blob(s.devname.encode() + b"\0") for dev_id, s in self.streams.items()}
        table_size = -(-len(self._blobs) // 512) * 512
        head = bytearray(HEADER_STRUCT_SIZE + table_size)
        struct.pack_into(">4sI16sq", head, 0, MAGIC, 1, self.uuid, self.ctime)
        struct.pack_into(">III", head, 48, HEADER_STRUCT_SIZE, len(self._blobs), len(head))
        for i, (name_ptr, data_ptr) in enumerate(self._configs):
            struct.pack_into(">I", head, _OFF_CONFIG_NAMES + 4 * i, name_ptr)
            struct.pack_into(">I", head, _OFF_CONFIG_DATA + 4 * i, data_ptr)
        for dev_id, ptr in dev_ptrs.items():
            struct.pack_into(">IIQ", head, _OFF_DEV_INFO + 32 * dev_id, ptr, 0, self.streams[dev_id].size)
        head[HEADER_STRUCT_SIZE:HEADER_STRUCT_SIZE + len(self._blobs)] = self._blobs
        head[_OFF_MD5:_OFF_MD5 + 16] = hashlib.md5(head).digest()  # noqa: S324 - the format's checksum
        return bytes(head)

    def write_cluster(self, dev_id: int, cluster_num: int, buf: bytes | None) -> tuple[int, int]:
        """vma_writer_write: queue one 64 KiB cluster (None: all zero); return (transferred, zero_bytes)."""
        stream = self.streams.get(dev_id)
        if stream is None:
            raise VmaError(f"vma_writer_write: no such stream {dev_id}")
        if stream.finished:
            raise VmaError(f"vma_writer_write: stream already closed {dev_id}")
        if cluster_num >= stream.cluster_count:
            raise VmaError("vma_writer_write: cluster number too big")
        if len(self._queue) >= CLUSTERS_PER_FLUSH:
            self.flush()
        mask = zero = 0
        offset = cluster_num * CLUSTER_SIZE
        for i in range(BLOCKS_PER_CLUSTER):
            block = buf[i * BLOCK_SIZE:(i + 1) * BLOCK_SIZE] if buf is not None else b""
            if offset < stream.size and block and block != _ZERO_BLOCK[:len(block)]:
                mask |= 1 << i
                real = min(BLOCK_SIZE, stream.size - offset)  # no leakage past the device end
                self._data += block[:real].ljust(BLOCK_SIZE, b"\0")
            else:
                zero += BLOCK_SIZE
            offset += BLOCK_SIZE
        self._queue.append((mask, dev_id, cluster_num))
        transferred = CLUSTER_SIZE - max(0, (cluster_num + 1) * CLUSTER_SIZE - stream.size)
        stream.transferred += transferred
        stream.zero_bytes += zero
        return transferred, zero

    def flush(self) -> None:
        """vma_writer_flush: the header before the first extent, then the queued clusters as one extent."""
        if not self._header_written:
            self.out.write(self.header_bytes())
            self._header_written = True
        if not self._queue:
            return
        head = bytearray(EXTENT_HEADER_SIZE)
        struct.pack_into(">4sHH16s", head, 0, EXTENT_MAGIC, 0, len(self._data) // BLOCK_SIZE, self.uuid)
        for i, (mask, dev_id, cluster_num) in enumerate(self._queue):
            struct.pack_into(">Q", head, 40 + 8 * i, (mask << 48) | (dev_id << 32) | (cluster_num & 0xFFFFFFFF))
        head[_EXT_OFF_MD5:_EXT_OFF_MD5 + 16] = hashlib.md5(head).digest()  # noqa: S324
        self.out.write(bytes(head) + bytes(self._data))
        self._queue.clear()
        self._data = bytearray()

    def close_stream(self, dev_id: int) -> None:
        self.streams[dev_id].finished = True
        if all(s.finished for s in self.streams.values()):
            self.flush()

    def close(self) -> None:
        """vma_writer_close: every stream closed and complete."""
        self.flush()
        for stream in self.streams.values():
            if not stream.finished:
                raise VmaError(f"vma_writer_close: detected open stream '{stream.devname}'")
            if stream.transferred != stream.size:
                raise VmaError(f"vma_writer_close: incomplete stream '{stream.devname}' "
                               f"({stream.transferred} != {stream.size})")


def write_image(writer: VmaWriter, dev_id: int, image: BinaryIO,
                on_cluster: Callable[[int, int], None] | None = None) -> None:
    """Stream a raw image into the archive cluster by cluster (as the QEMU backup job feeds the writer);
    on_cluster(transferred, zero_bytes) after each one."""
    stream = writer.streams[dev_id]
    for cluster_num in range(stream.cluster_count):
        buf = image.read(CLUSTER_SIZE)
        if len(buf) < CLUSTER_SIZE and cluster_num < stream.cluster_count - 1:
            raise VmaError(f"short read on image of '{stream.devname}'")
        transferred, zero = writer.write_cluster(dev_id, cluster_num, buf if buf.strip(b"\0") else None)
        if on_cluster:
            on_cluster(transferred, zero)
    writer.close_stream(dev_id)


def write_vma(out: BinaryIO, configs: list[tuple[str, bytes]], images: list[tuple[str, Path]],
              archive_uuid: bytes | None = None, ctime: int | None = None) -> VmaWriter:
    """A whole archive: the config blobs (e.g. ('qemu-server.conf', text)) and raw images as devices."""
    writer = VmaWriter(out, archive_uuid, ctime)
    for name, data in configs:
        writer.add_config(name, data)
    ids = [(writer.register_stream(devname, path.stat().st_size), path) for devname, path in images]
    if not ids:
        writer.flush()
    for dev_id, path in ids:
        with path.open("rb") as image:
            write_image(writer, dev_id, image)
    writer.close()
    return writer


# -- reading ---------------------------------------------------------------------------------------


@dataclass
class Device:
    dev_id: int
    devname: str
    size: int


@dataclass
class VmaHeader:
    uuid: bytes
    ctime: int
    configs: dict[str, bytes] = field(default_factory=dict)
    devices: dict[int, Device] = field(default_factory=dict)

    @property
    def uuid_str(self) -> str:
        return str(uuidlib.UUID(bytes=self.uuid))


def _read_full(src: BinaryIO, size: int) -> bytes:
    chunks = []
    while size > 0:
        data = src.read(size)
        if not data:
            break
        chunks.append(data)
        size -= len(data)
    return b"".join(chunks)


def _blobs(head: bytes, offset: int, size: int) -> dict[int, bytes]:
    """vma_reader_read_head's blob table walk (positions relative to the buffer start)."""
    res: dict[int, bytes] = {}
    bstart, bend = offset + 1, offset + size
    if bstart <= HEADER_STRUCT_SIZE:
        raise VmaError(f"wrong vma blob buffer offset {offset}")
    if bend > len(head):
        raise VmaError(f"wrong vma blob buffer size {offset}/{size}")
    while bstart + 2 <= bend:
        length = head[bstart] + (head[bstart + 1] << 8)
        if bstart + length + 2 <= bend:
            res[bstart - offset] = head[bstart + 2:bstart + 2 + length]
        bstart += length + 2
    return res


def _string(blobs: dict[int, bytes], pos: int) -> str | None:
    data = blobs.get(pos)
    if not data or data[-1:] != b"\0":
        return None
    return data[:-1].decode(errors="replace")


def read_header(src: BinaryIO) -> VmaHeader:
    """vma_reader_read_head: magic, header size, md5, version, blobs, devices and configs, in that order."""
    head = bytearray(_read_full(src, HEADER_STRUCT_SIZE))
    if len(head) != HEADER_STRUCT_SIZE:
        raise VmaError("can't read vma header - got EOF")
    if head[:4] != MAGIC:
        raise VmaError("not a vma file - wrong magic number")
    header_size = struct.unpack_from(">I", head, 56)[0]
    if header_size <= HEADER_STRUCT_SIZE:
        raise VmaError(f"wrong vma header size {header_size}")
    head += _read_full(src, header_size - HEADER_STRUCT_SIZE)
    if len(head) != header_size:
        raise VmaError("can't read vma header data - got EOF")
    md5 = bytes(head[_OFF_MD5:_OFF_MD5 + 16])
    head[_OFF_MD5:_OFF_MD5 + 16] = bytes(16)
    if hashlib.md5(head).digest() != md5:  # noqa: S324
        raise VmaError("wrong vma header chechsum")  # sic, vma-reader.c's spelling
    version, archive_uuid, ctime = struct.unpack_from(">I16sq", head, 4)
    if version != 1:
        raise VmaError(f"wrong vma version {version}")
    offset, size = struct.unpack_from(">II", head, 48)
    blobs = _blobs(bytes(head), offset, size)
    res = VmaHeader(archive_uuid, ctime)
    for dev_id in range(1, 256):
        ptr, _reserved, dev_size = struct.unpack_from(">IIQ", head, _OFF_DEV_INFO + 32 * dev_id)
        name = _string(blobs, ptr)
        if dev_size and name:
            res.devices[dev_id] = Device(dev_id, name, dev_size)
    for i in range(MAX_CONFIGS):
        name_ptr = struct.unpack_from(">I", head, _OFF_CONFIG_NAMES + 4 * i)[0]
        data_ptr = struct.unpack_from(">I", head, _OFF_CONFIG_DATA + 4 * i)[0]
        if not (name_ptr and data_ptr):
            continue
        name = _string(blobs, name_ptr)
        if name is None or data_ptr not in blobs:
            raise VmaError("vma contains invalid data pointers")
        res.configs[name] = blobs[data_ptr]
    return res


@dataclass
class Block:
    """A run of data for one device from one extent: `data` is None for zeros."""

    dev_id: int
    offset: int
    length: int
    data: bytes | None


def _extents(src: BinaryIO, header: VmaHeader) -> Iterator[tuple[bytes, bytes]]:
    """(extent header, block data) per extent, checked like vma_reader_restore_full."""
    while True:
        ehead = bytearray(_read_full(src, EXTENT_HEADER_SIZE))
        if not ehead:
            return
        if len(ehead) < EXTENT_HEADER_SIZE:
            raise VmaError(f"read short extent ({len(ehead)} bytes)")
        md5 = bytes(ehead[_EXT_OFF_MD5:_EXT_OFF_MD5 + 16])
        ehead[_EXT_OFF_MD5:_EXT_OFF_MD5 + 16] = bytes(16)
        if hashlib.md5(ehead).digest() != md5:  # noqa: S324
            raise VmaError("wrong vma extent header chechsum")
        if bytes(ehead[8:24]) != header.uuid:
            raise VmaError("wrong vma extent uuid")
        if ehead[:4] != EXTENT_MAGIC or ehead[4:6] != b"\0\0":
            raise VmaError("wrong vma extent header magic")
        block_count = struct.unpack_from(">H", ehead, 6)[0]
        data = _read_full(src, block_count * BLOCK_SIZE)
        if len(data) < block_count * BLOCK_SIZE:
            raise VmaError(f"short vma extent ({EXTENT_HEADER_SIZE + len(data)} < "
                           f"{EXTENT_HEADER_SIZE + block_count * BLOCK_SIZE})")
        yield bytes(ehead), data


ClusterHook = Callable[[Device, int, int], None]  # (device, cluster_num, mask of stored 4 KiB blocks)


def blocks(src: BinaryIO, header: VmaHeader, on_cluster: ClusterHook | None = None) -> Iterator[Block]:
    """Every 4 KiB block of every device, in archive order, clipped at the device end (restore_extent);
    raises VmaError on duplicated or (at the end) missing clusters."""
    seen: dict[int, set[int]] = {dev_id: set() for dev_id in header.devices}
    for ehead, data in _extents(src, header):
        pos = 0
        for i in range(BLOCKS_PER_EXTENT):
            info = struct.unpack_from(">Q", ehead, 40 + 8 * i)[0]
            cluster_num, dev_id, mask = info & 0xFFFFFFFF, (info >> 32) & 0xFF, info >> 48
            if not dev_id:
                continue
            device = header.devices.get(dev_id)
            if device is None:
                raise VmaError(f"got wrong dev id {dev_id}")
            if cluster_num in seen[dev_id]:
                raise VmaError(f"found duplicated cluster {cluster_num} for stream {device.devname}")
            seen[dev_id].add(cluster_num)
            if on_cluster:
                on_cluster(device, cluster_num, mask)
            for j in range(BLOCKS_PER_CLUSTER):
                offset = cluster_num * CLUSTER_SIZE + j * BLOCK_SIZE
                length = min(BLOCK_SIZE, device.size - offset)
                if mask & (1 << j):
                    if pos + BLOCK_SIZE > len(data):
                        raise VmaError("short vma extent - too many blocks")
                    if length <= 0:
                        raise VmaError("got wrong block address - write beyond end")
                    yield Block(dev_id, offset, length, data[pos:pos + length])
                    pos += BLOCK_SIZE
                elif length > 0:
                    yield Block(dev_id, offset, length, None)
        if pos != len(data):
            raise VmaError("vma extent error - missing blocks")
    for dev_id, device in header.devices.items():
        for cluster_num in range(-(-device.size // CLUSTER_SIZE)):
            if cluster_num not in seen[dev_id]:
                raise VmaError(f"detected missing cluster {cluster_num} for stream {device.devname}")


def extract(src: BinaryIO, targets: dict[str, Path], header: VmaHeader | None = None,
            on_cluster: ClusterHook | None = None) -> VmaHeader:
    """Restore the devices named in `targets` (devname -> raw image file, created sparse at the device
    size, so zero blocks read back as zeros); others are skipped. The header is read unless given."""
    header = header or read_header(src)
    by_id = {d.dev_id: targets[d.devname] for d in header.devices.values() if d.devname in targets}
    files: dict[int, BinaryIO] = {}
    try:
        for dev_id, path in by_id.items():
            fh = path.open("wb")
            fh.truncate(header.devices[dev_id].size)
            files[dev_id] = fh
        for block in blocks(src, header, on_cluster):
            fh = files.get(block.dev_id)
            if fh is not None and block.data is not None:
                fh.seek(block.offset)
                fh.write(block.data)
    finally:
        for fh in files.values():
            fh.close()
    return header


def read_vma(src: BinaryIO, out_dir: Path) -> VmaHeader:
    """Like `vma extract <archive> <dir>`: configs as files, each device as disk-<devname>.raw."""
    header = read_header(src)
    out_dir.mkdir(parents=True, exist_ok=True)
    for name, data in header.configs.items():
        (out_dir / os.path.basename(name)).write_bytes(data)
    targets = {d.devname: out_dir / f"disk-{d.devname}.raw" for d in header.devices.values()}
    return extract(src, targets, header)
