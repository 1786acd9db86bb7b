"""Preview, commit and undo as DB state transitions (SPEC §3.2-3.5).

The PREVIEW snapshot stores an explicit plan (D9); every transition below is driven by that
plan only. ``finalize_preview`` runs when the overlays exist; ``finalize_commit`` and
``finalize_undo`` are pure DB decisions (D13) that leave garbage volumes for cleanup.
Each function works inside the caller's transaction and never commits.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from engine_svc.commands.remove_disk import plan_cleanup, retire_disk
from engine_svc.config import EngineSettings
from engine_svc.db.models import Attachment, Disk, Job, JobStep, Snapshot, Vm, Volume
from engine_svc.db.repos import Repositories
from engine_svc.domain import (
    AttachmentState,
    DiskOutcome,
    SnapshotStatus,
    SnapshotType,
    VolumeStatus,
)
from engine_svc.snapshot_config import parse


class Category:
    """What a preview does to one disk (stored in the plan)."""

    PREVIEWED = "PREVIEWED"
    KEPT = "KEPT"
    DETACHED = "DETACHED"


@dataclass(frozen=True)
class PlanEntry:
    """One disk of a preview plan (SPEC §3.2)."""

    disk_id: str
    category: str
    chosen_volume_id: str
    source_snapshot_id: str
    overlay_volume_id: str
    pre_preview_head_id: str
    reattached: bool

    def to_json(self) -> dict[str, Any]:
        """The JSON stored in ``Snapshot.preview_plan``."""
        return {
            "disk_id": self.disk_id,
            "category": self.category,
            "chosen_volume_id": self.chosen_volume_id,
            "source_snapshot_id": self.source_snapshot_id,
            "overlay_volume_id": self.overlay_volume_id,
            "pre_preview_head_id": self.pre_preview_head_id,
            "reattached": self.reattached,
        }

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> PlanEntry:
        """Read an entry back from the plan."""
        return cls(**doc)


@dataclass(frozen=True)
class Plan:
    """A whole preview plan."""

    config_snapshot_id: str
    restore_memory: bool
    entries: tuple[PlanEntry, ...]

    def to_json(self) -> dict[str, Any]:
        """The JSON stored in ``Snapshot.preview_plan``."""
        return {
            "config_snapshot_id": self.config_snapshot_id,
            "restore_memory": self.restore_memory,
            "entries": [e.to_json() for e in self.entries],
        }

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> Plan:
        """Read a plan back."""
        return cls(
            doc["config_snapshot_id"],
            doc["restore_memory"],
            tuple(PlanEntry.from_json(e) for e in doc["entries"]),
        )


@dataclass(frozen=True)
class Garbage:
    """Volumes of one disk left for cleanup, leaf-first, and the disk's outcome once gone."""

    disk: Disk
    volumes: list[Volume]
    outcome: DiskOutcome


def _config_entry(snapshot: Snapshot | None, disk_id: str) -> dict[str, Any] | None:
    if snapshot is None or snapshot.config is None:
        return None
    return next((d for d in parse(snapshot.config)["disks"] if d["disk_id"] == disk_id), None)


def _apply_vm_section(vm: Vm, section: dict[str, Any]) -> None:
    """Configuration fields from a stored document; never the name (D16)."""
    vm.description = section["description"]
    vm.cpu_count = section["cpu_count"]
    vm.memory_mb = section["memory_mb"]
    vm.custom_properties = dict(section["custom_properties"])
    vm.nics = list(section["nics"])


def _outcome(disk: Disk | None, disk_id: str, outcome: str, **extra: Any) -> dict[str, Any]:
    return {
        "disk_id": disk_id,
        "disk_alias": disk.alias if disk is not None else "",
        "volume_ids": [],
        "outcome": outcome,
        "reason": "",
        "message": "",
        **extra,
    }


def finalize_preview(tx: Repositories, vm: Vm, preview: Snapshot) -> list[dict[str, Any]]:
    """Switch the VM to the previewed state; returns the per-disk outcomes."""
    plan = Plan.from_json(preview.preview_plan or {})
    active = tx.snapshots.active_of(vm.id)
    config_snapshot = tx.snapshots.get(plan.config_snapshot_id) if plan.config_snapshot_id else None
    disks = tx.disks.get_many(e.disk_id for e in plan.entries)
    volumes = tx.volumes.get_many(
        [e.pre_preview_head_id for e in plan.entries]
        + [e.overlay_volume_id for e in plan.entries if e.overlay_volume_id]
        + [e.chosen_volume_id for e in plan.entries if e.chosen_volume_id]
    )
    outcomes = []
    in_preview: set[str] = set()
    for e in plan.entries:
        disk = disks[e.disk_id]
        head = volumes[e.pre_preview_head_id]
        if e.category == Category.PREVIEWED:
            overlay = volumes[e.overlay_volume_id]
            head.owner_snapshot_id = preview.id
            head.active = False
            overlay.active = True
            overlay.status = VolumeStatus.OK
            source = tx.snapshots.get(e.source_snapshot_id)
            entry = _config_entry(source, e.disk_id) or {}
            attachment = tx.disks.attachment(vm.id, e.disk_id)
            if attachment is None:
                attachment = Attachment(
                    vm_id=vm.id,
                    disk_id=e.disk_id,
                    interface=entry.get("interface", "VIRTIO"),
                    bootable=bool(entry.get("bootable", False)),
                    state=AttachmentState.ATTACHED,
                )
                tx.disks.add_attachment(attachment)
            elif entry:
                attachment.interface = entry["interface"]
                attachment.bootable = entry["bootable"]
            if entry:
                disk.alias = entry["alias"]
            if source is not None:
                in_preview.add(source.id)
            outcomes.append(
                _outcome(
                    disk,
                    e.disk_id,
                    DiskOutcome.PREVIEWED,
                    volume_ids=[e.chosen_volume_id],
                    metadata={"reattached": str(e.reattached).lower()},
                )
            )
        elif e.category == Category.DETACHED:
            attachment = tx.disks.attachment(vm.id, e.disk_id)
            assert attachment is not None
            attachment.state = AttachmentState.PREVIEW_DETACHED
            head.owner_snapshot_id = preview.id
            outcomes.append(_outcome(disk, e.disk_id, DiskOutcome.DETACHED))
        else:
            outcomes.append(_outcome(disk, e.disk_id, DiskOutcome.KEPT))
    if config_snapshot is not None and config_snapshot.type == SnapshotType.REGULAR:
        assert config_snapshot.config is not None
        _apply_vm_section(vm, parse(config_snapshot.config)["vm"])
        in_preview.add(config_snapshot.id)
    source = config_snapshot if config_snapshot is not None else preview
    _single_bootable(tx, vm, parse(source.config or "{}"))
    active.memory = (
        config_snapshot.memory if plan.restore_memory and config_snapshot is not None else None
    )
    for snapshot_id in sorted(in_preview - {active.id}):
        snapshot = tx.snapshots.get(snapshot_id)
        if snapshot is not None and snapshot.type == SnapshotType.REGULAR:
            snapshot.status = SnapshotStatus.IN_PREVIEW
    preview.status = SnapshotStatus.OK
    return outcomes


def _single_bootable(tx: Repositories, vm: Vm, source: dict[str, Any]) -> None:
    """If several attached disks are bootable, keep the flag only on the one that is bootable
    in the configuration source: the config snapshot, else the configuration before the
    preview (the PREVIEW's own document)."""
    attached = [
        a
        for a in tx.disks.attachments_of_vm(vm.id)
        if a.state == AttachmentState.ATTACHED and a.bootable
    ]
    if len(attached) <= 1:
        return
    keep = {d["disk_id"] for d in source.get("disks", []) if d["bootable"]}
    winner = next((a for a in attached if a.disk_id in keep), attached[0])
    for a in attached:
        a.bootable = a is winner


def _garbage(volume: Volume) -> None:
    volume.pending_delete = True
    volume.status = VolumeStatus.ILLEGAL
    volume.owner_snapshot_id = None
    volume.active = False


def _end_preview(tx: Repositories, preview: Snapshot, vm: Vm) -> None:
    """IN_PREVIEW snapshots back to OK, the PREVIEW row gone."""
    for snapshot in tx.snapshots.of_vm(vm.id):
        if snapshot.status == SnapshotStatus.IN_PREVIEW:
            snapshot.status = SnapshotStatus.OK
    tx.snapshots.delete(preview)


def finalize_commit(
    tx: Repositories, vm: Vm, preview: Snapshot, *, delete_detached_disks: bool
) -> tuple[list[dict[str, Any]], list[Garbage]]:
    """Make the preview the VM's state (SPEC §3.3); returns outcomes and cleanup work."""
    plan = Plan.from_json(preview.preview_plan or {})
    disks = tx.disks.get_many(e.disk_id for e in plan.entries)
    outcomes = []
    cleanup: list[Garbage] = []
    for e in plan.entries:
        disk = disks.get(e.disk_id)
        head = tx.volumes.get(e.pre_preview_head_id)
        if e.category == Category.PREVIEWED:
            assert head is not None and disk is not None
            _garbage(head)
            cleanup.append(Garbage(disk, [head], DiskOutcome.COMMITTED))
            outcomes.append(_outcome(disk, e.disk_id, DiskOutcome.COMMITTED))
        elif e.category == Category.DETACHED:
            assert head is not None and disk is not None
            attachment = tx.disks.attachment(vm.id, e.disk_id)
            if delete_detached_disks:
                volumes = retire_disk(tx, disk)
                cleanup.append(Garbage(disk, volumes, DiskOutcome.DELETED))
                outcomes.append(_outcome(disk, e.disk_id, DiskOutcome.DELETED))
            else:
                if attachment is not None:
                    tx.disks.delete_attachment(attachment)
                head.owner_snapshot_id = None
                outcomes.append(_outcome(disk, e.disk_id, DiskOutcome.FLOATING))
        else:
            outcomes.append(_outcome(disk, e.disk_id, DiskOutcome.KEPT))
    _end_preview(tx, preview, vm)
    return outcomes, cleanup


def finalize_undo(
    tx: Repositories, vm: Vm, preview: Snapshot
) -> tuple[list[dict[str, Any]], list[Garbage]]:
    """Return the VM to its state before the preview (SPEC §3.4)."""
    plan = Plan.from_json(preview.preview_plan or {})
    active = tx.snapshots.active_of(vm.id)
    disks = tx.disks.get_many(e.disk_id for e in plan.entries)
    before = parse(preview.config or "{}")
    entries = {d["disk_id"]: d for d in before.get("disks", [])}
    outcomes = []
    cleanup: list[Garbage] = []
    for e in plan.entries:
        disk = disks[e.disk_id]
        head = tx.volumes.get(e.pre_preview_head_id)
        assert head is not None
        attachment = tx.disks.attachment(vm.id, e.disk_id)
        if e.category == Category.PREVIEWED:
            overlay = tx.volumes.get(e.overlay_volume_id)
            assert overlay is not None
            _garbage(overlay)
            head.active = True
            cleanup.append(Garbage(disk, [overlay], DiskOutcome.RESTORED))
            if e.reattached:
                head.owner_snapshot_id = None
                if attachment is not None:
                    tx.disks.delete_attachment(attachment)
            else:
                head.owner_snapshot_id = active.id
            outcomes.append(_outcome(disk, e.disk_id, DiskOutcome.RESTORED))
        elif e.category == Category.DETACHED:
            assert attachment is not None
            attachment.state = AttachmentState.ATTACHED
            head.owner_snapshot_id = active.id
            outcomes.append(_outcome(disk, e.disk_id, DiskOutcome.REATTACHED))
        else:
            outcomes.append(_outcome(disk, e.disk_id, DiskOutcome.KEPT))
        entry = entries.get(e.disk_id)
        if entry is not None and not e.reattached:
            disk.alias = entry["alias"]
            if attachment is not None:
                attachment.interface = entry["interface"]
                attachment.bootable = entry["bootable"]
    if "vm" in before:
        _apply_vm_section(vm, before["vm"])
    active.memory = preview.memory
    _end_preview(tx, preview, vm)
    return outcomes, cleanup


def plan_garbage_cleanup(
    tx: Repositories,
    settings: EngineSettings,
    job: Job,
    garbage: list[Garbage],
    now: datetime,
    *,
    after_seq: int = 0,
) -> tuple[list[dict[str, Any]], list[JobStep]]:
    """DELETE_VOLUME steps for every garbage volume (leaf-first per disk)."""
    plan: list[dict[str, Any]] = []
    steps: list[JobStep] = []
    for g in garbage:
        if not g.volumes:
            continue
        part, new = plan_cleanup(
            tx,
            settings,
            job,
            [(g.disk, g.volumes)],
            now,
            outcome=g.outcome,
            after_seq=after_seq + len(steps),
        )
        plan += part
        steps += new
    return plan, steps
