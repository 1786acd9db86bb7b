"""The snapshot configuration document (SPEC §1.5): canonical JSON, schema_version 1."""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from engine_svc.db.models import Attachment, Disk, Vm, Volume

SCHEMA_VERSION = 1


def vm_section(vm: Vm) -> dict[str, Any]:
    """The VM part of a configuration (never includes run state or ids)."""
    return {
        "name": vm.name,
        "description": vm.description,
        "cpu_count": vm.cpu_count,
        "memory_mb": vm.memory_mb,
        "custom_properties": dict(vm.custom_properties),
        "nics": list(vm.nics),
    }


def disk_entry(disk: Disk, attachment: Attachment, volume: Volume) -> dict[str, Any]:
    """One disk entry: the disk's attributes and the volume the snapshot holds."""
    return {
        "disk_id": disk.id,
        "volume_id": volume.id,
        "alias": disk.alias,
        "interface": attachment.interface,
        "bootable": attachment.bootable,
        "virtual_size": volume.virtual_size,
        "format": volume.format,
    }


def render(vm: dict[str, Any], disks: Iterable[dict[str, Any]], captured_at: datetime) -> str:
    """Canonical JSON: sorted keys, no insignificant whitespace, disks sorted by id."""
    doc = {
        "schema_version": SCHEMA_VERSION,
        "vm": vm,
        "disks": sorted(disks, key=lambda d: str(d["disk_id"])),
        "captured_at": captured_at.isoformat(timespec="microseconds"),
    }
    return json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def parse(text: str) -> dict[str, Any]:
    """The document as a dict."""
    doc: dict[str, Any] = json.loads(text)
    return doc


def restrict(text: str, disk_ids: Iterable[str]) -> str:
    """The same document keeping only the entries of ``disk_ids``."""
    keep = set(disk_ids)
    doc = parse(text)
    doc["disks"] = [d for d in doc["disks"] if d["disk_id"] in keep]
    return json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
