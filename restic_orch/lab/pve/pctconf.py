"""Container configs in PVE's pct.conf text format (what /etc/pve/lxc/<vmid>.conf holds)."""

from __future__ import annotations

import hashlib
import re
from typing import Any

INT_KEYS = frozenset({"cores", "memory", "swap", "cpuunits", "tty"})
BOOL_KEYS = frozenset({"onboot", "unprivileged", "protection", "template", "console", "debug"})
NUMBER_KEYS = frozenset({"cpulimit"})
SKIP_ON_WRITE = frozenset({"digest", "description", "pending", "snapshots", "snapname", "lxc"})


def parse(text: str) -> dict[str, Any]:
    """Parse the main section; snapshot sections are kept raw so a rewrite preserves them."""
    conf: dict[str, Any] = {}
    descr: list[str] = []
    raw_lxc: list[tuple[str, str]] = []
    lines = text.splitlines()
    for idx, line in enumerate(lines):
        if re.match(r"^\[.+\]\s*$", line):
            conf["snapshots"] = "\n".join(lines[idx:]) + "\n"
            break
        if line.startswith("#"):
            descr.append(line[1:])
            continue
        if not line.strip():
            continue
        m = re.match(r"^(lxc\.[a-z0-9_\-.]+)(:|\s*=)\s*(.*?)\s*$", line)
        if m:
            raw_lxc.append((m.group(1), m.group(3)))
            continue
        m = re.match(r"^([a-z][a-z_\-]*\d*):\s*(.*?)\s*$", line)
        if m:
            conf[m.group(1)] = m.group(2)
    if descr:
        conf["description"] = "\n".join(descr)
    if raw_lxc:
        conf["lxc"] = raw_lxc
    return conf


def render(conf: dict[str, Any]) -> str:
    """Like PVE::LXC::Config::write_pct_config: description comments, sorted keys, raw lxc last."""
    out = "".join(f"#{line}\n" for line in str(conf.get("description", "")).split("\n") if conf.get("description"))
    for key in sorted(conf):
        if key in SKIP_ON_WRITE:
            continue
        value = str(conf[key])
        if "\n" in value:
            raise ValueError(f"detected invalid newline inside property '{key}'")
        out += f"{key}: {value}\n"
    for key, value in conf.get("lxc", []):
        out += f"{key}: {value}\n"
    if conf.get("snapshots"):
        out += "\n" + conf["snapshots"]
    return out


def digest(text: str) -> str:
    return hashlib.sha1(text.encode()).hexdigest()  # noqa: S324 - PVE's config digest is SHA-1


def api_view(conf: dict[str, Any], text: str) -> dict[str, Any]:
    """The config as GET .../config returns it: typed numbers, digest, no snapshots."""
    res: dict[str, Any] = {}
    for key, value in conf.items():
        if key in ("snapshots", "pending"):
            continue
        if key == "lxc":
            res["lxc"] = [[k, v] for k, v in value]
        elif key in INT_KEYS or key in BOOL_KEYS:
            res[key] = int(value)
        elif key in NUMBER_KEYS:
            num = float(value)
            res[key] = int(num) if num.is_integer() else num
        else:
            res[key] = value
    res["digest"] = digest(text)
    return res


def parse_size(text: str) -> int | None:
    """PVE::JSONSchema::parse_size: '8G' -> bytes."""
    m = re.match(r"^(\d+(\.\d+)?)([KMGT])?$", text)
    if not m:
        return None
    mult = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}.get(m.group(3) or "", 1)
    return int(float(m.group(1)) * mult)


def format_size(size: int) -> str:
    """PVE::JSONSchema::format_size: bytes -> '8G' (largest exact unit)."""
    size = int(size)
    for unit, shift in (("T", 40), ("G", 30), ("M", 20), ("K", 10)):
        if size % (1 << shift) == 0 and size >= (1 << shift):
            return f"{size >> shift}{unit}"
    return str(size)


def parse_mountpoint(text: str) -> dict[str, Any]:
    """'local-zfs:subvol-101-disk-0,size=8G' -> {'volume': ..., 'size': bytes, ...}."""
    res: dict[str, Any] = {}
    for part in text.split(","):
        if "=" in part:
            key, value = part.split("=", 1)
            res[key] = parse_size(value) if key == "size" else value
        elif part:
            res["volume"] = part
    return res


def print_mountpoint(mp: dict[str, Any]) -> str:
    parts = [mp["volume"]]
    for key, value in mp.items():
        if key == "volume":
            continue
        parts.append(f"{key}={format_size(value) if key == 'size' else value}")
    return ",".join(parts)


MAX_MOUNT_POINTS = 256  # PVE::LXC::Config $MAX_MOUNT_POINTS


def volume_keys() -> list[str]:
    """PVE::LXC::Config->valid_volume_keys: rootfs, then mp0 .. mp255 (the order every volume loop uses)."""
    return ["rootfs"] + [f"mp{i}" for i in range(MAX_MOUNT_POINTS)]


def mountpoint_type(volume: str) -> str:
    """PVE::LXC::Config->classify_mountpoint: an absolute path is a bind mount (a device under /dev/)."""
    if volume.startswith("/"):
        return "device" if volume.startswith("/dev/") else "bind"
    return "volume"


def volumes(conf: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """PVE::AbstractConfig->foreach_volume over a CT config: (key, parsed mount point) with 'mp' ('/' for
    the rootfs) and 'type' filled in like PVE::LXC::Config->parse_volume."""
    res = []
    for key in volume_keys():
        if key not in conf:
            continue
        mp = parse_mountpoint(str(conf[key]))
        if key == "rootfs":
            mp["mp"] = "/"
        mp["type"] = mountpoint_type(str(mp.get("volume", "")))
        res.append((key, mp))
    return res


def backup_enabled(key: str, mp: dict[str, Any]) -> tuple[bool, str]:
    """PVE::LXC::Config->mountpoint_backup_enabled: (included, reason) as vzdump logs the reason."""
    if key == "rootfs":
        return True, "rootfs"
    if mp.get("type") != "volume":
        return False, "not a volume"
    if str(mp.get("backup", "0")) in ("1", "yes", "on", "true"):
        return True, "enabled"
    return False, "disabled"


def print_ct_mountpoint(mp: dict[str, Any], nomp: bool) -> str:
    """PVE::LXC::Config->print_ct_mountpoint via PVE::JSONSchema::print_property_string: the volume (the
    default key) first, then the required 'mp', then the other keys sorted; 'type' is never written."""
    skip = {"volume", "type"} | ({"mp"} if nomp else set())
    parts = [str(mp["volume"])]
    keys = ([] if nomp or "mp" not in mp else ["mp"]) + sorted(k for k in mp if k not in skip and k != "mp")
    for key in keys:
        value = mp[key]
        parts.append(f"{key}={format_size(value) if key == 'size' else value}")
    return ",".join(parts)


def parse_network(text: str) -> dict[str, str]:
    return dict(part.split("=", 1) for part in text.split(",") if "=" in part)


def print_network(net: dict[str, str]) -> str:
    return ",".join(f"{k}={v}" for k, v in net.items())
