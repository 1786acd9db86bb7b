"""Parsing of CLI values: sizes (``1G``, ``512M``), disk specs, ``KEY=VALUE`` pairs."""

from __future__ import annotations

import re
from dataclasses import dataclass

from disksnap._types import DiskFormat, DiskInterface
from disksnap.cli._errors import invalid

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
