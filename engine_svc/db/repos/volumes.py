"""Volumes: the trees of every disk."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import cast

from sqlalchemy import BigInteger, Table, bindparam, func, select, update
from sqlalchemy.orm import Session

from engine_svc.db.models import Snapshot, Volume
from engine_svc.db.repos.rows import swap_each, sync_loaded
from engine_svc.domain import SnapshotType, VolumeStatus

# The volumes table itself: Core statements on it bypass the ORM's identity map.
VOLUMES = cast(Table, Volume.__table__)


# Built once: a statement object caches its compiled form and cache key (hot path).
_HEADS = select(Volume).where(
    Volume.disk_id.in_(bindparam("disk_ids", expanding=True)),
    Volume.active.is_(True),
    Volume.pending_delete.is_(False),
)
# Executed once per row (executemany), which is cheaper than rendering an expanding IN.
_LOCK_HEADS = (
    update(VOLUMES)
    .where(VOLUMES.c.id == bindparam("head_id"), VOLUMES.c.status == VolumeStatus.OK)
    .values(status=VolumeStatus.LOCKED)
)
_CAPTURE = (
    update(VOLUMES)
    .where(VOLUMES.c.id == bindparam("head_id"), VOLUMES.c.status == VolumeStatus.LOCKED)
    .values(owner_snapshot_id=bindparam("snapshot_id"), active=False, status=VolumeStatus.OK)
)
_ACTIVATE = (
    update(VOLUMES)
    .where(VOLUMES.c.id == bindparam("volume_id"), VOLUMES.c.status == VolumeStatus.LOCKED)
    .values(
        active=True,
        status=VolumeStatus.OK,
        actual_size=func.coalesce(bindparam("size", type_=BigInteger), VOLUMES.c.actual_size),
    )
)


class VolumeRepository:
    """Volume rows."""

    def __init__(self, session: Session) -> None:
        self.session = session

    def get(self, volume_id: str) -> Volume | None:
        """The volume, or None."""
        return self.session.get(Volume, volume_id)

    def get_many(self, volume_ids: Iterable[str]) -> dict[str, Volume]:
        """The volumes that exist among ``volume_ids``, by id."""
        ids = sorted(set(volume_ids))
        if not ids:
            return {}
        return {v.id: v for v in self.session.scalars(select(Volume).where(Volume.id.in_(ids)))}

    def of_disk(self, disk_id: str, *, include_garbage: bool = True) -> Sequence[Volume]:
        """The disk's volumes, oldest first."""
        stmt = select(Volume).where(Volume.disk_id == disk_id)
        if not include_garbage:
            stmt = stmt.where(Volume.pending_delete.is_(False))
        return self.session.scalars(stmt.order_by(Volume.created_at, Volume.id)).all()

    def of_disks(self, disk_ids: Iterable[str]) -> Sequence[Volume]:
        """Non-garbage volumes of several disks."""
        ids = sorted(set(disk_ids))
        if not ids:
            return []
        return self.session.scalars(
            select(Volume)
            .where(Volume.disk_id.in_(ids), Volume.pending_delete.is_(False))
            .order_by(Volume.created_at, Volume.id)
        ).all()

    def heads(self, disk_ids: Iterable[str]) -> dict[str, Volume]:
        """The head (active, non-garbage volume) of each disk, by disk id."""
        ids = sorted(set(disk_ids))
        if not ids:
            return {}
        rows = self.session.scalars(_HEADS, {"disk_ids": ids})
        return {v.disk_id: v for v in rows}

    def owned_by(self, snapshot_id: str) -> Sequence[Volume]:
        """The volumes a snapshot owns."""
        return self.session.scalars(
            select(Volume).where(Volume.owner_snapshot_id == snapshot_id).order_by(Volume.disk_id)
        ).all()

    def all(self) -> Sequence[Volume]:
        """Every volume row (consistency checks)."""
        return self.session.scalars(
            select(Volume).order_by(Volume.disk_id, Volume.created_at)
        ).all()

    def add(self, volume: Volume) -> None:
        """Insert a volume row."""
        self.session.add(volume)

    def delete(self, volume: Volume) -> None:
        """Delete a volume row."""
        self.session.delete(volume)

    def lock_heads(self, head_ids: Sequence[str]) -> None:
        """Admission of a snapshot: its disks' heads go OK → LOCKED (one executemany
        compare-and-swap UPDATE; loaded rows are kept in step). The caller holds their disks'
        locks."""
        ids = sorted(set(head_ids))
        if not ids:
            return
        swap_each(
            self.session,
            _LOCK_HEADS,
            [{"head_id": i} for i in ids],
            f"volumes {ids} are not all OK",
        )
        sync_loaded(self.session, Volume, ids, {"status": VolumeStatus.LOCKED})

    def capture(self, snapshot_id: str, head_ids: Sequence[str]) -> None:
        """Finalize of a snapshot: the LOCKED heads become its volumes (no longer active).

        One executemany UPDATE, compare-and-swap on LOCKED; rows loaded in this session are
        not refreshed.
        """
        ids = sorted(set(head_ids))
        rows = [{"snapshot_id": snapshot_id, "head_id": i} for i in ids]
        swap_each(self.session, _CAPTURE, rows, f"volumes {ids} are not all LOCKED")

    def activate(self, actual_sizes: Mapping[str, int | None]) -> None:
        """Finalize of a snapshot: its LOCKED overlays become the active heads, with the
        allocation the agent reported (None keeps the recorded one).

        One executemany UPDATE, compare-and-swap on LOCKED; rows loaded in this session are
        not refreshed.
        """
        if not actual_sizes:
            return
        rows = [{"volume_id": vid, "size": size} for vid, size in actual_sizes.items()]
        swap_each(
            self.session, _ACTIVATE, rows, f"volumes {sorted(actual_sizes)} are not all LOCKED"
        )

    def garbage(self) -> Sequence[Volume]:
        """Garbage volumes, newest first (leaves tend to be newer)."""
        return self.session.scalars(
            select(Volume)
            .where(Volume.pending_delete.is_(True))
            .order_by(Volume.created_at.desc(), Volume.id)
        ).all()

    def children(self, volume_id: str) -> Sequence[Volume]:
        """Volumes (garbage included) whose parent is ``volume_id``."""
        return self.session.scalars(select(Volume).where(Volume.parent_id == volume_id)).all()

    def history_vm_ids(self, disk_id: str) -> set[str]:
        """VMs whose snapshots own the disk's non-head, non-garbage volumes (its history VM)."""
        rows = self.session.scalars(
            select(Snapshot.vm_id)
            .join(Volume, Volume.owner_snapshot_id == Snapshot.id)
            .where(
                Volume.disk_id == disk_id,
                Volume.active.is_(False),
                Volume.pending_delete.is_(False),
            )
            .distinct()
        )
        return set(rows)

    def history_disk_ids(self, vm_id: str) -> set[str]:
        """Disks whose history VM is ``vm_id`` (its snapshots own their non-head volumes)."""
        rows = self.session.scalars(
            select(Volume.disk_id)
            .join(Snapshot, Volume.owner_snapshot_id == Snapshot.id)
            .where(
                Snapshot.vm_id == vm_id,
                Volume.active.is_(False),
                Volume.pending_delete.is_(False),
            )
            .distinct()
        )
        return set(rows)

    def has_regular_owner(self, disk_id: str) -> bool:
        """True if a REGULAR snapshot owns any non-garbage volume of the disk."""
        row = self.session.scalar(
            select(Volume.id)
            .join(Snapshot, Volume.owner_snapshot_id == Snapshot.id)
            .where(
                Volume.disk_id == disk_id,
                Volume.pending_delete.is_(False),
                Snapshot.type == SnapshotType.REGULAR,
            )
            .limit(1)
        )
        return row is not None
