"""Snapshots of VMs."""

from __future__ import annotations

from collections.abc import Sequence
from typing import cast

from sqlalchemy import Table, bindparam, select, update
from sqlalchemy.orm import Session

from engine_svc.db.models import Snapshot
from engine_svc.db.repos.rows import sync_loaded
from engine_svc.domain import SnapshotType

# Built once: a statement object caches its compiled form and cache key (hot path).
_CURRENT_OF = select(Snapshot).where(
    Snapshot.vm_id == bindparam("vm_id"),
    Snapshot.type.in_([SnapshotType.ACTIVE, SnapshotType.PREVIEW]),
)
_SNAPSHOTS = cast(Table, Snapshot.__table__)
_SET_STATUS = (
    update(_SNAPSHOTS)
    .where(
        _SNAPSHOTS.c.id == bindparam("snapshot_id"), _SNAPSHOTS.c.status == bindparam("expected")
    )
    .values(status=bindparam("new_status"))
)


class SnapshotRepository:
    """Snapshot rows."""

    def __init__(self, session: Session) -> None:
        self.session = session

    def get(self, snapshot_id: str, *, for_update: bool = False) -> Snapshot | None:
        """The snapshot, or None."""
        stmt = select(Snapshot).where(Snapshot.id == snapshot_id)
        if for_update:
            stmt = stmt.with_for_update()
        return self.session.scalar(stmt)

    def of_vm(self, vm_id: str) -> Sequence[Snapshot]:
        """The VM's snapshots by (created_at, id)."""
        return self.session.scalars(
            select(Snapshot)
            .where(Snapshot.vm_id == vm_id)
            .order_by(Snapshot.created_at, Snapshot.id)
        ).all()

    def active_of(self, vm_id: str) -> Snapshot:
        """The VM's ACTIVE snapshot (INV-1: exactly one)."""
        return self.session.scalars(
            select(Snapshot).where(Snapshot.vm_id == vm_id, Snapshot.type == SnapshotType.ACTIVE)
        ).one()

    def preview_of(self, vm_id: str) -> Snapshot | None:
        """The VM's PREVIEW snapshot, if it is in preview."""
        return self.session.scalar(
            select(Snapshot).where(Snapshot.vm_id == vm_id, Snapshot.type == SnapshotType.PREVIEW)
        )

    def current_of(self, vm_id: str) -> tuple[Snapshot, Snapshot | None]:
        """The VM's ACTIVE snapshot and its PREVIEW snapshot (None unless in preview), read
        in one query."""
        rows = self.session.scalars(_CURRENT_OF, {"vm_id": vm_id}).all()
        (active,) = [s for s in rows if s.type == SnapshotType.ACTIVE]
        return active, next((s for s in rows if s.type == SnapshotType.PREVIEW), None)

    def add(self, snapshot: Snapshot) -> None:
        """Insert a snapshot row."""
        self.session.add(snapshot)

    def delete(self, snapshot: Snapshot) -> None:
        """Delete a snapshot row."""
        self.session.delete(snapshot)

    def set_status(self, snapshot_id: str, status: str, *, expected: str) -> bool:
        """Compare-and-swap a snapshot's status (a loaded row is kept in step)."""
        result = self.session.execute(
            _SET_STATUS, {"snapshot_id": snapshot_id, "expected": expected, "new_status": status}
        )
        if not result.rowcount:  # type: ignore[attr-defined]
            return False
        sync_loaded(self.session, Snapshot, [snapshot_id], {"status": status})
        return True
