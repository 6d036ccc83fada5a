"""A small re-implementation of PVE::JSONSchema parameter checks.

Only the parts the fake API needs, but with PVE's exact error texts, because clients
(and our product) show or match them.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from .errors import ParamError

_INT_RE = re.compile(r"^[+-]?\d+$")
_NUM_RE = re.compile(r"^[+-]?(\d+\.\d+|\d+\.|\.\d+|\d+)([eE][+-]?\d+)?$")
_VMID_RE = re.compile(r"^[1-9][0-9]{2,8}$")
_NODE_RE = re.compile(r"^([a-zA-Z0-9]([a-zA-Z0-9\-]*[a-zA-Z0-9])?)$")
_ID_RE = re.compile(r"^[a-z][a-z0-9\-_.]*[a-z0-9]$", re.IGNORECASE)
_DNS_RE = re.compile(r"^(([a-zA-Z0-9]([a-zA-Z0-9\-]*[a-zA-Z0-9])?)\.)*([a-zA-Z0-9]([a-zA-Z0-9\-]*[a-zA-Z0-9])?)$")
_CONFIGID_RE = re.compile(r"^[a-z][a-z0-9_-]+$", re.IGNORECASE)

CONTENT_TYPES = ("images", "rootdir", "vztmpl", "iso", "backup", "snippets", "import")
PRUNE_KEYS = ("keep-all", "keep-last", "keep-hourly", "keep-daily", "keep-weekly", "keep-monthly", "keep-yearly")


@dataclass(frozen=True)
class Prop:
    type: str = "string"
    optional: bool = True
    enum: tuple[str, ...] | None = None
    format: str | None = None
    minimum: float | None = None
    maximum: float | None = None
    max_length: int | None = None
    min_length: int | None = None
    requires: str | None = None
    pattern: str | None = None


def split_list(text: str) -> list[str]:
    """PVE::Tools::split_list: separators are NUL, ';', ',' and whitespace."""
    return [p for p in re.split(r"[\0;,\s]+", text.strip()) if p]


def _num_text(value: float) -> str:
    # Perl prints integral numbers without a fraction.
    return str(int(value)) if float(value).is_integer() else str(value)


def _check_single_format(fmt: str, value: str) -> None:
    """Raise ValueError(text) like the registered PVE format validators (text ends in \\n)."""
    if fmt == "pve-vmid":
        if not _VMID_RE.match(value):
            raise ValueError("value does not look like a valid VM ID\n")
    elif fmt == "pve-node":
        if not _NODE_RE.match(value):
            raise ValueError("value does not look like a valid node name\n")
    elif fmt == "pve-storage-id":
        if not _ID_RE.match(value):
            raise ValueError(f"storage ID '{value}' contains illegal characters\n")
    elif fmt == "pve-storage-content":
        if value not in CONTENT_TYPES:
            raise ValueError(f"invalid content type '{value}'\n")
    elif fmt == "dns-name":
        if not _DNS_RE.match(value):
            raise ValueError("value does not look like a valid DNS name\n")
    elif fmt == "pve-configid":
        if not _CONFIGID_RE.match(value):
            raise ValueError(f"invalid configuration ID '{value}'\n")
    elif fmt == "pve-task-status-type":
        if not re.match(r"^(ok|error|warning|unknown)$", value, re.IGNORECASE):
            raise ValueError(f"invalid status '{value}'\n")
    elif fmt == "prune-backups":
        parse_prune_backups(value)


def parse_prune_backups(value: str) -> dict[str, int]:
    """Parse a prune-backups property string ('keep-last=3,keep-daily=7')."""
    res: dict[str, int] = {}
    for part in value.split(","):
        if not part.strip():
            continue
        if "=" not in part:
            raise ValueError("value without key, but schema does not define a default key\n")
        key, val = part.split("=", 1)
        if key in res:
            raise ValueError(f"duplicate key in comma-separated list property: {key}\n")
        if key not in PRUNE_KEYS:
            raise ValueError(f"invalid key in comma-separated list property: {key}\n")
        if not _INT_RE.match(val) or int(val) < (0 if key == "keep-all" else 1):
            raise ValueError(f"format error\n{key}: type check ('integer') failed - got '{val}'\n")
        res[key] = int(val)
    if res.get("keep-all") and len(res) > 1:
        raise ValueError("format error\nkeep-all: option conflicts with other keep options\n")
    return res


def check_format(fmt: str, value: str) -> None:
    if fmt.endswith("-list"):
        for item in split_list(value):
            _check_single_format(fmt[: -len("-list")], item)
    else:
        _check_single_format(fmt, value)


def _add(errors: dict[str, str], path: str, msg: str) -> None:
    # PVE joins repeated messages with a literal backslash-n (single-quoted in Perl).
    errors[path] = errors[path] + "\\n" + msg if path in errors else msg


def _check_prop(value: str | None, prop: Prop, path: str, errors: dict[str, str]) -> None:
    if value is None:
        if not prop.optional:
            _add(errors, path, "property is missing and it is not optional")
        return
    if prop.type == "array":
        # RESTHandler wraps a true form value into a list; '' and '0' are false in Perl, stay
        # scalars and fail the array check
        if value in ("", "0"):
            _add(errors, path, f"type check ('{prop.type}') failed")
        return
    if prop.type == "boolean" and value not in ("0", "1"):
        _add(errors, path, f"type check ('boolean') failed - got '{value}'")
        return
    if prop.type == "integer" and not _INT_RE.match(value):
        _add(errors, path, f"type check ('integer') failed - got '{value}'")
        return
    if prop.type == "number" and not _NUM_RE.match(value):
        _add(errors, path, f"type check ('number') failed - got '{value}'")
        return
    if prop.format:
        try:
            check_format(prop.format, value)
        except ValueError as exc:
            _add(errors, path, f"invalid format - {exc}")
            return
    if prop.pattern and not re.fullmatch(prop.pattern, value):
        _add(errors, path, "value does not match the regex pattern")
        return
    if prop.max_length is not None and len(value) > prop.max_length:
        _add(errors, path, f"value may only be {prop.max_length} characters long")
        return
    if prop.min_length is not None and len(value) < prop.min_length:
        _add(errors, path, f"value must be at least {prop.min_length} characters long")
        return
    if _NUM_RE.match(value):
        if prop.maximum is not None and float(value) > prop.maximum:
            _add(errors, path, f"value must have a maximum value of {_num_text(prop.maximum)}")
            return
        if prop.minimum is not None and float(value) < prop.minimum:
            _add(errors, path, f"value must have a minimum value of {_num_text(prop.minimum)}")
            return
    if prop.enum is not None and value not in prop.enum:
        _add(errors, path, f"value '{value}' does not have a value in the enumeration '{', '.join(prop.enum)}'")


def _convert(value: str, prop: Prop) -> Any:
    if prop.type in ("integer", "boolean"):
        return int(value)
    if prop.type == "number":
        return float(value)
    return value


@dataclass(frozen=True)
class Schema:
    props: Mapping[str, Prop]
    # Families like net0..net31 or mp0..mp255, matched by full regex.
    pattern_props: tuple[tuple[str, Prop], ...] = ()

    def lookup(self, key: str) -> Prop | None:
        if key in self.props:
            return self.props[key]
        for regex, prop in self.pattern_props:
            if re.fullmatch(regex, key):
                return prop
        return None

    def validate(self, params: Mapping[str, str]) -> dict[str, Any]:
        """Check like PVE's check_object (additionalProperties => 0); return typed values."""
        errors: dict[str, str] = {}
        for key, prop in self.props.items():
            _check_prop(params.get(key), prop, key, errors)
        for key, value in params.items():
            prop = self.lookup(key)
            if prop is None:
                _add(errors, key, "property is not defined in schema and the schema does not allow "
                     "additional properties")
                continue
            if key not in self.props:
                _check_prop(value, prop, key, errors)
            if prop.requires and params.get(prop.requires) is None:
                _add(errors, prop.requires, f"missing property - '{key}' requires this property")
        if errors:
            raise ParamError(errors)
        return {k: _convert(v, self.lookup(k) or Prop()) for k, v in params.items()}


def schema(props: Mapping[str, Prop], patterns: Iterable[tuple[str, Prop]] = ()) -> Schema:
    return Schema(dict(props), tuple(patterns))


NODE = Prop(format="pve-node", optional=False)
VMID = Prop(type="integer", format="pve-vmid", minimum=100, maximum=999_999_999, optional=False)
VMID_OPT = Prop(type="integer", format="pve-vmid", minimum=100, maximum=999_999_999)
STORAGE = Prop(format="pve-storage-id", optional=False)
STORAGE_OPT = Prop(format="pve-storage-id")
BOOL = Prop(type="boolean")
STR = Prop()
