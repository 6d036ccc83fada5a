"""QEMU guest configs in qemu-server's text format (/etc/pve/qemu-server/<vmid>.conf) and the property
strings inside them (drives, network devices, smbios1, agent)."""

from __future__ import annotations

import random
import re
import uuid
from typing import Any

from . import pctconf

DRIVE_RE = re.compile(r"^(ide|sata|scsi|virtio|efidisk|tpmstate)\d+$")
INT_KEYS = frozenset({"cores", "sockets", "memory", "balloon", "cpuunits", "vcpus", "shares", "migrate_downtime"})
BOOL_KEYS = frozenset({"onboot", "protection", "template", "acpi", "kvm", "tablet", "numa", "localtime",
                       "freeze", "reboot"})


def parse(text: str) -> dict[str, Any]:
    """PVE::QemuServer::parse_vm_config's main section: description comments, 'key: value', snapshots raw."""
    return pctconf.parse(text)


def render(conf: dict[str, Any]) -> str:
    """PVE::QemuServer::write_vm_config: description as comments first, then the keys sorted."""
    return pctconf.render(conf)


def api_view(conf: dict[str, Any], text: str) -> dict[str, Any]:
    """GET .../qemu/{vmid}/config: numbers and booleans typed, the digest, no snapshots or pending."""
    res: dict[str, Any] = {}
    for key, value in conf.items():
        if key in ("snapshots", "pending", "lxc"):
            continue
        res[key] = int(value) if key in INT_KEYS | BOOL_KEYS and re.fullmatch(r"-?\d+", str(value)) else value
    res["digest"] = pctconf.digest(text)
    return res


def parse_props(text: str, default_key: str) -> tuple[str | None, dict[str, str]]:
    """A property string: the leading value without '=' (the default key's), then key=value pairs."""
    first: str | None = None
    props: dict[str, str] = {}
    for index, item in enumerate(i for i in text.split(",") if i):
        key, sep, value = item.partition("=")
        if not sep and index == 0:
            first = item
        elif sep:
            props[key] = value
        else:
            props[default_key] = item
    return first, props


def parse_drive(text: str) -> dict[str, Any]:
    """PVE::QemuServer::Drive::parse_drive: 'file' plus the options; size in bytes."""
    first, props = parse_props(text, "file")
    drive: dict[str, Any] = dict(props)
    if first is not None:
        drive["file"] = first
    if "size" in drive:
        drive["size"] = pctconf.parse_size(str(drive["size"]))
    return drive


def print_drive(drive: dict[str, Any]) -> str:
    """PVE::QemuServer::Drive::print_drive (print_property_string: the default key first, then sorted)."""
    items = [str(drive["file"])]
    for key in sorted(k for k in drive if k != "file"):
        value = drive[key]
        items.append(f"{key}={pctconf.format_size(value) if key == 'size' else value}")
    return ",".join(items)


def is_cdrom(drive: dict[str, Any]) -> bool:
    return drive.get("media") == "cdrom"


def drives(conf: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """PVE::QemuConfig->foreach_volume order (ide, sata, scsi, virtio, efidisk, tpmstate by index)."""
    order = ("ide", "sata", "scsi", "virtio", "efidisk", "tpmstate")

    def sort_key(key: str) -> tuple[int, int]:
        m = re.match(r"^([a-z]+)(\d+)$", key)
        assert m
        return order.index(m.group(1)), int(m.group(2))

    return [(k, parse_drive(str(conf[k]))) for k in sorted((k for k in conf if DRIVE_RE.match(k)), key=sort_key)]


NET_MODELS = ("e1000", "e1000-82540em", "e1000-82544gc", "e1000-82545em", "e1000e", "i82551", "i82557b",
              "i82559er", "ne2k_isa", "ne2k_pci", "pcnet", "rtl8139", "virtio", "vmxnet3")


def parse_net(text: str) -> dict[str, str]:
    """PVE::QemuServer::parse_net: 'virtio=MAC' is model + macaddr."""
    net: dict[str, str] = {}
    for item in (i for i in text.split(",") if i):
        key, sep, value = item.partition("=")
        if key in NET_MODELS:
            net["model"] = key
            if sep:
                net["macaddr"] = value
        elif sep:
            net[key] = value
    return net


def print_net(net: dict[str, str]) -> str:
    """PVE::QemuServer::print_net: 'model=macaddr' (the key alias pair) first, then the rest sorted."""
    head = net["model"] + (f"={net['macaddr']}" if net.get("macaddr") else "")
    return ",".join([head] + [f"{k}={net[k]}" for k in sorted(net) if k not in ("model", "macaddr")])


def random_mac(rng: random.Random | None = None) -> str:
    """PVE::Tools::random_ether_addr with PVE 8's default datacenter mac_prefix BC:24:11."""
    rng = rng or random.SystemRandom()
    return "BC:24:11:" + ":".join(f"{rng.randrange(256):02X}" for _ in range(3))


def print_smbios1(props: dict[str, str]) -> str:
    return ",".join(f"{k}={props[k]}" for k in sorted(props))


def new_uuid(rng: random.Random | None = None) -> str:
    return str(uuid.UUID(int=rng.getrandbits(128), version=4)) if rng else str(uuid.uuid4())


def agent_key(conf: dict[str, Any], key: str) -> str | None:
    """PVE::QemuServer::get_qga_key: 'agent: 1' or 'agent: enabled=1,freeze-fs-on-backup=0'."""
    if not conf.get("agent"):
        return None
    first, props = parse_props(str(conf["agent"]), "enabled")
    if first is not None:
        props.setdefault("enabled", first)
    return props.get(key)


def agent_enabled(conf: dict[str, Any]) -> bool:
    return agent_key(conf, "enabled") in ("1", "on", "yes", "true")
