"""SQLAlchemy 2 typed models: the engine's whole state (SPEC §1, §5).

Every timestamp is stored as UTC; ``UtcDateTime`` gives SQLite (which keeps no zone) and
PostgreSQL (``timestamptz``) the same aware ``datetime`` on read. ``version`` columns and the
state columns are what compare-and-swap updates check.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

ID = String(36)


class UtcDateTime(TypeDecorator[datetime]):
    """An aware UTC datetime on both SQLite and PostgreSQL."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetimes are not stored")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    """Declarative base with stable constraint names (Alembic needs them)."""

    metadata = MetaData(naming_convention=NAMING)
    type_annotation_map = {datetime: UtcDateTime, dict[str, Any]: JSON, list[Any]: JSON}


class Host(Base):
    """A hypervisor host with its agent (SPEC §1.7)."""

    __tablename__ = "hosts"
    id: Mapped[str] = mapped_column(ID, primary_key=True)
    name: Mapped[str] = mapped_column(String(255), unique=True)
    address: Mapped[str] = mapped_column(String(255))
    live_ops: Mapped[bool] = mapped_column(Boolean, default=False)
    agent_version: Mapped[str] = mapped_column(String(64), default="")
    qemu_img_version: Mapped[str] = mapped_column(String(64), default="")
    last_heartbeat_at: Mapped[datetime]
    registered_at: Mapped[datetime]


class StorageDomain(Base):
    """A storage domain; its status and space derive from the hosts serving it."""

    __tablename__ = "storage_domains"
    id: Mapped[str] = mapped_column(ID, primary_key=True)
    name: Mapped[str] = mapped_column(String(255), unique=True)
    created_at: Mapped[datetime]


class HostDomain(Base):
    """A host serves a domain; space as that host last reported it."""

    __tablename__ = "host_domains"
    host_id: Mapped[str] = mapped_column(ID, ForeignKey("hosts.id"), primary_key=True)
    domain_id: Mapped[str] = mapped_column(ID, ForeignKey("storage_domains.id"), primary_key=True)
    free_bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    total_bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    reported_at: Mapped[datetime]


class Vm(Base):
    """A VM and its current configuration (SPEC §1.1)."""

    __tablename__ = "vms"
    id: Mapped[str] = mapped_column(ID, primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    description: Mapped[str] = mapped_column(Text, default="")
    cpu_count: Mapped[int] = mapped_column(Integer)
    memory_mb: Mapped[int] = mapped_column(BigInteger)
    custom_properties: Mapped[dict[str, Any]]
    nics: Mapped[list[Any]]
    home_domain_id: Mapped[str | None] = mapped_column(ID, ForeignKey("storage_domains.id"))
    run_state: Mapped[str] = mapped_column(String(8))
    host_id: Mapped[str | None] = mapped_column(ID, ForeignKey("hosts.id"))
    created_at: Mapped[datetime]
    version: Mapped[int] = mapped_column(Integer, default=1)


class Disk(Base):
    """A virtual disk (SPEC §1.2)."""

    __tablename__ = "disks"
    id: Mapped[str] = mapped_column(ID, primary_key=True)
    alias: Mapped[str] = mapped_column(String(255))
    description: Mapped[str] = mapped_column(Text, default="")
    kind: Mapped[str] = mapped_column(String(8))
    shareable: Mapped[bool] = mapped_column(Boolean, default=False)
    domain_id: Mapped[str | None] = mapped_column(ID, ForeignKey("storage_domains.id"))
    virtual_size: Mapped[int | None] = mapped_column(BigInteger)
    base_format: Mapped[str | None] = mapped_column(String(8))
    lun_id: Mapped[str | None] = mapped_column(String(255))
    created_at: Mapped[datetime]
    version: Mapped[int] = mapped_column(Integer, default=1)


class Attachment(Base):
    """A disk attached to a VM (SPEC §1.2)."""

    __tablename__ = "attachments"
    vm_id: Mapped[str] = mapped_column(ID, ForeignKey("vms.id"), primary_key=True)
    disk_id: Mapped[str] = mapped_column(ID, ForeignKey("disks.id"), primary_key=True)
    interface: Mapped[str] = mapped_column(String(16))
    bootable: Mapped[bool] = mapped_column(Boolean, default=False)
    state: Mapped[str] = mapped_column(String(24))
    __table_args__ = (Index("ix_attachments_disk_id", "disk_id"),)


class Snapshot(Base):
    """A snapshot row: ACTIVE, REGULAR or PREVIEW (SPEC §1.4)."""

    __tablename__ = "snapshots"
    id: Mapped[str] = mapped_column(ID, primary_key=True)
    vm_id: Mapped[str] = mapped_column(ID, ForeignKey("vms.id"))
    type: Mapped[str] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(String(16))
    description: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime]
    # Canonical JSON text (SPEC §1.5), kept byte-exact.
    config: Mapped[str | None] = mapped_column(Text)
    memory: Mapped[dict[str, Any] | None]
    preview_plan: Mapped[dict[str, Any] | None]
    __table_args__ = (Index("ix_snapshots_vm_id", "vm_id", "created_at"),)


class Volume(Base):
    """One volume file of a disk's tree (SPEC §1.3)."""

    __tablename__ = "volumes"
    id: Mapped[str] = mapped_column(ID, primary_key=True)
    # Not a foreign key: a removed disk's row goes at once while its volumes stay as
    # garbage until the agent confirms their deletion (SPEC §3.9, §5.9).
    disk_id: Mapped[str] = mapped_column(ID)
    domain_id: Mapped[str] = mapped_column(ID, ForeignKey("storage_domains.id"))
    # Parents are not foreign keys: a merge deletes a parent row before the survivor's
    # parent is rewritten in the same transaction.
    parent_id: Mapped[str | None] = mapped_column(ID)
    owner_snapshot_id: Mapped[str | None] = mapped_column(ID)
    active: Mapped[bool] = mapped_column(Boolean, default=False)
    status: Mapped[str] = mapped_column(String(8))
    pending_delete: Mapped[bool] = mapped_column(Boolean, default=False)
    format: Mapped[str] = mapped_column(String(8))
    virtual_size: Mapped[int] = mapped_column(BigInteger)
    actual_size: Mapped[int] = mapped_column(BigInteger, default=0)
    created_at: Mapped[datetime]
    __table_args__ = (
        Index("ix_volumes_disk_id", "disk_id"),
        Index("ix_volumes_owner_snapshot_id", "owner_snapshot_id"),
    )


class Job(Base):
    """A job with its lease (SPEC §5.1, §5.7)."""

    __tablename__ = "jobs"
    id: Mapped[str] = mapped_column(ID, primary_key=True)
    kind: Mapped[str] = mapped_column(String(32))
    state: Mapped[str] = mapped_column(String(24))
    vm_id: Mapped[str | None] = mapped_column(ID)
    target_ids: Mapped[list[Any]]
    request_id: Mapped[str | None] = mapped_column(ID, unique=True)
    request_hash: Mapped[str | None] = mapped_column(String(64))
    correlation_id: Mapped[str] = mapped_column(String(64), default="")
    # What the job needs to run, chosen at admission (e.g. the snapshot id, the plan).
    params: Mapped[dict[str, Any]]
    created_at: Mapped[datetime]
    started_at: Mapped[datetime | None]
    ended_at: Mapped[datetime | None]
    prepare_deadline: Mapped[datetime | None]
    progress: Mapped[int] = mapped_column(Integer, default=0)
    outcomes: Mapped[list[Any]]
    memory_outcome: Mapped[str | None] = mapped_column(String(24))
    result: Mapped[dict[str, Any]]
    error: Mapped[dict[str, Any] | None]
    lease_owner: Mapped[str | None] = mapped_column(String(64))
    lease_epoch: Mapped[int] = mapped_column(Integer, default=0)
    lease_expires_at: Mapped[datetime | None]
    version: Mapped[int] = mapped_column(Integer, default=1)
    __table_args__ = (
        Index("ix_jobs_state", "state"),
        Index("ix_jobs_vm_id", "vm_id", "created_at"),
    )


class JobStep(Base):
    """One agent operation of a job, recorded before the agent is called (SPEC §5.4)."""

    __tablename__ = "job_steps"
    job_id: Mapped[str] = mapped_column(ID, ForeignKey("jobs.id"), primary_key=True)
    seq: Mapped[int] = mapped_column(Integer, primary_key=True)
    kind: Mapped[str] = mapped_column(String(24))
    disk_id: Mapped[str | None] = mapped_column(ID)
    domain_id: Mapped[str | None] = mapped_column(ID)
    host_id: Mapped[str | None] = mapped_column(ID)
    # The volume ids the step works on, in the order its kind defines.
    volume_ids: Mapped[list[Any]]
    params: Mapped[dict[str, Any]]
    op_id: Mapped[str] = mapped_column(String(64))
    state: Mapped[str] = mapped_column(String(16))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    progress: Mapped[int] = mapped_column(Integer, default=0)
    error: Mapped[dict[str, Any] | None]
    compensates: Mapped[int | None] = mapped_column(Integer)
    result: Mapped[dict[str, Any] | None]
    started_at: Mapped[datetime | None]
    ended_at: Mapped[datetime | None]


class Lock(Base):
    """A lock row; held by a non-terminal job (SPEC §5.8)."""

    __tablename__ = "locks"
    key: Mapped[str] = mapped_column(String(48), primary_key=True)
    job_id: Mapped[str] = mapped_column(ID)
    job_kind: Mapped[str] = mapped_column(String(32))
    acquired_at: Mapped[datetime]
    __table_args__ = (Index("ix_locks_job_id", "job_id"),)


__all__ = [
    "Attachment",
    "Base",
    "Disk",
    "Host",
    "HostDomain",
    "Job",
    "JobStep",
    "Lock",
    "Snapshot",
    "StorageDomain",
    "Vm",
    "Volume",
]
