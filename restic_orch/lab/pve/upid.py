"""UPID strings exactly as PVE::UPID::encode writes them (note the trailing colon)."""

from __future__ import annotations

import re
from dataclasses import dataclass

_UPID_RE = re.compile(
    r"^UPID:([a-zA-Z0-9]([a-zA-Z0-9\-]*[a-zA-Z0-9])?):([0-9A-Fa-f]{8}):([0-9A-Fa-f]{8,9}):"
    r"([0-9A-Fa-f]{8}):([^:\s/]+):([^:\s/]*):([^:\s/]+):$"
)


@dataclass(frozen=True)
class Upid:
    node: str
    pid: int
    pstart: int
    starttime: int
    type: str
    id: str
    user: str

    def __str__(self) -> str:
        return (
            f"UPID:{self.node}:{self.pid:08X}:{self.pstart:08X}:{self.starttime:08X}:"
            f"{self.type}:{self.id}:{self.user}:"
        )

    @property
    def subdir(self) -> str:
        # PVE spreads task logs over 16 dirs named after the last hex digit of starttime.
        return f"{self.starttime:08X}"[7]


def decode(text: str) -> Upid | None:
    m = _UPID_RE.match(text)
    if not m:
        return None
    return Upid(m.group(1), int(m.group(3), 16), int(m.group(4), 16), int(m.group(5), 16),
                m.group(6), m.group(7), m.group(8))
