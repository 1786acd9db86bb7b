"""Parsing of CLI values: sizes (``1G``, ``512M``), disk specs, ``KEY=VALUE`` pairs."""

from __future__ import annotations

import re
from dataclasses import dataclass

from disksnap._types import DiskFormat, DiskInterface
from disksnap.cli._errors import CliError, invalid

_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]?)(?:I?B)?\s*$", re.IGNORECASE)
_FORMATS = {"raw": DiskFormat.RAW, "qcow2": DiskFormat.COW, "cow": DiskFormat.COW}


def parse_size(text: str) -> int:
    """Bytes from ``1G``, ``512M``, ``1.5GiB``, ``64k`` or a plain byte count (binary units)."""
    m = _SIZE.match(text)
    if not m:
        raise invalid(f"not a size: {text!r} (use e.g. 1G, 512M, 1048576)", value=text)
    return int(float(m.group(1)) * _UNITS[m.group(2).upper()])


@dataclass(frozen=True)
class DiskSpec:
    """``ALIAS:SIZE[:raw|qcow2]``."""

    alias: str
    size: int
    format: DiskFormat


def parse_disk_spec(text: str) -> DiskSpec:
    """Parse ``ALIAS:SIZE[:raw|qcow2]`` (the format defaults to qcow2)."""
    parts = text.split(":")
    fmt = DiskFormat.COW
    if len(parts) >= 3 and parts[-1].lower() in _FORMATS:
        fmt = _FORMATS[parts.pop().lower()]
    if len(parts) < 2 or not parts[0]:
        raise invalid(f"not a disk spec: {text!r} (use ALIAS:SIZE[:raw|qcow2])", value=text)
    size = parse_size(parts.pop())
    return DiskSpec(alias=":".join(parts), size=size, format=fmt)


def parse_lun_alias(text: str) -> str:
    """The alias of a LUN disk: ``ALIAS`` as given; ``ALIAS:SIZE`` is refused (a LUN has none)."""
    try:
        parse_disk_spec(text)
    except CliError:
        return text
    raise invalid(f"a LUN disk has no size: give just the alias, not {text!r}", value=text)


def parse_interface(text: str) -> DiskInterface:
    """``virtio``, ``virtio_scsi``, ``sata`` or ``ide``."""
    try:
        return DiskInterface(text.upper().replace("-", "_"))
    except ValueError:
        choices = ", ".join(i.value.lower() for i in DiskInterface)
        raise invalid(f"unknown interface {text!r} (one of {choices})", value=text) from None


def parse_pair(text: str, what: str) -> tuple[str, str]:
    """``KEY=VALUE`` split at the first ``=``."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise invalid(f"not a {what}: {text!r} (use KEY=VALUE)", value=text)
    return key, value


_BOOLEANS = {"true": True, "yes": True, "on": True, "1": True}
_BOOLEANS |= {"false": False, "no": False, "off": False, "0": False}


def parse_bool(text: str) -> bool:
    """``true``/``false`` (also ``yes``/``no``, ``on``/``off``, ``1``/``0``)."""
    try:
        return _BOOLEANS[text.strip().lower()]
    except KeyError:
        raise invalid(f"not a boolean: {text!r} (use true or false)", value=text) from None


DISK_ATTRIBUTES = ("alias", "interface", "bootable")


@dataclass(frozen=True)
class DiskAttributesSpec:
    """``DISK:KEY=VALUE[,KEY=VALUE]``: a VM's disk and the attributes to change (``None``: keep)."""

    ref: str
    alias: str | None = None
    interface: DiskInterface | None = None
    bootable: bool | None = None


def parse_disk_attributes(text: str) -> DiskAttributesSpec:
    """Parse ``DISK:KEY=VALUE[,KEY=VALUE]`` with keys ``alias``, ``interface``, ``bootable``.

    DISK (alias, id or id prefix) ends at the last ``:`` before the first ``=``, so an alias
    may contain ``:``; values cannot contain ``,``.
    """
    head, eq, _ = text.partition("=")
    ref, colon, _ = head.rpartition(":")
    if not eq or not colon or not ref:
        raise invalid(
            f"not a disk update: {text!r} (use DISK:KEY=VALUE[,KEY=VALUE], e.g. os:bootable=true)",
            value=text,
        )
    values: dict[str, str] = {}
    for item in text[len(ref) + 1 :].split(","):
        key, value = parse_pair(item, "disk attribute")
        key = key.strip().lower()
        if key not in DISK_ATTRIBUTES:
            raise invalid(
                f"unknown disk attribute {key!r} in {text!r} (one of {', '.join(DISK_ATTRIBUTES)})",
                value=text,
            )
        if key in values:
            raise invalid(f"disk attribute {key!r} given twice in {text!r}", value=text)
        values[key] = value
    return DiskAttributesSpec(
        ref=ref,
        alias=values.get("alias"),
        interface=parse_interface(values["interface"]) if "interface" in values else None,
        bootable=parse_bool(values["bootable"]) if "bootable" in values else None,
    )
