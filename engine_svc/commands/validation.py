"""Field validation shared by commands (SPEC §1 formats, §7 limits)."""

from __future__ import annotations

import re

from engine_svc.domain import VmConfig, is_uuid
from engine_svc.errors import invalid_field

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
PROPERTY_KEY_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]{0,63}$")
MAC_RE = re.compile(r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}$")
MAX_PROPERTIES = 64
MAX_NICS = 32
MAX_DESCRIPTION = 4000


def validate_name(field: str, name: str) -> None:
    """VM and domain names: ``^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$``."""
    if not NAME_RE.match(name):
        raise invalid_field(field, "1..64 chars of [A-Za-z0-9._-], starting alphanumeric")


def validate_alias(field: str, alias: str) -> None:
    """Disk aliases: 1..255 printable characters, no '/'."""
    if not alias or len(alias) > 255 or not alias.isprintable() or "/" in alias:
        raise invalid_field(field, "1..255 printable characters without '/'")


def validate_text(field: str, text: str, limit: int = MAX_DESCRIPTION) -> None:
    """Free text: at most ``limit`` printable characters (newlines allowed)."""
    if len(text) > limit or not text.replace("\n", "").isprintable():
        raise invalid_field(field, f"at most {limit} printable characters")


def validate_vm_config(config: VmConfig) -> None:
    """SPEC §1.1 field rules for a VM configuration."""
    validate_name("config.name", config.name)
    validate_text("config.description", config.description)
    if not 1 <= config.cpu_count <= 256:
        raise invalid_field("config.cpu_count", "must be 1..256")
    if not 64 <= config.memory_mb <= 4194304:
        raise invalid_field("config.memory_mb", "must be 64..4194304")
    if len(config.custom_properties) > MAX_PROPERTIES:
        raise invalid_field("config.custom_properties", f"at most {MAX_PROPERTIES} entries")
    for key, value in config.custom_properties:
        if not PROPERTY_KEY_RE.match(key):
            raise invalid_field("config.custom_properties", f"bad key {key!r}")
        if len(value) > 1024 or not value.isprintable():
            raise invalid_field(
                "config.custom_properties", f"value of {key!r} must be ≤1024 printable chars"
            )
    if len(config.nics) > MAX_NICS:
        raise invalid_field("config.nics", f"at most {MAX_NICS} NICs")
    names = [n.name for n in config.nics]
    if len(set(names)) != len(names):
        raise invalid_field("config.nics", "NIC names must be unique")
    for nic in config.nics:
        if not nic.name or len(nic.name) > 64 or not nic.name.isprintable():
            raise invalid_field("config.nics", "NIC names are 1..64 printable chars")
        if not MAC_RE.match(nic.mac):
            raise invalid_field("config.nics", f"bad MAC {nic.mac!r} (lowercase xx:xx:xx:xx:xx:xx)")
    if config.home_domain_id is not None and not is_uuid(config.home_domain_id):
        raise invalid_field("config.home_domain_id", "must be a lowercase UUID")
