"""PreviewSnapshot admission (SPEC §3.2): resolve every selection, lock, plan the overlays.

``admit_preview`` is shared with RestoreSnapshot, which runs the same checks and phases.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from engine_svc.commands.admission import (
    OVERLAY_BYTES,
    Envelope,
    disk_metadata,
    existing_job,
    locked_vm,
    new_job,
    pick_host,
    plan_step,
    request_hash,
    require_domains,
    require_down,
    require_not_in_preview,
    take_locks,
)
from engine_svc.config import EngineSettings
from engine_svc.db.models import Attachment, Disk, Job, JobStep, Snapshot, Vm, Volume
from engine_svc.db.repos import Repositories
from engine_svc.db.uow import Database
from engine_svc.domain import (
    NIL_UUID,
    AttachmentState,
    DiskKind,
    JobKind,
    SnapshotStatus,
    SnapshotType,
    StepKind,
    VolumeFormat,
    VolumeStatus,
    disk_lock,
    is_uuid,
    new_id,
    utcnow,
    vm_lock,
)
from engine_svc.errors import (
    InvalidArgument,
    NotFound,
    PreconditionFailed,
    invalid_field,
    join_ids,
)
from engine_svc.previews import Category, Plan, PlanEntry
from engine_svc.snapshot_config import disk_entry, parse, render, vm_section

MAX_IDS = 256


@dataclass(frozen=True)
class DiskSelection:
    """The volume one disk is previewed from: a snapshot's, or a volume by id."""

    disk_id: str
    snapshot_id: str = ""
    volume_id: str = ""


@dataclass(frozen=True)
class PreviewSnapshot:
    """Input of PreviewSnapshot (and the preview half of RestoreSnapshot)."""

    vm_id: str
    config_snapshot_id: str = ""
    restore_memory: bool = False
    disks: tuple[DiskSelection, ...] = ()
    exclude_disk_ids: tuple[str, ...] = ()
    envelope: Envelope = field(default_factory=Envelope)

    def fingerprint(self) -> dict[str, Any]:
        """The request's parameters for request_id idempotency."""
        return {
            "vm_id": self.vm_id,
            "config_snapshot_id": self.config_snapshot_id,
            "restore_memory": self.restore_memory,
            "disks": sorted([s.disk_id, s.snapshot_id, s.volume_id] for s in self.disks),
            "exclude_disk_ids": sorted(self.exclude_disk_ids),
        }


def validate_preview(cmd: PreviewSnapshot) -> None:
    """Checks 1-2: well-formed ids, one source per selection, no disk named twice."""
    if not is_uuid(cmd.vm_id):
        raise invalid_field("vm_id", "must be a lowercase UUID")
    if len(cmd.disks) + len(cmd.exclude_disk_ids) > MAX_IDS:
        raise invalid_field("disks", f"at most {MAX_IDS} disks")
    snapshot_ids = [("config_snapshot_id", cmd.config_snapshot_id)] + [
        ("disks.snapshot_id", s.snapshot_id) for s in cmd.disks
    ]
    for name, value in snapshot_ids:
        if value == NIL_UUID:
            raise InvalidArgument("CORRUPTED_VM_SNAPSHOT_ID", f"{name} is the nil UUID", field=name)
        if value and not is_uuid(value):
            raise invalid_field(name, "must be a lowercase UUID")
    for s in cmd.disks:
        if not is_uuid(s.disk_id):
            raise invalid_field("disks.disk_id", f"{s.disk_id!r} is not a lowercase UUID")
        if bool(s.snapshot_id) == bool(s.volume_id):
            raise invalid_field("disks", "set exactly one of snapshot_id and volume_id")
        if s.volume_id and not is_uuid(s.volume_id):
            raise invalid_field("disks.volume_id", f"{s.volume_id!r} is not a lowercase UUID")
    for d in cmd.exclude_disk_ids:
        if not is_uuid(d):
            raise invalid_field("exclude_disk_ids", f"{d!r} is not a lowercase UUID")
    named = [s.disk_id for s in cmd.disks] + list(cmd.exclude_disk_ids)
    dupes = {d for d in named if named.count(d) > 1}
    if dupes:
        raise InvalidArgument(
            "DUPLICATE_DISK_IDS", "a disk is named twice", disk_ids=join_ids(dupes)
        )
    cmd.envelope.validate()


def _snapshot_able(disk: Disk) -> bool:
    return disk.kind == DiskKind.IMAGE and not disk.shareable


@dataclass
class _Context:
    vm: Vm
    active: Snapshot
    attached: dict[str, Attachment]
    disks: dict[str, Disk]
    heads: dict[str, Volume]


def _history_ok(tx: Repositories, ctx: _Context, disk: Disk) -> bool:
    """Attached here, or floating with this VM as its history VM."""
    if disk.id in ctx.attached:
        return True
    if tx.disks.attachments_of_disk(disk.id):
        return False
    return tx.volumes.history_vm_ids(disk.id) == {ctx.vm.id}


def _not_attached(ctx: _Context, disk_id: str, volume_id: str) -> PreconditionFailed:
    return PreconditionFailed(
        "VM_DISK_SNAPSHOT_NOT_ATTACHED_TO_VM",
        f"disk {disk_id} is not attached to VM {ctx.vm.name} (nor floating with its history)",
        vm_name=ctx.vm.name,
        disk_ids=disk_id,
        volume_ids=volume_id,
    )


def _resolve(tx: Repositories, ctx: _Context, sel: DiskSelection) -> Volume:
    """Check 9 for one selection (SPEC order); returns the chosen volume C."""
    disk = ctx.disks[sel.disk_id]
    if sel.snapshot_id:
        snapshot = tx.snapshots.get(sel.snapshot_id)
        if snapshot is None or snapshot.vm_id != ctx.vm.id:
            raise NotFound(
                "VM_SNAPSHOT_DOES_NOT_EXIST",
                f"snapshot {sel.snapshot_id} of VM {ctx.vm.name} does not exist",
                vm_id=ctx.vm.id,
                snapshot_id=sel.snapshot_id,
            )
        if snapshot.id == ctx.active.id:
            chosen = tx.volumes.heads([disk.id]).get(disk.id)
        else:
            chosen = next(
                (
                    v
                    for v in tx.volumes.owned_by(snapshot.id)
                    if v.disk_id == disk.id and not v.pending_delete
                ),
                None,
            )
        if chosen is None:
            raise NotFound(
                "DISK_SNAPSHOTS_NOT_EXIST",
                f"snapshot {sel.snapshot_id} holds no volume of disk {disk.alias}",
                disk_id=disk.id,
                snapshot_id=sel.snapshot_id,
            )
    else:
        found = tx.volumes.get(sel.volume_id)
        if found is None or found.pending_delete:
            raise NotFound(
                "DISK_SNAPSHOTS_NOT_EXIST",
                f"volume {sel.volume_id} does not exist",
                volume_ids=sel.volume_id,
            )
        chosen = found
    if chosen.disk_id != disk.id or not _history_ok(tx, ctx, disk):
        raise _not_attached(ctx, disk.id, chosen.id)
    if chosen.active and disk.id not in ctx.attached:
        raise PreconditionFailed(
            "DISK_SNAPSHOTS_ACTIVE",
            "the head of a floating disk cannot be previewed; attach the disk instead",
            volume_ids=chosen.id,
        )
    return chosen


def admit_preview(
    tx: Repositories,
    settings: EngineSettings,
    cmd: PreviewSnapshot,
    job: Job,
    now: datetime,
) -> tuple[Snapshot, list[JobStep]]:
    """Checks 3-14 and the admission effects; returns the PREVIEW row and overlay steps."""
    vm = locked_vm(tx, cmd.vm_id)
    attachments = list(tx.disks.attachments_of_vm(vm.id))
    all_attached = tx.disks.get_many((a.disk_id for a in attachments), for_update=True)
    named_ids = [s.disk_id for s in cmd.disks] + list(cmd.exclude_disk_ids)
    named = tx.disks.get_many(named_ids, for_update=True)
    lock_disks = {a.disk_id for a in attachments if _snapshot_able(all_attached[a.disk_id])} | set(
        named
    )
    take_locks(
        tx,
        [vm_lock(vm.id), *(disk_lock(d) for d in lock_disks)],
        job,
        vm=vm,
        disks={**all_attached, **named},
        now=now,
    )
    active = require_not_in_preview(tx, vm)
    require_down(vm)
    config_snapshot = None
    if cmd.config_snapshot_id and cmd.config_snapshot_id != active.id:
        config_snapshot = tx.snapshots.get(cmd.config_snapshot_id)
        if config_snapshot is None or config_snapshot.vm_id != vm.id:
            raise NotFound(
                "VM_SNAPSHOT_DOES_NOT_EXIST",
                f"snapshot {cmd.config_snapshot_id} of VM {vm.name} does not exist",
                vm_id=vm.id,
                snapshot_id=cmd.config_snapshot_id,
            )
        if config_snapshot.type != SnapshotType.REGULAR:
            raise PreconditionFailed(
                "VM_SNAPSHOT_TYPE_NOT_ALLOWED",
                f"a {config_snapshot.type} snapshot cannot be previewed",
                snapshot_id=config_snapshot.id,
                snapshot_type=config_snapshot.type,
                supported_snapshot_types="ACTIVE,REGULAR",
            )
    missing = [d for d in named_ids if d not in named]
    if missing:
        raise NotFound("DISKS_NOT_EXIST", "disks do not exist", disk_ids=join_ids(missing))
    unsupported = [named[d] for d in named_ids if not _snapshot_able(named[d])]
    if unsupported:
        raise PreconditionFailed(
            "DISK_SNAPSHOT_NOT_SUPPORTED",
            "shareable and LUN disks cannot be previewed",
            **disk_metadata(unsupported),
        )
    attached = {
        a.disk_id: a
        for a in attachments
        if a.state == AttachmentState.ATTACHED and _snapshot_able(all_attached[a.disk_id])
    }
    foreign = [named[d] for d in cmd.exclude_disk_ids if d not in attached]
    if foreign:
        raise PreconditionFailed(
            "DISKS_NOT_ATTACHED_TO_VM",
            f"excluded disks are not attached to VM {vm.name}",
            vm_name=vm.name,
            **disk_metadata(foreign),
        )
    ctx = _Context(vm, active, attached, {**all_attached, **named}, {})
    ctx.heads = tx.volumes.heads(set(attached) | set(named))
    custom = bool(cmd.disks or cmd.exclude_disk_ids)
    chosen: dict[str, Volume] = {}
    if custom:
        for sel in cmd.disks:
            chosen[sel.disk_id] = _resolve(tx, ctx, sel)
        uncovered = sorted(set(attached) - set(named_ids))
        if uncovered:
            raise InvalidArgument(
                "PREVIEW_DISK_SELECTION_INCOMPLETE",
                "a custom preview must select or exclude every attached disk",
                **disk_metadata(ctx.disks[d] for d in uncovered),
            )
    elif config_snapshot is not None:
        for item in parse(config_snapshot.config or "{}").get("disks", []):
            disk = tx.disks.get(item["disk_id"], for_update=True)
            if disk is None or not _history_ok(tx, ctx, disk):
                continue
            ctx.disks[disk.id] = disk
            ctx.heads.update(tx.volumes.heads([disk.id]))
            chosen[disk.id] = _resolve(
                tx, ctx, DiskSelection(disk.id, snapshot_id=config_snapshot.id)
            )
        take_locks(
            tx,
            [disk_lock(d) for d in chosen if d not in lock_disks],
            job,
            vm=vm,
            disks=ctx.disks,
            now=now,
        )
    entries = _plan_entries(ctx, chosen)
    if config_snapshot is None and not any(e.category == Category.PREVIEWED for e in entries):
        raise PreconditionFailed(
            "CANNOT_PREVIEW_ACTIVE_SNAPSHOT", "the preview would change nothing", vm_id=vm.id
        )
    if cmd.restore_memory and (config_snapshot is None or config_snapshot.memory is None):
        raise PreconditionFailed(
            "MEMORY_NOT_AVAILABLE",
            "the configuration snapshot has no memory state",
            snapshot_id=cmd.config_snapshot_id or active.id,
        )
    illegal = [
        ctx.disks[e.disk_id]
        for e in entries
        if e.category != Category.DETACHED
        and VolumeStatus.ILLEGAL in (chosen[e.disk_id].status, ctx.heads[e.disk_id].status)
    ]
    if illegal:
        raise PreconditionFailed(
            "DISKS_ILLEGAL", "chosen volumes or heads are ILLEGAL", **disk_metadata(illegal)
        )
    needs: dict[str, int] = {}
    for e in entries:
        if e.category == Category.PREVIEWED:
            domain_id = chosen[e.disk_id].domain_id
            needs[domain_id] = needs.get(domain_id, 0) + OVERLAY_BYTES
    require_domains(tx, settings, needs, now)
    return _insert_preview(tx, settings, ctx, entries, chosen, cmd, job, now)


def _plan_entries(ctx: _Context, chosen: dict[str, Volume]) -> list[PlanEntry]:
    entries = []
    for disk_id in sorted(set(ctx.attached) | set(chosen)):
        head = ctx.heads[disk_id]
        volume = chosen.get(disk_id)
        if volume is None:
            entries.append(PlanEntry(disk_id, Category.DETACHED, "", "", "", head.id, False))
        elif volume.id == head.id:
            entries.append(
                PlanEntry(disk_id, Category.KEPT, head.id, ctx.active.id, "", head.id, False)
            )
        else:
            entries.append(
                PlanEntry(
                    disk_id,
                    Category.PREVIEWED,
                    volume.id,
                    volume.owner_snapshot_id or "",
                    new_id(),
                    head.id,
                    disk_id not in ctx.attached,
                )
            )
    return entries


def _insert_preview(
    tx: Repositories,
    settings: EngineSettings,
    ctx: _Context,
    entries: list[PlanEntry],
    chosen: dict[str, Volume],
    cmd: PreviewSnapshot,
    job: Job,
    now: datetime,
) -> tuple[Snapshot, list[JobStep]]:
    plan = Plan(
        config_snapshot_id=cmd.config_snapshot_id
        if cmd.config_snapshot_id != ctx.active.id
        else "",
        restore_memory=cmd.restore_memory,
        entries=tuple(entries),
    )
    preview = Snapshot(
        id=new_id(),
        vm_id=ctx.vm.id,
        type=SnapshotType.PREVIEW,
        status=SnapshotStatus.LOCKED,
        description="Active VM before the preview",
        created_at=now,
        config=render(
            vm_section(ctx.vm),
            [disk_entry(ctx.disks[d], a, ctx.heads[d]) for d, a in ctx.attached.items()],
            now,
        ),
        memory=ctx.active.memory,
        preview_plan=plan.to_json(),
    )
    tx.snapshots.add(preview)
    steps = []
    for seq, e in enumerate((e for e in entries if e.category == Category.PREVIEWED), start=1):
        source = chosen[e.disk_id]
        tx.volumes.add(
            Volume(
                id=e.overlay_volume_id,
                disk_id=e.disk_id,
                domain_id=source.domain_id,
                parent_id=source.id,
                owner_snapshot_id=ctx.active.id,
                active=False,
                status=VolumeStatus.LOCKED,
                pending_delete=False,
                format=VolumeFormat.COW,
                virtual_size=source.virtual_size,
                actual_size=0,
                created_at=now,
            )
        )
        steps.append(
            plan_step(
                job,
                seq,
                StepKind.CREATE_VOLUME,
                host_id=pick_host(tx, settings, source.domain_id, now),
                domain_id=source.domain_id,
                disk_id=e.disk_id,
                volume_ids=[e.overlay_volume_id],
                params={"parent_id": source.id},
            )
        )
    return preview, steps


def preview_snapshot(db: Database, settings: EngineSettings, cmd: PreviewSnapshot) -> Job:
    """Admit a PreviewSnapshot; the job creates the overlays, then finalizes."""
    validate_preview(cmd)
    digest = request_hash(JobKind.PREVIEW_SNAPSHOT, cmd.fingerprint())
    with db.transaction() as tx:
        if (job := existing_job(tx, cmd.envelope, JobKind.PREVIEW_SNAPSHOT, digest)) is not None:
            return job
        now = utcnow()
        job = new_job(
            JobKind.PREVIEW_SNAPSHOT,
            cmd.envelope,
            digest,
            now,
            vm_id=cmd.vm_id,
            targets=[cmd.vm_id],
            params={},
            deadline=settings.prepare_deadline,
        )
        preview, steps = admit_preview(tx, settings, cmd, job, now)
        job.params = {"preview_id": preview.id}
        job.result = {"snapshot_id": preview.id, "vm_id": cmd.vm_id}
        tx.jobs.add(job, steps)
        return job
