"""Value types shared by the operations, the operation store and the proto conversion."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any


class VolumeFormat(StrEnum):
    """A volume's on-disk format (SPEC §1.3)."""

    RAW = "RAW"
    COW = "COW"

    @property
    def qemu(self) -> str:
        """The qemu-img format name."""
        return "raw" if self is VolumeFormat.RAW else "qcow2"

    @classmethod
    def from_qemu(cls, name: str) -> VolumeFormat:
        """The format for a qemu-img format name (``raw`` or ``qcow2``)."""
        if name == "raw":
            return cls.RAW
        if name == "qcow2":
            return cls.COW
        raise ValueError(f"unsupported image format {name!r}")


class MergeDirection(StrEnum):
    """How a merge moved the data (SPEC §6.5)."""

    UNSPECIFIED = "UNSPECIFIED"
    COMMIT = "COMMIT"
    PULL = "PULL"


class OpKind(StrEnum):
    """The RPC that started an operation."""

    INIT_DOMAIN = "INIT_DOMAIN"
    CREATE_VOLUME = "CREATE_VOLUME"
    DELETE_VOLUME = "DELETE_VOLUME"
    MERGE_VOLUMES = "MERGE_VOLUMES"
    REBASE_VOLUME = "REBASE_VOLUME"
    VERIFY_VOLUME = "VERIFY_VOLUME"
    SAVE_MEMORY_STATE = "SAVE_MEMORY_STATE"
    DELETE_MEMORY_STATE = "DELETE_MEMORY_STATE"


class OpState(StrEnum):
    """The life cycle of an operation record."""

    PENDING = "PENDING"
    RUNNING = "RUNNING"
    DONE = "DONE"
    FAILED = "FAILED"
    ABORTED = "ABORTED"

    @property
    def terminal(self) -> bool:
        """DONE, FAILED and ABORTED never change again."""
        return self in (OpState.DONE, OpState.FAILED, OpState.ABORTED)


def utc_now() -> datetime:
    """The current time, timezone-aware UTC."""
    return datetime.now(UTC)


def format_time(value: datetime) -> str:
    """ISO 8601 UTC with microseconds, e.g. ``2025-01-02T03:04:05.000006Z``."""
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_time(text: str) -> datetime:
    """The inverse of :func:`format_time`."""
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


@dataclass(frozen=True)
class VolumeMeta:
    """A volume's sidecar, ``<volume_id>.meta.json`` (SPEC §6.1)."""

    volume_id: str
    disk_id: str
    domain_id: str
    parent_id: str | None
    format: VolumeFormat
    virtual_size: int
    created_at: datetime
    op_id: str

    def to_json(self) -> dict[str, Any]:
        """The sidecar document."""
        return {
            "volume_id": self.volume_id,
            "disk_id": self.disk_id,
            "domain_id": self.domain_id,
            "parent_id": self.parent_id,
            "format": self.format.value,
            "virtual_size": self.virtual_size,
            "created_at": format_time(self.created_at),
            "op_id": self.op_id,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> VolumeMeta:
        """Parse a sidecar document."""
        return cls(
            volume_id=str(data["volume_id"]),
            disk_id=str(data["disk_id"]),
            domain_id=str(data["domain_id"]),
            parent_id=data.get("parent_id") or None,
            format=VolumeFormat(data["format"]),
            virtual_size=int(data["virtual_size"]),
            created_at=parse_time(str(data["created_at"])),
            op_id=str(data.get("op_id", "")),
        )


@dataclass(frozen=True)
class VolumeView:
    """A volume as reported to the engine: storage facts plus its sidecar."""

    volume_id: str
    disk_id: str
    domain_id: str
    parent_id: str | None
    format: VolumeFormat
    virtual_size: int
    actual_size: int
    created_at: datetime
    op_id: str
    leaf: bool

    def to_json(self) -> dict[str, Any]:
        """A JSON document for the operation record."""
        return {
            "volume_id": self.volume_id,
            "disk_id": self.disk_id,
            "domain_id": self.domain_id,
            "parent_id": self.parent_id,
            "format": self.format.value,
            "virtual_size": self.virtual_size,
            "actual_size": self.actual_size,
            "created_at": format_time(self.created_at),
            "op_id": self.op_id,
            "leaf": self.leaf,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> VolumeView:
        """The inverse of :meth:`to_json`."""
        return cls(
            volume_id=str(data["volume_id"]),
            disk_id=str(data["disk_id"]),
            domain_id=str(data["domain_id"]),
            parent_id=data.get("parent_id") or None,
            format=VolumeFormat(data["format"]),
            virtual_size=int(data["virtual_size"]),
            actual_size=int(data["actual_size"]),
            created_at=parse_time(str(data["created_at"])),
            op_id=str(data.get("op_id", "")),
            leaf=bool(data.get("leaf", True)),
        )


@dataclass(frozen=True)
class StrayFile:
    """A file in a disk directory that is not a complete volume."""

    name: str
    detail: str


@dataclass(frozen=True)
class DomainView:
    """A served storage domain with its filesystem's free and total bytes."""

    domain_id: str
    name: str
    free_bytes: int
    total_bytes: int

    def to_json(self) -> dict[str, Any]:
        """A JSON document for the operation record."""
        return {
            "domain_id": self.domain_id,
            "name": self.name,
            "free_bytes": self.free_bytes,
            "total_bytes": self.total_bytes,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> DomainView:
        """The inverse of :meth:`to_json`."""
        return cls(
            domain_id=str(data["domain_id"]),
            name=str(data["name"]),
            free_bytes=int(data["free_bytes"]),
            total_bytes=int(data["total_bytes"]),
        )


@dataclass(frozen=True)
class VerifyReport:
    """The outcome of VerifyVolume."""

    ok: bool
    corruptions: int = 0
    leaks: int = 0
    check_errors: int = 0
    image_end_offset: int = 0

    def to_json(self) -> dict[str, Any]:
        """A JSON document for the operation record."""
        return {
            "ok": self.ok,
            "corruptions": self.corruptions,
            "leaks": self.leaks,
            "check_errors": self.check_errors,
            "image_end_offset": self.image_end_offset,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> VerifyReport:
        """The inverse of :meth:`to_json`."""
        return cls(
            ok=bool(data["ok"]),
            corruptions=int(data.get("corruptions", 0)),
            leaks=int(data.get("leaks", 0)),
            check_errors=int(data.get("check_errors", 0)),
            image_end_offset=int(data.get("image_end_offset", 0)),
        )


@dataclass(frozen=True)
class OpResult:
    """What an operation produced; which fields are set depends on its kind."""

    volume: VolumeView | None = None
    already_absent: bool = False
    direction: MergeDirection = MergeDirection.UNSPECIFIED
    base_modified: bool = False
    verify: VerifyReport | None = None
    domain: DomainView | None = None

    def to_json(self) -> dict[str, Any]:
        """A JSON document for the operation record."""
        return {
            "volume": self.volume.to_json() if self.volume else None,
            "already_absent": self.already_absent,
            "direction": self.direction.value,
            "base_modified": self.base_modified,
            "verify": self.verify.to_json() if self.verify else None,
            "domain": self.domain.to_json() if self.domain else None,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> OpResult:
        """The inverse of :meth:`to_json`."""
        return cls(
            volume=VolumeView.from_json(data["volume"]) if data.get("volume") else None,
            already_absent=bool(data.get("already_absent", False)),
            direction=MergeDirection(data.get("direction", "UNSPECIFIED")),
            base_modified=bool(data.get("base_modified", False)),
            verify=VerifyReport.from_json(data["verify"]) if data.get("verify") else None,
            domain=DomainView.from_json(data["domain"]) if data.get("domain") else None,
        )
