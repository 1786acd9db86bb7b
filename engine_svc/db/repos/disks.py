"""Disks and their attachments."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import NamedTuple

from sqlalchemy import bindparam, select
from sqlalchemy.orm import Session

from engine_svc.db.models import Attachment, Disk, Volume


class AttachedDisk(NamedTuple):
    """A VM's attachment with its disk and the disk's head (None if it has none)."""

    attachment: Attachment
    disk: Disk
    head: Volume | None


# Built once: a statement object caches its compiled form and cache key (hot path).
_ATTACHED_TO = (
    select(Attachment, Disk, Volume)
    .join(Disk, Disk.id == Attachment.disk_id)
    .outerjoin(
        Volume,
        (Volume.disk_id == Disk.id) & Volume.active.is_(True) & Volume.pending_delete.is_(False),
    )
    .where(Attachment.vm_id == bindparam("vm_id"))
    .order_by(Disk.id)
    .with_for_update(of=Disk)
)


class DiskRepository:
    """Disk and attachment rows."""

    def __init__(self, session: Session) -> None:
        self.session = session

    def get(self, disk_id: str, *, for_update: bool = False) -> Disk | None:
        """The disk, or None."""
        stmt = select(Disk).where(Disk.id == disk_id)
        if for_update:
            stmt = stmt.with_for_update()
        return self.session.scalar(stmt)

    def get_many(self, disk_ids: Iterable[str], *, for_update: bool = False) -> dict[str, Disk]:
        """The disks that exist among ``disk_ids``, by id."""
        ids = sorted(set(disk_ids))
        if not ids:
            return {}
        stmt = select(Disk).where(Disk.id.in_(ids)).order_by(Disk.id)
        if for_update:
            stmt = stmt.with_for_update()
        return {d.id: d for d in self.session.scalars(stmt)}

    def list(
        self, *, vm_id: str = "", floating_only: bool = False, after: str = "", limit: int = 100
    ) -> Sequence[Disk]:
        """Disks by id: all, those attached to a VM, or floating ones."""
        stmt = select(Disk).order_by(Disk.id).limit(limit)
        if vm_id:
            stmt = stmt.join(Attachment, Attachment.disk_id == Disk.id).where(
                Attachment.vm_id == vm_id
            )
        if floating_only:
            stmt = stmt.where(~select(Attachment).where(Attachment.disk_id == Disk.id).exists())
        if after:
            stmt = stmt.where(Disk.id > after)
        return self.session.scalars(stmt).all()

    def add(self, disk: Disk) -> None:
        """Insert a disk."""
        self.session.add(disk)

    def delete(self, disk: Disk) -> None:
        """Delete a disk row (its attachments and volumes must be gone or garbage)."""
        self.session.delete(disk)

    def attachments_of_vm(self, vm_id: str) -> Sequence[Attachment]:
        """The VM's attachments, in any state."""
        return self.session.scalars(
            select(Attachment).where(Attachment.vm_id == vm_id).order_by(Attachment.disk_id)
        ).all()

    def attached_to(self, vm_id: str) -> Sequence[AttachedDisk]:
        """The VM's attachments (any state) with their disks and heads, the disk rows locked
        FOR UPDATE (SPEC §5.8), in one query."""
        rows = self.session.execute(_ATTACHED_TO, {"vm_id": vm_id}).all()
        return [AttachedDisk(a, d, v) for a, d, v in rows]

    def attachments_of_disk(self, disk_id: str) -> Sequence[Attachment]:
        """The disk's attachments."""
        return self.session.scalars(
            select(Attachment).where(Attachment.disk_id == disk_id).order_by(Attachment.vm_id)
        ).all()

    def attachment(self, vm_id: str, disk_id: str) -> Attachment | None:
        """The attachment of a disk to a VM, or None."""
        return self.session.get(Attachment, (vm_id, disk_id))

    def add_attachment(self, attachment: Attachment) -> None:
        """Insert an attachment."""
        self.session.add(attachment)

    def delete_attachment(self, attachment: Attachment) -> None:
        """Remove an attachment."""
        self.session.delete(attachment)
